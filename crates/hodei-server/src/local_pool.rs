//! Pools whose provider is `local` — the built-in pool `local`, and static pools of the
//! configuration file — get `min_size` worker agents started by the server, connecting over
//! loopback gRPC exactly like remote workers; one that dies is replaced. They run in sessions of their own, so a server
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
    /// How many agents the pool keeps (its `min_size`).
    pub count: u32,
    pub join_token: JoinToken,
    pub slots: u32,
    pub cpu_m: u32,
    pub memory_mb: u32,
    pub gpu: u32,
    pub data_dir: PathBuf,
    /// `workers.run_as`, handed on as `--run-as`.
    pub run_as: Option<String>,
    /// `workers.gc_after_ms`: how long an agent waits for a server that is gone.
    pub give_up_after: Duration,
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

/// Writes where local agents find this server (`grpc_url`), before any is started or adopted,
/// and stops running agents of slots no pool has any more (a pool got smaller or went away).
pub fn publish(data_dir: &Path, grpc_url: &str, specs: &[LocalWorkerSpec]) -> std::io::Result<()> {
    let dir = data_dir.join("workers");
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join("server.tmp");
    std::fs::write(&tmp, format!("{grpc_url}\n"))?;
    std::fs::rename(&tmp, dir.join("server"))?;
    let wanted: std::collections::HashSet<String> = specs.iter().flat_map(|s| (0..s.count).map(|i| format!("{}-{i}", s.pool))).collect();
    for entry in std::fs::read_dir(&dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !wanted.contains(&name)
            && let Some(pid) = agent_in(&entry.path())
        {
            tracing::info!(pid, slot = %name, "stopping a local worker of a slot no pool has");
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

/// Keeps worker `index` alive until `shutdown` flips to true.
pub fn supervise(spec: LocalWorkerSpec, index: u32, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        let spool = spec.spool(index);
        loop {
            if *shutdown.borrow() {
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
