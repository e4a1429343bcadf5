//! The provider port: what starts and stops a pool's workers. How many there should be is the
//! core's decision (`hodei_core::autoscale`), taken by the autoscaler; a provider only brings a
//! pool to that size — starting workers, or choosing which go (unregistered ones first, then
//! the longest idle, then the least busy, which are drained so their jobs finish) — and finds
//! its workers again after a restart. Adapters: [`crate::local_pool::LocalPools`] (agents on
//! this machine) and [`crate::kubernetes::KubePools`] (pods). Every adapter passes
//! [`conformance::run_all`].

use async_trait::async_trait;
use hodei_core::{Pool, WorkerId};

use crate::local_pool::WorkerBrief;

/// What a resize did, or why it could not.
#[derive(Debug, Default)]
pub struct Resized {
    /// Workers to drain (their agents stop once their jobs end).
    pub drain: Vec<WorkerId>,
    /// The provider failed this many times in a row (0: it did what was asked), and why.
    pub failures: u32,
    pub error: Option<String>,
    /// Failures reached `autoscaling.provision_max_retries`.
    pub gave_up: bool,
    /// It acted this time (not waiting out a backoff after a failure).
    pub attempted: bool,
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// Whether it keeps `pool`'s workers.
    fn runs(&self, pool: &str) -> bool;
    /// Starts keeping a pool created while the server runs, if it is one of its kind.
    fn ensure(&mut self, _pool: &Pool) {}
    /// Whether a resize is cheap enough to repeat between evaluations (while a pool settles).
    fn cheap(&self) -> bool;
    /// Brings `pool` to `desired` workers; `workers` are the pool's live workers as the
    /// scheduler holds them (matched to what it runs by instance name).
    async fn resize(&mut self, pool: &Pool, desired: u32, workers: &[WorkerBrief], now: jiff::Timestamp) -> Resized;
    /// The failure it is retrying after for `pool`, and whether it reached the retry limit.
    fn failing(&self, _pool: &str) -> Option<(String, bool)> {
        None
    }
    /// The instance names (each worker's `--instance-name`) it runs for `pool` now, sorted.
    async fn instances(&self, pool: &str) -> Result<Vec<String>, String>;
    /// Waits for what it supervises to stop (after the server's shutdown signal).
    async fn join(self: Box<Self>) {}
}

/// The suite every provider passes (the store's port has one too): scale up, idempotence,
/// scale down choosing unregistered, then idle, then busy workers (drained, not stopped), and
/// adoption by a new instance of the provider over the same backend, as after a restart.
pub mod conformance {
    use super::*;
    use hodei_core::{Timestamp, WorkerState};
    use std::future::Future;
    use std::time::Duration;

    async fn eventually<F, Fut>(what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !f().await {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn brief(name: &str, n: u128, state: WorkerState, slots_used: u32, idle_since: Option<i64>) -> WorkerBrief {
        WorkerBrief {
            id: WorkerId::from_uuid(uuid::Uuid::from_u128(n)),
            instance_name: name.to_owned(),
            state,
            slots_used,
            idle_since: idle_since.map(Timestamp::from_millis),
        }
    }

    /// `open` makes a provider over the same backend each time (a restart); `pool` is one it
    /// runs (`ensure` is called first), from no worker.
    pub async fn run_all<P, F, Fut>(pool: &Pool, open: F)
    where
        P: Provider,
        F: Fn() -> Fut,
        Fut: Future<Output = P>,
    {
        let now = jiff::Timestamp::now();
        let id = pool.id.as_str();
        let mut p = open().await;
        p.ensure(pool);
        assert!(p.runs(id));
        assert_eq!(p.instances(id).await.unwrap(), Vec::<String>::new(), "a new pool has no worker");

        // Up to three; asking again changes nothing.
        let r = p.resize(pool, 3, &[], now).await;
        assert!(r.error.is_none() && r.drain.is_empty(), "{r:?}");
        eventually("three instances", || async { p.instances(id).await.unwrap().len() == 3 }).await;
        let three = p.instances(id).await.unwrap();
        p.resize(pool, 3, &[], now).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(p.instances(id).await.unwrap(), three, "resizing to the same size starts nothing");

        // Down to two: the one without a registered worker goes, stopped at once.
        let workers = [brief(&three[0], 1, WorkerState::Busy, 1, None), brief(&three[1], 2, WorkerState::Idle, 0, Some(5))];
        let r = p.resize(pool, 2, &workers, now).await;
        assert!(r.drain.is_empty(), "an unregistered instance is stopped, not drained: {r:?}");
        eventually("the unregistered instance stopped", || async { p.instances(id).await.unwrap() == three[..2] }).await;

        // Down to one: the idle worker is drained before the busy one.
        let r = p.resize(pool, 1, &workers, now).await;
        assert_eq!(r.drain, [workers[1].id], "the idle worker goes first");
        // Draining makes no new instance: asked again with it draining, nothing starts.
        let draining = [workers[0].clone(), WorkerBrief { state: WorkerState::Draining, ..workers[1].clone() }];
        let r = p.resize(pool, 1, &draining, now).await;
        assert!(r.drain.is_empty(), "{r:?}");
        assert_eq!(p.instances(id).await.unwrap().len(), 2, "the drained worker's instance stays until its agent exits");

        // A restart (the old provider gone as in a crash: what it started keeps running): a new
        // provider finds the instances and starts none.
        drop(p);
        let mut q = open().await;
        q.ensure(pool);
        assert_eq!(q.instances(id).await.unwrap().len(), 2, "a restarted provider finds the instances");
        q.resize(pool, 2, &[], now).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(q.instances(id).await.unwrap().len(), 2, "and starts none while there are as many as wanted");
        q.resize(pool, 0, &[], now).await;
        eventually("all stopped", || async { q.instances(id).await.unwrap().is_empty() }).await;
    }
}
