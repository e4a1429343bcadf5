//! Storage of Hodei Jobs: the [`Store`] trait and its engines.
//!
//! **Architecture Invariant:** the store makes no decisions. It persists what the core
//! decided ([`Changes`]) atomically, and reads rows back as core records.
//! **Architecture Invariant:** every engine passes the same [`conformance`] suite.

pub mod conformance;
pub mod conformance_logs;
mod identity;
pub mod logs;
mod metric_history;
pub mod postgres;
pub mod postgres_logs;
mod rows;
pub mod sqlite;
mod sqlite_load;
mod sqlite_writer;
pub mod testing;

use async_trait::async_trait;
use hodei_core::sched::Changes;
use hodei_core::sla_tally::SlaCount;
use hodei_core::{
    ArrayId, Attempt, BurstId, BurstSession, BurstState, Job, JobEvent, JobId, JobState, Pool, PoolId, Principal, PrincipalId, SlaLevel, Tenant, TenantId,
    Timestamp, Token, TokenId, Worker, WorkerId, WorkerState,
};
pub use metric_history::{HistoryQuery, HistorySeries, MetricSample};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    #[error("{what} was changed concurrently (version mismatch)")]
    VersionMismatch { what: String },
    #[error("store unavailable while {doing}")]
    Unavailable { doing: &'static str, source: sqlx::Error },
    #[error("store error while {doing}")]
    Db { doing: &'static str, source: sqlx::Error },
    #[error("store error while {doing}: {detail}")]
    Write { doing: &'static str, detail: String },
    #[error("store unavailable while {doing}: {detail}")]
    WriteUnavailable { doing: &'static str, detail: String },
    #[error("corrupt row while {doing}: {detail}")]
    Corrupt { doing: &'static str, detail: String },
    #[error(
        "the database schema is at version {}, this server needs version {latest}; run `hodei migrate` (or set database.auto_migrate: true)",
        applied.map_or("none (an empty database)".to_owned(), |v| v.to_string())
    )]
    SchemaBehind { applied: Option<i64>, latest: i64 },
    #[error("another server took over the scheduler of this database (epoch {epoch} is no longer current)")]
    LeadershipLost { epoch: i64 },
}

/// What opening a store does with its schema (`database.auto_migrate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// Applies the migrations it lacks.
    Migrate,
    /// Refuses to open unless every migration is applied (`SchemaBehind`).
    RequireCurrent,
}

/// Brings the schema of `pool` up to `migrator`'s last migration, or checks that it is there.
/// The migrations table is sqlx's, the same in every engine.
pub(crate) async fn prepare_schema<DB>(migrator: &sqlx::migrate::Migrator, pool: &sqlx::Pool<DB>, schema: Schema) -> Result<()>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    Option<i64>: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    (Option<i64>,): for<'r> sqlx::FromRow<'r, DB::Row>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    let latest = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match schema {
        Schema::Migrate => migrator.run(pool).await.map_err(|e| StoreError::Corrupt { doing: "migrating the database", detail: e.to_string() }),
        Schema::RequireCurrent => {
            // No migrations table at all: an empty database.
            let applied: Option<i64> = sqlx::query_as::<DB, (Option<i64>,)>("SELECT max(version) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(pool)
                .await
                .map(|(v,)| v)
                .unwrap_or(None);
            if applied.is_some_and(|v| v >= latest) { Ok(()) } else { Err(StoreError::SchemaBehind { applied, latest }) }
        }
    }
}

/// [`Store::schema_is_current`] for an engine's migrator and pool.
pub(crate) async fn schema_is_current<DB>(migrator: &sqlx::migrate::Migrator, pool: &sqlx::Pool<DB>) -> Result<bool>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    Option<i64>: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    (Option<i64>,): for<'r> sqlx::FromRow<'r, DB::Row>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    match prepare_schema(migrator, pool, Schema::RequireCurrent).await {
        Ok(()) => Ok(true),
        Err(StoreError::SchemaBehind { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

impl StoreError {
    pub(crate) fn db(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| match &source {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => StoreError::Unavailable { doing, source },
            _ => StoreError::Db { doing, source },
        }
    }

    /// The database could not be reached (503 rather than 500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. } | StoreError::WriteUnavailable { .. })
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Filters for listing jobs. Lists are newest first; `before` is the cursor (exclusive).
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub tenant: Option<TenantId>,
    /// Only these tenants' jobs (the caller's visible tenants); `Some(empty)` lists nothing.
    pub visible: Option<Vec<TenantId>>,
    pub states: Vec<JobState>,
    /// Every term must hold (a kubectl label selector).
    pub labels: Vec<LabelTerm>,
    /// Jobs of one array job.
    pub array: Option<ArrayId>,
    pub before: Option<JobId>,
    pub limit: u32,
}

/// One term of a label selector: `k=v`, `k!=v` (also true when the job has no `k`), `k`
/// (has the label), `!k` (has not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelTerm {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Missing(String),
}

impl LabelTerm {
    /// A comma-separated selector, e.g. `team=ml,env!=prod,gpu,!spot`.
    pub fn parse_selector(s: &str) -> Result<Vec<LabelTerm>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| {
                let key = |k: &str| {
                    let k = k.trim();
                    if k.is_empty() || k.contains(['=', '!']) { Err(format!("{t:?}: a label selector term is k=v, k!=v, k or !k")) } else { Ok(k.to_owned()) }
                };
                if let Some((k, v)) = t.split_once("!=") {
                    Ok(LabelTerm::Ne(key(k)?, v.trim().to_owned()))
                } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                    Ok(LabelTerm::Eq(key(k)?, v.trim().to_owned()))
                } else if let Some(k) = t.strip_prefix('!') {
                    Ok(LabelTerm::Missing(key(k)?))
                } else {
                    Ok(LabelTerm::Exists(key(t)?))
                }
            })
            .collect()
    }
}

