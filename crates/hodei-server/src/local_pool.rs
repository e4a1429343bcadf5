//! The built-in static pool `local`: worker agents started as child processes of the server,
//! connecting over loopback gRPC exactly like remote workers. A worker that dies is replaced;
//! children watch their parent and exit with it (`--exit-with-parent`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Clone, Debug)]
pub struct LocalWorkerSpec {
    pub exe: PathBuf,
    pub grpc_url: String,
    pub pool: String,
    /// Read at each start, so a worker started after a rotation uses the new token.
    pub join_token_file: PathBuf,
    pub slots: u32,
    pub cpu_m: u32,
    pub memory_mb: u32,
    pub data_dir: PathBuf,
    /// This server process's id, given to its workers as a label so a restarted server knows
    /// which stored workers died with their parent.
    pub instance: String,
    /// `workers.run_as`, handed on as `--run-as`.
    pub run_as: Option<String>,
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

/// Keeps worker `index` alive until `shutdown` flips to true.
pub fn supervise(spec: LocalWorkerSpec, index: u32, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let join_token = match std::fs::read_to_string(&spec.join_token_file) {
                Ok(t) => t.trim().to_owned(),
                Err(e) => {
                    tracing::error!(error = %e, file = %spec.join_token_file.display(), "cannot read the pool's join token; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            let spool = spec.data_dir.join("workers").join(format!("{}-{index}", spec.pool));
            let mut cmd = Command::new(&spec.exe);
            cmd.arg("worker")
                .args(["--server", &spec.grpc_url, "--pool", &spec.pool])
                .args(["--slots", &spec.slots.to_string(), "--cpu-m", &spec.cpu_m.to_string(), "--memory-mb", &spec.memory_mb.to_string()])
                .args(["--instance-name", &format!("{}-{index}", spec.pool)])
                .arg("--spool-dir")
                .arg(&spool)
                .args(spec.run_as.iter().flat_map(|u| ["--run-as", u]))
                .arg("--exit-with-parent")
                .args(["--labels", &format!("{}={}", crate::engine::SERVER_INSTANCE_LABEL, spec.instance)])
                .env("HODEI_JOIN_TOKEN", &join_token)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true);
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
