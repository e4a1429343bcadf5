//! The autoscaler (SPEC §2.11): every `autoscaling.evaluation_interval_s` — and at once when a
//! pool changes through the API — each pool's signals are read off the scheduler, the core's
//! [`autoscale::evaluate`] decides, the decision is recorded in the pool's history and its
//! desired size stored, and local pools are brought to that size ([`LocalPools::resize`]:
//! agents started, or drained idle-first). Pools of other providers keep their desired size as
//! advice for whoever runs their workers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hodei_api::Clock;
use hodei_core::autoscale::{self, Event, IdleExpired, Memory, Outcome, PoolSize, Samples};
use hodei_core::sched::{PoolQuery, PoolView};
use hodei_core::{Pool, PoolId, PoolState, PoolType};
use hodei_store::{ScalingEventFilter, Store};
use tokio::sync::{Notify, watch};

use crate::engine::EngineHandle;
use crate::local_pool::WorkerBrief;
use crate::providers::Provider;

pub struct Autoscaler {
    /// What starts and stops workers: local agents, Kubernetes pods.
    pub providers: Vec<Box<dyn Provider>>,
    pub store: Arc<dyn Store>,
    pub engine: EngineHandle,
    pub clock: Arc<dyn Clock>,
    pub interval: Duration,
    /// `autoscaling.enabled`: policies act; bounds, manual scaling and local pools' sizes are
    /// kept either way.
    pub enabled: bool,
    /// How long a new local worker takes to take work, for forecasts.
    pub provision_delay: Duration,
    pub poke: Arc<Notify>,
    /// `autoscaling.history_retention_days`: older scaling events are forgotten (checked hourly).
    pub history_retention: Duration,
}

#[derive(Default)]
struct PoolMind {
    samples: Samples,
    mem: Memory,
}

