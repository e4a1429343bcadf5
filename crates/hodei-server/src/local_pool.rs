//! Pools whose provider is `local` — the built-in pool `local`, and pools of the configuration
//! file — get as many worker agents as their desired size, started by the server and
//! connecting over loopback gRPC exactly like remote workers; one that dies is replaced
//! ([`LocalPools`] keeps the count as the autoscaler moves it). They run in sessions of their own, so a server
//! that crashes leaves them and their jobs running: they spool results, keep retrying the
//! address in `workers/server` (rewritten by each server at start) and stop after
//! `workers.gc_after_ms` without a server. A restarted server adopts the agents it finds
//! running — each holds the lock of its spool directory, which names its pid — instead of
//! starting new ones, and starts an agent only for a slot whose agent is gone. A clean stop of
//! the server stops its agents (SIGTERM: they hand their jobs back).

use std::fs::OpenOptions;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where an agent's join token comes from.
#[derive(Clone, Debug)]
pub enum JoinToken {
    /// Read at each start, so a worker started after a rotation uses the new token.
    File(PathBuf),
    /// Set in the configuration file.
    Fixed(String),
}

#[derive(Clone, Debug)]
pub struct LocalWorkerSpec {
    pub exe: PathBuf,
    pub grpc_url: String,
    pub pool: String,
    /// How many agents the pool has at start (its desired size).
    pub count: u32,
    pub join_token: JoinToken,
    pub slots: u32,
    pub cpu_m: u32,
    pub memory_mb: u32,
    pub gpu: u32,
    pub data_dir: PathBuf,
    /// `workers.run_as`, handed on as `--run-as`.
    pub run_as: Option<String>,
    /// `workers.cgroups`, handed on as `--cgroups`.
    pub cgroups: bool,
    /// `workers.gc_after_ms`: how long an agent waits for a server that is gone.
    pub give_up_after: Duration,
}

/// What every local agent of this server shares; a pool adds its shape and join token.
#[derive(Clone, Debug)]
pub struct AgentTemplate {
    pub exe: PathBuf,
    pub data_dir: PathBuf,
    /// `workers.run_as`, handed on as `--run-as`.
    pub run_as: Option<String>,
    /// `workers.cgroups`, handed on as `--cgroups`.
    pub cgroups: bool,
    /// `workers.gc_after_ms`: how long an agent waits for a server that is gone.
    pub give_up_after: Duration,
}

impl AgentTemplate {
    /// The agents of `pool`, `count` of them at start (the grpc URL is set when they start).
    pub fn spec(&self, pool: &hodei_core::Pool, join_token: JoinToken, count: u32) -> LocalWorkerSpec {
        LocalWorkerSpec {
            exe: self.exe.clone(),
            grpc_url: String::new(),
            pool: pool.id.to_string(),
            count,
            join_token,
            slots: pool.worker_slots,
            cpu_m: pool.worker_resources.cpu_m.get(),
            memory_mb: pool.worker_resources.memory_mb.get(),
            gpu: pool.worker_resources.gpu.0,
            data_dir: self.data_dir.clone(),
            run_as: self.run_as.clone(),
            cgroups: self.cgroups,
            give_up_after: self.give_up_after,
        }
    }
}

impl LocalWorkerSpec {
    fn spool(&self, index: u32) -> PathBuf {
        self.data_dir.join("workers").join(format!("{}-{index}", self.pool))
    }

    fn server_file(&self) -> PathBuf {
        self.data_dir.join("workers").join("server")
    }
}

/// Cores and memory this machine offers to the built-in pool.
pub fn machine_shape() -> (u32, u32) {
    let cores = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let mem_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<u64>().ok()))
        .map(|kb| (kb / 1024) as u32)
        .unwrap_or(4096);
    (cores, mem_mb)
}

/// The pid of the agent holding the spool directory `spool`, or `None` when none does.
pub fn agent_in(spool: &Path) -> Option<i32> {
    let lock = OpenOptions::new().read(true).open(spool.join("lock")).ok()?;
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
        return None;
    }
    // Held: the agent wrote its pid after taking the lock (or is about to).
    std::fs::read_to_string(spool.join("lock")).ok()?.trim().parse().ok().filter(|p: &i32| *p > 0)
}

