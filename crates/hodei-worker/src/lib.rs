//! The Hodei worker agent: registers with a server's pool, holds a job stream, runs attempts
//! and reports them, reconnecting (to any listed server) with backoff.
//!
//! **Architecture Invariant:** the worker never touches the store and decides nothing about
//! scheduling; it runs what it is assigned and reports what happened, fenced by attempt id.

mod cgroup;
mod exec;
mod gpu;
mod memory;
mod orphans;
mod retain;
mod spool;
mod user;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use hodei_proto::v1 as pb;
use hodei_proto::v1::worker_service_client::WorkerServiceClient;
use tokio::sync::{Notify, mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};

pub use exec::{Sandbox, StopReason};

/// Whether this process could run jobs in cgroups of their own, or why not (a server checks
/// `workers.cgroups` with it before it starts agents that would refuse to run).
pub fn cgroups_available() -> Result<(), String> {
    cgroup::Cgroups::new().map(drop)
}
pub use user::{DEFAULT_RUN_AS, JobUser};

#[derive(Clone, Debug)]
pub struct WorkerOptions {
    pub servers: Vec<String>,
    pub pool: String,
    pub join_token: String,
    pub slots: u32,
    pub cpu_m: u32,
    pub memory_mb: u32,
    pub gpu: u32,
    pub labels: BTreeMap<String, String>,
    pub instance_name: String,
    /// The spool (identity, unacknowledged results).
    pub work_dir: PathBuf,
    /// Where jobs without a working dir run and as whom.
    pub sandbox: Sandbox,
    /// Read the server's URL from this file at each connection attempt (one written by the
    /// server: the built-in pool finds a restarted server whose port changed). `servers` is
    /// used while the file cannot be read.
    pub server_file: Option<PathBuf>,
    /// Stop (stopping jobs) after this long without a job stream to any server. `None`: retry
    /// for ever.
    pub give_up_after: Option<Duration>,
    /// TLS to `https://` servers.
    pub tls: TlsOptions,
}

/// How a worker trusts an `https://` server and proves itself to one that asks.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// PEM of the CA that signed the server's certificate (default: the system's roots).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate and key, for a server whose `server.tls.client_ca_file` requires one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

#[derive(Clone)]
struct Identity {
    worker_id: String,
    session: String,
    heartbeat_interval: Duration,
    usage_interval: Duration,
}

#[derive(Default)]
struct Agent {
    /// Attempts running now, with the way to stop them.
    running: HashMap<String, oneshot::Sender<StopReason>>,
    /// Results sent but not acknowledged; re-sent on reconnect (SPEC §5.3).
    unacked: HashMap<String, pb::Result>,
    /// Of those, the ones written to the spool.
    spooled: HashSet<String>,
}

fn msg(m: pb::worker_message::Msg) -> pb::WorkerMessage {
    pb::WorkerMessage { msg: Some(m) }
}