impl Autoscaler {
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut minds: HashMap<PoolId, PoolMind> = HashMap::new();
        let mut next_eval = tokio::time::Instant::now();
        let mut next_purge = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_purge {
                next_purge = tokio::time::Instant::now() + Duration::from_secs(3600);
                let before = hodei_core::Timestamp::from_millis(self.clock.now().as_millis().saturating_sub(self.history_retention.as_millis() as i64));
                match self.store.delete_scaling_events_before(before).await {
                    Ok(n) if n > 0 => tracing::info!(events = n, "forgot scaling events past autoscaling.history_retention_days"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "could not forget old scaling events; retrying in an hour"),
                }
            }
            // Decisions every interval; in between, while a pool is on its way to its size,
            // its workers are followed closely so that it reads `active` as soon as it is there.
            let evaluate = tokio::time::Instant::now() >= next_eval;
            if evaluate {
                next_eval = tokio::time::Instant::now() + self.interval;
            }
            let settling = match self.round(&mut minds, evaluate).await {
                Ok(settling) => settling,
                Err(e) => {
                    tracing::warn!(error = %e, "autoscaler round failed; retrying at the next one");
                    false
                }
            };
            let wake = if settling { next_eval.min(tokio::time::Instant::now() + Duration::from_millis(200)) } else { next_eval };
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.poke.notified() => next_eval = tokio::time::Instant::now(),
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        for p in self.providers {
            p.join().await;
        }
    }

    /// One pass over the pools: decide (when `evaluate`), store, resize local pools, record
    /// their state. Returns whether some pool is not at its desired size yet.
    async fn round(&mut self, minds: &mut HashMap<PoolId, PoolMind>, evaluate: bool) -> anyhow::Result<bool> {
        let mut settling = false;
        let pools: Vec<Pool> =
            self.store.list_pools().await?.into_iter().filter(|p| !matches!(p.state, PoolState::Destroyed | PoolState::Destroying)).collect();
        let delay = self.provision_delay;
        let queried = pools.clone();
        let (views, workers) = self
            .engine
            .read(move |s, now| {
                let queries: Vec<PoolQuery<'_>> = queried
                    .iter()
                    .map(|p| PoolQuery {
                        pool: p,
                        idle_timeout: (p.pool_type == PoolType::Dynamic).then_some(p.idle_timeout),
                        forecast: p.auto_scaling_enabled && p.scaling_policies.iter().any(|x| x.enabled && x.mode == autoscale::Mode::Forecast),
                        provision_delay: delay,
                    })
                    .collect();
                let workers: Vec<(PoolId, WorkerBrief)> = s
                    .workers()
                    .filter(|w| w.state.is_live())
                    .map(|w| {
                        let brief = WorkerBrief {
                            id: w.id,
                            instance_name: w.instance_name.clone(),
                            state: w.state,
                            slots_used: w.slots_used,
                            idle_since: w.idle_since,
                        };
                        (w.pool_id.clone(), brief)
                    })
                    .collect();
                (s.pool_views(&queries, now), workers)
            })
            .await?;
        let now = self.clock.now();
        for (pool, view) in pools.iter().zip(views) {
            for p in &mut self.providers {
                p.ensure(pool);
            }
            let briefs: Vec<WorkerBrief> = workers.iter().filter(|(p, _)| *p == pool.id).map(|(_, w)| w.clone()).collect();
            if pool.state == PoolState::Draining {
                self.wind_down(pool, &view, &briefs, evaluate, now).await?;
                settling = true;
                continue;
            }
            let mut desired = pool.desired_size;
            if evaluate {
                desired = self.decide(pool, &view, minds.entry(pool.id.clone()).or_default(), now).await?;
            }
            let mut drain = Vec::new();
            let mut failure = None;
            let provider = self.providers.iter_mut().find(|p| p.runs(pool.id.as_str()));
            let runs_here = provider.is_some();
            if let Some(p) = provider {
                // An expensive provider (an API) is asked at evaluations only, not at every
                // re-check of a pool on its way to its size.
                if evaluate || p.cheap() {
                    let at = jiff::Timestamp::from_millisecond(now.as_millis()).unwrap_or_else(|_| jiff::Timestamp::now());
                    let r = p.resize(pool, desired, &briefs, at).await;
                    drain = r.drain;
                    failure = r.error.map(|e| (e, r.gave_up));
                    if r.attempted && failure.is_some() {
                        self.provider_failed(pool, desired, &failure, minds.entry(pool.id.clone()).or_default(), now).await?;
                    }
                } else {
                    failure = p.failing(pool.id.as_str());
                }
            }
            for w in drain {
                if let Err(e) = self.engine.drain(w).await {
                    tracing::warn!(worker = %w, error = %e, "could not drain a worker of a smaller pool");
                }
            }
            pool_gauges(pool, desired, &view);
            let (state, reason) = match failure {
                Some((e, true)) => (PoolState::Error, e),
                Some((e, false)) => (PoolState::Scaling, format!("{} of {desired} workers; retrying after: {e}", view.live)),
                None if runs_here => lifecycle(pool, desired, view.live),
                None => (pool.state, pool.state_reason.clone()),
            };
            settling |= matches!(state, PoolState::Scaling | PoolState::Initializing);
            // Deleted since it was read: the delete wins (the store refuses to revive it).
            if (desired != pool.desired_size || state != pool.state || reason != pool.state_reason)
                && !self.store.set_pool_size(&pool.id, desired, state, &reason).await?
            {
                continue;
            }
            if state != pool.state {
                self.transition(pool, state, &reason, desired, now).await?;
            }
        }
        Ok(settling)
    }

    /// A pool deleted with force: every worker drained (its provider stops instances that
    /// never registered), and the pool destroyed — its join token void — once none is left.
    async fn wind_down(&mut self, pool: &Pool, view: &PoolView, briefs: &[WorkerBrief], evaluate: bool, now: hodei_core::Timestamp) -> anyhow::Result<()> {
        let mut drain: Vec<hodei_core::WorkerId> =
            briefs.iter().filter(|w| matches!(w.state, hodei_core::WorkerState::Idle | hodei_core::WorkerState::Busy)).map(|w| w.id).collect();
        if let Some(p) = self.providers.iter_mut().find(|p| p.runs(pool.id.as_str())).filter(|p| evaluate || p.cheap()) {
            let at = jiff::Timestamp::from_millisecond(now.as_millis()).unwrap_or_else(|_| jiff::Timestamp::now());
            drain.extend(p.resize(pool, 0, briefs, at).await.drain);
        }
        drain.sort();
        drain.dedup();
        for w in drain {
            if let Err(e) = self.engine.drain(w).await {
                tracing::debug!(worker = %w, error = %e, "draining a worker of a deleted pool");
            }
        }
        if view.live == 0 && view.draining == 0 {
            self.store.set_pool_join_token(&pool.id, "").await?;
            self.store.set_pool_size(&pool.id, 0, PoolState::Destroyed, "deleted: its last worker is gone").await?;
            let d = autoscale::Decision {
                source: autoscale::Source::Lifecycle,
                policy_id: None,
                trigger: None,
                observed: None,
                from: 0,
                to: 0,
                outcome: Outcome::Executed,
                reason: "destroyed: its last worker is gone".into(),
            };
            self.store.record_scaling_event(&Event { id: 0, pool_id: pool.id.clone(), at: now, decision: d, actor: None }).await?;
            pool_gauges(&Pool { state: PoolState::Destroyed, ..pool.clone() }, 0, view);
            tracing::info!(pool = %pool.id, "pool destroyed");
        }
        Ok(())
    }

    /// A change of the pool's lifecycle state, in its history with the reason.
    async fn transition(&self, pool: &Pool, to: PoolState, reason: &str, size: u32, now: hodei_core::Timestamp) -> anyhow::Result<()> {
        let why = if reason.is_empty() { String::new() } else { format!(": {reason}") };
        let d = autoscale::Decision {
            source: autoscale::Source::Lifecycle,
            policy_id: None,
            trigger: None,
            observed: None,
            from: size,
            to: size,
            outcome: Outcome::Executed,
            reason: format!("{} → {to}{why}", pool.state),
        };
        tracing::info!(pool = %pool.id, from = %pool.state, to = %to, reason, "pool state");
        self.store.record_scaling_event(&Event { id: 0, pool_id: pool.id.clone(), at: now, decision: d, actor: None }).await?;
        Ok(())
    }

    /// A failed provider attempt: counted, and recorded in the pool's history once per new failure.
    async fn provider_failed(
        &self,
        pool: &Pool,
        desired: u32,
        failure: &Option<(String, bool)>,
        mind: &mut PoolMind,
        now: hodei_core::Timestamp,
    ) -> anyhow::Result<()> {
        let Some((reason, _)) = failure else { return Ok(()) };
        metrics::counter!("hodei_pool_provisioning_failures_total", "pool" => pool.id.to_string()).increment(1);
        let d = autoscale::Decision {
            source: autoscale::Source::Lifecycle,
            policy_id: None,
            trigger: None,
            observed: None,
            from: desired,
            to: desired,
            outcome: Outcome::Failed,
            reason: reason.clone(),
        };
        if mind.mem.note(&d, now) {
            self.store.record_scaling_event(&Event { id: 0, pool_id: pool.id.clone(), at: now, decision: d, actor: None }).await?;
        }
        Ok(())
    }

    /// Records the signals, asks the core for a decision, records it; returns the desired size.
    async fn decide(&self, pool: &Pool, view: &PoolView, mind: &mut PoolMind, now: hodei_core::Timestamp) -> anyhow::Result<u32> {
        // Manual scaling and other servers' decisions are in the history: take their times.
        let recent = self
            .store
            .list_scaling_events(&ScalingEventFilter {
                pool: pool.id.clone(),
                since: None,
                until: None,
                outcome: Some(Outcome::Executed),
                before: None,
                limit: 20,
            })
            .await?;
        let seen = Memory::from_events(&recent);
        mind.mem.last_up = mind.mem.last_up.max(seen.last_up);
        mind.mem.last_change = mind.mem.last_change.max(seen.last_change);
        let keep = pool.scaling_policies.iter().map(|p| p.window).max().unwrap_or_default().max(self.interval);
        mind.samples.push(now, view.signals, keep);
        let size = PoolSize {
            min: pool.min_size,
            max: pool.max_size,
            desired: pool.desired_size,
            current: view.live,
            auto_scaling: self.enabled && pool.auto_scaling_enabled,
        };
        let mut desired = pool.desired_size;
        let idle = IdleExpired(if pool.pool_type == PoolType::Dynamic { view.idle_expired } else { 0 });
        if let Some(d) = autoscale::evaluate(size, &pool.scaling_policies, &mind.samples, view.demand.as_ref(), idle, &mut mind.mem, now) {
            if d.outcome == Outcome::Executed {
                desired = d.to;
            }
            if mind.mem.note(&d, now) {
                // Counted as recorded in the history: a skip once per change of mind.
                metrics::counter!("hodei_autoscaler_decisions_total", "pool" => pool.id.to_string(), "action" => action(pool, &d), "decision" => d.outcome.as_str())
                    .increment(1);
                tracing::info!(pool = %pool.id, from = d.from, to = d.to, decision = %d.outcome, reason = %d.reason, "scaling decision");
                self.store.record_scaling_event(&Event { id: 0, pool_id: pool.id.clone(), at: now, decision: d, actor: None }).await?;
            }
        }
        Ok(desired)
    }
}

