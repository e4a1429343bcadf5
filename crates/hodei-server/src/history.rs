//! The metric history (`metrics.history`): every `interval_s` the server samples its own
//! figures ([`hodei_api::history::SOURCES`], read from its metrics recorder) into the store,
//! averages those raw samples into 5-minute and 1-hour buckets (the newest one again each round,
//! as it fills), and deletes what is older than each resolution keeps. Samples are durable, so history survives restarts; a user
//! without a Prometheus still gets it (`GET /api/v1/metrics/historical`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hodei_api::Clock;
use hodei_api::exposition::Exporter;
use hodei_api::history::{CLUSTER, FIVE_MINUTES, HistorySettings, ONE_HOUR, SOURCES, TENANT};
use hodei_core::Timestamp;
use hodei_store::{MetricSample, Store};
use tokio::sync::watch;

/// Figures of one sample round: (scope, scope id, name) → value.
type Figures = HashMap<(&'static str, String, &'static str), f64>;

/// Reads the figures from the recorder: series of one scope and name add up.
pub fn read(exporter: &Exporter) -> Figures {
    let mut out = Figures::new();
    exporter.each_value(|metric, key, value| {
        for s in SOURCES.iter().filter(|s| s.metric == metric) {
            if let Some((label, want)) = s.filter
                && !key.labels().any(|l| l.key() == label && l.value() == want)
            {
                continue;
            }
            let id = if s.scope == CLUSTER {
                String::new()
            } else {
                match key.labels().find(|l| l.key() == s.scope) {
                    Some(l) => l.value().to_owned(),
                    None => continue,
                }
            };
            *out.entry((s.scope, id, s.name)).or_default() += value;
        }
    });
    out
}

/// The sampler: what it wrote last, to turn counters into increases and to leave out tenants
/// that are idle and were already written as such.
#[derive(Default)]
pub struct Sampler {
    counters: HashMap<(String, &'static str), f64>,
    idle_tenants: std::collections::HashSet<String>,
}

impl Sampler {
    /// This round's samples. A tenant with every figure 0 is written once, then not again until
    /// something changes (an idle tenant's series pauses at 0).
    pub fn samples(&mut self, figures: Figures, at: Timestamp) -> Vec<MetricSample> {
        let mut by_scope: HashMap<(&'static str, String), Vec<(&'static str, f64)>> = HashMap::new();
        for ((scope, id, name), mut value) in figures {
            if SOURCES.iter().any(|s| s.scope == scope && s.name == name && s.increase) {
                let before = self.counters.insert((id.clone(), name), value);
                // A counter that went down restarted from 0 (the process restarted).
                value = match before {
                    Some(b) if value >= b => value - b,
                    Some(_) => value,
                    None => continue,
                };
            }
            by_scope.entry((scope, id)).or_default().push((name, value));
        }
        let mut out = Vec::new();
        for ((scope, id), values) in by_scope {
            if scope == TENANT {
                let idle = values.iter().all(|(_, v)| *v == 0.0);
                if idle && !self.idle_tenants.insert(id.clone()) {
                    continue;
                }
                if !idle {
                    self.idle_tenants.remove(&id);
                }
            }
            for (name, value) in values {
                out.push(MetricSample { scope: scope.to_owned(), scope_id: id.clone(), metric: name.to_owned(), resolution_s: 0, at, value });
            }
        }
        out
    }
}

/// The raw samples to average into buckets of `width_s`: from the start of the newest bucket
/// stored (it may have grown since; without one, from as far back as raw samples are kept) to
/// now, so coarse resolutions include the bucket still filling.
fn to_downsample(last: Option<Timestamp>, width_s: u32, now: Timestamp, keep: Duration) -> (Timestamp, Timestamp) {
    let w = i64::from(width_s) * 1000;
    let oldest = (now.as_millis() - keep.as_millis() as i64) / w * w;
    let from = last.map_or(oldest, |l| l.as_millis()).max(oldest);
    (Timestamp::from_millis(from), Timestamp::from_millis(now.as_millis() + 1))
}

pub async fn run(exporter: Exporter, store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: HistorySettings, mut stop: watch::Receiver<bool>) {
    // The first round one interval after start, not at once: at start the figures are not yet
    // set (the built-in workers are registering, the scheduler has not run), and a round of
    // zeros would draw every restart as a drop to 0.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + settings.interval, settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sampler = Sampler::default();
    let mut last_retention: Option<Timestamp> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = clock.now();
        let samples = sampler.samples(read(&exporter), now);
        if let Err(e) = store.put_metric_samples(&samples).await {
            tracing::warn!(error = %e, "cannot store metric samples; this round is lost");
            continue;
        }
        for width in [FIVE_MINUTES, ONE_HOUR] {
            let last = match store.last_metric_sample(width).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the metric history");
                    break;
                }
            };
            let (from, to) = to_downsample(last, width, now, settings.kept(0));
            if let Err(e) = store.downsample_metric_samples(width, from, to).await {
                tracing::warn!(error = %e, width, "cannot downsample the metric history");
            }
        }
        if last_retention.is_none_or(|l| now.since(l) >= Duration::from_secs(3600)) {
            for resolution in [0, FIVE_MINUTES, ONE_HOUR] {
                let before = Timestamp::from_millis(now.as_millis() - settings.kept(resolution).as_millis() as i64);
                if let Err(e) = store.forget_metric_samples(resolution, before).await {
                    tracing::warn!(error = %e, "cannot delete old metric samples");
                }
            }
            last_retention = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(v: &[((&'static str, &str, &'static str), f64)]) -> Figures {
        v.iter().map(|((s, id, n), x)| ((*s, id.to_string(), *n), *x)).collect()
    }

    #[test]
    fn counters_become_increases_and_idle_tenants_are_written_once() {
        let mut s = Sampler::default();
        let t = Timestamp::from_millis(0);
        let first = s.samples(figures(&[(("tenant", "a", "cost_micros"), 100.0), (("tenant", "a", "cpu_m"), 0.0), (("pool", "p", "size"), 2.0)]), t);
        // No increase yet for the counter; the tenant is idle (written once).
        assert_eq!(first.len(), 2, "{first:?}");
        let second = s.samples(figures(&[(("tenant", "a", "cost_micros"), 100.0), (("tenant", "a", "cpu_m"), 0.0), (("pool", "p", "size"), 2.0)]), t);
        assert_eq!(second.iter().map(|x| x.metric.as_str()).collect::<Vec<_>>(), ["size"], "an idle tenant is not written again");
        let third = s.samples(figures(&[(("tenant", "a", "cost_micros"), 160.0), (("tenant", "a", "cpu_m"), 500.0)]), t);
        let cost = third.iter().find(|x| x.metric == "cost_micros").unwrap();
        assert_eq!(cost.value, 60.0);
        // A restart: the counter starts again from 0.
        let fourth = s.samples(figures(&[(("tenant", "a", "cost_micros"), 20.0), (("tenant", "a", "cpu_m"), 500.0)]), t);
        assert_eq!(fourth.iter().find(|x| x.metric == "cost_micros").unwrap().value, 20.0);
    }

    #[test]
    fn the_newest_bucket_is_averaged_again_as_it_fills() {
        let keep = Duration::from_secs(3600);
        let at = |s: i64| Timestamp::from_millis(3_600_000_000 + s * 1000);
        assert_eq!(to_downsample(Some(at(300)), 300, at(700), keep), (at(300), Timestamp::from_millis(at(700).as_millis() + 1)));
        // Never anything downsampled: from as far back as raw samples are kept, aligned.
        assert_eq!(to_downsample(None, 3600, at(7300), keep).0, at(3600));
    }
}