async fn connect(url: &str, tls: &TlsOptions) -> anyhow::Result<WorkerServiceClient<Channel>> {
    let mut ep = Endpoint::from_shared(url.to_owned())?.connect_timeout(Duration::from_secs(3)).tcp_nodelay(true);
    if url.starts_with("https://") {
        let mut t = tonic::transport::ClientTlsConfig::new();
        t = match &tls.ca_pem {
            Some(ca) => t.ca_certificate(tonic::transport::Certificate::from_pem(ca)),
            None => t.with_native_roots(),
        };
        if let Some((cert, key)) = &tls.identity {
            t = t.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        ep = ep.tls_config(t)?;
    }
    Ok(WorkerServiceClient::new(ep.connect().await?))
}

async fn register(client: &mut WorkerServiceClient<Channel>, o: &WorkerOptions) -> anyhow::Result<Identity> {
    let resp = client
        .register_worker(pb::RegisterWorkerRequest {
            instance_name: o.instance_name.clone(),
            pool_id: o.pool.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: vec!["process".into()],
            resources: Some(pb::Resources { cpu_m: o.cpu_m, memory_mb: o.memory_mb, gpu: o.gpu }),
            slots: o.slots,
            labels: o.labels.clone().into_iter().collect(),
            join_token: o.join_token.clone(),
        })
        .await
        .context("registering")?
        .into_inner();
    tracing::info!(worker = %resp.worker_id, pool = %o.pool, "registered");
    Ok(Identity {
        worker_id: resp.worker_id,
        session: resp.session_token,
        heartbeat_interval: Duration::from_millis(resp.heartbeat_interval_ms.max(100)),
        usage_interval: usage_interval(resp.usage_sample_interval_ms),
    })
}

/// The sampling interval the server asks for (its default when it names none).
fn usage_interval(ms: u64) -> Duration {
    Duration::from_millis(if ms == 0 { 10_000 } else { ms.max(100) })
}

/// Runs the agent until the process is told to stop.
pub async fn run(o: WorkerOptions) -> anyhow::Result<()> {
    anyhow::ensure!(!o.servers.is_empty(), "no server given");
    std::fs::create_dir_all(&o.work_dir).with_context(|| format!("creating {}", o.work_dir.display()))?;
    if let Some(u) = &o.sandbox.user {
        // The job's user may enter its own attempt directory but not list the others.
        use std::os::unix::fs::PermissionsExt;
        let root = &o.sandbox.scratch_root;
        std::fs::create_dir_all(root)
            .and_then(|()| std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711)))
            .with_context(|| format!("preparing {}", root.display()))?;
        tracing::info!(user = %u.name, uid = u.uid, "jobs run as an unprivileged user");
    }
    let spool = Arc::new(spool::Spool::open(&o.work_dir, spool::LOCK_WAIT).await?);
    // Jobs a killed predecessor of this agent left running: the server runs their attempts
    // again once this agent reconnects without them, so they must not go on beside that run.
    if let Some(id) = spool.identity() {
        let ended = orphans::end(&id.worker_id);
        if ended > 0 {
            tracing::warn!(processes = ended, "ended the jobs a previous run of this agent left running");
        }
    }
    // Results of jobs that ended while a previous run of this agent could not report them.
    let unacked: HashMap<String, pb::Result> = spool.results().into_iter().map(|r| (r.attempt_id.clone(), r)).collect();
    if !unacked.is_empty() {
        tracing::info!(results = unacked.len(), "results from the spool to hand in");
    }
    let spooled = unacked.keys().cloned().collect();
    let agent = Arc::new(Mutex::new(Agent { unacked, spooled, ..Agent::default() }));
    tokio::spawn(spool_unacked(agent.clone(), spool.clone()));
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<pb::WorkerMessage>();
    let memory = memory::MemoryWatch::start(events_tx.clone());
    let out = exec::Output { events: events_tx, retained: Arc::new(retain::Retained::default()) };
    let stop = Arc::new(Notify::new());
    spawn_stop_watcher(stop.clone());

    let mut identity: Option<Identity> = spool.identity().map(|s| Identity {
        worker_id: s.worker_id,
        session: s.session,
        heartbeat_interval: Duration::from_millis(s.heartbeat_interval_ms.max(100)),
        usage_interval: usage_interval(s.usage_sample_interval_ms),
    });
    let mut backoff = Duration::from_millis(100);
    // The built-in pool's server is on this machine: a refused connection costs nothing, and
    // the restarted server waits for its workers before it says it is ready.
    let max_backoff = if o.server_file.is_some() { Duration::from_millis(200) } else { Duration::from_secs(5) };
    let mut server = 0usize;
    // Since when no job stream has been open.
    let mut alone_since = tokio::time::Instant::now();
    loop {
        let from_file = o.server_file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()).map(|u| u.trim().to_owned()).filter(|u| !u.is_empty());
        let url = &from_file.unwrap_or_else(|| o.servers[server % o.servers.len()].clone());
        let session = async {
            let mut client = connect(url, &o.tls).await?;
            if identity.is_none() {
                let id = register(&mut client, &o).await?;
                let saved = spool::SavedIdentity {
                    worker_id: id.worker_id.clone(),
                    session: id.session.clone(),
                    heartbeat_interval_ms: id.heartbeat_interval.as_millis() as u64,
                    usage_sample_interval_ms: id.usage_interval.as_millis() as u64,
                };
                if let Err(e) = spool.save_identity(&saved) {
                    tracing::warn!(error = %e, "cannot save the worker's identity in the spool; a restart registers anew");
                }
                identity = Some(id);
            }
            let id = identity.clone().context("identity")?;
            memory.set_interval(id.usage_interval);
            let hello = {
                let a = agent.lock().map_err(|_| anyhow::anyhow!("agent state poisoned"))?;
                // Ended attempts whose result is not acknowledged are named as running: their
                // results follow the output resent below, so a job ends with all its output.
                pb::Hello {
                    worker_id: id.worker_id.clone(),
                    session_token: id.session.clone(),
                    running: a.running.keys().chain(a.unacked.keys()).map(|k| pb::RunningAttempt { attempt_id: k.clone() }).collect(),
                    unacked_results: Vec::new(),
                }
            };
            let (tx, rx) = mpsc::unbounded_channel();
            tx.send(msg(pb::worker_message::Msg::Hello(hello)))?;
            let inbound = match client.job_stream(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)).await {
                Ok(r) => r.into_inner(),
                Err(s) if matches!(s.code(), tonic::Code::NotFound | tonic::Code::Unauthenticated) => {
                    // The server no longer knows us (e.g. we were declared offline and collected).
                    identity = None;
                    spool.forget_identity();
                    if let Ok(mut a) = agent.lock() {
                        a.unacked.clear();
                        a.spooled.clear();
                    }
                    return Err(Forgotten(s.message().to_owned()).into());
                }
                Err(s) => return Err(s.into()),
            };
            // The server's first word says what it has of each attempt's output: resend the
            // rest, then the results, before anything queued meanwhile.
            let mut inbound = inbound;
            match inbound.message().await?.and_then(|m| m.msg) {
                Some(pb::server_message::Msg::Resume(r)) => {
                    for chunk in out.retained.resume(&r.attempts) {
                        tx.send(msg(pb::worker_message::Msg::Log(chunk)))?;
                    }
                }
                other => on_server_message(pb::ServerMessage { msg: other }, &id.worker_id, &agent, &out, &o.sandbox, &memory, &spool),
            }
            let results: Vec<pb::Result> = agent.lock().map(|a| a.unacked.values().cloned().collect()).unwrap_or_default();
            for r in results {
                tx.send(msg(pb::worker_message::Msg::Result(r)))?;
            }
            tracing::info!(server = %url, "job stream open");
            Ok::<_, anyhow::Error>((client, id, tx, inbound))
        }
        .await;
        let (client, id, tx, mut inbound) = match session {
            Ok(s) => s,
            Err(e) if e.is::<Forgotten>() => {
                tracing::info!(server = %url, reason = %e, "the server no longer knows this worker; registering again");
                continue;
            }
            Err(e) => {
                if let Some(limit) = o.give_up_after
                    && alone_since.elapsed() >= limit
                {
                    tracing::warn!(after_ms = limit.as_millis() as u64, "no server came back; stopping");
                    return shutdown(&agent, None, &spool).await;
                }
                tracing::warn!(server = %url, error = %format!("{e:#}"), "cannot reach the server; retrying");
                server += 1;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.notified() => return shutdown(&agent, None, &spool).await,
                }
                backoff = (backoff * 2).min(max_backoff);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let lost = Arc::new(Notify::new());
        let disk = if o.sandbox.scratch_root.exists() { o.sandbox.scratch_root.clone() } else { o.work_dir.clone() };
        let hb = tokio::spawn(heartbeats(client.clone(), id.clone(), agent.clone(), out.retained.clone(), lost.clone(), disk, memory.clone()));
        let reason = loop {
            tokio::select! {
                ev = events_rx.recv() => match ev {
                    Some(m) => if tx.send(m).is_err() { break "stream closed" },
                    None => break "event channel closed",
                },
                m = inbound.message() => match m {
                    Ok(Some(pb::ServerMessage { msg: Some(pb::server_message::Msg::Drained(_)) })) => {
                        // Terminated by the server, its jobs ended: registering again would undo
                        // the drain, so the agent leaves.
                        hb.abort();
                        tracing::info!("drained by the server; stopping");
                        spool.forget_identity();
                        return Ok(());
                    }
                    Ok(Some(m)) => on_server_message(m, &id.worker_id, &agent, &out, &o.sandbox, &memory, &spool),
                    Ok(None) => break "server closed the stream",
                    Err(_) => break "stream error",
                },
                _ = lost.notified() => break "server says this worker is offline",
                _ = stop.notified() => {
                    hb.abort();
                    // Forward what is queued (results of jobs stopping now) before leaving.
                    return shutdown(&agent, Some((client, id, tx, &mut events_rx)), &spool).await;
                }
            }
        };
        hb.abort();
        alone_since = tokio::time::Instant::now();
        tracing::warn!(reason, "job stream lost; reconnecting");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops on SIGTERM/SIGINT.
fn spawn_stop_watcher(stop: Arc<Notify>) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => return,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.notify_one();
    });
}

