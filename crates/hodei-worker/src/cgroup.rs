//! Jobs in cgroups of their own (SPEC §5, §8.7): where the agent may make cgroups (it runs as
//! root on a machine with the memory and cpu controllers), each job runs in one with its
//! `memory_mb` as the kernel's memory limit (swap included, so it is a limit and not a hint)
//! and its `cpu_m` as a cpu quota. The kernel then kills a job over its memory the instant it
//! gets there (`oom`), a job cannot take more cpu than it asked for, and the job's use is read
//! from the cgroup — every process it started, also those that left its process group.
//!
//! cgroup v2 (the unified hierarchy with the memory and cpu controllers) is used when the
//! machine has it; a machine whose controllers sit in v1 hierarchies gets v1 (memory, cpu and
//! cpuacct). Elsewhere — not root, no cgroup file system, a container that cannot delegate —
//! the agent says why once and falls back to the procfs watch of [`crate::memory`].
//!
//! The agent's cgroups live under `<hierarchy>/hodei/agent-<pid>-<n>/`. Making and removing a
//! memory cgroup costs the kernel about 2 ms (measured here: 2.2 ms for the pair, against
//! 0.8 ms for running `true`), so like scratch directories an ended job's cgroup, once empty,
//! is kept and given to the next job with its new limits.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The cpu quota's period (the kernel's default): a job of `cpu_m` millicores may run
/// `cpu_m × 100` µs of every 100 ms.
const PERIOD_US: u64 = 100_000;

/// The least cpu a job is held to, in millicores. Starting a program (exec, the dynamic
/// loader, first page faults) takes a millisecond or two of cpu; a quota below that stops the
/// job until the next period. Measured with jobs of `true` asking for 1 m: dispatch p90 went
/// from 3 ms to 15–18 ms and p99 to 70–94 ms, throughput fell by a third.
const MIN_CPU_M: u32 = 100;

/// A spare cgroup is given to the next job only while earlier jobs left less memory charged to
/// it than this (a job of `true` leaves 150–550 KiB; one that wrote files, their page cache).
const SPARE_CHARGE_MAX: u64 = 8 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The agent's cgroups: its directory in each hierarchy jobs join, and the empty job cgroups
/// ready for the next jobs.
#[derive(Debug)]
pub struct Cgroups {
    version: Version,
    /// v2: one directory. v1: memory, cpu, then cpuacct when it is mounted apart from cpu.
    bases: Vec<PathBuf>,
    spare: Mutex<Vec<String>>,
    named: AtomicU64,
    /// Whether a cgroup hierarchy is mounted with `favordynmods`.
    cheap_moves: bool,
}

/// What reads a job's cgroup: its memory and its cpu accounting directories.
#[derive(Debug)]
pub struct Reader {
    version: Version,
    memory: PathBuf,
    cpuacct: PathBuf,
    /// The cgroup's cpu counter when the job got it: a reused cgroup's counter holds the
    /// earlier jobs' time too.
    cpu_base: u64,
}

/// One job's cgroup, from before it starts until it ended.
#[derive(Debug)]
pub struct JobCgroup {
    owner: Arc<Cgroups>,
    name: String,
    /// `cgroup.procs` of each hierarchy, opened by the agent: the job's process writes itself
    /// into them between fork and exec, so nothing it starts runs outside them.
    procs: Vec<File>,
    oom_kills_before: u64,
    pub reader: Arc<Reader>,
}

/// What one look at a cgroup found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Anonymous and mapped file memory: what `ps` calls resident.
    pub rss_bytes: u64,
    pub cpu_ns: u64,
}

