//! Dependencies between jobs (SPEC §2.2 `depends_on`, §3.1): a job with dependencies is held
//! `dependency_pending` until every one is met — `after_ok` when its job succeeded,
//! `after_any` when it ended, `after_not_ok` when it ended otherwise — and then queued; once
//! one can never be met it is cancelled (`dependency_failed`, or `skipped` for an
//! `after_not_ok` whose job succeeded), which may in turn decide its own dependants.
//!
//! The scheduler holds live jobs only, so it keeps the outcome of the jobs that ended most
//! recently (a bounded window); a submit or a restart gives it the stored outcome of older
//! ones ([`Scheduler::note_ended`]). What each waiting job has learnt is not stored: it is
//! worked out again at start-up from the stored jobs.

use std::collections::{HashMap, VecDeque};

use super::{Actor, JobId, JobState, Scheduler, Timestamp, key_of, move_job};
use crate::job::Condition;
use crate::spec::Dependency;

/// How many ended jobs' outcomes are kept for dependencies submitted after they ended.
const RECENT_ENDS: usize = 65_536;

/// What is known of one dependency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepState {
    Waiting,
    /// Ended, in this state (`None`: ended, outcome unknown — left the window).
    Ended(Option<JobState>),
}

/// Whether a job's dependencies let it run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Wait,
    Run,
    /// Can never be met: cancel the job with this reason.
    Never(&'static str),
}

/// The verdict on `deps` given what is known of each (`states[i]` of `deps[i]`). One
/// dependency that can never be met decides, even while others wait.
pub fn verdict(deps: &[Dependency], states: &[DepState]) -> Verdict {
    let mut waiting = false;
    for (d, s) in deps.iter().zip(states) {
        match (d.condition, s) {
            (_, DepState::Waiting) => waiting = true,
            (Condition::AfterAny, DepState::Ended(_)) => {}
            (Condition::AfterOk, DepState::Ended(Some(JobState::Succeeded))) => {}
            (Condition::AfterOk, DepState::Ended(Some(_))) => return Verdict::Never("dependency_failed"),
            (Condition::AfterNotOk, DepState::Ended(Some(JobState::Succeeded))) => return Verdict::Never("skipped"),
            (Condition::AfterNotOk, DepState::Ended(Some(_))) => {}
            (_, DepState::Ended(None)) => return Verdict::Never("dependency_unknown"),
        }
    }
    if waiting { Verdict::Wait } else { Verdict::Run }
}

#[derive(Clone, Debug, Default)]
pub(super) struct Deps {
    /// The jobs waiting on each job.
    dependants: HashMap<JobId, Vec<JobId>>,
    /// For each waiting job, what is known of its dependencies (aligned with its spec's).
    awaiting: HashMap<JobId, Vec<DepState>>,
    /// Outcomes of the jobs that ended most recently, oldest first in `order`.
    ended: HashMap<JobId, JobState>,
    order: VecDeque<JobId>,
}

impl Deps {
    fn remember(&mut self, id: JobId, state: JobState) {
        if self.ended.insert(id, state).is_none() {
            self.order.push_back(id);
            if self.order.len() > RECENT_ENDS
                && let Some(old) = self.order.pop_front()
            {
                self.ended.remove(&old);
            }
        }
    }
}

impl Scheduler {
    /// Outcomes of ended jobs (read from the store) that jobs about to be submitted or
    /// restored depend on.
    pub fn note_ended(&mut self, outcomes: &[(JobId, JobState)]) {
        for &(id, state) in outcomes {
            self.deps.remember(id, state);
        }
    }

    /// The jobs that restored jobs wait on and that are not live: their outcome is in the store
    /// (give it with [`Scheduler::note_ended`], then call [`Scheduler::resume_dependencies`]).
    pub fn dependencies_to_look_up(&self) -> Vec<JobId> {
        let mut ids: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| waits_for_dependencies(j))
            .flat_map(|j| j.spec.depends_on.iter().map(|d| d.job))
            .filter(|id| !self.jobs.contains_key(id) && !self.deps.ended.contains_key(id))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// After a restart: every restored job held for its dependencies waits for them again (or
    /// is queued or cancelled at once if they were decided while the server was away).
    pub fn resume_dependencies(&mut self, now: Timestamp) {
        let waiting: Vec<JobId> = self.jobs.values().filter(|j| waits_for_dependencies(j)).map(|j| j.id).collect();
        for id in waiting {
            self.watch_dependencies(id, now);
        }
    }

    /// What is known of `dep` now: live (waiting, unless it has just ended), recently ended,
    /// or ended with its outcome out of the window.
    fn dep_state(&self, dep: JobId) -> DepState {
        match self.jobs.get(&dep) {
            Some(j) if j.is_terminal() => DepState::Ended(Some(j.state)),
            Some(_) => DepState::Waiting,
            None => DepState::Ended(self.deps.ended.get(&dep).copied()),
        }
    }

