//! Jobs and attempts: records and the state machines of SPEC §3.

use std::sync::Arc;

use crate::ids::{ArrayId, AttemptId, JobId, PoolId, PrincipalId, TenantId, WorkerId};
use crate::spec::JobSpec;
use crate::time::Timestamp;
use crate::units::Resources;

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vattr:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vattr])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }

            /// The accepted spellings, for error messages.
            pub fn expected() -> String {
                [$($s),+].join("|")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $($s => Ok($name::$variant),)+ _ => Err(()) }
            }
        }
    };
}
pub(crate) use string_enum;

string_enum!(
    /// What a dependency waits for (SPEC §2.2).
    Condition { AfterOk = "after_ok", AfterAny = "after_any", AfterNotOk = "after_not_ok" }
);

string_enum!(
    /// Dispatch class within a tenant; declared from most to least urgent.
    Priority { Critical = "critical", High = "high", Normal = "normal", Low = "low", Batch = "batch" }
);

string_enum!(
    /// SLA level: bounds the queue wait.
    SlaLevel { Critical = "critical", High = "high", Medium = "medium", Low = "low", BestEffort = "best_effort" }
);

string_enum!(
    /// Where a job stands against its SLA level's maximum queue wait (SPEC §2.9): while
    /// waiting `on_track`, `at_risk` (> 70 %), `critical` (> 90 %), `breached` (> 100 %);
    /// once its first attempt runs, `met` or `breached`.
    #[derive(Default)]
    SlaStatus { #[default] OnTrack = "on_track", AtRisk = "at_risk", Critical = "critical", Breached = "breached", Met = "met" }
);

/// A job's SLA clock. Queue wait counts while the job is `pending` or `scheduled` before its
/// first attempt runs, minus time the tenant sat at its own quota or concurrency limit;
/// holds pause it and retries do not restart it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlaClock {
    /// Wait counted before the current interval (ms).
    pub waited_ms: u64,
    /// Start of the interval being counted now; `None` while not counting.
    pub since: Option<Timestamp>,
    /// The tenant's limit clock at `since` (see the scheduler); not stored.
    pub mark: u64,
    pub status: SlaStatus,
    /// When the wait passed 100 %.
    pub breached_at: Option<Timestamp>,
    /// The final wait, when the first attempt started (`decided_at`).
    pub wait_ms: Option<u64>,
    pub decided_at: Option<Timestamp>,
    /// Next threshold instant the scheduler will look at (in its index); not stored.
    pub due: Option<Timestamp>,
    /// Its key in the scheduler's escalation order while it is there; not stored.
    pub escalated: Option<Timestamp>,
}

impl Priority {
    /// The SLA level a job gets when it names none (SPEC §2.7).
    pub fn default_sla(self) -> SlaLevel {
        match self {
            Priority::Critical => SlaLevel::Critical,
            Priority::High => SlaLevel::High,
            Priority::Normal => SlaLevel::Medium,
            Priority::Low => SlaLevel::Low,
            Priority::Batch => SlaLevel::BestEffort,
        }
    }

    /// Low and batch jobs are preemptible unless they say otherwise.
    pub fn default_preemptible(self) -> bool {
        matches!(self, Priority::Low | Priority::Batch)
    }
}

impl SlaLevel {
    /// Default maximum queue wait (SPEC §2.9).
    pub fn default_max_wait_ms(self) -> i64 {
        match self {
            SlaLevel::Critical => 5 * 60_000,
            SlaLevel::High => 15 * 60_000,
            SlaLevel::Medium => 60 * 60_000,
            SlaLevel::Low => 4 * 60 * 60_000,
            SlaLevel::BestEffort => 24 * 60 * 60_000,
        }
    }
}

string_enum!(
    /// Job state (SPEC §3.1).
    JobState {
        Pending = "pending",
        Held = "held",
        Scheduled = "scheduled",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
        TimedOut = "timed_out",
    }
);

