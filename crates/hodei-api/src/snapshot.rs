//! Copies of the scheduler's state for the reads that run it forward (`explain`'s ETA, dry
//! runs). A copy costs the engine's thread time in proportion to the live jobs (up to
//! [`MAX_SIM_JOBS`]), so a burst of such reads must not become a burst of copies: one copy
//! serves every read for up to [`FRESH_FOR`] while what the read needs is in it; a new one is
//! taken by one request at a time (the others wait for it and share it), and never sooner
//! after the last than [`COPY_SHARE`] times what that one cost — the engine spends at most a
//! tenth of its time copying, whatever the rate of requests. The forward runs themselves,
//! off the engine's thread, run [`SIMULATIONS_AT_ONCE`] at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hodei_core::Timestamp;
use hodei_core::sched::MAX_SIM_JOBS;
use hodei_core::sched::Scheduler;
use tokio::sync::{Mutex, Semaphore, SemaphorePermit};

use crate::{Control, ControlError, read};

/// How long a copy answers reads that find what they need in it.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// A new copy waits this many times as long as the last one took, after it.
pub const COPY_SHARE: u32 = 10;
/// Forward runs at once; more wait.
pub const SIMULATIONS_AT_ONCE: usize = 2;

pub struct Snapshot {
    pub sched: Arc<Scheduler>,
    /// The engine's time when it was taken.
    pub now: Timestamp,
}

struct Taken {
    at: Instant,
    cost: Duration,
    /// None: the live set was over [`MAX_SIM_JOBS`], no copy was made.
    snap: Option<Arc<Snapshot>>,
}

pub struct Snapshots {
    last: Mutex<Option<Taken>>,
    simulations: Semaphore,
}

impl Default for Snapshots {
    fn default() -> Snapshots {
        Snapshots { last: Mutex::new(None), simulations: Semaphore::new(SIMULATIONS_AT_ONCE) }
    }
}

impl Snapshots {
    /// A copy of the scheduler in which `fits` holds, taken within [`FRESH_FOR`] if one was;
    /// `None` when the live set is too large to copy (the caller reads in place, without a
    /// forward run).
    pub async fn get(&self, control: &dyn Control, fits: impl Fn(&Scheduler) -> bool) -> Result<Option<Arc<Snapshot>>, ControlError> {
        let mut last = self.last.lock().await;
        if let Some(t) = &*last {
            if t.at.elapsed() < FRESH_FOR && t.snap.as_ref().is_none_or(|s| fits(&s.sched)) {
                return Ok(t.snap.clone());
            }
            tokio::time::sleep_until((t.at + t.cost * COPY_SHARE).into()).await;
        }
        let (snap, cost) = read(control, |sched, now| {
            let started = Instant::now();
            let snap = (sched.live_jobs() <= MAX_SIM_JOBS).then(|| Arc::new(Snapshot { sched: Arc::new(sched.clone()), now }));
            (snap, started.elapsed())
        })
        .await?;
        *last = Some(Taken { at: Instant::now(), cost, snap: snap.clone() });
        Ok(snap)
    }

    /// A turn to run the scheduler forward, held while the result is alive (the semaphore is
    /// never closed, so this is always `Ok`).
    pub async fn simulation(&self) -> Result<SemaphorePermit<'_>, tokio::sync::AcquireError> {
        self.simulations.acquire().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use hodei_core::sched::{CancelOutcome, SchedConfig};
    use hodei_core::{Job, JobId, Tenant};

    use super::*;
    use crate::{Admitted, ArrayAdmitted, Idempotent, IdempotentCall, Inspector};

    /// A scheduler that only answers reads, counting them.
    struct Reads(Scheduler, AtomicUsize);

    #[async_trait]
    impl Control for Reads {
        async fn submit(
            &self,
            _: Vec<Job>,
            _: bool,
            _: Option<IdempotentCall>,
            _: Vec<(JobId, hodei_core::JobState)>,
        ) -> Result<Idempotent<Vec<Admitted>>, ControlError> {
            Err(ControlError::Stopped)
        }
        async fn submit_array(
            &self,
            _: Job,
            _: hodei_core::ArrayId,
            _: Option<IdempotentCall>,
            _: Vec<(JobId, hodei_core::JobState)>,
        ) -> Result<Idempotent<ArrayAdmitted>, ControlError> {
            Err(ControlError::Stopped)
        }
        async fn cancel(&self, _: JobId, _: hodei_core::ids::PrincipalId) -> Result<CancelOutcome, ControlError> {
            Err(ControlError::Stopped)
        }
        async fn retry(&self, _: JobId, _: hodei_core::ids::PrincipalId) -> Result<(), ControlError> {
            Err(ControlError::Stopped)
        }
        async fn hold(&self, _: JobId, _: hodei_core::ids::PrincipalId) -> Result<(), ControlError> {
            Err(ControlError::Stopped)
        }
        async fn release(&self, _: JobId, _: hodei_core::ids::PrincipalId) -> Result<(), ControlError> {
            Err(ControlError::Stopped)
        }
        async fn drain_worker(&self, _: hodei_core::WorkerId) -> Result<(), ControlError> {
            Err(ControlError::Stopped)
        }
        fn is_running(&self) -> bool {
            true
        }
        fn loop_lag(&self) -> Duration {
            Duration::ZERO
        }
        async fn tenant_changed(&self, _: &Tenant) -> Result<(), ControlError> {
            Ok(())
        }
        async fn burst_changed(&self, _: &hodei_core::BurstSession) -> Result<(), ControlError> {
            Ok(())
        }
        async fn pool_changed(&self, _: &hodei_core::Pool) -> Result<(), ControlError> {
            Ok(())
        }
        async fn rates_changed(&self, _: Vec<hodei_core::cost::RateVersion>) -> Result<(), ControlError> {
            Ok(())
        }
        async fn inspect(&self, f: Inspector) -> Result<(), ControlError> {
            self.1.fetch_add(1, Ordering::Relaxed);
            f(&self.0, Timestamp::from_millis(0));
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_burst_of_reads_shares_one_copy_and_a_read_it_does_not_fit_takes_another() {
        let control = Reads(Scheduler::new(SchedConfig::default()), AtomicUsize::new(0));
        let snaps = Snapshots::default();
        let got = futures::future::join_all((0..50).map(|_| snaps.get(&control, |_| true))).await;
        assert!(got.iter().all(|s| s.as_ref().is_ok_and(|s| s.is_some())));
        assert_eq!(control.1.load(Ordering::Relaxed), 1, "fifty reads, one copy");
        snaps.get(&control, |_| false).await.unwrap();
        assert_eq!(control.1.load(Ordering::Relaxed), 2);
    }
}