    /// A job just submitted (or restored) held `dependency_pending`: registers it with the jobs
    /// it waits on, or queues or cancels it if they are already decided.
    pub(super) fn watch_dependencies(&mut self, id: JobId, now: Timestamp) {
        let Some(job) = self.jobs.get(&id) else { return };
        let deps = job.spec.depends_on.clone();
        let states: Vec<DepState> = deps.iter().map(|d| self.dep_state(d.job)).collect();
        match verdict(&deps, &states) {
            Verdict::Wait => {
                for (d, s) in deps.iter().zip(&states) {
                    if *s == DepState::Waiting {
                        let list = self.deps.dependants.entry(d.job).or_default();
                        if !list.contains(&id) {
                            list.push(id);
                        }
                    }
                }
                self.deps.awaiting.insert(id, states);
            }
            v => self.decide(id, v, now),
        }
    }

    /// Queues (`Run`) or cancels (`Never`) a job held for its dependencies (`Wait` changes
    /// nothing).
    fn decide(&mut self, id: JobId, v: Verdict, now: Timestamp) {
        if v == Verdict::Wait {
            return;
        }
        self.deps.awaiting.remove(&id);
        let Some(job) = self.jobs.get_mut(&id) else { return };
        match v {
            Verdict::Wait => {}
            Verdict::Run => {
                move_job(job, JobState::Pending, Actor::Scheduler, Some("dependencies_met"), now, &mut self.books);
                self.queue.push(&job.tenant, key_of(job), now);
                let tenant = job.tenant.clone();
                self.unpark(&tenant, now);
                self.touch(id);
                // Still held by its tenant's state (suspension, a spent budget) if that holds.
                self.reconsider_hold(id, now);
            }
            Verdict::Never(reason) => {
                move_job(job, JobState::Cancelled, Actor::Scheduler, Some(reason), now, &mut self.books);
                job.finished_at = Some(now);
                self.touch(id);
            }
        }
    }

    /// Jobs that ended since the last call (terminal and touched): remembers their outcome and
    /// decides the jobs waiting on them, and on those, until nothing more changes.
    pub(super) fn settle_dependencies(&mut self) {
        let mut ended: VecDeque<(JobId, JobState, Timestamp)> = self
            .dirty_jobs
            .iter()
            .filter_map(|id| self.jobs.get(id))
            .filter(|j| j.is_terminal())
            .map(|j| (j.id, j.state, j.finished_at.unwrap_or(j.submitted_at)))
            .collect();
        while let Some((id, state, at)) = ended.pop_front() {
            self.deps.remember(id, state);
            self.deps.awaiting.remove(&id);
            let Some(waiters) = self.deps.dependants.remove(&id) else { continue };
            for w in waiters {
                let Some(job) = self.jobs.get(&w).filter(|j| waits_for_dependencies(j)) else { continue };
                let deps = job.spec.depends_on.clone();
                let Some(states) = self.deps.awaiting.get_mut(&w) else { continue };
                for (d, s) in deps.iter().zip(states.iter_mut()) {
                    if d.job == id {
                        *s = DepState::Ended(Some(state));
                    }
                }
                match verdict(&deps, states) {
                    Verdict::Wait => {}
                    v @ Verdict::Run => self.decide(w, v, at),
                    v @ Verdict::Never(_) => {
                        self.decide(w, v, at);
                        ended.push_back((w, JobState::Cancelled, at));
                    }
                }
            }
        }
    }

    /// What a job held for its dependencies still waits for: (job, condition) of each one not
    /// decided yet.
    pub fn pending_dependencies(&self, id: JobId) -> Vec<Dependency> {
        let Some(job) = self.jobs.get(&id) else { return Vec::new() };
        match self.deps.awaiting.get(&id) {
            Some(states) => job.spec.depends_on.iter().zip(states).filter(|(_, s)| **s == DepState::Waiting).map(|(d, _)| *d).collect(),
            None => Vec::new(),
        }
    }
}

/// Held, and for its dependencies.
fn waits_for_dependencies(j: &crate::job::Job) -> bool {
    j.state == JobState::Held && j.state_reason.as_deref() == Some("dependency_pending")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(condition: Condition) -> Dependency {
        Dependency { job: JobId::from_uuid(uuid::Uuid::from_u128(1)), condition }
    }

    #[test]
    fn each_condition_decides_as_slurm_does() {
        use Condition::*;
        use DepState::*;
        let ended = |s| Ended(Some(s));
        let cases = [
            (AfterOk, ended(JobState::Succeeded), Verdict::Run),
            (AfterOk, ended(JobState::Failed), Verdict::Never("dependency_failed")),
            (AfterOk, ended(JobState::Cancelled), Verdict::Never("dependency_failed")),
            (AfterAny, ended(JobState::TimedOut), Verdict::Run),
            (AfterAny, Ended(None), Verdict::Run),
            (AfterNotOk, ended(JobState::Failed), Verdict::Run),
            (AfterNotOk, ended(JobState::Succeeded), Verdict::Never("skipped")),
            (AfterOk, Ended(None), Verdict::Never("dependency_unknown")),
            (AfterOk, Waiting, Verdict::Wait),
        ];
        for (c, s, want) in cases {
            assert_eq!(verdict(&[dep(c)], &[s]), want, "{c} {s:?}");
        }
        // One that can never be met decides while another still waits.
        assert_eq!(verdict(&[dep(AfterOk), dep(AfterOk)], &[Waiting, ended(JobState::Failed)]), Verdict::Never("dependency_failed"));
        assert_eq!(verdict(&[dep(AfterOk), dep(AfterAny)], &[ended(JobState::Succeeded), Waiting]), Verdict::Wait);
        assert_eq!(verdict(&[], &[]), Verdict::Run);
    }
}
