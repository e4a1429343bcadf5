//! Queue gauges kept up to date from each committed batch's transitions: O(changes), never a
//! scan of every live job.

use std::collections::{HashMap, HashSet};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hodei_api::Clock;
use hodei_core::ids::IdMap;
use hodei_core::sched::{Changes, Scheduler};
use hodei_core::sla_tally::window_start;
use hodei_core::{Job, JobId, JobState, SlaLevel, SlaStatus, TenantId, Timestamp, Worker};
use hodei_store::Store;
use tokio::sync::watch;

#[derive(Default)]
pub struct Gauges {
    /// (tenant, priority, state) → jobs, for `pending` and `held`.
    queued: HashMap<(TenantId, &'static str, &'static str), i64>,
    /// (tenant, pool) → running jobs.
    running: HashMap<(String, String), i64>,
    /// Where each running job was counted, so it is uncounted from the same place.
    running_at: HashMap<JobId, (String, String)>,
    /// (pool, state) series already exported, so an emptied one drops to 0 instead of going stale.
    worker_series: HashSet<(String, &'static str)>,
    /// Series set by the last scan, so they drop to 0 rather than go stale.
    scanned_tenants: HashSet<String>,
    scanned_pools: HashSet<String>,
    /// `hodei_sla_jobs` series exported, so an emptied one drops to 0.
    sla_series: HashSet<(String, &'static str, &'static str)>,
}

fn queued_state(s: JobState) -> Option<&'static str> {
    matches!(s, JobState::Pending | JobState::Held).then(|| s.as_str())
}

