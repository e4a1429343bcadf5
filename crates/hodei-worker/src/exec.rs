//! Running one attempt: argv without a shell, in its own process group, output streamed as
//! written, timeout and cancel killing the whole group (SIGTERM, grace, SIGKILL).
//!
//! Waiting holds no thread: the pipes are read and the process is awaited (through a pidfd)
//! on the runtime, so an agent runs thousands of jobs at once. (Three blocking threads per job
//! ran into tokio's 512-thread pool at ~170 jobs: later jobs' output and ends waited for an
//! earlier job to finish, and every fork copied thousands of thread-stack mappings.)

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hodei_proto::v1 as pb;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

use crate::cgroup::Cgroups;
use crate::memory::MemoryWatch;
use crate::retain::Retained;
use crate::user::JobUser;

/// Where and as whom attempts run.
#[derive(Clone, Debug)]
pub struct Sandbox {
    /// One directory per attempt without a working dir, kept out of the spool.
    pub scratch_root: PathBuf,
    /// The user jobs run as, when the agent switches users (it runs as root).
    pub user: Option<JobUser>,
    /// Empty scratch directories of ended attempts, to be given to the next ones.
    spare: Arc<std::sync::Mutex<Spare>>,
    /// A cgroup per job, where the machine allows it.
    pub cgroups: Option<Arc<Cgroups>>,
}

#[derive(Debug, Default)]
struct Spare {
    dirs: Vec<PathBuf>,
    named: u64,
}

/// Spare scratch directories kept at most: as many as attempts end at once, in practice.
const SPARE_DIRS: usize = 256;

impl Sandbox {
    pub fn new(scratch_root: PathBuf, user: Option<JobUser>) -> Sandbox {
        Sandbox { scratch_root, user, spare: Arc::default(), cgroups: None }
    }

    /// Jobs run in cgroups of their own (`enabled`), or their memory is watched through procfs.
    /// Asked for where the machine gives the agent none, it is an error naming why: limits
    /// asked for are never quietly not enforced.
    pub fn with_cgroups(mut self, enabled: bool) -> anyhow::Result<Sandbox> {
        if enabled {
            let c = Cgroups::new().map_err(|why| anyhow::anyhow!("cgroups for jobs: {why}"))?;
            tracing::info!(version = ?c.version(), at = %c.base().display(), "jobs run in cgroups of their own, limited to the memory and cpu they asked for");
            if !c.cheap_moves() {
                tracing::warn!(
                    "no cgroup file system is mounted with favordynmods: moving each new job into its cgroup waits for the kernel \
                     (an RCU grace period, milliseconds); `mount -o remount,favordynmods` on the cgroup2 mount makes it cheap"
                );
            }
            self.cgroups = Some(c);
        }
        Ok(self)
    }

    /// The attempt's scratch directory, `<scratch_root>/<attempt>`: owned by the job's user,
    /// private to it and empty. An ended attempt's directory that it left empty is renamed
    /// for the next one — making a directory allocates an inode, which cost ext4 more than
    /// running `true` did (measured: 7 % of the CPU at 1 400 jobs/s, with its removal 9 %).
    fn take_scratch(&self, attempt: &str) -> std::io::Result<PathBuf> {
        let dir = self.scratch_root.join(attempt);
        let spare = self.spare.lock().ok().and_then(|mut s| s.dirs.pop());
        if let Some(d) = spare
            && std::fs::rename(&d, &dir).is_ok()
        {
            return Ok(dir);
        }
        make_scratch(&dir, self.user.as_ref())?;
        Ok(dir)
    }