/// Filters for listing workers, newest registration first; `before` is the cursor (exclusive).
#[derive(Clone, Debug, Default)]
pub struct WorkerFilter {
    pub pool: Option<PoolId>,
    /// Any of these states (empty: every state).
    pub states: Vec<WorkerState>,
    /// Every term must hold for the worker's labels (a kubectl label selector).
    pub labels: Vec<LabelTerm>,
    pub before: Option<WorkerId>,
    pub limit: u32,
}

/// Filters for a pool's scaling history, newest first; `before` is the cursor (exclusive).
#[derive(Clone, Debug)]
pub struct ScalingEventFilter {
    pub pool: PoolId,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub outcome: Option<hodei_core::autoscale::Outcome>,
    pub before: Option<i64>,
    pub limit: u32,
}

/// How a cost breakdown groups the daily rollups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CostGroup {
    Tenant,
    Pool,
    Day,
    /// Read from the cost records (kept `cost_tracking.retention_days`), not the rollups;
    /// `attempts` counts the attempts with a record in the period.
    JobName,
}

/// A cost breakdown over whole UTC days `from_day..=to_day` (days since the epoch), within
/// `visible` tenants (None: all), optionally one tenant or pool.
#[derive(Clone, Debug)]
pub struct CostQuery {
    pub from_day: i64,
    pub to_day: i64,
    pub tenant: Option<TenantId>,
    pub pool: Option<PoolId>,
    pub visible: Option<Vec<TenantId>>,
    pub group_by: CostGroup,
}

/// Most groups one breakdown returns (the most costly first).
pub const MAX_COST_GROUPS: u32 = 1000;

/// One group of a breakdown: sums of its rollups. `key`: the tenant id, the pool id, or the
/// day (days since the epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostGroupRow {
    pub key: String,
    pub cost_micros: i64,
    pub cpu_m_seconds: i64,
    pub memory_mb_seconds: i64,
    pub gpu_seconds: i64,
    pub attempts: i64,
}

/// An attempt's usage as stored (SPEC §8.7): its series of at most 720 points, and its summary
/// once it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptUsage {
    pub attempt: hodei_core::AttemptId,
    pub series: hodei_core::usage::Series,
    pub summary: Option<hodei_core::usage::Summary>,
    pub updated_at: Timestamp,
}

/// A cost report as stored: its JSON as made, and whose it is (`None`: every tenant's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredReport {
    pub id: uuid::Uuid,
    pub tenant: Option<TenantId>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub body: String,
}