fn on_server_message(
    m: pb::ServerMessage,
    worker_id: &str,
    agent: &Arc<Mutex<Agent>>,
    out: &exec::Output,
    sandbox: &Sandbox,
    memory: &memory::MemoryWatch,
    spool: &Arc<spool::Spool>,
) {
    use pb::server_message::Msg;
    let Ok(mut a) = agent.lock() else { return };
    match m.msg {
        Some(Msg::Assign(mut job)) => {
            // Marks the job's processes as this worker's (see `orphans`).
            job.env.insert(orphans::WORKER_VAR.into(), worker_id.to_owned());
            let id = job.attempt_id.clone();
            tracing::debug!(job_id = %job.job_id, attempt_id = %id, "assignment received");
            // A repeated assignment (after a reconnect) never starts the attempt twice.
            if let Some(r) = a.unacked.get(&id) {
                let _ = out.events.send(msg(pb::worker_message::Msg::Result(r.clone())));
                return;
            }
            if a.running.contains_key(&id) {
                return;
            }
            let (stop_tx, stop_rx) = oneshot::channel();
            a.running.insert(id.clone(), stop_tx);
            let (agent, out, sandbox, memory) = (agent.clone(), out.clone(), sandbox.clone(), memory.clone());
            let span = tracing::info_span!("job", job_id = %job.job_id, attempt_id = %id);
            tokio::spawn(tracing::Instrument::instrument(
                async move {
                    let result = exec::run(job, out.clone(), stop_rx, sandbox, memory).await;
                    // Queue the result under the lock: whoever sees the job gone also sees its result.
                    if let Ok(mut a) = agent.lock() {
                        a.running.remove(&id);
                        if let Some(result) = result {
                            a.unacked.insert(id, result.clone());
                            let _ = out.events.send(msg(pb::worker_message::Msg::Result(result)));
                        }
                    }
                },
                span,
            ));
        }
        Some(Msg::Cancel(c)) => {
            if let Some(tx) = a.running.remove(&c.attempt_id) {
                tracing::info!(attempt = %c.attempt_id, reason = %c.reason, "cancelling");
                let _ = tx.send(StopReason::Cancelled);
                // Keep a placeholder so a repeated Assign does not start it again.
                let (keep, _) = oneshot::channel();
                a.running.insert(c.attempt_id, keep);
            }
        }
        Some(Msg::Ack(ack)) => {
            // Its output came before its result on the stream: all of it is stored.
            out.retained.forget(&ack.attempt_id);
            a.unacked.remove(&ack.attempt_id);
            if a.spooled.remove(&ack.attempt_id) {
                spool.remove_result(&ack.attempt_id);
            }
        }
        // Only the first message of a stream; handled where the stream opens.
        Some(Msg::Resume(_)) | None => {}
        // Handled by the stream's loop, which stops the agent.
        Some(Msg::Drained(_)) => {}
    }
}