/// Instance names (`<pool>-<n>`) of the local agents running now, left by a previous server.
pub fn running(data_dir: &Path) -> std::collections::HashSet<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("workers")) else { return Default::default() };
    entries.flatten().filter(|e| agent_in(&e.path()).is_some()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

/// The index of instance `name` (`<pool>-<n>`) of `pool`, if it is one.
pub fn index_of(pool: &str, name: &str) -> Option<u32> {
    name.strip_prefix(pool)?.strip_prefix('-').filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))?.parse().ok()
}

/// Writes where local agents find this server (`grpc_url`), before any is started or adopted,
/// and stops running agents of pools that are not local pools any more. The others are
/// adopted by [`LocalPools::start`] (and drained by the autoscaler if their pool is smaller now).
pub fn publish(data_dir: &Path, grpc_url: &str, specs: &[LocalWorkerSpec]) -> std::io::Result<()> {
    let dir = data_dir.join("workers");
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join("server.tmp");
    std::fs::write(&tmp, format!("{grpc_url}\n"))?;
    std::fs::rename(&tmp, dir.join("server"))?;
    for entry in std::fs::read_dir(&dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !specs.iter().any(|s| index_of(&s.pool, &name).is_some())
            && let Some(pid) = agent_in(&entry.path())
        {
            tracing::info!(pid, slot = %name, "stopping a local worker of a pool that has no local workers any more");
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    Ok(())
}

/// Waits until the agent holding `spool` is gone; on shutdown, stops it first (SIGTERM, then
/// SIGKILL after 5 s). Returns false when the server is shutting down.
async fn adopt(spool: &Path, pid: i32, index: u32, shutdown: &mut watch::Receiver<bool>) -> bool {
    tracing::info!(index, pid, "adopting a built-in worker left running by a previous server");
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                if agent_in(spool).is_none() {
                    tracing::warn!(index, pid, "adopted local worker exited; starting a replacement");
                    return true;
                }
            }
            _ = shutdown.changed() => {
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while agent_in(spool).is_some() {
                    if tokio::time::Instant::now() >= deadline {
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                return false;
            }
        }
    }
}

/// Keeps worker `index` alive until `shutdown` flips to true, or until it exits after `retire`
/// flipped to true (it was drained: the pool got smaller).
pub fn supervise(spec: LocalWorkerSpec, index: u32, mut shutdown: watch::Receiver<bool>, retire: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        let spool = spec.spool(index);
        loop {
            if *shutdown.borrow() || *retire.borrow() {
                return;
            }
            if let Some(pid) = agent_in(&spool) {
                if !adopt(&spool, pid, index, &mut shutdown).await {
                    return;
                }
                continue;
            }
            let join_token = match &spec.join_token {
                JoinToken::Fixed(t) => Ok(t.clone()),
                JoinToken::File(f) => std::fs::read_to_string(f).map(|t| t.trim().to_owned()).map_err(|e| (e, f)),
            };
            let join_token = match join_token {
                Ok(t) => t,
                Err((e, file)) => {
                    tracing::error!(error = %e, file = %file.display(), "cannot read the pool's join token; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            let mut cmd = Command::new(&spec.exe);
            cmd.arg("worker")
                .args(["--server", &spec.grpc_url, "--pool", &spec.pool])
                .arg("--server-file")
                .arg(spec.server_file())
                .args(["--give-up-after-ms", &spec.give_up_after.as_millis().to_string()])
                .args(["--slots", &spec.slots.to_string(), "--cpu-m", &spec.cpu_m.to_string(), "--memory-mb", &spec.memory_mb.to_string()])
                .args(["--gpu", &spec.gpu.to_string()])
                .args(["--instance-name", &format!("{}-{index}", spec.pool)])
                .arg("--spool-dir")
                .arg(&spool)
                .args(spec.run_as.iter().flat_map(|u| ["--run-as", u]))
                .args(spec.cgroups.then_some("--cgroups"))
                .env("HODEI_JOIN_TOKEN", &join_token)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            // A session of its own: neither the server's death nor a Ctrl-C in its terminal
            // reaches the agent (the server stops it itself when it stops cleanly).
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, exe = %spec.exe.display(), "could not start a local worker; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            let started = std::time::Instant::now();
            tokio::select! {
                status = child.wait() => {
                    if *retire.borrow() {
                        tracing::info!(index, ?status, pool = %spec.pool, "local worker retired");
                        return;
                    }
                    tracing::warn!(index, ?status, "local worker exited; starting a replacement");
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = Duration::from_millis(200);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                _ = shutdown.changed() => {
                    // SIGTERM lets the worker stop its jobs and say goodbye; then make sure.
                    if let Some(pid) = child.id() {
                        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                    }
                    if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                        let _ = child.kill().await;
                    }
                    return;
                }
            }
        }
    })
}

/// A worker of a local pool as the engine sees it, for choosing which ones a smaller pool drops.
#[derive(Clone, Debug)]
pub struct WorkerBrief {
    pub id: hodei_core::WorkerId,
    pub instance_name: String,
    pub state: hodei_core::WorkerState,
    pub slots_used: u32,
    pub idle_since: Option<hodei_core::Timestamp>,
}

struct Slot {
    retire: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The agents of every local pool, one supervisor per index, kept at each pool's desired size.
pub struct LocalPools {
    specs: std::collections::HashMap<String, LocalWorkerSpec>,
    slots: std::collections::HashMap<String, std::collections::BTreeMap<u32, Slot>>,
    shutdown: watch::Receiver<bool>,
    /// For local pools created while the server runs; `None` when this server starts no agents.
    template: Option<AgentTemplate>,
    grpc_url: String,
}

impl LocalPools {
    /// Adopts every agent of these pools left running by a previous server and starts agents
    /// up to each pool's `count`.
    pub fn start(template: Option<AgentTemplate>, specs: Vec<LocalWorkerSpec>, grpc_url: &str, shutdown: watch::Receiver<bool>) -> LocalPools {
        let mut me = LocalPools { specs: Default::default(), slots: Default::default(), shutdown, template, grpc_url: grpc_url.to_owned() };
        for spec in specs {
            me.add(spec);
        }
        me
    }

    fn add(&mut self, mut spec: LocalWorkerSpec) {
        spec.grpc_url = self.grpc_url.clone();
        let pool = spec.pool.clone();
        let count = spec.count;
        let running: Vec<u32> = running(&spec.data_dir).iter().filter_map(|n| index_of(&pool, n)).collect();
        self.specs.insert(pool.clone(), spec);
        for i in running {
            self.launch(&pool, i);
        }
        // Up to `count`; fewer is the autoscaler's to decide, knowing which workers are busy.
        if self.kept(&pool) < count {
            self.resize(&pool, count, &[]);
        }
    }

    /// Starts keeping a local pool created through the API (its join token in the data dir's
    /// `pool-<id>.token`), from no agent; the autoscaler then brings it to its desired size.
    pub fn ensure(&mut self, pool: &hodei_core::Pool) {
        if pool.provider != "local" || self.has(pool.id.as_str()) {
            return;
        }
        let Some(t) = &self.template else { return };
        let spec = t.spec(pool, JoinToken::File(crate::tokens::join_token_path(&t.data_dir, &pool.id)), 0);
        tracing::info!(pool = %pool.id, "starting to keep a local pool created through the API");
        self.add(spec);
    }

    /// Whether `pool`'s workers are started here.
    pub fn has(&self, pool: &str) -> bool {
        self.specs.contains_key(pool)
    }

    fn launch(&mut self, pool: &str, index: u32) {
        let Some(spec) = self.specs.get(pool) else { return };
        let (retire, rx) = watch::channel(false);
        let task = supervise(spec.clone(), index, self.shutdown.clone(), rx);
        self.slots.entry(pool.to_owned()).or_default().insert(index, Slot { retire, task });
    }

    /// Agents kept (not retired) for `pool`.
    pub fn kept(&self, pool: &str) -> u32 {
        self.slots.get(pool).map_or(0, |s| s.values().filter(|x| !*x.retire.borrow()).count() as u32)
    }

    /// Brings `pool` to `desired` agents: starts agents at the lowest free indices, or retires
    /// agents — first those not registered yet (stopped at once), then idle workers (longest
    /// idle first), then the least busy. Returns the workers to drain (their agents exit once
    /// their jobs end, and are not restarted).
    pub fn resize(&mut self, pool: &str, desired: u32, workers: &[WorkerBrief]) -> Vec<hodei_core::WorkerId> {
        let slots = self.slots.entry(pool.to_owned()).or_default();
        slots.retain(|_, s| !s.task.is_finished());
        // A worker being drained (by an admin, or by an earlier resize) is on its way out: its
        // agent is not restarted when it exits, and the pool counts without it.
        for w in workers.iter().filter(|w| w.state == hodei_core::WorkerState::Draining) {
            if let Some(slot) = index_of(pool, &w.instance_name).and_then(|i| slots.get(&i)) {
                let _ = slot.retire.send(true);
            }
        }
        let kept: Vec<u32> = slots.iter().filter(|(_, s)| !*s.retire.borrow()).map(|(i, _)| *i).collect();
        let mut drain = Vec::new();
        if (kept.len() as u32) < desired {
            let mut free = (0u32..).filter(|i| !slots.contains_key(i));
            let new: Vec<u32> = free.by_ref().take((desired as usize) - kept.len()).collect();
            for i in new {
                self.launch(pool, i);
            }
        } else if kept.len() as u32 > desired {
            use hodei_core::WorkerState as S;
            let worker_of = |i: u32| workers.iter().find(|w| index_of(pool, &w.instance_name) == Some(i) && matches!(w.state, S::Idle | S::Busy));
            let mut order: Vec<(u32, Option<&WorkerBrief>)> = kept.iter().map(|i| (*i, worker_of(*i))).collect();
            order.sort_by_key(|(i, w)| match w {
                None => (0, 0, 0, std::cmp::Reverse(*i)),
                Some(w) if w.state == S::Idle => (1, w.idle_since.map_or(i64::MAX, |t| t.as_millis()), 0, std::cmp::Reverse(*i)),
                Some(w) => (2, 0, i64::from(w.slots_used), std::cmp::Reverse(*i)),
            });
            let spool_of = |i: u32| self.specs.get(pool).map(|s| s.spool(i));
            for (i, w) in order.into_iter().take(kept.len() - desired as usize) {
                if let Some(slot) = self.slots.get(pool).and_then(|s| s.get(&i)) {
                    let _ = slot.retire.send(true);
                }
                match w {
                    Some(w) => drain.push(w.id),
                    None => {
                        if let Some(pid) = spool_of(i).as_deref().and_then(agent_in) {
                            unsafe { libc::kill(pid, libc::SIGTERM) };
                        }
                    }
                }
            }
        }
        drain
    }

    /// Waits for every supervisor (after shutdown flipped).
    pub async fn join(mut self) {
        for (_, slots) in std::mem::take(&mut self.slots) {
            for (_, s) in slots {
                let _ = s.task.await;
            }
        }
    }
}

impl Drop for LocalPools {
    /// Supervisors stop with their owner; the agents keep running, as after a crash (a
    /// restarted server adopts them).
    fn drop(&mut self) {
        for s in self.slots.values().flat_map(|s| s.values()) {
            s.task.abort();
        }
    }
}

#[async_trait::async_trait]
impl crate::providers::Provider for LocalPools {
    fn runs(&self, pool: &str) -> bool {
        self.has(pool)
    }

    fn ensure(&mut self, pool: &hodei_core::Pool) {
        LocalPools::ensure(self, pool);
    }

    fn cheap(&self) -> bool {
        true
    }

    async fn resize(&mut self, pool: &hodei_core::Pool, desired: u32, workers: &[WorkerBrief], _now: jiff::Timestamp) -> crate::providers::Resized {
        let drain = LocalPools::resize(self, pool.id.as_str(), desired, workers);
        crate::providers::Resized { drain, attempted: true, ..Default::default() }
    }

    async fn instances(&self, pool: &str) -> Result<Vec<String>, String> {
        let Some(spec) = self.specs.get(pool) else { return Ok(Vec::new()) };
        let mut names: Vec<String> = running(&spec.data_dir).into_iter().filter(|n| index_of(pool, n).is_some()).collect();
        names.sort_by_key(|n| index_of(pool, n));
        Ok(names)
    }

    async fn join(self: Box<Self>) {
        LocalPools::join(*self).await;
    }
}
