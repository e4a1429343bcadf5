//! The worker gRPC service (SPEC §5): registration with the pool's join token, heartbeats,
//! and the job stream. Log chunks are written here (they do not pass through the engine);
//! everything that changes job state is forwarded to the engine as a [`Command`].
//!
//! A worker speaks only for its own attempts: results, acceptances and rejections are fenced by
//! the core (attempt and worker must match; the engine counts a mismatch as refused), and log
//! chunks here, against the attempts this connection
//! was assigned (seen as its AssignJob frames go out) or held when it connected. Anything else
//! is refused and counted in `hodei_worker_messages_refused_total`.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use hodei_api::Clock;
use hodei_core::sched::{AttemptResult, Outcome};
use hodei_core::{AttemptId, FailureReason, PoolId, Resources, Timestamp, Worker, WorkerId, WorkerState};
use hodei_proto::v1 as pb;
use hodei_proto::v1::worker_service_server::WorkerService;
use hodei_store::Store;
use hodei_store::logs::{LogStream, Logs};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::{Command, EngineHandle, WorkerConn};
use crate::tokens;
use crate::usage::UsageSink;

pub struct WorkerTimeouts {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub kill_grace: Duration,
    pub usage_sample_interval: Duration,
}

/// Cheap to clone: the job stream task keeps its own copy.
#[derive(Clone)]
pub struct WorkerSvc {
    pub store: Arc<dyn Store>,
    pub engine: EngineHandle,
    pub logs: Arc<Logs>,
    pub clock: Arc<dyn Clock>,
    pub timeouts: Arc<WorkerTimeouts>,
    pub usage: UsageSink,
    sessions: Arc<Mutex<HashMap<WorkerId, String>>>,
    conn_seq: Arc<AtomicU64>,
}

impl WorkerSvc {
    pub fn new(store: Arc<dyn Store>, engine: EngineHandle, logs: Arc<Logs>, clock: Arc<dyn Clock>, timeouts: WorkerTimeouts, usage: UsageSink) -> Self {
        for kind in ["log", "accepted", "rejected", "result", "progress"] {
            metrics::counter!("hodei_worker_messages_refused_total", "kind" => kind).increment(0);
        }
        WorkerSvc {
            store,
            engine,
            logs,
            clock,
            timeouts: Arc::new(timeouts),
            usage,
            sessions: Arc::new(Mutex::new(HashMap::new())),
            conn_seq: Arc::new(AtomicU64::new(1)),
        }
    }

    async fn authenticate(&self, worker_id: &str, token: &str) -> Result<WorkerId, Status> {
        let id: WorkerId = worker_id.parse().map_err(|_| Status::invalid_argument("worker_id is not a UUID"))?;
        let cached = self.sessions.lock().ok().and_then(|m| m.get(&id).cloned());
        let expected = match cached {
            Some(h) => h,
            None => {
                let h = self.store.worker_session_hash(id).await.map_err(|e| Status::unavailable(e.to_string()))?;
                let h = h.ok_or_else(|| Status::not_found("unknown worker; register again"))?;
                if let Ok(mut m) = self.sessions.lock() {
                    m.insert(id, h.clone());
                }
                h
            }
        };
        if !tokens::matches_hash(token, &expected) {
            return Err(Status::unauthenticated("bad session token"));
        }
        Ok(id)
    }

    fn stopped(_: impl std::fmt::Debug) -> Status {
        Status::unavailable("server is stopping")
    }
}

fn attempt_id(s: &str) -> Result<AttemptId, Status> {
    s.parse().map_err(|_| Status::invalid_argument(format!("attempt id {s:?} is not a UUID")))
}

/// A worker's Result as the core's record.
pub fn result_from_pb(r: &pb::Result) -> Result<(AttemptId, AttemptResult), Status> {
    let outcome = match pb::Outcome::try_from(r.outcome).unwrap_or(pb::Outcome::Unspecified) {
        pb::Outcome::Succeeded => Outcome::Succeeded,
        pb::Outcome::Failed => Outcome::Failed,
        pb::Outcome::TimedOut => Outcome::TimedOut,
        pb::Outcome::Cancelled => Outcome::Cancelled,
        pb::Outcome::Unspecified => return Err(Status::invalid_argument("result without outcome")),
    };
    let failure_reason = if r.failure_reason.is_empty() { None } else { r.failure_reason.parse::<FailureReason>().ok() };
    Ok((
        attempt_id(&r.attempt_id)?,
        AttemptResult {
            outcome,
            exit_code: r.exit_code,
            signal: r.signal,
            failure_reason,
            started_at: Timestamp::from_millis(r.started_at_ms),
            finished_at: Timestamp::from_millis(r.finished_at_ms),
            cpu_time_ms: r.cpu_time_ms,
            max_rss_mb: r.max_rss_mb,
            log_bytes: r.stdout_bytes + r.stderr_bytes,
            log_truncated: r.log_truncated,
        },
    ))
}