impl JobState {
    /// Every move the state machine allows (SPEC §3.1, plus `scheduled → failed` when a job that
    /// never started used up its lost-worker requeues). Anything else is a bug or a 409.
    pub fn can_become(self, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, to),
            (Pending, Held | Scheduled | Cancelled)
                | (Held, Pending | Cancelled)
                | (Scheduled, Running | Pending | Cancelled | Failed)
                | (Running, Succeeded | Failed | TimedOut | Cancelled | Pending)
                | (Failed | Cancelled | TimedOut, Pending)
        )
    }

    /// States a job can leave only by a manual retry (or an automatic one for `failed` with retries left).
    pub fn is_final_like(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::TimedOut)
    }

    /// Holding a worker slot.
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Scheduled | JobState::Running)
    }
}

string_enum!(
    /// Attempt state (SPEC §3.2).
    AttemptState {
        Assigned = "assigned",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        TimedOut = "timed_out",
        Cancelled = "cancelled",
        Preempted = "preempted",
        Rejected = "rejected",
        Lost = "lost",
    }
);

impl AttemptState {
    /// `assigned → running → succeeded|failed|timed_out|cancelled|preempted`, `assigned → rejected|lost`,
    /// `running → lost`. A scheduled job cancelled before its worker accepted also ends `assigned → cancelled`.
    pub fn can_become(self, to: AttemptState) -> bool {
        use AttemptState::*;
        matches!((self, to), (Assigned, Running | Rejected | Lost | Cancelled) | (Running, Succeeded | Failed | TimedOut | Cancelled | Preempted | Lost))
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, AttemptState::Assigned | AttemptState::Running)
    }
}

string_enum!(
    /// Why an attempt did not succeed (SPEC §2.8).
    FailureReason {
        NonzeroExit = "nonzero_exit",
        Oom = "oom",
        SpawnError = "spawn_error",
        ImageError = "image_error",
        WorkerLost = "worker_lost",
        AckTimeout = "ack_timeout",
        Rejected = "rejected",
        Timeout = "timeout",
        Cancelled = "cancelled",
        Preempted = "preempted",
    }
);

/// Who caused a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// A request with no principal known (jobs stored before principals existed).
    Api,
    Scheduler,
    Worker,
    /// The principal whose request it was: a submit, cancel, retry, hold or release.
    Principal(PrincipalId),
}

impl Actor {
    /// `api`, `scheduler`, `worker` or `principal:<id>`, as stored and shown.
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        match self {
            Actor::Api => "api".into(),
            Actor::Scheduler => "scheduler".into(),
            Actor::Worker => "worker".into(),
            Actor::Principal(p) => format!("principal:{p}").into(),
        }
    }

    /// The inverse of [`Actor::name`]; anything else is the scheduler's.
    pub fn parse(s: &str) -> Actor {
        match s {
            "api" => Actor::Api,
            "worker" => Actor::Worker,
            _ => match s.strip_prefix("principal:").and_then(|p| p.parse().ok()) {
                Some(p) => Actor::Principal(p),
                None => Actor::Scheduler,
            },
        }
    }

    /// The submitter of a job, else `api`.
    pub fn of_submitter(by: Option<PrincipalId>) -> Actor {
        by.map_or(Actor::Api, Actor::Principal)
    }
}

/// A job: its validated spec plus runtime fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub tenant: TenantId,
    /// Immutable once submitted; shared with the snapshots the scheduler hands to the store.
    pub spec: Arc<JobSpec>,
    pub state: JobState,
    pub state_reason: Option<String>,
    pub attempt_count: u32,
    pub current_attempt: Option<AttemptId>,
    pub retries_left: u32,
    /// Times the job went back to pending because its worker was lost or never answered.
    pub lost_requeues: u32,
    pub exit_code: Option<i32>,
    pub failure_reason: Option<FailureReason>,
    pub submitted_at: Timestamp,
    pub eligible_at: Timestamp,
    pub scheduled_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub next_retry_at: Option<Timestamp>,
    pub cancel_requested_at: Option<Timestamp>,
    pub pool_id: Option<PoolId>,
    pub worker_id: Option<WorkerId>,
    pub log_truncated: bool,
    /// Admission warnings (`quota_exceeded` under `violation_policy: warn`).
    pub warnings: Vec<String>,
    pub sla: SlaClock,
    /// The array job this job belongs to, and its index in it.
    pub array: Option<(ArrayId, u32)>,
}