/// A job's cost within a query's days, from its cost records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobCost {
    pub job_id: JobId,
    pub job_name: String,
    pub tenant: TenantId,
    pub cost_micros: i64,
}

/// A finished attempt with its usage summary, as the optimization analyzer reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRun {
    pub tenant: TenantId,
    pub job_name: String,
    /// Where it ran.
    pub pool: PoolId,
    /// What the attempt asked for.
    pub requested: hodei_core::Resources,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// It ended `oom`.
    pub oom: bool,
    pub summary: hodei_core::usage::Summary,
}

/// A stored rate version: who set it (`config` or an admin through the API).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRates {
    pub version: hodei_core::cost::RateVersion,
    /// `config` or `api`.
    pub source: String,
    pub created_by: String,
}

/// Filters for listing alerts, newest first; `before` is the cursor (exclusive).
#[derive(Clone, Debug, Default)]
pub struct AlertFilter {
    pub tenant: Option<TenantId>,
    pub visible: Option<Vec<TenantId>>,
    pub state: Option<hodei_core::alert::AlertState>,
    pub kind: Option<String>,
    pub before: Option<hodei_core::AlertId>,
    pub limit: u32,
}

/// Most budgets one list returns (every tenant may have a few).
pub const MAX_BUDGETS: u32 = 10_000;

/// Most rate versions read (oldest dropped first: only the newest matter for new costs).
pub const MAX_RATE_VERSIONS: u32 = 10_000;

/// Filters for listing burst sessions, newest first; `before` is the cursor (exclusive).
#[derive(Clone, Debug, Default)]
pub struct BurstFilter {
    pub tenant: Option<TenantId>,
    /// Only these tenants' sessions; `Some(empty)` lists nothing.
    pub visible: Option<Vec<TenantId>>,
    pub states: Vec<BurstState>,
    pub before: Option<BurstId>,
    pub limit: u32,
}

/// Filters for jobs that breached their SLA, most recent breach first.
#[derive(Clone, Debug, Default)]
pub struct BreachFilter {
    pub tenant: Option<TenantId>,
    /// Only these tenants' jobs; `Some(empty)` lists nothing.
    pub visible: Option<Vec<TenantId>>,
    pub level: Option<SlaLevel>,
    /// Breached at or after.
    pub since: Option<Timestamp>,
    pub limit: u32,
}

/// What one [`Store::delete_ended_jobs`] call deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub jobs: u64,
    /// The deleted attempts, whose log files go too.
    pub attempts: Vec<hodei_core::AttemptId>,
}

/// Everything the scheduler must hold in memory, as stored.
#[derive(Debug, Default)]
pub struct LiveState {
    pub jobs: Vec<Job>,
    pub workers: Vec<Worker>,
    pub attempts: Vec<Attempt>,
    /// Idempotency keys of submits (the expired ones too, until the scheduler deletes them).
    pub idempotency: Vec<hodei_core::idempotency::IdempotencyRecord>,
}

/// Principals and API tokens (SPEC §2.13), stored next to the jobs they may touch.
#[async_trait]
pub trait Identity: Send + Sync {
    /// Stores a new principal; `AlreadyExists` when its name is taken.
    async fn create_principal(&self, p: &Principal) -> Result<()>;
    async fn get_principal(&self, id: PrincipalId) -> Result<Option<Principal>>;
    async fn get_principal_by_name(&self, name: &str) -> Result<Option<Principal>>;
    /// Newest first; `before` is the cursor (exclusive).
    async fn list_principals(&self, before: Option<PrincipalId>, limit: u32) -> Result<Vec<Principal>>;
    /// Writes `p`'s role bindings if the stored version is `p.version - 1`.
    async fn update_principal(&self, p: &Principal) -> Result<()>;
    async fn create_token(&self, t: &Token) -> Result<()>;
    /// The tokens whose secret starts with `prefix` (a handful at most).
    async fn tokens_by_prefix(&self, prefix: &str) -> Result<Vec<Token>>;
    async fn get_token(&self, id: TokenId) -> Result<Option<Token>>;
    /// One principal's tokens, or everyone's; newest first, `before` exclusive.
    async fn list_tokens(&self, principal: Option<PrincipalId>, before: Option<TokenId>, limit: u32) -> Result<Vec<Token>>;
    /// Revokes a token: `false` when there was none.
    async fn delete_token(&self, id: TokenId) -> Result<bool>;
    async fn touch_token(&self, id: TokenId, at: Timestamp) -> Result<()>;
    async fn append_audit(&self, e: &hodei_core::AuditEntry) -> Result<()>;
    /// Newest first; `before` is the cursor (exclusive).
    async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<hodei_core::AuditEntry>>;
}

