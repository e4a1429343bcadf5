//! SLA tracking (SPEC §2.9): each waiting job's clock, the thresholds it crosses, and the
//! jobs that escalate (SPEC §2.5: `critical`/`breached` jobs go first, by deadline).
//!
//! Time a tenant sits at its own quota or concurrency limit does not count against its jobs:
//! one cumulative clock per tenant runs while the tenant is parked in the fair queue, and a
//! job remembers the clock's reading when it started waiting (O(1) per job). Threshold
//! crossings are found through an index of the next instant each waiting job could cross one,
//! a lower bound (excluded time only pushes it later), so no crossing is missed and each job
//! is looked at a few times in its life.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::ids::{IdMap, JobId, TenantId};
use crate::job::{Job, JobState, SlaLevel, SlaStatus};
use crate::sla_tally::SlaOutcome;
use crate::time::Timestamp;

/// `sla.*` of the configuration and `scheduler.sla_escalation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlaRules {
    /// Maximum queue wait per level, in [`SlaLevel::ALL`] order.
    pub max_wait: [Duration; 5],
    pub at_risk_pct: u32,
    pub critical_pct: u32,
    pub escalation: bool,
}

impl Default for SlaRules {
    fn default() -> Self {
        let m = |s: u64| Duration::from_secs(s);
        SlaRules { max_wait: [m(300), m(900), m(3600), m(14_400), m(86_400)], at_risk_pct: 70, critical_pct: 90, escalation: true }
    }
}

impl SlaRules {
    pub fn max_wait_ms(&self, level: SlaLevel) -> u64 {
        let i = SlaLevel::ALL.iter().position(|l| *l == level).unwrap_or(0);
        self.max_wait[i].as_millis() as u64
    }

    /// Status of a job that has waited `wait` of `max` (ms).
    pub fn status(&self, wait: u64, max: u64) -> SlaStatus {
        let pct = |p: u32| max * u64::from(p) / 100;
        if wait > max {
            SlaStatus::Breached
        } else if wait > pct(self.critical_pct) {
            SlaStatus::Critical
        } else if wait > pct(self.at_risk_pct) {
            SlaStatus::AtRisk
        } else {
            SlaStatus::OnTrack
        }
    }

    /// Wait (ms) past which the status moves beyond `status`; `None` once breached.
    fn next_threshold(&self, status: SlaStatus, max: u64) -> Option<u64> {
        let pct = |p: u32| max * u64::from(p) / 100;
        match status {
            SlaStatus::OnTrack => Some(pct(self.at_risk_pct)),
            SlaStatus::AtRisk => Some(pct(self.critical_pct)),
            SlaStatus::Critical => Some(max),
            SlaStatus::Breached | SlaStatus::Met => None,
        }
    }
}

/// The scheduler's SLA state.
#[derive(Clone, Debug, Default)]
pub(super) struct SlaBook {
    pub rules: SlaRules,
    /// Per tenant: ms spent at its own limit, and since when it is there now.
    limits: IdMap<TenantId, (u64, Option<Timestamp>)>,
    /// Next instant each waiting job may cross a threshold.
    due: BTreeSet<(Timestamp, JobId)>,
    /// Waiting jobs in `critical` or `breached`, by the instant they pass (passed) 100 %.
    pub escalated: BTreeSet<(Timestamp, JobId)>,
    /// Waiting jobs per (tenant, level, status).
    pub waiting: BTreeMap<(TenantId, SlaLevel, SlaStatus), u32>,
    /// Breaches found since the last `take_changes` (`hodei_sla_breaches_total`).
    pub breaches: Vec<(TenantId, SlaLevel)>,
    /// Outcomes decided since the last `take_changes` (the stored compliance counts).
    pub outcomes: Vec<SlaOutcome>,
}

fn counting(job: &Job) -> bool {
    matches!(job.state, JobState::Pending | JobState::Scheduled) && job.sla.wait_ms.is_none()
}

impl SlaBook {
    pub fn new(rules: SlaRules) -> SlaBook {
        SlaBook { rules, ..SlaBook::default() }
    }

    /// The tenant reached its own limit (parked in the fair queue).
    pub fn limit_reached(&mut self, t: &TenantId, now: Timestamp) {
        let e = self.limits.entry(t.clone()).or_default();
        e.1.get_or_insert(now);
    }

    /// The tenant may dispatch again.
    pub fn limit_left(&mut self, t: &TenantId, now: Timestamp) {
        if let Some(e) = self.limits.get_mut(t)
            && let Some(since) = e.1.take()
        {
            e.0 += now.since(since).as_millis() as u64;
        }
    }

    fn limit_clock(&self, t: &TenantId, now: Timestamp) -> u64 {
        self.limits.get(t).map_or(0, |(total, since)| total + since.map_or(0, |s| now.since(s).as_millis() as u64))
    }

    /// The job's queue wait at `now` (ms).
    pub fn wait_ms(&self, job: &Job, now: Timestamp) -> u64 {
        let c = &job.sla;
        if let Some(w) = c.wait_ms {
            return w;
        }
        let current = c.since.map_or(0, |s| {
            let excluded = self.limit_clock(&job.tenant, now).saturating_sub(c.mark);
            (now.since(s).as_millis() as u64).saturating_sub(excluded)
        });
        c.waited_ms + current
    }