/// A pool whose workers this server starts: `initializing` until `min_size` of them are
/// live, then `active` once it has its desired size and `scaling` (saying how far it is) while
/// it does not — also out of `error`, once its provider does what it is asked again. Pools in
/// other states (draining, destroyed) keep them.
fn lifecycle(pool: &Pool, desired: u32, live: u32) -> (PoolState, String) {
    match pool.state {
        PoolState::Creating | PoolState::Initializing if live < pool.min_size => {
            (PoolState::Initializing, format!("{live} of its {} warm workers live", pool.min_size))
        }
        PoolState::Active | PoolState::Scaling | PoolState::Initializing | PoolState::Creating | PoolState::Error => {
            if live == desired {
                (PoolState::Active, String::new())
            } else {
                (PoolState::Scaling, format!("{live} of {desired} workers"))
            }
        }
        s => (s, pool.state_reason.clone()),
    }
}

/// `scale_up` or `scale_down`: which way a decision went, or (skipped) its policy meant to.
fn action(pool: &Pool, d: &autoscale::Decision) -> &'static str {
    let policy = pool.scaling_policies.iter().find(|p| Some(&p.id) == d.policy_id.as_ref());
    let up = match policy {
        Some(p) if d.to == d.from => p.direction == autoscale::Direction::ScaleUp,
        _ => d.to > d.from,
    };
    if up { "scale_up" } else { "scale_down" }
}

