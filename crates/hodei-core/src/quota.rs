//! Tenant quotas, burst grants and admission (SPEC §2.1, §2.2, §2.4).
//!
//! **Usage** is what a tenant's `scheduled` + `running` jobs requested; the **ceiling** is the
//! quota plus an active burst grant. Admission (at submit) and dispatch (at assignment) are
//! pure functions of the tenant's policy and usage; the scheduler calls them in the same step
//! that changes the usage, so no check can race with another (never over by one job).

use crate::ids::BurstId;
use crate::job::string_enum;
use crate::time::Timestamp;
use crate::units::{CpuMillis, Gpus, MemoryMb, Resources, Totals};

/// A tenant's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub resources: Resources,
    pub max_concurrent_jobs: u32,
    pub max_queued_jobs: u32,
}

impl Quota {
    /// SPEC §2.1 defaults (`multi_tenancy.default_tenant_quota`).
    pub const DEFAULT: Quota = Quota { resources: Resources::new(4000, 8192, 0), max_concurrent_jobs: 10, max_queued_jobs: 1000 };
}

/// What an active burst session adds to the quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub resources: Resources,
    pub concurrent_jobs: u32,
    pub expires_at: Timestamp,
    /// The burst session granting it.
    pub session: BurstId,
}

string_enum!(
    /// What happens to a job that fits the ceiling but not the headroom now.
    ViolationPolicy { Reject = "reject", Queue = "queue", Warn = "warn" }
);

/// Installation-wide quota rules (`multi_tenancy.quota_enforcement`, `burst_capacity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaRules {
    /// `multi_tenancy.enabled`: false turns quotas off.
    pub enabled: bool,
    /// A job alone over the ceiling is rejected (else held until quota or burst fits it).
    pub strict: bool,
    pub violation: ViolationPolicy,
    /// `burst_capacity.max_overage_percentage`: also how far `warn` may run over quota.
    pub max_overage_pct: u32,
}

impl Default for QuotaRules {
    fn default() -> Self {
        QuotaRules { enabled: true, strict: true, violation: ViolationPolicy::Queue, max_overage_pct: 150 }
    }
}

/// What the scheduler knows of a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantPolicy {
    /// Fair-share weight (effective weight × budget factor), ≥ 1.
    pub weight: u32,
    pub quota: Quota,
    pub suspended: bool,
    pub grant: Option<Grant>,
    /// The stored tenant's version, so an older copy never overwrites a newer one.
    pub version: i64,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        TenantPolicy { weight: 2, quota: Quota::DEFAULT, suspended: false, grant: None, version: 0 }
    }
}

impl TenantPolicy {
    /// The grant, if it is still running at `now`.
    pub fn active_grant(&self, now: Timestamp) -> Option<&Grant> {
        self.grant.as_ref().filter(|g| g.expires_at > now)
    }

    /// Quota + active grant.
    pub fn ceiling(&self, now: Timestamp) -> Limits {
        let q = Limits::of(&self.quota);
        match self.active_grant(now) {
            Some(g) => Limits {
                resources: q.resources.checked_add(&g.resources).unwrap_or(q.resources),
                concurrent_jobs: q.concurrent_jobs.saturating_add(g.concurrent_jobs),
            },
            None => q,
        }
    }

    /// The most `warn` lets a tenant run: quota × max_overage_pct / 100, never below the ceiling.
    fn warn_limit(&self, rules: &QuotaRules, now: Timestamp) -> Limits {
        let scale = |v: u32| (u64::from(v) * u64::from(rules.max_overage_pct) / 100).min(u64::from(u32::MAX)) as u32;
        let c = self.ceiling(now);
        let q = &self.quota;
        Limits {
            resources: Resources {
                cpu_m: CpuMillis(scale(q.resources.cpu_m.0).max(c.resources.cpu_m.0)),
                memory_mb: MemoryMb(scale(q.resources.memory_mb.0).max(c.resources.memory_mb.0)),
                gpu: Gpus(scale(q.resources.gpu.0).max(c.resources.gpu.0)),
            },
            concurrent_jobs: scale(q.max_concurrent_jobs).max(c.concurrent_jobs),
        }
    }
}

/// Resource and concurrency limits (a quota or a ceiling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub resources: Resources,
    pub concurrent_jobs: u32,
}

impl Limits {
    pub fn of(q: &Quota) -> Limits {
        Limits { resources: q.resources, concurrent_jobs: q.max_concurrent_jobs }
    }
}

/// A tenant's current usage (SPEC §2.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Requested by `scheduled` + `running` jobs.
    pub active: Totals,
    pub active_jobs: u32,
    /// Requested by `pending` jobs.
    pub pending: Totals,
    pub pending_jobs: u32,
    /// `pending` + `held`.
    pub queued_jobs: u32,
}