impl Cgroups {
    /// The agent's cgroups, or why jobs cannot have any here.
    pub fn new() -> Result<Arc<Cgroups>, String> {
        if unsafe { libc::geteuid() } != 0 {
            return Err("the agent does not run as root".into());
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
        let (version, roots) = hierarchies(&mounts)?;
        // One directory per `Cgroups` (an agent has one; tests make several in one process).
        static MADE: AtomicU64 = AtomicU64::new(0);
        let agent = format!("agent-{}-{}", std::process::id(), MADE.fetch_add(1, Ordering::Relaxed));
        let mut bases = Vec::new();
        for root in &roots {
            let parent = root.join("hodei");
            if version == Version::V2 {
                enable_controllers(root)?;
            }
            mkdir(&parent).map_err(|e| e.to_string())?;
            if version == Version::V2 {
                enable_controllers(&parent)?;
            }
            remove_stale(&parent);
            let base = parent.join(&agent);
            mkdir(&base).map_err(|e| e.to_string())?;
            if version == Version::V2 {
                enable_controllers(&base)?;
            }
            bases.push(base);
        }
        let cg = Arc::new(Cgroups { version, bases, spare: Mutex::default(), named: AtomicU64::new(0), cheap_moves: favors_moves(&mounts) });
        // A first job cgroup proves limits can be set; it is the first spare.
        let probe = cg.take(1000, 64).map_err(|e| format!("setting a job cgroup's limits: {e}"))?;
        probe.end();
        Ok(cg)
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// Whether moving a process into a cgroup is cheap here: without `favordynmods` on a
    /// cgroup mount, each move waits for an RCU grace period (measured here: ~16 ms under load
    /// after an idle spell, against ~0.6 ms with it) and holds back every fork meanwhile.
    pub fn cheap_moves(&self) -> bool {
        self.cheap_moves
    }

    /// Where the agent's job cgroups are (the first hierarchy's directory).
    pub fn base(&self) -> &Path {
        &self.bases[0]
    }

    /// A cgroup for a job of `cpu_m` millicores and `memory_mb` MiB (0: no limit), empty: a
    /// spare one, else a new one. A spare that earlier jobs left memory charged to (page cache,
    /// their files in tmpfs) beyond [`SPARE_CHARGE_MAX`] or half the new limit — or whose limits
    /// cannot be set — is removed instead: the new job would start over, or near, its limit.
    pub fn take(self: &Arc<Self>, cpu_m: u32, memory_mb: u32) -> std::io::Result<JobCgroup> {
        let spare = self.spare.lock().ok().and_then(|mut s| s.pop());
        if let Some(n) = spare {
            let room = if memory_mb > 0 { (u64::from(memory_mb) << 20) / 2 } else { u64::MAX };
            if self.charged(&n) <= SPARE_CHARGE_MAX.min(room)
                && let Ok(cg) = self.prepare(n.clone(), cpu_m, memory_mb)
            {
                return Ok(cg);
            }
            self.discard(&n);
        }
        let n = format!("job-{}", self.named.fetch_add(1, Ordering::Relaxed));
        for b in &self.bases {
            mkdir(&b.join(&n))?;
        }
        self.prepare(n, cpu_m, memory_mb)
    }

    /// Sets cgroup `name`'s limits and opens it for a job; removes it when that fails.
    fn prepare(self: &Arc<Self>, name: String, cpu_m: u32, memory_mb: u32) -> std::io::Result<JobCgroup> {
        let dirs: Vec<PathBuf> = self.bases.iter().map(|b| b.join(&name)).collect();
        if let Err(e) = self.limit(&dirs, cpu_m, memory_mb) {
            self.discard(&name);
            return Err(e);
        }
        let procs = dirs.iter().map(|d| File::options().write(true).open(d.join("cgroup.procs"))).collect::<std::io::Result<Vec<_>>>()?;
        let mut reader = match self.version {
            Version::V2 => Reader { version: Version::V2, memory: dirs[0].clone(), cpuacct: dirs[0].clone(), cpu_base: 0 },
            Version::V1 => Reader { version: Version::V1, memory: dirs[0].clone(), cpuacct: dirs.last().cloned().unwrap_or_default(), cpu_base: 0 },
        };
        reader.cpu_base = reader.usage().cpu_ns;
        let reader = Arc::new(reader);
        let oom_kills_before = reader.oom_kills();
        Ok(JobCgroup { owner: self.clone(), name, procs, oom_kills_before, reader })
    }

    fn limit(&self, dirs: &[PathBuf], cpu_m: u32, memory_mb: u32) -> std::io::Result<()> {
        let bytes = u64::from(memory_mb) << 20;
        let quota = u64::from(cpu_m.max(MIN_CPU_M)) * PERIOD_US / 1000;
        match self.version {
            Version::V2 => {
                let d = &dirs[0];
                write(&d.join("memory.max"), &if bytes > 0 { bytes.to_string() } else { "max".into() })?;
                optional(write(&d.join("memory.swap.max"), if bytes > 0 { "0" } else { "max" }))?;
                write(&d.join("cpu.max"), &if cpu_m > 0 { format!("{quota} {PERIOD_US}") } else { format!("max {PERIOD_US}") })?;
            }
            Version::V1 => {
                let (mem, cpu) = (&dirs[0], &dirs[1]);
                // Memory and swap together may never be below memory alone: lift the pair's
                // limit first, then set memory, then the pair to the same.
                let swap = mem.join("memory.memsw.limit_in_bytes");
                optional(write(&swap, "-1"))?;
                write(&mem.join("memory.limit_in_bytes"), &if bytes > 0 { bytes.to_string() } else { "-1".into() })?;
                if bytes > 0 {
                    optional(write(&swap, &bytes.to_string()))?;
                }
                write(&cpu.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                write(&cpu.join("cpu.cfs_quota_us"), &if cpu_m > 0 { quota.to_string() } else { "-1".into() })?;
            }
        }
        Ok(())
    }

    /// The memory charged to job cgroup `name` (none in it: its processes are gone).
    fn charged(&self, name: &str) -> u64 {
        let file = match self.version {
            Version::V2 => "memory.current",
            Version::V1 => "memory.usage_in_bytes",
        };
        std::fs::read_to_string(self.bases[0].join(name).join(file)).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(u64::MAX)
    }

    /// A job cgroup that will not be used again: removed (which fails while a process is
    /// still in it; it is then left).
    fn discard(&self, name: &str) {
        for b in &self.bases {
            let _ = std::fs::remove_dir(b.join(name));
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let spare = self.spare.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default();
        for n in spare {
            self.discard(&n);
        }
        for b in &self.bases {
            let _ = std::fs::remove_dir(b);
        }
    }
}

impl JobCgroup {
    /// Makes `cmd`'s process join this cgroup between fork and exec: it writes `0` (itself)
    /// into the `cgroup.procs` the agent opened, so nothing the job starts ever runs outside
    /// it. Only `write(2)` runs there, which is async-signal-safe.
    pub fn join_on_exec(&self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let fds: Vec<RawFd> = self.procs.iter().map(AsRawFd::as_raw_fd).collect();
        unsafe {
            cmd.pre_exec(move || {
                for fd in &fds {
                    if libc::write(*fd, b"0".as_ptr().cast(), 1) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }

    /// After the job ended: kills whatever it left running in the cgroup, gives the cgroup
    /// back for the next job once it is empty, and says whether the kernel killed one of the
    /// job's processes for being over its memory.
    pub fn end(self) -> bool {
        let oom = self.reader.oom_kills() > self.oom_kills_before;
        let JobCgroup { owner, name, procs, reader, .. } = self;
        drop(procs);
        let left = reader.pids();
        if left.is_empty() {
            if let Ok(mut s) = owner.spare.lock() {
                s.push(name);
            }
            return oom;
        }
        // Processes that outlived the job's group (a daemon it started): ended, and the
        // cgroup is handed back once they are gone — on a thread, the job's end does not wait.
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let left = reader.pids();
                if left.is_empty() {
                    if let Ok(mut s) = owner.spare.lock() {
                        s.push(name);
                    }
                    return;
                }
                if std::time::Instant::now() > deadline {
                    tracing::warn!(cgroup = %reader.memory.display(), processes = left.len(), "processes of an ended job would not die; its cgroup is not used again");
                    return;
                }
                for pid in left {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
        oom
    }
}

impl Reader {
    /// Resident memory of everything in the cgroup, and the cpu time it used since the job got
    /// it.
    pub fn usage(&self) -> Usage {
        let stat = std::fs::read_to_string(self.memory.join("memory.stat")).unwrap_or_default();
        let (anon, mapped, cpu_ns) = match self.version {
            Version::V2 => {
                let cpu = std::fs::read_to_string(self.cpuacct.join("cpu.stat")).unwrap_or_default();
                (field(&stat, "anon"), field(&stat, "file_mapped"), field(&cpu, "usage_usec") * 1000)
            }
            Version::V1 => {
                let cpu = std::fs::read_to_string(self.cpuacct.join("cpuacct.usage")).unwrap_or_default();
                (field(&stat, "total_rss"), field(&stat, "total_mapped_file"), cpu.trim().parse().unwrap_or(0))
            }
        };
        Usage { rss_bytes: anon + mapped, cpu_ns: cpu_ns.saturating_sub(self.cpu_base) }
    }

    /// The processes in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.memory.join("cgroup.procs")).unwrap_or_default().split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }

    /// How many processes the kernel has killed in this cgroup for being over its memory.
    fn oom_kills(&self) -> u64 {
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        field(&std::fs::read_to_string(self.memory.join(file)).unwrap_or_default(), "oom_kill")
    }
}

/// `key value` lines (memory.stat, cpu.stat, memory.events): the value of `key`, 0 if absent.
fn field(text: &str, key: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0)
}

/// The version and the root directories of the hierarchies jobs join, from
/// `/proc/self/mountinfo`: the cgroup2 mount when its root offers both the memory and the cpu
/// controllers, else the v1 mounts of memory, cpu and (when apart from cpu) cpuacct.
fn hierarchies(mountinfo: &str) -> Result<(Version, Vec<PathBuf>), String> {
    let mut v1: [Option<PathBuf>; 3] = Default::default();
    let mut v2_without = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(point) = left.split(' ').nth(4) else { continue };
        let mut r = right.split(' ');
        let (fstype, options) = (r.next().unwrap_or(""), r.nth(1).unwrap_or(""));
        let point = PathBuf::from(unescape(point));
        match fstype {
            "cgroup2" => {
                let controllers = std::fs::read_to_string(point.join("cgroup.controllers")).unwrap_or_default();
                let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
                if has("memory") && has("cpu") {
                    return Ok((Version::V2, vec![point]));
                }
                v2_without = Some(point);
            }
            "cgroup" => {
                let opts: Vec<&str> = options.split(',').collect();
                for (i, c) in ["memory", "cpu", "cpuacct"].iter().enumerate() {
                    if opts.contains(c) && v1[i].is_none() {
                        v1[i] = Some(point.clone());
                    }
                }
            }
            _ => {}
        }
    }
    match v1 {
        [Some(mem), Some(cpu), Some(acct)] => {
            let mut roots = vec![mem, cpu.clone()];
            if acct != cpu {
                roots.push(acct);
            }
            Ok((Version::V1, roots))
        }
        _ => Err(match v2_without {
            Some(p) => format!("the cgroup2 hierarchy at {} lacks the memory or cpu controller, and no v1 hierarchies have them", p.display()),
            None => "no cgroup file system with the memory and cpu controllers is mounted".into(),
        }),
    }
}

/// Whether a cgroup file system is mounted with `favordynmods` (the kernel then keeps its
/// threadgroup lock ready for writers, for all hierarchies at once).
fn favors_moves(mountinfo: &str) -> bool {
    mountinfo.lines().filter_map(|l| l.split_once(" - ")).any(|(_, right)| {
        let mut r = right.split(' ');
        matches!(r.next(), Some("cgroup" | "cgroup2")) && r.nth(1).is_some_and(|o| o.split(',').any(|x| x == "favordynmods"))
    })
}

/// Mount points in mountinfo escape space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lets the children of `dir` have the memory and cpu controllers (v2).
fn enable_controllers(dir: &Path) -> Result<(), String> {
    let path = dir.join("cgroup.subtree_control");
    let on = std::fs::read_to_string(&path).unwrap_or_default();
    if ["memory", "cpu"].iter().all(|c| on.split_whitespace().any(|x| x == *c)) {
        return Ok(());
    }
    write(&path, "+memory +cpu").map_err(|e| format!("enabling the memory and cpu controllers in {}: {e}", path.display()))
}

fn mkdir(dir: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(std::io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))),
        _ => Ok(()),
    }
}

/// Removes the cgroups of agents that are gone (their empty job cgroups, then theirs).
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("agent-").and_then(|p| p.split('-').next()?.parse::<u32>().ok()) else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(jobs) = std::fs::read_dir(e.path()) {
            for j in jobs.flatten().filter(|j| j.path().is_dir()) {
                let _ = std::fs::remove_dir(j.path());
            }
        }
        let _ = std::fs::remove_dir(e.path());
    }
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    // O_TRUNC, as a shell's `>` does: the kernel ignores it on cgroup files.
    File::options()
        .write(true)
        .truncate(true)
        .open(path)?
        .write_all(value.as_bytes())
        .map_err(|e| std::io::Error::new(e.kind(), format!("writing {value:?} to {}: {e}", path.display())))
}

/// A missing file (no swap accounting) is no error.
fn optional(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn the_hierarchies_are_found_in_mountinfo() {
        let hybrid = "\
25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
28 25 0:25 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
29 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
30 25 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids";
        let (v, roots) = hierarchies(hybrid).unwrap();
        assert_eq!(v, Version::V1);
        assert_eq!(roots, ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuacct"].map(PathBuf::from));
        let together =
            "29 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n27 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct";
        assert_eq!(hierarchies(together).unwrap().1, ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu,cpuacct"].map(PathBuf::from));
        assert!(hierarchies("29 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory").is_err());
        assert!(hierarchies("").unwrap_err().contains("no cgroup file system"));
        assert!(!favors_moves(hybrid));
        assert!(favors_moves(&hybrid.replace("cgroup2 rw", "cgroup2 rw,favordynmods")));
        assert_eq!(unescape(r"/a\040b\\c"), r"/a b\\c");
        assert_eq!(unescape(r"/a\134b"), r"/a\b");
    }

    #[test]
    fn counters_are_read_by_key() {
        let events = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 0\n";
        assert_eq!((field(events, "oom_kill"), field(events, "oom"), field(events, "nope")), (2, 1, 0));
        let stat = "cache 0\nrss 100\ntotal_rss 4096\ntotal_rss_huge 7\n";
        assert_eq!(field(stat, "total_rss"), 4096);
    }

    #[test]
    fn a_spare_cgroup_left_holding_memory_is_not_given_again() {
        let Some(cgs) = here() else { return };
        let file = format!("/dev/shm/hodei-cgroup-test-{}", std::process::id());
        let cg = cgs.take(1000, 256).unwrap();
        let first = cg.name.clone();
        assert!(spawn_in(&cg, &format!("head -c 20000000 /dev/zero > {file}")).wait().unwrap().success());
        assert!(!cg.end());
        // 20 MB of tmpfs stay charged to it: the next job gets a fresh cgroup.
        let next = cgs.take(1000, 256).unwrap();
        let _ = std::fs::remove_file(&file);
        assert_ne!(next.name, first, "a cgroup holding 20 MB was given again");
        assert!(!cgs.bases[0].join(&first).exists(), "and it was removed");
        let name = next.name.clone();
        assert!(!next.end());
        // An empty one is given again.
        let again = cgs.take(1000, 256).unwrap();
        assert_eq!(again.name, name);
        again.end();
    }

    /// The v2 files, on a directory laid out like a cgroup2 job cgroup (this machine's kernel
    /// has its controllers in v1 hierarchies, so the real v2 path cannot run here).
    #[test]
    fn v2_limits_and_readings_use_the_unified_files() {
        let root = tempfile::tempdir().unwrap();
        let job = root.path().join("job-0");
        std::fs::create_dir(&job).unwrap();
        for f in ["memory.max", "memory.swap.max", "cpu.max", "cgroup.procs"] {
            std::fs::write(job.join(f), "").unwrap();
        }
        std::fs::write(job.join("memory.events"), "low 0\nhigh 0\nmax 0\noom 0\noom_kill 1\n").unwrap();
        std::fs::write(job.join("memory.current"), "0\n").unwrap();
        std::fs::write(job.join("cpu.stat"), "usage_usec 700\n").unwrap();
        let cgs = Arc::new(Cgroups {
            version: Version::V2,
            bases: vec![root.path().to_owned()],
            spare: Mutex::default(),
            named: AtomicU64::new(0),
            cheap_moves: true,
        });
        let cg = cgs.take(250, 512).unwrap();
        let read = |f: &str| std::fs::read_to_string(job.join(f)).unwrap();
        assert_eq!((read("memory.max"), read("memory.swap.max"), read("cpu.max")), ((512u64 << 20).to_string(), "0".into(), "25000 100000".into()));
        assert_eq!((cg.procs.len(), cg.oom_kills_before), (1, 1));
        std::fs::write(job.join("memory.stat"), "anon 1048576\nfile 999\nfile_mapped 4096\nshmem 0\n").unwrap();
        std::fs::write(job.join("cpu.stat"), "usage_usec 2200\nuser_usec 1000\nsystem_usec 500\n").unwrap();
        assert_eq!(cg.reader.usage(), Usage { rss_bytes: 1_048_576 + 4096, cpu_ns: 1_500_000 }, "since the job got it (700 µs before)");
        std::fs::write(job.join("memory.events"), "oom 1\noom_kill 2\n").unwrap();
        assert!(cg.end(), "a kill since the job started is its");
        // No limits asked for: none set; a tiny cpu request still gets the least quota.
        let cg = cgs.take(0, 0).unwrap();
        assert_eq!((read("memory.max"), read("memory.swap.max"), read("cpu.max")), ("max".into(), "max".into(), "max 100000".into()));
        assert!(!cg.end());
        let _ = cgs.take(1, 64).unwrap();
        assert_eq!(read("cpu.max"), "10000 100000");
    }

    /// The cgroups of this machine, when it has them for us; under CI a root test run on a
    /// machine whose cgroup file system is writable must have them (never a silent skip).
    fn here() -> Option<Arc<Cgroups>> {
        match Cgroups::new() {
            Ok(c) => Some(c),
            Err(why) => {
                let writable = unsafe { libc::geteuid() } == 0 && unsafe { libc::access(c"/sys/fs/cgroup".as_ptr(), libc::W_OK) } == 0;
                assert!(!(std::env::var_os("CI").is_some() && writable), "cgroups should work on this machine: {why}");
                eprintln!("SKIPPED: no cgroups for jobs here: {why}");
                None
            }
        }
    }

    fn spawn_in(cg: &JobCgroup, script: &str) -> std::process::Child {
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", script]).process_group(0);
        cg.join_on_exec(&mut cmd);
        cmd.spawn().expect("sh")
    }

    #[test]
    fn a_job_in_its_cgroup_is_limited_measured_and_killed_by_the_kernel_over_its_memory() {
        let Some(cgs) = here() else { return };
        let cg = cgs.take(500, 64).unwrap();
        let mem = cg.reader.memory.clone();
        match cgs.version() {
            Version::V2 => {
                assert_eq!(std::fs::read_to_string(mem.join("memory.max")).unwrap().trim(), (64u64 << 20).to_string());
                assert_eq!(std::fs::read_to_string(mem.join("cpu.max")).unwrap().trim(), "50000 100000");
            }
            Version::V1 => {
                assert_eq!(std::fs::read_to_string(mem.join("memory.limit_in_bytes")).unwrap().trim(), (64u64 << 20).to_string());
                let cpu = cgs.bases[1].join(&cg.name);
                assert_eq!(std::fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap().trim(), "50000");
            }
        }
        // Within its memory, a forked child included: counted, and not killed.
        let mut child = spawn_in(&cg, "x=$(head -c 20000000 /dev/zero | tr '\\0' a); sleep 0.3; echo \"${#x}\" >/dev/null");
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !cg.reader.pids().contains(&pid) {
            assert!(std::time::Instant::now() < deadline, "the job never joined its cgroup");
        }
        assert!(child.wait().unwrap().success());
        let used = cg.reader.usage().cpu_ns;
        assert!(used > 0);
        assert!(!cg.end(), "no oom within the limit");
        // The same cgroup again, now over its memory: the kernel kills it.
        let cg = cgs.take(1000, 32).unwrap();
        assert_eq!(cg.reader.memory, mem, "the empty cgroup was used again");
        assert!(cg.reader.usage().cpu_ns < used, "the earlier job's cpu is not the next one's");
        let name = cg.name.clone();
        let mut child = spawn_in(&cg, "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived");
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(cg.end(), "the kernel's kill is seen as oom");
        // What the job left (the pipeline's other end) is ended; the cgroup is then a spare.
        // (And one left holding memory is not given again: see below.)
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !cgs.spare.lock().unwrap().contains(&name) {
            assert!(std::time::Instant::now() < deadline, "the cgroup never came back");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