type ServerStream = Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerService for WorkerSvc {
    async fn register_worker(&self, req: Request<pb::RegisterWorkerRequest>) -> Result<Response<pb::RegisterWorkerResponse>, Status> {
        let r = req.into_inner();
        let pool_id = PoolId::parse(&r.pool_id).map_err(|e| Status::invalid_argument(format!("pool_id: {e}")))?;
        // A missing pool and a wrong token answer alike, so pools cannot be enumerated.
        let bad = || Status::unauthenticated(format!("bad join token for pool {pool_id} (or no such pool)"));
        let (pool, hash) = self.store.get_pool(&pool_id).await.map_err(|e| Status::unavailable(e.to_string()))?.ok_or_else(bad)?;
        if pool.state == hodei_core::PoolState::Destroyed || !tokens::matches_hash(&r.join_token, &hash) {
            return Err(bad());
        }
        let res = r.resources.unwrap_or_default();
        if r.slots == 0 || res.cpu_m == 0 || res.memory_mb == 0 {
            return Err(Status::invalid_argument("slots, resources.cpu_m and resources.memory_mb must be at least 1"));
        }
        let now = self.clock.now();
        // The pool's labels are the admin's word: a worker's own label of the same key yields.
        let mut labels: std::collections::BTreeMap<String, String> = r.labels.into_iter().collect();
        labels.extend(pool.labels.clone());
        let worker = Worker {
            id: WorkerId::from_uuid(uuid::Uuid::now_v7()),
            instance_name: r.instance_name,
            pool_id,
            state: WorkerState::Registering,
            capabilities: if r.capabilities.is_empty() { vec!["process".into()] } else { r.capabilities },
            resources: Resources::new(res.cpu_m, res.memory_mb, res.gpu),
            allocated: Resources::ZERO,
            slots: r.slots,
            slots_used: 0,
            labels,
            version: r.version,
            registered_at: now,
            last_heartbeat_at: now,
            idle_since: None,
            connected: false,
            allowed_tenants: Vec::new(),
            health: hodei_core::worker::Health::Healthy,
            health_reason: String::new(),
        };
        let session = tokens::random_token().map_err(|e| Status::unavailable(format!("cannot draw a session token: {e}")))?;
        let session_hash = tokens::hash(&session);
        self.store.register_worker(&worker, &session_hash).await.map_err(|e| Status::unavailable(e.to_string()))?;
        if let Ok(mut m) = self.sessions.lock() {
            m.insert(worker.id, session_hash);
        }
        let id = worker.id;
        tracing::info!(worker = %id, pool = %worker.pool_id, instance = %worker.instance_name, slots = worker.slots, "worker registered");
        self.engine.deliver(Command::Register { worker: Box::new(worker) }).await.map_err(Self::stopped)?;
        let t = &self.timeouts;
        Ok(Response::new(pb::RegisterWorkerResponse {
            worker_id: id.to_string(),
            session_token: session,
            heartbeat_interval_ms: t.heartbeat_interval.as_millis() as u64,
            heartbeat_timeout_ms: t.heartbeat_timeout.as_millis() as u64,
            kill_grace_ms: t.kill_grace.as_millis() as u64,
            usage_sample_interval_ms: t.usage_sample_interval.as_millis() as u64,
        }))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let id = self.authenticate(&r.worker_id, &r.session_token).await?;
        let running: Vec<AttemptId> = r.running_attempt_ids.iter().filter_map(|a| a.parse().ok()).collect();
        let (reply, rx) = oneshot::channel();
        let node = r.node.map(|n| hodei_core::worker::NodeReport {
            disk_free_mb: n.disk_free_mb,
            disk_total_mb: n.disk_total_mb,
            memory_available_mb: n.memory_available_mb,
            memory_total_mb: n.memory_total_mb,
            clock: (n.clock_unix_ms != 0).then(|| hodei_core::Timestamp::from_millis(n.clock_unix_ms)),
        });
        self.engine.deliver(Command::Heartbeat { id, running: running.clone(), node, reply }).await.map_err(Self::stopped)?;
        let stale = rx.await.map_err(Self::stopped)?.map_err(|_| Status::not_found("worker is offline or unknown; reconnect"))?;
        // Offsets only of the worker's own attempts, and only those known without a disk read.
        let own: Vec<AttemptId> = running.into_iter().filter(|a| !stale.contains(a)).collect();
        Ok(Response::new(pb::HeartbeatResponse {
            stale_attempt_ids: stale.iter().map(|a| a.to_string()).collect(),
            stored_logs: self.logs.known_offsets(&own).into_iter().map(log_offsets).collect(),
        }))
    }

    async fn deregister(&self, req: Request<pb::DeregisterRequest>) -> Result<Response<pb::DeregisterResponse>, Status> {
        let r = req.into_inner();
        let id = self.authenticate(&r.worker_id, &r.session_token).await?;
        self.engine.deliver(Command::Deregister { id }).await.map_err(Self::stopped)?;
        if let Ok(mut m) = self.sessions.lock() {
            m.remove(&id);
        }
        Ok(Response::new(pb::DeregisterResponse {}))
    }

    type JobStreamStream = ServerStream;

    async fn job_stream(&self, req: Request<Streaming<pb::WorkerMessage>>) -> Result<Response<ServerStream>, Status> {
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.ok_or_else(|| Status::invalid_argument("empty stream"))?;
        let Some(pb::worker_message::Msg::Hello(hello)) = first.msg else {
            return Err(Status::invalid_argument("the first message must be Hello"));
        };
        let id = self.authenticate(&hello.worker_id, &hello.session_token).await?;
        let running = hello.running.iter().map(|r| attempt_id(&r.attempt_id)).collect::<Result<Vec<_>, _>>()?;
        let results = hello.unacked_results.iter().map(result_from_pb).collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::channel(crate::engine::PER_WORKER_QUEUED);
        let conn = self.conn_seq.fetch_add(1, Ordering::Relaxed);
        let (reply, ack) = oneshot::channel();
        self.engine.deliver(Command::Connect { id, conn: WorkerConn { conn, tx }, running, results, reply }).await.map_err(Self::stopped)?;
        let held = ack.await.map_err(Self::stopped)?.map_err(|_| Status::not_found("unknown or terminated worker; register again"))?;
        // What is stored of each held attempt's output, read from the log store (this server may
        // have restarted), so that the worker resends exactly what is missing.
        let read = async {
            let mut offsets = Vec::with_capacity(held.len());
            for &a in &held {
                let (out, err) = self.logs.stored_offsets(a).await.map_err(|e| format!("reading stored output: {e}"))?;
                offsets.push((a, out, err));
            }
            Ok::<_, String>(offsets)
        }
        .await;
        let offsets = match read {
            Ok(o) => o,
            Err(e) => {
                // The engine took the connection: it must learn that it is gone again.
                let _ = self.engine.deliver(Command::Disconnect { id, conn }).await;
                return Err(Status::internal(e));
            }
        };
        let resume = pb::ServerMessage { msg: Some(pb::server_message::Msg::Resume(pb::Resume { attempts: offsets.into_iter().map(log_offsets).collect() })) };
        let owned: Owned = Arc::new(Mutex::new(held.into_iter().collect()));
        tracing::info!(worker = %id, conn, "worker connected");
        let svc = self.clone();
        let mine = owned.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(m)) => {
                        if let Err(e) = svc.on_message(id, &mine, m).await {
                            tracing::warn!(worker = %id, error = %e, "bad message from worker");
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(worker = %id, error = %e, "worker stream broke");
                        break;
                    }
                }
            }
            tracing::info!(worker = %id, conn, "worker disconnected");
            let _ = svc.engine.deliver(Command::Disconnect { id, conn }).await;
        });
        let out = tokio_stream::once(resume).chain(ReceiverStream::new(rx)).map(move |m| {
            if let Some(pb::server_message::Msg::Assign(a)) = &m.msg
                && let (Ok(aid), Ok(mut set)) = (a.attempt_id.parse::<AttemptId>(), owned.lock())
            {
                set.insert(aid);
            }
            Ok(m)
        });
        Ok(Response::new(Box::pin(out)))
    }
}