impl Gauges {
    /// Counts what a freshly loaded scheduler holds.
    pub fn load<'a>(jobs: impl Iterator<Item = &'a Job>) -> Gauges {
        let mut g = Gauges::default();
        for j in jobs {
            g.enter(j, j.state);
        }
        g.publish_all();
        g
    }

    fn enter(&mut self, j: &Job, s: JobState) {
        if let Some(st) = queued_state(s) {
            *self.queued.entry((j.tenant.clone(), j.spec.priority.as_str(), st)).or_default() += 1;
        }
        if s == JobState::Running {
            let key = (j.tenant.to_string(), j.pool_id.as_ref().map(|p| p.to_string()).unwrap_or_default());
            *self.running.entry(key.clone()).or_default() += 1;
            self.running_at.insert(j.id, key);
        }
    }

    fn leave(&mut self, j: &Job, s: JobState) {
        if let Some(st) = queued_state(s)
            && let Some(n) = self.queued.get_mut(&(j.tenant.clone(), j.spec.priority.as_str(), st))
        {
            *n -= 1;
        }
        if s == JobState::Running
            && let Some(key) = self.running_at.remove(&j.id)
            && let Some(n) = self.running.get_mut(&key)
        {
            *n -= 1;
        }
    }

    /// Applies a committed batch and republishes the gauges it touched.
    pub fn apply(&mut self, c: &Changes) {
        if c.events.is_empty() {
            return;
        }
        let jobs: IdMap<JobId, &Job> = c.new_jobs.iter().chain(&c.jobs).map(|j| (j.id, j)).collect();
        for e in &c.events {
            let Some(j) = jobs.get(&e.job_id) else { continue };
            if let Some(from) = e.from {
                self.leave(j, from);
            }
            self.enter(j, e.to);
        }
        self.publish_all();
    }

    /// Workers by pool and state, and live workers per pool (small: recomputed when any changes).
    pub fn workers<'a>(&mut self, workers: impl Iterator<Item = &'a Worker>) {
        let mut by_state: HashMap<(String, &'static str), i64> = HashMap::new();
        let mut size: HashMap<String, i64> = HashMap::new();
        let mut unhealthy: HashMap<String, i64> = HashMap::new();
        for w in workers {
            *by_state.entry((w.pool_id.to_string(), w.state.as_str())).or_default() += 1;
            *size.entry(w.pool_id.to_string()).or_default() += i64::from(w.state.is_live());
            *unhealthy.entry(w.pool_id.to_string()).or_default() += i64::from(w.state.is_live() && w.health == hodei_core::worker::Health::Unhealthy);
        }
        for (pool, n) in unhealthy {
            metrics::gauge!("hodei_workers_unhealthy", "pool" => pool).set(n as f64);
        }
        for key in self.worker_series.drain() {
            by_state.entry(key).or_default();
        }
        for ((pool, state), n) in &by_state {
            metrics::gauge!("hodei_workers", "pool" => pool.clone(), "state" => *state).set(*n as f64);
            self.worker_series.insert((pool.clone(), state));
        }
        for (pool, n) in size {
            metrics::gauge!("hodei_pool_size", "pool" => pool).set(n as f64);
        }
    }

    /// Oldest queue wait per tenant and jobs running past their timeout per pool, from the
    /// jobs given (the engine passes pending and running ones only, not every live job).
    pub fn scan<'a>(&mut self, jobs: impl Iterator<Item = &'a Job>, now: Timestamp) {
        let mut oldest: HashMap<&TenantId, f64> = HashMap::new();
        let mut overdue: HashMap<Option<&hodei_core::PoolId>, f64> = HashMap::new();
        for j in jobs {
            match j.state {
                JobState::Pending => {
                    let w = oldest.entry(&j.tenant).or_default();
                    *w = w.max(now.since(j.eligible_at).as_secs_f64());
                }
                JobState::Running if j.started_at.is_some_and(|s| s.saturating_add(j.spec.timeout) < now) => {
                    *overdue.entry(j.pool_id.as_ref()).or_default() += 1.0;
                }
                _ => {}
            }
        }
        // Series seen before and absent now go to zero.
        let mut waits: HashMap<String, f64> = self.scanned_tenants.drain().map(|t| (t, 0.0)).collect();
        waits.extend(oldest.into_iter().map(|(t, w)| (t.to_string(), w)));
        let mut late: HashMap<String, f64> = self.scanned_pools.drain().map(|p| (p, 0.0)).collect();
        late.extend(overdue.into_iter().map(|(p, n)| (p.map(|p| p.to_string()).unwrap_or_default(), n)));
        for (tenant, secs) in waits {
            metrics::gauge!("hodei_queue_oldest_wait_seconds", "tenant" => tenant.clone()).set(secs);
            self.scanned_tenants.insert(tenant);
        }
        for (pool, n) in late {
            metrics::gauge!("hodei_jobs_overdue", "pool" => pool.clone()).set(n);
            self.scanned_pools.insert(pool);
        }
    }

    /// Waiting jobs per tenant, SLA level and status (`hodei_sla_jobs`).
    pub fn sla(&mut self, waiting: &BTreeMap<(TenantId, SlaLevel, SlaStatus), u32>) {
        let mut now: HashMap<(String, &'static str, &'static str), u32> = self.sla_series.drain().map(|k| (k, 0)).collect();
        for ((t, level, status), n) in waiting {
            now.insert((t.to_string(), level.as_str(), status.as_str()), *n);
        }
        for ((tenant, level, status), n) in now {
            metrics::gauge!("hodei_sla_jobs", "tenant" => tenant.clone(), "level" => level, "status" => status).set(f64::from(n));
            self.sla_series.insert((tenant, level, status));
        }
    }

    /// Per tenant: usage, weight, fair and actual share, quota utilization, burst (SPEC §7.1).
    pub fn tenants(&mut self, sched: &Scheduler, now: Timestamp) {
        let shares: HashMap<TenantId, (f64, f64)> = sched.shares().into_iter().map(|(t, fair, actual)| (t, (fair, actual))).collect();
        for t in sched.tenant_ids() {
            let (p, u) = (sched.policy(t), sched.usage(t));
            let name = t.to_string();
            let (fair, actual) = shares.get(t).copied().unwrap_or_default();
            let used = [u.active.cpu_m, u.active.memory_mb, u.active.gpu];
            let quota = [p.quota.resources.cpu_m.get(), p.quota.resources.memory_mb.get(), p.quota.resources.gpu.get()].map(u64::from);
            metrics::gauge!("hodei_tenant_cpu_m", "tenant" => name.clone()).set(used[0] as f64);
            metrics::gauge!("hodei_tenant_memory_mb", "tenant" => name.clone()).set(used[1] as f64);
            metrics::gauge!("hodei_tenant_gpu", "tenant" => name.clone()).set(used[2] as f64);
            metrics::gauge!("hodei_tenant_weight", "tenant" => name.clone()).set(f64::from(p.weight));
            metrics::gauge!("hodei_tenant_fair_share", "tenant" => name.clone()).set(fair);
            metrics::gauge!("hodei_tenant_actual_share", "tenant" => name.clone()).set(actual);
            let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
            for (i, resource) in ["cpu", "memory", "gpu"].into_iter().enumerate() {
                metrics::gauge!("hodei_tenant_quota_utilization", "tenant" => name.clone(), "resource" => resource).set(ratio(used[i], quota[i]));
            }
            metrics::gauge!("hodei_tenant_quota_utilization", "tenant" => name.clone(), "resource" => "jobs")
                .set(ratio(u.active_jobs.into(), p.quota.max_concurrent_jobs.into()));
            // How much of the grant is in use: usage above the quota over the grant, worst dimension.
            let grant = p.active_grant(now);
            let burst_use = grant.map_or(0.0, |g| {
                let extra = [g.resources.cpu_m.get(), g.resources.memory_mb.get(), g.resources.gpu.get(), g.concurrent_jobs].map(u64::from);
                let over = [
                    used[0].saturating_sub(quota[0]),
                    used[1].saturating_sub(quota[1]),
                    used[2].saturating_sub(quota[2]),
                    u64::from(u.active_jobs.saturating_sub(p.quota.max_concurrent_jobs)),
                ];
                (0..4).filter(|i| extra[*i] > 0).map(|i| ratio(over[i], extra[i])).fold(0.0, f64::max)
            });
            metrics::gauge!("hodei_tenant_burst_active", "tenant" => name.clone()).set(if grant.is_some() { 1.0 } else { 0.0 });
            metrics::gauge!("hodei_tenant_burst_utilization_ratio", "tenant" => name).set(burst_use);
        }
    }

    fn publish_all(&self) {
        for ((tenant, priority, state), n) in &self.queued {
            metrics::gauge!("hodei_jobs_queued", "tenant" => tenant.to_string(), "priority" => *priority, "state" => *state).set(*n as f64);
        }
        for ((tenant, pool), n) in &self.running {
            metrics::gauge!("hodei_jobs_running", "tenant" => tenant.clone(), "pool" => pool.clone()).set(*n as f64);
        }
    }
}