    /// The projected instant the job reaches 100 % if it keeps waiting from `now`.
    pub fn deadline(&self, job: &Job, now: Timestamp) -> Timestamp {
        let max = self.rules.max_wait_ms(job.spec.sla);
        let left = max.saturating_sub(self.wait_ms(job, now));
        let behind = self.wait_ms(job, now).saturating_sub(max);
        Timestamp::from_millis(now.as_millis() + left as i64 - behind as i64)
    }

    fn count(&mut self, job: &Job, add: bool) {
        let key = (job.tenant.clone(), job.spec.sla, job.sla.status);
        match self.waiting.get_mut(&key) {
            Some(n) if add => *n += 1,
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.waiting.remove(&key);
            }
            None if add => {
                self.waiting.insert(key, 1);
            }
            None => {}
        }
    }

    /// Indexes a waiting job: counts it, finds its next threshold instant, escalates it.
    fn index(&mut self, job: &mut Job, now: Timestamp) {
        self.count(job, true);
        let max = self.rules.max_wait_ms(job.spec.sla);
        let wait = self.wait_ms(job, now);
        job.sla.due = self.rules.next_threshold(job.sla.status, max).map(|th| now.saturating_add(Duration::from_millis(th.saturating_sub(wait) + 1)));
        if let Some(at) = job.sla.due {
            self.due.insert((at, job.id));
        }
        if self.rules.escalation && matches!(job.sla.status, SlaStatus::Critical | SlaStatus::Breached) {
            let key = self.deadline(job, now);
            job.sla.escalated = Some(key);
            self.escalated.insert((key, job.id));
        }
    }

    fn unindex(&mut self, job: &mut Job) {
        self.count(job, false);
        if let Some(at) = job.sla.due.take() {
            self.due.remove(&(at, job.id));
        }
        if let Some(key) = job.sla.escalated.take() {
            self.escalated.remove(&(key, job.id));
        }
    }

    /// A job entered the scheduler (submitted or restored).
    pub fn enter(&mut self, job: &mut Job, now: Timestamp) {
        if counting(job) {
            job.sla.since.get_or_insert(now);
            job.sla.mark = self.limit_clock(&job.tenant, now);
            self.index(job, now);
        }
    }

    /// Around a state change: call before with the old state, after with the new one.
    pub fn before_move(&mut self, job: &mut Job, to: JobState, now: Timestamp) {
        if !counting(job) {
            return;
        }
        let stays = matches!(to, JobState::Pending | JobState::Scheduled);
        if stays {
            return;
        }
        self.unindex(job);
        let wait = self.wait_ms(job, now);
        job.sla.waited_ms = wait;
        job.sla.since = None;
        if to == JobState::Running {
            let max = self.rules.max_wait_ms(job.spec.sla);
            job.sla.wait_ms = Some(wait);
            job.sla.decided_at = Some(now);
            self.outcomes.push(SlaOutcome { tenant: job.tenant.clone(), level: job.spec.sla, met: wait <= max, wait_ms: wait, at: now });
            if wait > max {
                if job.sla.breached_at.is_none() {
                    job.sla.breached_at = Some(Timestamp::from_millis(now.as_millis() - (wait - max) as i64));
                    self.breaches.push((job.tenant.clone(), job.spec.sla));
                }
                job.sla.status = SlaStatus::Breached;
            } else {
                job.sla.status = SlaStatus::Met;
            }
        }
    }

    pub fn after_move(&mut self, job: &mut Job, from: JobState, now: Timestamp) {
        let was = matches!(from, JobState::Pending | JobState::Scheduled);
        if counting(job) && !was {
            job.sla.since = Some(now);
            job.sla.mark = self.limit_clock(&job.tenant, now);
            self.index(job, now);
        }
    }

    /// Jobs whose next threshold instant passed, to re-evaluate.
    pub fn due(&mut self, now: Timestamp) -> Vec<JobId> {
        let mut out = vec![];
        while let Some(&(at, id)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            out.push(id);
        }
        out
    }

    /// Re-evaluates a waiting job whose threshold instant passed; true when its status changed.
    pub fn reevaluate(&mut self, job: &mut Job, now: Timestamp) -> bool {
        if !counting(job) {
            return false;
        }
        job.sla.due = None;
        self.unindex(job);
        let max = self.rules.max_wait_ms(job.spec.sla);
        let wait = self.wait_ms(job, now);
        let status = self.rules.status(wait, max);
        let changed = status != job.sla.status;
        if changed {
            job.sla.status = status;
            if status == SlaStatus::Breached && job.sla.breached_at.is_none() {
                job.sla.breached_at = Some(Timestamp::from_millis(now.as_millis() - (wait - max) as i64));
                self.breaches.push((job.tenant.clone(), job.spec.sla));
            }
        }
        self.index(job, now);
        changed
    }

    pub fn next_due(&self) -> Option<Timestamp> {
        self.due.first().map(|(at, _)| *at)
    }
}