string_enum!(
    /// The limit a job ran into.
    Limit {
        CpuM = "cpu_m",
        MemoryMb = "memory_mb",
        Gpu = "gpu",
        MaxConcurrentJobs = "max_concurrent_jobs",
        MaxQueuedJobs = "max_queued_jobs",
    }
);

impl Limit {
    /// The blocking-reason code of `explain` (SPEC §4.4).
    pub fn blocking_code(self) -> &'static str {
        match self {
            Limit::CpuM => "quota_cpu",
            Limit::MemoryMb => "quota_memory",
            Limit::Gpu => "quota_gpu",
            Limit::MaxConcurrentJobs => "max_concurrent_jobs",
            Limit::MaxQueuedJobs => "quota_exceeded",
        }
    }
}

/// Numbers behind a quota decision: the 429 body and `explain` carry them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Breach {
    pub limit: Limit,
    pub quota: u64,
    pub ceiling: u64,
    pub usage: u64,
    pub requested: u64,
}

impl std::fmt::Display for Breach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: usage {} + requested {} > ceiling {} (quota {})", self.limit, self.usage, self.requested, self.ceiling, self.quota)
    }
}

/// A submit refused by quota (429 `quota_exceeded`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{breach}")]
pub struct Rejection {
    pub breach: Breach,
    /// False when the job can never fit (alone over the ceiling, strict mode).
    pub retryable: bool,
}

/// Where an admitted job starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Pending,
    /// Pending, but over the headroom now; `warn` lets it run over quota.
    PendingWarned(Breach),
    /// Alone over the ceiling, non-strict: held (`quota_ceiling`) until quota or burst fits it.
    HeldCeiling(Breach),
    /// Its tenant has spent a budget: held (`budget_exhausted`) until it has not.
    HeldBudget,
}

/// First dimension where `used + req` exceeds `limit` (jobs: `used_jobs + 1 > limit`).
fn first_breach(quota: &Limits, limit: &Limits, used: &Totals, used_jobs: u32, req: &Resources) -> Option<Breach> {
    let dims = [
        (Limit::CpuM, quota.resources.cpu_m.0, limit.resources.cpu_m.0, used.cpu_m, req.cpu_m.0),
        (Limit::MemoryMb, quota.resources.memory_mb.0, limit.resources.memory_mb.0, used.memory_mb, req.memory_mb.0),
        (Limit::Gpu, quota.resources.gpu.0, limit.resources.gpu.0, used.gpu, req.gpu.0),
        (Limit::MaxConcurrentJobs, quota.concurrent_jobs, limit.concurrent_jobs, u64::from(used_jobs), 1),
    ];
    dims.into_iter().find(|&(_, _, lim, used, req)| used + u64::from(req) > u64::from(lim)).map(|(limit, quota, ceiling, usage, requested)| Breach {
        limit,
        quota: quota.into(),
        ceiling: ceiling.into(),
        usage,
        requested: requested.into(),
    })
}

/// Decides a submit (SPEC §2.4). `usage` is the tenant's before this job.
pub fn admit(p: &TenantPolicy, rules: &QuotaRules, usage: &Usage, req: &Resources, now: Timestamp) -> Result<Admission, Rejection> {
    if !rules.enabled {
        return Ok(Admission::Pending);
    }
    let q = &p.quota;
    if usage.queued_jobs >= q.max_queued_jobs {
        let n = u64::from(q.max_queued_jobs);
        let breach = Breach { limit: Limit::MaxQueuedJobs, quota: n, ceiling: n, usage: usage.queued_jobs.into(), requested: 1 };
        return Err(Rejection { breach, retryable: true });
    }
    let quota = Limits::of(q);
    let ceiling = p.ceiling(now);
    if let Some(b) = first_breach(&quota, &ceiling, &Totals::ZERO, 0, req) {
        return if rules.strict { Err(Rejection { breach: b, retryable: false }) } else { Ok(Admission::HeldCeiling(b)) };
    }
    let committed = usage.active.plus(&usage.pending);
    match first_breach(&quota, &ceiling, &committed, usage.active_jobs + usage.pending_jobs, req) {
        None => Ok(Admission::Pending),
        Some(b) => match rules.violation {
            ViolationPolicy::Reject => Err(Rejection { breach: b, retryable: true }),
            ViolationPolicy::Queue => Ok(Admission::Pending),
            ViolationPolicy::Warn => Ok(Admission::PendingWarned(b)),
        },
    }
}

/// Whether a job alone fits the tenant's ceiling now (a `quota_ceiling` hold can end).
pub fn fits_ceiling(p: &TenantPolicy, req: &Resources, now: Timestamp) -> bool {
    first_breach(&Limits::of(&p.quota), &p.ceiling(now), &Totals::ZERO, 0, req).is_none()
}