/// The server answered that it does not know this worker (declared offline and collected, or
/// retired at a restart): the identity is dropped and the agent registers again.
#[derive(Debug)]
struct Forgotten(String);

impl std::fmt::Display for Forgotten {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Forgotten {}

/// How often results not yet acknowledged are written to the spool.
const SPOOL_INTERVAL: Duration = Duration::from_millis(500);

/// Writes to the spool the results that stayed unacknowledged for a whole interval (the server
/// is slow or unreachable), so a restart of this agent still hands them in. A result the server
/// acknowledges at once never touches the disk: writing every result measured 20 % fewer
/// trivial jobs per second. One that ends less than an interval before the agent crashes is lost
/// with it, and its job is retried.
async fn spool_unacked(agent: Arc<Mutex<Agent>>, spool: Arc<spool::Spool>) {
    let mut beat = tokio::time::interval(SPOOL_INTERVAL);
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        beat.tick().await;
        let Ok(mut a) = agent.lock() else { return };
        // Written under the lock (rare: only while the server does not answer), so an Ack
        // cannot remove a file before it is written.
        let a = &mut *a;
        for r in a.unacked.values().filter(|r| seen.contains(&r.attempt_id)) {
            if a.spooled.contains(&r.attempt_id) {
                continue;
            }
            match spool.save_result(r) {
                Ok(()) => drop(a.spooled.insert(r.attempt_id.clone())),
                Err(e) => tracing::warn!(attempt = %r.attempt_id, error = %e, "cannot spool the result; it is kept in memory only"),
            }
        }
        seen = a.unacked.keys().cloned().collect();
    }
}