    /// Gives an ended attempt's directory back: kept as a spare if the job left it empty and
    /// as it was made (a directory, the job user's, mode 0700), removed otherwise.
    fn return_scratch(&self, dir: &std::path::Path) {
        use std::os::unix::fs::MetadataExt;
        let pristine = std::fs::symlink_metadata(dir)
            .is_ok_and(|m| m.is_dir() && m.mode() & 0o7777 == 0o700 && self.user.as_ref().is_none_or(|u| (m.uid(), m.gid()) == (u.uid, u.gid)))
            && std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none());
        if pristine
            && let Ok(mut s) = self.spare.lock()
            && s.dirs.len() < SPARE_DIRS
        {
            s.named += 1;
            let name = self.scratch_root.join(format!(".spare-{}", s.named));
            if std::fs::rename(dir, &name).is_ok() {
                s.dirs.push(name);
                return;
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Why the worker stopped a process before it ended by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    Shutdown,
}

fn msg(m: pb::worker_message::Msg) -> pb::WorkerMessage {
    pb::WorkerMessage { msg: Some(m) }
}

struct Exit {
    code: Option<i32>,
    signal: Option<i32>,
    cpu_time_ms: u64,
    max_rss_mb: u64,
}

/// Waits for `pid` to end and reaps it with wait4, for its resource usage. A pidfd tells when
/// it ended, so no thread is held meanwhile; where pidfds are missing (Linux before 5.3) a
/// blocking thread waits instead.
async fn reap(pid: i32) -> Exit {
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a pidfd just opened, owned by the OwnedFd (and then by the AsyncFd) alone.
    let fd = (raw >= 0).then(|| unsafe { AsyncFd::register(OwnedFd::from_raw_fd(raw as i32)) }.ok()).flatten();
    let Some(fd) = fd else {
        return tokio::task::spawn_blocking(move || wait4(pid, 0)).await.ok().flatten().unwrap_or(Exit::UNKNOWN);
    };
    loop {
        let Ok(mut ready) = fd.readable().await else { break };
        match wait4(pid, libc::WNOHANG) {
            Some(e) => return e,
            None => ready.clear_ready(),
        }
    }
    tokio::task::spawn_blocking(move || wait4(pid, 0)).await.ok().flatten().unwrap_or(Exit::UNKNOWN)
}

impl Exit {
    const UNKNOWN: Exit = Exit { code: None, signal: None, cpu_time_ms: 0, max_rss_mb: 0 };
}

/// wait4 on `pid`: its exit and resource usage, `None` while it still runs (with `WNOHANG`), or
/// `Exit::UNKNOWN` if it cannot be waited for.
fn wait4(pid: i32, flags: i32) -> Option<Exit> {
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut ru) };
        if r == pid {
            break;
        }
        if r == 0 {
            return None;
        }
        if r == -1 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Some(Exit::UNKNOWN);
        }
    }
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    Some(Exit { code, signal, cpu_time_ms: tv(ru.ru_utime) + tv(ru.ru_stime), max_rss_mb: (ru.ru_maxrss as u64).div_ceil(1024) })
}

fn kill_group(pgid: i32, sig: i32) {
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Where an attempt's output goes: to the server, and kept until the server has stored it.
#[derive(Clone)]
pub struct Output {
    pub events: mpsc::UnboundedSender<pb::WorkerMessage>,
    pub retained: Arc<Retained>,
}

impl Output {
    fn log(&self, attempt: &str, stream: pb::LogStream, offset: u64, data: &[u8]) {
        // Kept first: a new stream's resend then covers every chunk queued before it.
        self.retained.push(attempt, stream, offset, data);
        let chunk = pb::LogChunk { attempt_id: attempt.to_owned(), stream: stream as i32, offset, data: data.to_vec() };
        let _ = self.events.send(msg(pb::worker_message::Msg::Log(chunk)));
    }
}

/// Copies one pipe into LogChunks until EOF, dropping output past `cap` (and saying so). The
/// buffer is made when there is something to read: a job that prints nothing costs none.
async fn pump(pipe: pipe::Receiver, attempt: String, stream: pb::LogStream, cap: u64, out: Output, bytes: Arc<AtomicU64>, truncated: Arc<AtomicBool>) {
    let mut buf = Vec::new();
    let mut offset = 0u64;
    loop {
        if pipe.readable().await.is_err() {
            return;
        }
        if buf.is_empty() {
            buf = vec![0u8; 64 * 1024];
        }
        let n = match pipe.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        };
        let room = cap.saturating_sub(offset) as usize;
        let take = n.min(room);
        if take < n {
            truncated.store(true, Ordering::Relaxed);
        }
        if take > 0 {
            out.log(&attempt, stream, offset, &buf[..take]);
            offset += take as u64;
            bytes.fetch_add(take as u64, Ordering::Relaxed);
        }
    }
}