/// Whether a job of the tenant may be dispatched now: `usage + request ≤ ceiling` and a free
/// concurrency slot (`warn`: up to the overage limit). `Ok(Some(_))`: allowed, over quota (a
/// violation to count).
pub fn may_dispatch(p: &TenantPolicy, rules: &QuotaRules, usage: &Usage, req: &Resources, now: Timestamp) -> Result<Option<Breach>, Breach> {
    if !rules.enabled {
        return Ok(None);
    }
    let quota = Limits::of(&p.quota);
    let ceiling = p.ceiling(now);
    match first_breach(&quota, &ceiling, &usage.active, usage.active_jobs, req) {
        None => Ok(None),
        Some(b) if rules.violation == ViolationPolicy::Warn => match first_breach(&quota, &p.warn_limit(rules, now), &usage.active, usage.active_jobs, req) {
            None => Ok(Some(b)),
            Some(b) => Err(b),
        },
        Some(b) => Err(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(cpu: u32, jobs: u32, queued: u32) -> TenantPolicy {
        TenantPolicy {
            quota: Quota { resources: Resources::new(cpu, 1 << 20, 0), max_concurrent_jobs: jobs, max_queued_jobs: queued },
            ..TenantPolicy::default()
        }
    }

    const NOW: Timestamp = Timestamp::from_millis(1_000);

    #[test]
    fn a_job_alone_over_the_ceiling_is_rejected_in_strict_mode_and_held_otherwise() {
        let p = policy(1000, 10, 10);
        let req = Resources::new(2000, 1, 0);
        let strict = QuotaRules::default();
        let e = admit(&p, &strict, &Usage::default(), &req, NOW).unwrap_err();
        assert!(!e.retryable);
        assert_eq!((e.breach.limit, e.breach.ceiling, e.breach.requested), (Limit::CpuM, 1000, 2000));
        let soft = QuotaRules { strict: false, ..strict };
        assert!(matches!(admit(&p, &soft, &Usage::default(), &req, NOW), Ok(Admission::HeldCeiling(_))));
    }

    #[test]
    fn a_burst_grant_raises_the_ceiling_until_it_expires() {
        let mut p = policy(1000, 10, 10);
        p.grant = Some(Grant {
            resources: Resources::new(500, 0, 0),
            concurrent_jobs: 0,
            expires_at: Timestamp::from_millis(2_000),
            session: crate::BurstId::from_uuid(uuid::Uuid::nil()),
        });
        let req = Resources::new(1500, 1, 0);
        assert!(fits_ceiling(&p, &req, NOW));
        assert!(!fits_ceiling(&p, &req, Timestamp::from_millis(2_000)));
    }

    #[test]
    fn headroom_decides_by_violation_policy() {
        let p = policy(1000, 10, 10);
        let usage = Usage { active: Resources::new(800, 0, 0).into(), active_jobs: 1, ..Usage::default() };
        let req = Resources::new(400, 1, 0);
        let rules = |violation| QuotaRules { violation, ..QuotaRules::default() };
        assert!(admit(&p, &rules(ViolationPolicy::Reject), &usage, &req, NOW).unwrap_err().retryable);
        assert_eq!(admit(&p, &rules(ViolationPolicy::Queue), &usage, &req, NOW), Ok(Admission::Pending));
        assert!(matches!(admit(&p, &rules(ViolationPolicy::Warn), &usage, &req, NOW), Ok(Admission::PendingWarned(_))));
        // Dispatch: queue waits; warn may run over quota up to 150 %.
        assert!(may_dispatch(&p, &rules(ViolationPolicy::Queue), &usage, &req, NOW).is_err());
        assert!(matches!(may_dispatch(&p, &rules(ViolationPolicy::Warn), &usage, &req, NOW), Ok(Some(_))));
        let big = Usage { active: Resources::new(1400, 0, 0).into(), ..usage };
        assert!(may_dispatch(&p, &rules(ViolationPolicy::Warn), &big, &req, NOW).is_err());
    }

    #[test]
    fn queued_jobs_limit_is_a_retryable_rejection() {
        let p = policy(1000, 10, 2);
        let usage = Usage { queued_jobs: 2, ..Usage::default() };
        let e = admit(&p, &QuotaRules::default(), &usage, &Resources::new(1, 1, 0), NOW).unwrap_err();
        assert_eq!((e.breach.limit, e.retryable), (Limit::MaxQueuedJobs, true));
    }

    #[test]
    fn concurrency_is_checked_at_dispatch() {
        let p = policy(100_000, 2, 10);
        let usage = Usage { active_jobs: 2, active: Resources::new(2, 2, 0).into(), ..Usage::default() };
        let b = may_dispatch(&p, &QuotaRules::default(), &usage, &Resources::new(1, 1, 0), NOW).unwrap_err();
        assert_eq!(b.limit, Limit::MaxConcurrentJobs);
    }
}