impl Job {
    /// A freshly submitted job: `pending`, or `held` when the spec asks for it.
    pub fn new(id: JobId, tenant: TenantId, spec: impl Into<Arc<JobSpec>>, now: Timestamp) -> Job {
        let spec = spec.into();
        let (state, reason) = if spec.hold { (JobState::Held, Some("user_hold".to_owned())) } else { (JobState::Pending, None) };
        Job {
            id,
            tenant,
            retries_left: spec.max_retries,
            spec,
            state,
            state_reason: reason,
            attempt_count: 0,
            current_attempt: None,
            lost_requeues: 0,
            exit_code: None,
            failure_reason: None,
            submitted_at: now,
            eligible_at: now,
            scheduled_at: None,
            started_at: None,
            finished_at: None,
            next_retry_at: None,
            cancel_requested_at: None,
            pool_id: None,
            worker_id: None,
            log_truncated: false,
            warnings: Vec::new(),
            sla: SlaClock::default(),
            array: None,
        }
    }

    /// True when the job will not move again without a manual retry.
    pub fn is_terminal(&self) -> bool {
        match self.state {
            JobState::Failed => self.next_retry_at.is_none(),
            s => s.is_final_like(),
        }
    }

    /// Queue wait: submit (or last eligibility) until the first attempt started.
    pub fn queue_wait_ms(&self) -> Option<i64> {
        self.started_at.map(|s| s.as_millis().saturating_sub(self.eligible_at.as_millis()).max(0))
    }

    pub fn run_time_ms(&self) -> Option<i64> {
        match (self.started_at, self.finished_at) {
            (Some(s), Some(f)) => Some(f.as_millis().saturating_sub(s.as_millis()).max(0)),
            _ => None,
        }
    }

    pub fn resources(&self) -> Resources {
        self.spec.resources
    }
}

/// One execution of a job on one worker.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub id: AttemptId,
    pub job_id: JobId,
    pub number: u32,
    pub worker_id: WorkerId,
    pub pool_id: PoolId,
    pub resources: Resources,
    pub state: AttemptState,
    pub assigned_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub failure_reason: Option<FailureReason>,
    pub cpu_time_ms: u64,
    pub max_rss_mb: u64,
    pub log_bytes: u64,
    pub log_truncated: bool,
    /// Billed so far (SPEC §2.12): its begun seconds from `started_at` and what they cost —
    /// accrued while it runs, completed when it ends.
    pub billed_seconds: u64,
    pub cost_micros: i64,
    /// Up to when it has been billed while running.
    pub accrued_to: Option<Timestamp>,
}

/// One stored transition of a job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobEvent {
    pub job_id: JobId,
    pub at: Timestamp,
    pub from: Option<JobState>,
    pub to: JobState,
    pub actor: Actor,
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn succeeded_is_a_dead_end() {
        for &to in JobState::ALL {
            assert!(!JobState::Succeeded.can_become(to), "succeeded → {to}");
        }
    }

    #[test]
    fn only_manual_or_automatic_retry_leaves_an_end_state() {
        for from in [JobState::Failed, JobState::Cancelled, JobState::TimedOut] {
            let exits: Vec<_> = JobState::ALL.iter().filter(|&&to| from.can_become(to)).collect();
            assert_eq!(exits, [&JobState::Pending], "{from}");
        }
    }

    #[test]
    fn a_job_is_never_scheduled_from_held_directly() {
        assert!(!JobState::Held.can_become(JobState::Scheduled));
        assert!(!JobState::Pending.can_become(JobState::Running));
    }

    #[test]
    fn terminal_attempts_have_no_exits() {
        for &from in AttemptState::ALL.iter().filter(|s| s.is_terminal()) {
            for &to in AttemptState::ALL {
                assert!(!from.can_become(to), "{from} → {to}");
            }
        }
    }

    #[test]
    fn state_names_round_trip() {
        for &s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(s));
        }
        assert_eq!(Priority::expected(), "critical|high|normal|low|batch");
    }
}