/// The pool's gauges (SPEC §7.1) as of this round.
fn pool_gauges(pool: &Pool, desired: u32, view: &PoolView) {
    let id = pool.id.to_string();
    metrics::gauge!("hodei_pool_desired_size", "pool" => id.clone()).set(f64::from(desired));
    metrics::gauge!("hodei_pool_min_size", "pool" => id.clone()).set(f64::from(pool.min_size));
    metrics::gauge!("hodei_pool_max_size", "pool" => id.clone()).set(f64::from(pool.max_size));
    metrics::gauge!("hodei_pool_queue_depth", "pool" => id.clone()).set(f64::from(view.signals.queue_depth));
    metrics::gauge!("hodei_pool_queue_wait_seconds", "pool" => id.clone()).set(view.signals.queue_wait_seconds);
    metrics::gauge!("hodei_pool_cpu_utilization_ratio", "pool" => id.clone()).set(view.signals.cpu_utilization / 100.0);
    metrics::gauge!("hodei_pool_memory_utilization_ratio", "pool" => id.clone()).set(view.signals.memory_utilization / 100.0);
    metrics::gauge!("hodei_pool_busy_ratio", "pool" => id.clone()).set(view.signals.busy_ratio);
    for s in PoolState::ALL {
        metrics::gauge!("hodei_pool_state", "pool" => id.clone(), "state" => s.as_str()).set(if *s == pool.state { 1.0 } else { 0.0 });
    }
}