/// Runs the attempt to its end and returns its Result. `Accepted` and log chunks go to `out`
/// as they happen. An attempt stopped because the worker itself is shutting down has no result
/// (`None`): it was not the user's cancel, and the server requeues it as lost.
/// What every job's environment starts from: `PATH`, `HOME` and `LANG` as the agent has them
/// (`PATH` defaults to the standard directories, `LANG` to `C.UTF-8`) and `TMPDIR` as the
/// agent's temporary directory.
pub fn base_env() -> Vec<(&'static str, std::ffi::OsString)> {
    let var = |k: &str, default: &str| std::env::var_os(k).unwrap_or_else(|| default.into());
    vec![
        ("PATH", var("PATH", "/usr/local/bin:/usr/bin:/bin")),
        ("HOME", var("HOME", "/")),
        ("LANG", var("LANG", "C.UTF-8")),
        ("TMPDIR", std::env::temp_dir().into_os_string()),
    ]
}

/// Creates an attempt's scratch directory, owned by the job's user and private to it.
fn make_scratch(dir: &std::path::Path, user: Option<&JobUser>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    if let Some(u) = user {
        std::os::unix::fs::chown(dir, Some(u.uid), Some(u.gid))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

pub async fn run(a: pb::AssignJob, out: Output, stop: oneshot::Receiver<StopReason>, sandbox: Sandbox, memory: MemoryWatch) -> Option<pb::Result> {
    let mut shutdown = false;
    let r = run_inner(a, out, stop, sandbox, memory, &mut shutdown).await;
    (!shutdown).then_some(r)
}

async fn run_inner(
    a: pb::AssignJob,
    out: Output,
    stop: oneshot::Receiver<StopReason>,
    sandbox: Sandbox,
    memory: MemoryWatch,
    shutdown: &mut bool,
) -> pb::Result {
    let started_at_ms = now_ms();
    let mut result = pb::Result { attempt_id: a.attempt_id.clone(), started_at_ms, ..Default::default() };
    let fail = |mut r: pb::Result, reason: &str| {
        r.outcome = pb::Outcome::Failed as i32;
        r.failure_reason = reason.to_owned();
        r.finished_at_ms = now_ms();
        r
    };
    let Some((prog, args)) = a.argv.split_first() else { return fail(result, "spawn_error") };
    if !a.image.is_empty() {
        return fail(result, "image_error");
    }
    let scratch = if a.working_dir.is_empty() {
        match sandbox.take_scratch(&a.attempt_id) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(error = %e, root = %sandbox.scratch_root.display(), "cannot create the attempt's scratch directory");
                return fail(result, "spawn_error");
            }
        }
    } else {
        None
    };
    let dir = scratch.clone().unwrap_or_else(|| PathBuf::from(&a.working_dir));
    if scratch.is_none() && !dir.is_dir() {
        out.log(&a.attempt_id, pb::LogStream::Stderr, 0, format!("hodei: the working directory {} does not exist on this worker\n", dir.display()).as_bytes());
        return fail(result, "spawn_error");
    }
    let mut cmd = Command::new(prog);
    // A job never inherits the agent's environment (nor, for the built-in pool, the server's:
    // tokens, database URLs): it gets the documented base, then its spec's `env` and the
    // HODEI_* job variables from the assignment.
    cmd.env_clear().envs(base_env());
    if let Some(u) = &sandbox.user {
        // std drops the supplementary groups too when a root parent sets the uid.
        cmd.uid(u.uid).gid(u.gid).env("HOME", &u.home);
    }
    cmd.args(args).envs(&a.env).current_dir(&dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let (cpu_m, limit_mb, gpus) = a.resources.as_ref().map_or((0, 0, 0), |r| (r.cpu_m, r.memory_mb, r.gpu));
    let cgroup = match sandbox.cgroups.as_ref().map(|c| c.take(cpu_m, limit_mb)).transpose() {
        Ok(c) => c,
        Err(e) => {
            // Never run a job without the limits this agent enforces on every job.
            tracing::warn!(attempt = %a.attempt_id, error = %e, "cannot prepare the job's cgroup");
            out.log(&a.attempt_id, pb::LogStream::Stderr, 0, format!("hodei: cannot prepare the job's cgroup: {e}\n").as_bytes());
            if let Some(d) = &scratch {
                sandbox.return_scratch(d);
            }
            return fail(result, "spawn_error");
        }
    };
    if let Some(cg) = &cgroup {
        cg.join_on_exec(&mut cmd);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            out.log(&a.attempt_id, pb::LogStream::Stderr, 0, format!("hodei: cannot start {prog:?}: {e}\n").as_bytes());
            if let Some(d) = &scratch {
                sandbox.return_scratch(d);
            }
            if let Some(cg) = cgroup {
                cg.end();
            }
            return fail(result, "spawn_error");
        }
    };
    let pid = child.id() as i32;
    tracing::debug!(attempt = %a.attempt_id, pid, "process started");
    let _ = out.events.send(msg(pb::worker_message::Msg::Accepted(pb::Accepted { attempt_id: a.attempt_id.clone(), started_at_ms })));

    let bytes = Arc::new(AtomicU64::new(0));
    let truncated = Arc::new(AtomicBool::new(false));
    let mut pumps = Vec::new();
    let pipes = [(child.stdout.take().map(OwnedFd::from), pb::LogStream::Stdout), (child.stderr.take().map(OwnedFd::from), pb::LogStream::Stderr)];
    for (fd, stream) in pipes {
        let Some(fd) = fd else { continue };
        let raw = fd.as_raw_fd();
        match pipe::Receiver::from_owned_fd(fd) {
            Ok(p) => {
                let (o, id, b, t) = (out.clone(), a.attempt_id.clone(), bytes.clone(), truncated.clone());
                pumps.push(tokio::spawn(pump(p, id, stream, a.max_log_bytes, o, b, t)));
            }
            Err(e) => tracing::warn!(attempt = %a.attempt_id, fd = raw, error = %e, "cannot read the job's output"),
        }
    }
    // `child` is reaped by wait4 below, not by std; forget it so nothing else waits on it.
    std::mem::forget(child);
    let exit = reap(pid);
    tokio::pin!(exit);
    // In a cgroup the kernel holds the job to its memory; otherwise the watch does.
    let watch_limit = if cgroup.is_some() { 0 } else { limit_mb };
    let over = memory.watch(pid, &a.attempt_id, watch_limit, gpus, cgroup.as_ref().map(|c| c.reader.clone()));
    let over_memory = async {
        match over.await {
            Ok(rss) => Some(rss),
            Err(_) => std::future::pending().await,
        }
    };

    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    let grace = Duration::from_millis(a.kill_grace_ms);
    let mut why: Option<pb::Outcome> = None;
    let mut oom = false;
    let done = tokio::select! {
        e = &mut exit => Some(e),
        _ = tokio::time::sleep(timeout) => { why = Some(pb::Outcome::TimedOut); None }
        Some(rss) = over_memory => {
            tracing::info!(attempt = %a.attempt_id, rss_mb = rss >> 20, limit_mb, "over its memory; killing");
            oom = true;
            kill_group(pid, libc::SIGKILL);
            why = Some(pb::Outcome::Failed);
            None
        }
        r = stop => {
            // A dropped sender means the agent is going away, like a shutdown.
            *shutdown = !matches!(r, Ok(StopReason::Cancelled));
            why = Some(pb::Outcome::Cancelled);
            None
        }
    };
    let exit = match done {
        Some(e) => e,
        None => {
            kill_group(pid, libc::SIGTERM);
            match tokio::time::timeout(grace, &mut exit).await {
                Ok(e) => e,
                Err(_) => {
                    kill_group(pid, libc::SIGKILL);
                    exit.await
                }
            }
        }
    };
    // Leftover processes of the group would hold the pipes open: the job is over, so are they.
    kill_group(pid, libc::SIGKILL);
    for p in pumps {
        let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
    }
    memory.forget(pid);
    // The kernel killed one of its processes for being over the cgroup's memory.
    let killed = cgroup.is_some_and(crate::cgroup::JobCgroup::end);
    if killed && why.is_none() && exit.code != Some(0) {
        oom = true;
        tracing::info!(attempt = %a.attempt_id, limit_mb, "over its memory; killed by the kernel");
        why = Some(pb::Outcome::Failed);
    }
    if let Some(d) = &scratch {
        sandbox.return_scratch(d);
    }
    result.finished_at_ms = now_ms();
    result.stdout_bytes = bytes.load(Ordering::Relaxed);
    result.log_truncated = truncated.load(Ordering::Relaxed);
    result.exit_code = exit.code;
    result.signal = exit.signal;
    result.cpu_time_ms = exit.cpu_time_ms;
    result.max_rss_mb = exit.max_rss_mb;
    match why {
        Some(pb::Outcome::Failed) if oom => {
            result.outcome = pb::Outcome::Failed as i32;
            result.failure_reason = "oom".into();
        }
        Some(pb::Outcome::TimedOut) => {
            result.outcome = pb::Outcome::TimedOut as i32;
            result.failure_reason = "timeout".into();
        }
        Some(_) => {
            result.outcome = pb::Outcome::Cancelled as i32;
            result.failure_reason = "cancelled".into();
        }
        None if exit.code == Some(0) => result.outcome = pb::Outcome::Succeeded as i32,
        None => {
            result.outcome = pb::Outcome::Failed as i32;
            result.failure_reason = "nonzero_exit".into();
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_scratch_directory_is_given_again_only_when_left_empty_and_private() {
        let root = tempfile::tempdir().unwrap();
        let sb = Sandbox::new(root.path().to_owned(), None);
        let ino = |p: &std::path::Path| std::fs::metadata(p).unwrap().ino();
        let empty = |p: &std::path::Path| std::fs::read_dir(p).unwrap().next().is_none();
        let a = sb.take_scratch("a").unwrap();
        assert_eq!(a, root.path().join("a"), "named after the attempt");
        assert_eq!(std::fs::metadata(&a).unwrap().permissions().mode() & 0o777, 0o700);
        let first = ino(&a);
        sb.return_scratch(&a);
        let b = sb.take_scratch("b").unwrap();
        assert_eq!((b.clone(), ino(&b)), (root.path().join("b"), first), "the empty directory is the next attempt's");
        assert!(!a.exists());

        std::fs::write(b.join("left over"), "x").unwrap();
        sb.return_scratch(&b);
        assert!(!b.exists(), "one with something left in it is removed");
        let c = sb.take_scratch("c").unwrap();
        assert!(empty(&c), "and the next attempt starts empty");

        std::fs::set_permissions(&c, std::fs::Permissions::from_mode(0o755)).unwrap();
        sb.return_scratch(&c);
        assert!(!c.exists(), "one whose mode the job changed is removed");
        let d = sb.take_scratch("d").unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);
        assert!(empty(&d));
        sb.return_scratch(&d);
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1, "one spare kept, nothing else");
    }
}