/// `hodei_sla_compliance_ratio{tenant, level}` over the compliance window (whole hours and the
/// current one so far, as `/sla`), from the store's hourly counts, every 30 s.
pub async fn sla_compliance(store: Arc<dyn Store>, clock: Arc<dyn Clock>, window_hours: u32, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut series: HashSet<(TenantId, SlaLevel)> = HashSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let counts = match store.sla_counts(window_start(clock.now(), window_hours), None).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read SLA counts");
                continue;
            }
        };
        let now = hodei_api::sla_compliance(&counts);
        // A series with nothing started in the window is fully compliant, not stale.
        for key in series.drain().collect::<Vec<_>>() {
            if !now.contains_key(&key) {
                metrics::gauge!("hodei_sla_compliance_ratio", "tenant" => key.0.to_string(), "level" => key.1.as_str()).set(1.0);
            }
        }
        for ((t, level), (started, met)) in now {
            metrics::gauge!("hodei_sla_compliance_ratio", "tenant" => t.to_string(), "level" => level.as_str()).set(met as f64 / started.max(1) as f64);
            series.insert((t, level));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hodei_core::job::Actor;
    use hodei_core::sched::{SchedConfig, Scheduler};
    use hodei_core::spec::{JobSpecInput, SpecLimits};
    use hodei_core::{TenantId, Timestamp};

    #[test]
    fn gauges_follow_transitions_without_drifting() {
        let mut s = Scheduler::new(SchedConfig::default());
        let mut g = Gauges::default();
        let spec = JobSpecInput { command: vec!["true".into()], ..Default::default() }.validate(&SpecLimits::default(), "").unwrap();
        let ids: Vec<JobId> = (1..=3u128).map(|n| JobId::from_uuid(uuid::Uuid::from_u128(n))).collect();
        for id in &ids {
            s.submit(Job::new(*id, TenantId::parse("a").unwrap(), spec.clone(), Timestamp::from_millis(0)), Timestamp::from_millis(0)).unwrap();
        }
        g.apply(&s.take_changes());
        let a = || TenantId::parse("a").unwrap();
        assert_eq!(g.queued[&(a(), "normal", "pending")], 3);
        s.hold(ids[0], Actor::Api, Timestamp::from_millis(1)).unwrap();
        s.cancel(ids[1], Actor::Api, Timestamp::from_millis(1)).unwrap();
        g.apply(&s.take_changes());
        assert_eq!(g.queued[&(a(), "normal", "pending")], 1);
        assert_eq!(g.queued[&(a(), "normal", "held")], 1);
    }
}
