//! Pure, synchronous domain of Hodei Jobs.
//!
//! **Architecture Invariant:** nothing here does IO, reads a clock, draws randomness or awaits.
//! Time comes in as [`Timestamp`] arguments, ids are minted by the caller, and every decision
//! comes back as data ([`sched::Changes`]) for the server to persist and carry out.
//! **Architecture Invariant:** no serde on domain types; the API and the store own their
//! representations and convert by hand.

pub mod alert;
pub mod auth;
pub mod autoscale;
pub mod budget;
pub mod burst;
pub mod cost;
pub mod idempotency;
pub mod ids;
pub mod job;
pub mod placement;
pub mod queue;
pub mod quota;
pub mod rate;
pub mod recommend;
pub mod sched;
pub mod sla_tally;
pub mod spec;
pub mod tenant;
pub mod time;
pub mod units;
pub mod usage;
pub mod worker;

pub use auth::{Access, Action, AuditEntry, Caller, Principal, PrincipalKind, Role, RoleBinding, Scope, Token, Visibility};
pub use burst::{BurstError, BurstRequest, BurstRules, BurstSession, BurstState};
pub use ids::{AlertId, ArrayId, AttemptId, AuditId, BudgetId, BurstId, JobId, PoolId, PrincipalId, Slug, SlugError, TenantId, TokenId, WorkerId};
pub use job::{Attempt, AttemptState, Condition, FailureReason, Job, JobEvent, JobState, Priority, SlaClock, SlaLevel, SlaStatus};
pub use quota::{Admission, Grant, Quota, QuotaRules, Rejection, TenantPolicy, Usage, ViolationPolicy};
pub use tenant::{Pool, PoolState, PoolType, Tenant, TenantStatus, Tier, TierWeights};
pub use time::Timestamp;
pub use units::{CpuMillis, Gpus, MemoryMb, Resources, Totals};
pub use worker::{Worker, WorkerState};