/// Filters of the audit log; each set one must match.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// The actor's principal name.
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub since: Option<Timestamp>,
    pub before: Option<hodei_core::AuditId>,
    pub limit: u32,
}

#[async_trait]
pub trait Store: Identity + Send + Sync + 'static {
    /// Cheap round trip, for `/ready`.
    async fn ping(&self) -> Result<()>;

    /// Every migration this build knows is applied (`/ready`'s `migrations` check).
    async fn schema_is_current(&self) -> Result<bool>;

    /// For the server that schedules: checks that it still is the only one, taking the
    /// scheduler lock again if its session was lost and nobody else took it — `Ok(true)` then:
    /// another server may have written meanwhile, so the caller reloads its state.
    /// `LeadershipLost` when another server holds it. Engines whose database admits one
    /// process need nothing.
    async fn hold_scheduler_lock(&self) -> Result<bool> {
        Ok(false)
    }

    /// Where this engine keeps job output, when it keeps it itself (so that every server of
    /// the database reaches it); `None`: in files beside the database.
    fn log_store(&self) -> Option<std::sync::Arc<dyn logs::LogStore>> {
        None
    }

    async fn create_tenant(&self, t: &Tenant) -> Result<()>;
    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>>;
    /// Writes `t` if the stored version is `t.version - 1`.
    async fn update_tenant(&self, t: &Tenant) -> Result<()>;
    /// Deletes the tenant and its burst sessions.
    async fn delete_tenant(&self, id: &TenantId) -> Result<bool>;
    /// Jobs of the tenant that are not ended.
    async fn count_live_jobs(&self, tenant: &TenantId) -> Result<u64>;

    /// Creates or replaces a pool; the join token hash is kept when `join_token_hash` is None.
    async fn upsert_pool(&self, p: &Pool, join_token_hash: Option<&str>) -> Result<()>;
    /// Creates a pool; `AlreadyExists` when one with its id exists (or existed: ids are not
    /// reused).
    async fn create_pool(&self, p: &Pool, join_token_hash: &str) -> Result<()>;
    async fn get_pool(&self, id: &PoolId) -> Result<Option<(Pool, String)>>;
    /// Replaces a pool's join token hash alone; false when there is no such pool.
    async fn set_pool_join_token(&self, id: &PoolId, join_token_hash: &str) -> Result<bool>;
    async fn list_pools(&self) -> Result<Vec<Pool>>;
    /// Sets a pool's desired size, state and state reason (its spec and version unchanged);
    /// false when there is no such pool, or it is on its way out: a `destroyed` pool stays so, a
    /// `draining` one only becomes `destroyed` — a decision read before a delete never revives it.
    async fn set_pool_size(&self, id: &PoolId, desired_size: u32, state: hodei_core::PoolState, state_reason: &str) -> Result<bool>;
    /// Appends a scaling decision to its pool's history; returns its id (the event's own is ignored).
    async fn record_scaling_event(&self, e: &hodei_core::autoscale::Event) -> Result<i64>;
    async fn list_scaling_events(&self, f: &ScalingEventFilter) -> Result<Vec<hodei_core::autoscale::Event>>;
    /// Forgets scaling events recorded before `before`; returns how many.
    async fn delete_scaling_events_before(&self, before: Timestamp) -> Result<u64>;

    /// Stores a firing alert unless one with its `dedup_key` exists; whether it was new.
    async fn raise_alert(&self, a: &hodei_core::alert::Alert) -> Result<bool>;
    async fn list_alerts(&self, f: &AlertFilter) -> Result<Vec<hodei_core::alert::Alert>>;
    async fn get_alert(&self, id: hodei_core::AlertId) -> Result<Option<hodei_core::alert::Alert>>;
    /// `firing → acknowledged`; whether it was firing.
    async fn ack_alert(&self, id: hodei_core::AlertId, by: &str, at: Timestamp) -> Result<bool>;
    /// Resolves the unresolved alerts of `scope` whose key is not in `still`; how many.
    async fn resolve_alerts(&self, scope: &str, still: &[String], at: Timestamp) -> Result<u64>;
    /// Unresolved alerts by (kind, severity).
    async fn count_open_alerts(&self) -> Result<Vec<(String, String, i64)>>;

    async fn create_budget(&self, b: &hodei_core::budget::Budget) -> Result<()>;
    /// Writes `b` if the stored version is `b.version - 1` (else `VersionMismatch`).
    async fn update_budget(&self, b: &hodei_core::budget::Budget) -> Result<()>;
    async fn get_budget(&self, id: hodei_core::BudgetId) -> Result<Option<hodei_core::budget::Budget>>;
    /// Budgets of `tenant` (or all), within `visible` tenants (None: all), oldest first, at most
    /// [`MAX_BUDGETS`].
    async fn list_budgets(&self, tenant: Option<&TenantId>, visible: Option<&[TenantId]>) -> Result<Vec<hodei_core::budget::Budget>>;
    /// Whether it existed.
    async fn delete_budget(&self, id: hodei_core::BudgetId) -> Result<bool>;

    /// Adds a rate version; `AlreadyExists` when one takes effect at the same instant.
    async fn add_rate_version(&self, r: &StoredRates) -> Result<()>;
    /// The newest [`MAX_RATE_VERSIONS`] versions, oldest first.
    async fn list_rate_versions(&self) -> Result<Vec<StoredRates>>;

    /// Sums of the daily cost rollups by group, the most costly first, at most
    /// [`MAX_COST_GROUPS`]: reads rollups, never the records.
    async fn cost_breakdown(&self, q: &CostQuery) -> Result<Vec<CostGroupRow>>;

    /// Stores a new session; `AlreadyExists` when the tenant already has an open one.
    async fn create_burst(&self, b: &BurstSession) -> Result<()>;
    /// Writes `b` if the stored version is `b.version - 1`.
    async fn update_burst(&self, b: &BurstSession) -> Result<()>;
    async fn get_burst(&self, id: BurstId) -> Result<Option<BurstSession>>;
    async fn list_bursts(&self, f: &BurstFilter) -> Result<Vec<BurstSession>>;

    /// Writes part of a batch of scheduler decisions without committing it, so a large batch
    /// is written while the scheduler is still taking the rest. The next `apply` commits the
    /// staged parts with its own changes in one transaction; if a part failed, that `apply`
    /// returns its error and nothing staged or applied is stored.
    fn stage(&self, changes: std::sync::Arc<Changes>);
    /// Persists one batch of scheduler decisions (and the parts staged before it) in one
    /// transaction.
    async fn apply(&self, changes: std::sync::Arc<Changes>) -> Result<()>;
    async fn get_job(&self, id: JobId) -> Result<Option<Job>>;
    async fn list_jobs(&self, f: &JobFilter) -> Result<Vec<Job>>;
    async fn list_attempts(&self, job: JobId) -> Result<Vec<Attempt>>;
    /// What each of `jobs` cost so far: the sum of its attempts' costs (jobs without any: absent).
    async fn job_costs(&self, jobs: &[JobId]) -> Result<Vec<(JobId, i64)>>;
    async fn list_events(&self, job: JobId) -> Result<Vec<JobEvent>>;
    async fn load_live(&self) -> Result<LiveState>;
    /// Retention: deletes up to about `limit` jobs that ended before `before` (a job waiting
    /// for an automatic retry has not), with their attempts and events, in one transaction,
    /// oldest first. An array job goes as a unit: its members only once every one of them has
    /// ended before `before` (then in parts of `limit`, its spec with the last part).
    async fn delete_ended_jobs(&self, before: Timestamp, limit: u32) -> Result<Purged>;
    /// SLA outcomes counted in the hours from `since` on, of one tenant or all, summed per
    /// tenant, level, met and wait bin (at most tenants × levels × 2 × `WAIT_BINS` rows).
    async fn sla_counts(&self, since: Timestamp, tenant: Option<&TenantId>) -> Result<Vec<SlaCount>>;
    /// Deletes the SLA counts of the hours before `before`; returns how many rows went.
    async fn forget_sla_counts(&self, before: Timestamp) -> Result<u64>;
    /// Settings changed through the API (`PUT /observability/config`): a JSON object of key
    /// paths to values; `None` until first written.
    async fn setting_overrides(&self) -> Result<Option<String>>;
    /// Replaces the stored settings overrides.
    async fn put_setting_overrides(&self, body: &str, at: Timestamp) -> Result<()>;
    /// Metric history: stores samples, replacing one of the same scope, metric, resolution and
    /// instant.
    async fn put_metric_samples(&self, samples: &[MetricSample]) -> Result<()>;
    /// Averages the raw samples taken in [from, to) into buckets `width_s` wide (aligned to the
    /// epoch), stored at resolution `width_s` in place of those buckets; returns how many.
    async fn downsample_metric_samples(&self, width_s: u32, from: Timestamp, to: Timestamp) -> Result<u64>;
    /// The instant of the newest sample kept at `resolution_s`.
    async fn last_metric_sample(&self, resolution_s: u32) -> Result<Option<Timestamp>>;
    /// A scope's series, averaged per step (at most `(end - start) / step_ms` points each).
    async fn metric_history(&self, q: &HistoryQuery) -> Result<Vec<HistorySeries>>;
    /// Deletes the samples at `resolution_s` taken before `before`; returns how many.
    async fn forget_metric_samples(&self, resolution_s: u32, before: Timestamp) -> Result<u64>;
    /// Deletes cost records that ended before `before` (`cost_tracking.retention_days`); the
    /// rollups they were added to stay. Returns how many.
    async fn forget_cost_records(&self, before: Timestamp) -> Result<u64>;
    /// The most costly jobs over the query's days (tenant, pool and visibility as for a
    /// breakdown; its grouping is ignored), from the cost records still kept, at most `limit`.
    async fn top_cost_jobs(&self, q: &CostQuery, limit: u32) -> Result<Vec<JobCost>>;
    async fn put_cost_report(&self, r: &StoredReport) -> Result<()>;
    async fn get_cost_report(&self, id: uuid::Uuid) -> Result<Option<StoredReport>>;
    /// Reports newest first: of `tenant` when given, within `visible` (a report of every
    /// tenant only for `None`, all visible), older than `before`, at most `limit`.
    async fn list_cost_reports(
        &self,
        tenant: Option<&TenantId>,
        visible: Option<&[TenantId]>,
        before: Option<uuid::Uuid>,
        limit: u32,
    ) -> Result<Vec<StoredReport>>;
    /// Writes the usage of these attempts (each replacing what was stored of it).
    async fn put_usage(&self, usage: &[AttemptUsage]) -> Result<()>;
    /// The stored usage of these attempts (those that have some).
    async fn attempt_usage(&self, attempts: &[hodei_core::AttemptId]) -> Result<Vec<AttemptUsage>>;
    /// Deletes the usage last written before `before` (retention); how many attempts' went.
    async fn forget_usage(&self, before: Timestamp) -> Result<u64>;
    /// Finished attempts with a usage summary that ended at or after `since` — of `tenant`'s
    /// jobs when given — the latest `per_name` of each (tenant, job name), at most `limit` in
    /// all, newest first within each name.
    async fn usage_runs(&self, since: Timestamp, tenant: Option<&TenantId>, per_name: u32, limit: u32) -> Result<Vec<UsageRun>>;
    async fn sla_breaches(&self, f: &BreachFilter) -> Result<Vec<Job>>;

    /// Records a worker and the hash of its session token.
    async fn register_worker(&self, w: &Worker, session_token_hash: &str) -> Result<()>;
    async fn worker_session_hash(&self, id: WorkerId) -> Result<Option<String>>;
    /// Workers by filter, newest registration first, at most `limit`.
    async fn list_workers(&self, f: &WorkerFilter) -> Result<Vec<Worker>>;
    async fn get_worker(&self, id: WorkerId) -> Result<Option<Worker>>;
}
