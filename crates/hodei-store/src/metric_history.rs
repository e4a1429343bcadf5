//! The metric history's SQL, the same for both engines: samples of a scope (the cluster, a pool
//! or a tenant) at a resolution (0 raw, else the width in seconds of the buckets they average).
//! Numbers are written into the SQL as literals (they come from the server, never from a
//! request); names are bound.

use hodei_core::Timestamp;
use sqlx::{Database, QueryBuilder};

use crate::rows::ms;

/// One stored sample of the metric history (`metrics.history`).
#[derive(Clone, Debug, PartialEq)]
pub struct MetricSample {
    /// `cluster`, `pool` or `tenant`.
    pub scope: String,
    /// The pool's or tenant's id; empty for the cluster.
    pub scope_id: String,
    pub metric: String,
    /// 0 for a raw sample, else the width in seconds of the bucket whose average it is.
    pub resolution_s: u32,
    pub at: Timestamp,
    pub value: f64,
}

/// One scope's series at one resolution, averaged over steps of `step_ms` (aligned to the
/// epoch, so the same step gives the same points whatever the start) from `start` to `end`
/// (exclusive).
#[derive(Clone, Debug)]
pub struct HistoryQuery {
    pub scope: String,
    pub scope_id: String,
    /// Only these metrics; empty: all of the scope's.
    pub metrics: Vec<String>,
    pub resolution_s: u32,
    pub start: Timestamp,
    pub end: Timestamp,
    pub step_ms: i64,
}

/// A metric's points, oldest first: each step's start and the average of the samples in it
/// (steps without a sample have no point; the first step may start before the query's start).
#[derive(Clone, Debug, PartialEq)]
pub struct HistorySeries {
    pub metric: String,
    pub points: Vec<(Timestamp, f64)>,
}

/// Rows per insert: 6 binds each, well under either engine's limit.
pub(crate) const INSERT_CHUNK: usize = 1000;

/// The samples with one per scope, metric, resolution and instant: the last given (one insert
/// may not touch a row twice on PostgreSQL).
pub(crate) fn unique(samples: &[MetricSample]) -> Vec<MetricSample> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<MetricSample> = samples.iter().rev().filter(|s| seen.insert((&s.scope, &s.scope_id, &s.metric, s.resolution_s, s.at))).cloned().collect();
    out.reverse();
    out
}

pub(crate) fn insert<'a, DB: Database>(chunk: &'a [MetricSample]) -> QueryBuilder<DB>
where
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    f64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut qb = QueryBuilder::new("INSERT INTO metric_samples (scope, scope_id, metric, resolution, at, value) ");
    qb.push_values(chunk, |mut b, s| {
        b.push_bind(s.scope.clone())
            .push_bind(s.scope_id.clone())
            .push_bind(s.metric.clone())
            .push_bind(i64::from(s.resolution_s))
            .push_bind(ms(s.at))
            .push_bind(s.value);
    });
    qb.push(" ON CONFLICT (scope, scope_id, resolution, metric, at) DO UPDATE SET value = excluded.value");
    qb
}

/// Averages the raw samples of [from, to) into buckets `width_s` wide, aligned to the epoch,
/// replacing the buckets already stored.
pub(crate) fn downsample(width_s: u32, from: Timestamp, to: Timestamp) -> String {
    let w = i64::from(width_s) * 1000;
    format!(
        "INSERT INTO metric_samples (scope, scope_id, metric, resolution, at, value) \
         SELECT scope, scope_id, metric, {width_s}, (at / {w}) * {w}, AVG(value) FROM metric_samples \
         WHERE resolution = 0 AND at >= {from} AND at < {to} GROUP BY scope, scope_id, metric, (at / {w}) * {w} \
         ON CONFLICT (scope, scope_id, resolution, metric, at) DO UPDATE SET value = excluded.value",
        from = ms(from),
        to = ms(to),
    )
}

pub(crate) fn last(resolution_s: u32) -> String {
    format!("SELECT MAX(at) FROM metric_samples WHERE resolution = {resolution_s}")
}

pub(crate) fn forget(resolution_s: u32, before: Timestamp) -> String {
    format!("DELETE FROM metric_samples WHERE resolution = {resolution_s} AND at < {}", ms(before))
}

/// Selects `metric`, `step` (the step's index since the epoch) and `value`, ordered.
pub(crate) fn history<'a, DB: Database>(q: &'a HistoryQuery) -> QueryBuilder<DB>
where
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let (start, step) = (ms(q.start), q.step_ms.max(1));
    let mut qb = QueryBuilder::new(format!("SELECT metric, at / {step} AS step, AVG(value) AS value FROM metric_samples WHERE scope = "));
    qb.push_bind(q.scope.clone()).push(" AND scope_id = ").push_bind(q.scope_id.clone());
    qb.push(format!(" AND resolution = {} AND at >= {start} AND at < {}", q.resolution_s, ms(q.end)));
    if !q.metrics.is_empty() {
        qb.push(" AND metric IN (");
        let mut sep = qb.separated(", ");
        for m in &q.metrics {
            sep.push_bind(m.clone());
        }
        qb.push(")");
    }
    qb.push(format!(" GROUP BY metric, at / {step} ORDER BY metric, step"));
    qb
}

/// The `(metric, step, value)` of each row [`history`] selected.
pub(crate) fn decode<R: sqlx::Row>(rows: &[R]) -> Result<Vec<(String, i64, f64)>, sqlx::Error>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    rows.iter().map(|r| Ok((r.try_get("metric")?, r.try_get("step")?, r.try_get("value")?))).collect()
}

/// Folds `(metric, step, value)` rows, ordered by metric and step, into series.
pub(crate) fn series(q: &HistoryQuery, rows: impl IntoIterator<Item = (String, i64, f64)>) -> Vec<HistorySeries> {
    let mut out: Vec<HistorySeries> = Vec::new();
    for (metric, step, value) in rows {
        let at = Timestamp::from_millis(step * q.step_ms.max(1));
        match out.last_mut() {
            Some(s) if s.metric == metric => s.points.push((at, value)),
            _ => out.push(HistorySeries { metric, points: vec![(at, value)] }),
        }
    }
    out
}