fn log_offsets((a, stdout_offset, stderr_offset): (AttemptId, u64, u64)) -> pb::LogOffsets {
    pb::LogOffsets { attempt_id: a.to_string(), stdout_offset, stderr_offset }
}

fn sample_from_pb(u: &pb::UsageSample) -> hodei_core::usage::Sample {
    hodei_core::usage::Sample {
        at: Timestamp::from_millis(u.at_ms),
        cpu_m: u.cpu_used_m,
        rss_mb: u.memory_rss_mb,
        gpu_pct: u.gpu_util_pct.min(100),
        gpu_memory_mb: u.gpu_memory_mb,
        io_read_bytes: u.io_read_bytes,
        io_write_bytes: u.io_write_bytes,
        gpu_measured: u.gpu_measured,
    }
}

/// The attempts one job stream may speak for.
type Owned = Arc<Mutex<HashSet<AttemptId>>>;

fn refused(kind: &'static str, worker: WorkerId, attempt: AttemptId) -> Status {
    metrics::counter!("hodei_worker_messages_refused_total", "kind" => kind).increment(1);
    Status::permission_denied(format!("worker {worker} was not assigned attempt {attempt}"))
}

impl WorkerSvc {
    async fn on_message(&self, worker: WorkerId, owned: &Owned, m: pb::WorkerMessage) -> Result<(), Status> {
        use pb::worker_message::Msg;
        match m.msg {
            Some(Msg::Accepted(a)) => {
                let attempt = attempt_id(&a.attempt_id)?;
                self.engine.deliver(Command::Accepted { worker, attempt, started_at: Timestamp::from_millis(a.started_at_ms) }).await.map_err(Self::stopped)
            }
            Some(Msg::Rejected(r)) => {
                let attempt = attempt_id(&r.attempt_id)?;
                tracing::info!(%worker, %attempt, reason = %r.reason, "worker rejected an attempt");
                self.engine.deliver(Command::Rejected { worker, attempt }).await.map_err(Self::stopped)
            }
            Some(Msg::Log(l)) => {
                let attempt = attempt_id(&l.attempt_id)?;
                if !owned.lock().is_ok_and(|set| set.contains(&attempt)) {
                    return Err(refused("log", worker, attempt));
                }
                let stream = if l.stream == pb::LogStream::Stderr as i32 { LogStream::Stderr } else { LogStream::Stdout };
                self.logs.append(attempt, stream, l.offset, &l.data).await.map_err(|e| Status::internal(e.to_string()))
            }
            Some(Msg::Progress(p)) => {
                let attempt = attempt_id(&p.attempt_id)?;
                // A late sample of an attempt that is not (or no longer) this stream's is
                // dropped, not an error: samples race with ends.
                if !owned.lock().is_ok_and(|set| set.contains(&attempt)) {
                    metrics::counter!("hodei_worker_messages_refused_total", "kind" => "progress").increment(1);
                    return Ok(());
                }
                if let Some(u) = p.usage {
                    self.usage.sample(attempt, sample_from_pb(&u));
                }
                Ok(())
            }
            Some(Msg::Result(r)) => {
                let (attempt, mut result) = result_from_pb(&r)?;
                tracing::debug!(%worker, attempt_id = %attempt, outcome = ?result.outcome, "result");
                // Its output is complete, so the set stays as large as what the worker runs. (A
                // result for an attempt that is not the worker's is fenced by the core.)
                let ours = owned.lock().is_ok_and(|mut set| set.remove(&attempt));
                result.log_truncated |= self.logs.was_truncated(attempt).await.map_err(|e| Status::internal(e.to_string()))?;
                self.logs.finished(attempt);
                let run_ms = (result.finished_at.as_millis() - result.started_at.as_millis()).max(0) as u64;
                let (started_at, cpu_time_ms, max_rss_mb) = (result.started_at, result.cpu_time_ms, result.max_rss_mb);
                self.engine.deliver(Command::Finished { worker, attempt, result: Box::new(result) }).await.map_err(Self::stopped)?;
                if ours {
                    self.usage.end(attempt, started_at, run_ms, cpu_time_ms, max_rss_mb.min(u64::from(u32::MAX)) as u32).await;
                }
                Ok(())
            }
            Some(Msg::Hello(_)) => Err(Status::invalid_argument("Hello may only come first")),
            None => Ok(()),
        }
    }
}
