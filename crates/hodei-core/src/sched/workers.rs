//! Workers coming and going (SPEC §3.2, §4.5): pool placement facts, registration, the job
//! stream, heartbeats and health, drain and termination.

use super::*;

impl Scheduler {
    /// What placement reads of `pool` from now on: whose jobs its workers run (empty: every
    /// tenant's) and the labels they carry besides their own (the pool's value wins; a label
    /// the pool drops is dropped from its workers). Jobs already running there keep running.
    pub fn set_pool_placement(&mut self, pool: &PoolId, placement: PoolPlacement) {
        let old = self.pool_placement.insert(pool.clone(), placement.clone()).unwrap_or_default();
        for w in self.workers.values_mut().filter(|w| w.pool_id == *pool) {
            w.allowed_tenants.clone_from(&placement.allowed_tenants);
            for k in old.labels.keys().filter(|k| !placement.labels.contains_key(*k)) {
                w.labels.remove(k);
            }
            w.labels.extend(placement.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }

    /// A worker registered (or re-registered under a new id).
    pub fn register_worker(&mut self, mut worker: Worker, now: Timestamp) {
        worker.allowed_tenants = self.pool_placement.get(&worker.pool_id).map(|p| p.allowed_tenants.clone()).unwrap_or_default();
        worker.state = WorkerState::Registering;
        worker.connected = false;
        worker.allocated = crate::units::Resources::ZERO;
        worker.slots_used = 0;
        worker.last_heartbeat_at = now;
        worker.registered_at = now;
        self.dirty_workers.insert(worker.id);
        self.workers.insert(worker.id, worker);
    }

    /// A worker opened its job stream (first time or after a reconnect) and said which
    /// attempts it is running and which results it has not had acknowledged.
    /// Reconciles (SPEC §5.7): results are applied, attempts it no longer knows are lost,
    /// attempts it runs that are not current are cancelled.
    pub fn connect_worker(
        &mut self,
        id: WorkerId,
        running: &[AttemptId],
        results: Vec<(AttemptId, AttemptResult)>,
        now: Timestamp,
    ) -> Result<(), UnknownWorker> {
        let w = self.workers.get_mut(&id).ok_or(UnknownWorker)?;
        if w.state == WorkerState::Terminated {
            return Err(UnknownWorker);
        }
        w.connected = true;
        w.last_heartbeat_at = now;
        self.dirty_workers.insert(id);
        for (aid, r) in results {
            let _ = self.finish(aid, id, r, now);
        }
        let running: HashSet<AttemptId> = running.iter().copied().collect();
        let mine = self.attempt_ids_on(id);
        for aid in &mine {
            if !running.contains(aid) {
                self.lose_attempt(*aid, FailureReason::WorkerLost, now);
            }
        }
        for aid in running {
            match self.attempts.get(&aid) {
                Some(a) if a.worker_id == id => {
                    // Its Accepted was lost with the old stream: it runs, so it was accepted.
                    if a.state == AttemptState::Assigned {
                        let _ = self.accepted(aid, id, now, now);
                    }
                }
                _ => self.out.outbound.push(Outbound::Cancel { worker: id, attempt: aid, reason: "stale" }),
            }
        }
        let w = self.workers.get_mut(&id).ok_or(UnknownWorker)?;
        let to = if w.slots_used == 0 { WorkerState::Idle } else { WorkerState::Busy };
        if w.state != to && w.state != WorkerState::Draining {
            if to == WorkerState::Idle {
                w.idle_since = Some(now);
            }
            w.state = to;
        }
        Ok(())
    }

    /// The job stream closed. The lease still runs: attempts are lost only when it expires.
    pub fn disconnect_worker(&mut self, id: WorkerId) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.connected = false;
        }
    }

    /// Renews a worker's lease. Returns attempts it reports that it should not be running.
    /// `node`: what it measured of its machine, which decides its health.
    pub fn heartbeat(
        &mut self,
        id: WorkerId,
        running: &[AttemptId],
        node: Option<&crate::worker::NodeReport>,
        now: Timestamp,
    ) -> Result<Vec<AttemptId>, UnknownWorker> {
        let w = self.workers.get_mut(&id).ok_or(UnknownWorker)?;
        if !w.state.is_live() {
            return Err(UnknownWorker);
        }
        w.last_heartbeat_at = now;
        if let Some(r) = node {
            (w.health, w.health_reason) = crate::worker::assess(r, now);
        }
        // Persisted (batched with everything else), so readers see a live heartbeat.
        self.dirty_workers.insert(id);
        Ok(running.iter().copied().filter(|a| self.attempts.get(a).is_none_or(|x| x.worker_id != id)).collect())
    }

    /// Drains a worker (SPEC §3.2): it takes no new attempts, its running ones finish, and once
    /// it has none it is terminated and told to stop ([`Outbound::Drained`]). Draining a
    /// draining worker changes nothing.
    pub fn drain_worker(&mut self, id: WorkerId) -> Result<(), DrainError> {
        let w = self.workers.get_mut(&id).ok_or(DrainError::Unknown)?;
        match w.state {
            WorkerState::Draining => return Ok(()),
            WorkerState::Idle | WorkerState::Busy => w.state = WorkerState::Draining,
            // Registered without a job stream yet: nothing to wait for.
            WorkerState::Registering => {}
            s => return Err(DrainError::NotLive(s)),
        }
        self.dirty_workers.insert(id);
        if w.slots_used == 0 {
            self.drained(id);
        }
        Ok(())
    }

    /// A drained worker with nothing left to run is terminated and told to stop.
    fn drained(&mut self, id: WorkerId) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.state = WorkerState::Terminated;
            w.connected = false;
            self.dirty_workers.insert(id);
            self.out.outbound.push(Outbound::Drained { worker: id });
        }
    }

    /// The worker leaves for good (deregistered). Its attempts are lost.
    pub fn terminate_worker(&mut self, id: WorkerId, now: Timestamp) {
        let mine = self.attempt_ids_on(id);
        for aid in mine {
            self.lose_attempt(aid, FailureReason::WorkerLost, now);
        }
        if let Some(w) = self.workers.get_mut(&id) {
            w.state = WorkerState::Terminated;
            w.connected = false;
            self.dirty_workers.insert(id);
        }
    }

    pub(super) fn release_slot(&mut self, attempt: &Attempt, now: Timestamp) {
        self.preempting.remove(&attempt.id);
        let mut drained = false;
        if let Some(w) = self.workers.get_mut(&attempt.worker_id) {
            w.allocated = w.allocated.saturating_sub(&attempt.resources);
            w.slots_used = w.slots_used.saturating_sub(1);
            if w.slots_used == 0 && w.state == WorkerState::Busy {
                w.state = WorkerState::Idle;
                w.idle_since = Some(now);
            }
            drained = w.slots_used == 0 && w.state == WorkerState::Draining;
            self.dirty_workers.insert(w.id);
        }
        if drained {
            self.drained(attempt.worker_id);
        }
    }
}