async fn heartbeats(
    mut client: WorkerServiceClient<Channel>,
    id: Identity,
    agent: Arc<Mutex<Agent>>,
    retained: Arc<retain::Retained>,
    lost: Arc<Notify>,
    disk: std::path::PathBuf,
    memory: memory::MemoryWatch,
) {
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(id.heartbeat_interval);
    loop {
        tick.tick().await;
        seq += 1;
        let running: Vec<String> = agent.lock().map(|a| a.running.keys().cloned().collect()).unwrap_or_default();
        let req = pb::HeartbeatRequest {
            worker_id: id.worker_id.clone(),
            session_token: id.session.clone(),
            seq,
            usage: Some(usage(&memory)),
            running_attempt_ids: running,
            node: Some(node_status(&disk)),
        };
        match client.heartbeat(req).await {
            Ok(r) => {
                let r = r.into_inner();
                retained.stored(&r.stored_logs);
                for stale in r.stale_attempt_ids {
                    if let Ok(mut a) = agent.lock()
                        && let Some(tx) = a.running.remove(&stale)
                    {
                        tracing::warn!(attempt = %stale, "server says this attempt is stale; stopping it");
                        let _ = tx.send(StopReason::Cancelled);
                    }
                }
            }
            Err(s) if s.code() == tonic::Code::NotFound => {
                lost.notify_one();
                return;
            }
            Err(s) => tracing::warn!(error = %s, "heartbeat failed"),
        }
    }
}

/// What the server judges this machine's health from: free space where jobs write, available
/// memory, and this clock.
fn node_status(disk: &std::path::Path) -> pb::NodeStatus {
    let mut n = pb::NodeStatus {
        clock_unix_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
        ..Default::default()
    };
    if let Ok(path) = std::ffi::CString::new(disk.as_os_str().as_encoded_bytes()) {
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a statvfs buffer the call fills.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } == 0 {
            let mb = |blocks: libc::fsblkcnt_t| blocks.saturating_mul(st.f_frsize) >> 20;
            (n.disk_free_mb, n.disk_total_mb) = (mb(st.f_bavail), mb(st.f_blocks));
        }
    }
    if let Ok(info) = std::fs::read_to_string("/proc/meminfo") {
        let kb = |key: &str| info.lines().find_map(|l| l.strip_prefix(key)?.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).unwrap_or(0);
        (n.memory_available_mb, n.memory_total_mb) = (kb("MemAvailable:") >> 10, kb("MemTotal:") >> 10);
    }
    n
}

/// What this worker's jobs use together (at the last sample), and the machine's load.
fn usage(jobs: &memory::MemoryWatch) -> pb::Usage {
    let load1 = std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok())).unwrap_or(0.0);
    let (cpu_used_m, memory_used_mb) = jobs.totals();
    pb::Usage { load1, cpu_used_m, memory_used_mb, ..Default::default() }
}

type Session<'a> = (WorkerServiceClient<Channel>, Identity, mpsc::UnboundedSender<pb::WorkerMessage>, &'a mut mpsc::UnboundedReceiver<pb::WorkerMessage>);

/// Stops every job (they report no result: the server requeues them when this worker
/// deregisters or its lease expires), forwards what is still queued, and deregisters.
async fn shutdown(agent: &Arc<Mutex<Agent>>, session: Option<Session<'_>>, spool: &spool::Spool) -> anyhow::Result<()> {
    let n = {
        let mut a = agent.lock().map_err(|_| anyhow::anyhow!("agent state poisoned"))?;
        // Each job removes its own entry when it has ended, so `running` empties only then.
        for tx in a.running.values_mut() {
            let (placeholder, _) = oneshot::channel();
            let _ = std::mem::replace(tx, placeholder).send(StopReason::Shutdown);
        }
        a.unacked.len()
    };
    tracing::info!(unacked = n, "stopping");
    if let Some((mut client, id, tx, events)) = session {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let idle = agent.lock().map(|a| a.running.is_empty()).unwrap_or(true);
            if idle && events.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            // Jobs stopped for shutdown send nothing, so look again soon rather than wait for an event.
            match tokio::time::timeout(Duration::from_millis(50), events.recv()).await {
                Ok(Some(m)) => {
                    let _ = tx.send(m);
                }
                Ok(None) => break,
                Err(_) => {}
            }
        }
        // Give the stream a moment to carry the last results out.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if client.deregister(pb::DeregisterRequest { worker_id: id.worker_id, session_token: id.session }).await.is_ok() {
            // Deregistered: the next start registers anew.
            spool.forget_identity();
        }
    }
    Ok(())
}
