//! Usage samples and the memory limit of running jobs (SPEC §8.7; SPEC §5: "else RSS watch →
//! `oom`"). Every usage interval each job's cpu (ticks of its processes and of the children
//! they reaped), resident memory and storage IO are sent as `Progress`. One task per agent
//! samples the resident memory of every running job's process group — its leader and the
//! leader's descendants still in the group, so a shell's children count — and stops a job whose
//! total passes its `memory_mb`. A sample visits only the jobs' own processes (through
//! `/proc/PID/task/TID/children`), never the whole of `/proc`: with thousands of jobs on a
//! machine, every agent reading every process's `stat` four times a second took both cores.
//! Between two samples a job may briefly use more; this is the fallback for machines where the
//! agent cannot put jobs in cgroups.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hodei_proto::v1 as pb;

use crate::cgroup::Reader;
use tokio::sync::{mpsc, oneshot};

/// How often the resident memory of running jobs is sampled, at most.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// A sample waits at least this many times what the last one took, so the watch never takes
/// more than a twentieth of a core however many jobs run.
const PACE: u32 = 20;

struct Watched {
    attempt: String,
    /// GPUs it asked for (GPU utilisation is the average over them).
    gpus: u32,
    /// 0: no limit.
    limit_bytes: u64,
    over: Option<oneshot::Sender<u64>>,
    /// The job's cgroup, read instead of its process group when it has one.
    cgroup: Option<Arc<Reader>>,
    /// Cpu time (ns) of the job at the last usage sample, and when it was taken.
    cpu_ns: u64,
    sampled: Instant,
    /// Storage bytes read and written so far (never going back).
    io: (u64, u64),
}

/// The process groups being watched, by group id, and where their usage samples go.
#[derive(Clone)]
pub struct MemoryWatch {
    groups: Arc<Mutex<HashMap<i32, Watched>>>,
    usage_interval_ms: Arc<AtomicU64>,
    events: mpsc::UnboundedSender<pb::WorkerMessage>,
    /// cpu and resident memory of all jobs at the last sample, for heartbeats.
    totals: Arc<Mutex<(u32, u32)>>,
    /// `nvidia-smi`, when the agent has it.
    gpu_tool: Option<Arc<std::path::PathBuf>>,
}

impl MemoryWatch {
    /// Starts the sampling task (on the current runtime); usage samples go to `events` as
    /// `Progress` messages.
    pub fn start(events: mpsc::UnboundedSender<pb::WorkerMessage>) -> MemoryWatch {
        let gpu_tool = crate::gpu::tool().map(Arc::new);
        if let Some(t) = &gpu_tool {
            tracing::info!(tool = %t.display(), "GPU use of jobs measured");
        }
        let w = MemoryWatch { groups: Arc::default(), usage_interval_ms: Arc::new(AtomicU64::new(10_000)), events, totals: Arc::default(), gpu_tool };
        tokio::spawn(w.clone().sample_forever());
        w
    }

    /// How often each job's usage is reported (the server's `usage_sample_interval_ms`).
    pub fn set_interval(&self, every: Duration) {
        self.usage_interval_ms.store(every.as_millis() as u64, Ordering::Relaxed);
    }

    /// The cpu (millicores) and resident memory (MiB) of every job at the last sample.
    pub fn totals(&self) -> (u32, u32) {
        self.totals.lock().map(|t| *t).unwrap_or_default()
    }

    /// Watches process group `pgid`, attempt `attempt`'s: its usage is reported every interval
    /// and the receiver gets the resident bytes seen when the group passes `limit_mb` (0: no
    /// limit; it is then no longer watched for memory). A job in a cgroup is measured through
    /// it (all its processes, also those that left the group). Dropping the receiver stops
    /// nothing: call [`MemoryWatch::forget`] when the job ends.
    pub fn watch(&self, pgid: i32, attempt: &str, limit_mb: u32, gpus: u32, cgroup: Option<Arc<Reader>>) -> oneshot::Receiver<u64> {
        let (over, rx) = oneshot::channel();
        let w = Watched {
            attempt: attempt.to_owned(),
            gpus,
            limit_bytes: u64::from(limit_mb) << 20,
            over: (limit_mb > 0).then_some(over),
            cgroup,
            cpu_ns: 0,
            sampled: Instant::now(),
            io: (0, 0),
        };
        if let Ok(mut g) = self.groups.lock() {
            g.insert(pgid, w);
        }
        rx
    }

    pub fn forget(&self, pgid: i32) {
        if let Ok(mut g) = self.groups.lock() {
            g.remove(&pgid);
        }
    }

    /// Samples on its own beat (a new job is not a wake-up: waking another thread as a job
    /// starts measurably delayed the start on a two-core machine), scanning only while some
    /// job is watched, and pausing at least [`PACE`] times what the last sample took. Memory
    /// is checked at every beat; cpu and IO are read, and reported, once per usage interval.
    async fn sample_forever(self) {
        let mut pause = SAMPLE_INTERVAL;
        loop {
            tokio::time::sleep(pause).await;
            let every = Duration::from_millis(self.usage_interval_ms.load(Ordering::Relaxed));
            let now = Instant::now();
            let wanted: Vec<(i32, bool, Option<Arc<Reader>>)> = match self.groups.lock() {
                Ok(g) => g.iter().map(|(p, w)| (*p, now.duration_since(w.sampled) >= every, w.cgroup.clone())).collect(),
                Err(_) => return,
            };
            if wanted.is_empty() {
                pause = SAMPLE_INTERVAL;
                continue;
            }
            let started = Instant::now();
            let tool = self.gpu_tool.clone().filter(|_| wanted.iter().any(|(_, full, _)| *full));
            let seen = tokio::task::spawn_blocking(move || {
                // One query of the GPUs for all the jobs sampled this round.
                let gpus = tool.and_then(|t| crate::gpu::per_process(&t));
                wanted.into_iter().map(|(g, full, cg)| (g, measure(g, full, gpus.as_ref(), cg.as_deref()))).collect::<HashMap<_, _>>()
            })
            .await
            .unwrap_or_default();
            pause = SAMPLE_INTERVAL.max(started.elapsed() * PACE);
            let Ok(mut g) = self.groups.lock() else { return };
            let (mut cpu_total, mut rss_total) = (0u64, 0u64);
            for (pgid, w) in g.iter_mut() {
                let Some(m) = seen.get(pgid) else { continue };
                rss_total += m.rss_bytes >> 20;
                if w.limit_bytes > 0
                    && m.rss_bytes > w.limit_bytes
                    && let Some(over) = w.over.take()
                {
                    let _ = over.send(m.rss_bytes);
                }
                let Some((cpu_ns, io, gpu)) = m.usage else { continue };
                let elapsed_ms = now.duration_since(w.sampled).as_millis().max(1) as u64;
                // A core for a millisecond is 1 000 000 ns: 1 000 millicores.
                let cpu_m = cpu_ns.saturating_sub(w.cpu_ns) / 1000 / elapsed_ms;
                cpu_total += cpu_m;
                w.cpu_ns = w.cpu_ns.max(cpu_ns);
                w.sampled = now;
                w.io = (w.io.0.max(io.0), w.io.1.max(io.1));
                let sample = pb::UsageSample {
                    at_ms: crate::exec::now_ms(),
                    cpu_used_m: cpu_m.min(u64::from(u32::MAX)) as u32,
                    memory_rss_mb: (m.rss_bytes >> 20) as u32,
                    io_read_bytes: w.io.0,
                    io_write_bytes: w.io.1,
                    gpu_util_pct: gpu.map_or(0, |(sm, _)| (sm / w.gpus.max(1)).min(100)),
                    gpu_memory_mb: gpu.map_or(0, |(_, mb)| mb),
                    gpu_measured: gpu.is_some(),
                };
                let progress = pb::Progress { attempt_id: w.attempt.clone(), usage: Some(sample) };
                let _ = self.events.send(pb::WorkerMessage { msg: Some(pb::worker_message::Msg::Progress(progress)) });
            }
            if let Ok(mut t) = self.totals.lock() {
                *t = (if cpu_total > 0 { cpu_total as u32 } else { t.0 }, rss_total.min(u64::from(u32::MAX)) as u32);
            }
        }
    }
}

/// What one look at a group found: its resident bytes, and with a full sample its cpu time
/// (live members' and the children they reaped), storage bytes read and written, and its GPU
/// use (sm % and MiB over its processes) when the GPUs were queried.
struct Measured {
    rss_bytes: u64,
    usage: Option<Full>,
}

/// A full sample: cpu ns, (bytes read, written), and (sm %, MiB) on GPUs when queried.
type Full = (u64, (u64, u64), Option<(u32, u32)>);

fn ticks_per_second() -> u64 {
    u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// Measures a job: through its cgroup when it has one (memory and cpu of everything in it;
/// IO and GPU of its processes), else through its process group in procfs.
fn measure(pgid: i32, full: bool, gpus: Option<&HashMap<i32, (u32, u32)>>, cgroup: Option<&Reader>) -> Measured {
    if let Some(cg) = cgroup {
        let u = cg.usage();
        let usage = full.then(|| {
            let pids = cg.pids();
            let io = pids.iter().map(|pid| io_bytes(*pid)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            let gpu =
                gpus.map(|by_pid| pids.iter().filter_map(|pid| by_pid.get(pid)).fold((0u32, 0u32), |a, b| (a.0.saturating_add(b.0), a.1.saturating_add(b.1))));
            (u.cpu_ns, io, gpu)
        });
        return Measured { rss_bytes: u.rss_bytes, usage };
    }
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let members = group_members(pgid);
    let rss_bytes = members.iter().map(|(_, s)| s.rss_pages * page).sum();
    let usage = full.then(|| {
        let ticks: u64 = members.iter().map(|(_, s)| s.cpu_ticks).sum();
        let cpu_ns = ticks * 1_000_000_000 / ticks_per_second();
        let io = members.iter().map(|(pid, _)| io_bytes(*pid)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let gpu = gpus
            .map(|by_pid| members.iter().filter_map(|(pid, _)| by_pid.get(pid)).fold((0u32, 0u32), |a, b| (a.0.saturating_add(b.0), a.1.saturating_add(b.1))));
        (cpu_ns, io, gpu)
    });
    Measured { rss_bytes, usage }
}

/// Storage bytes read and written by `pid` (and the children it reaped), from `/proc/PID/io`.
fn io_bytes(pid: i32) -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/io")) else { return (0, 0) };
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok()).unwrap_or(0);
    (field("read_bytes:"), field("write_bytes:"))
}

/// The processes of group `pgid` with their resident pages: the leader (a job's process leads
/// its own group) and its descendants that are still in the group. A process that moved to
/// another group or session is not the job's to count any more, and neither are its children.
fn group_members(pgid: i32) -> Vec<(i32, Stat)> {
    let mut found = Vec::new();
    let mut next = vec![pgid];
    while let Some(pid) = next.pop() {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(s) = parse_stat(&stat) else { continue };
        if s.pgrp != pgid {
            continue;
        }
        let threads = s.threads;
        found.push((pid, s));
        // Children are listed under the thread that forked them.
        let threads: Vec<String> = match threads {
            1 => vec![pid.to_string()],
            _ => std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default(),
        };
        for tid in threads {
            if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")) {
                next.extend(children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
            }
        }
    }
    found
}

#[derive(Debug)]
struct Stat {
    pgrp: i32,
    threads: u64,
    rss_pages: u64,
    /// utime + stime + cutime + cstime.
    cpu_ticks: u64,
}

/// The process group, thread count and resident pages from a `/proc/PID/stat` line. The command
/// name may hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3), ppid (4), pgrp (5), …, utime, stime, cutime, cstime (14–17),
    // …, num_threads (20), …, rss (24).
    let n = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(Stat { pgrp: fields.get(2)?.parse().ok()?, threads: n(17)?, rss_pages: n(21)?, cpu_ticks: n(11)? + n(12)? + n(13).unwrap_or(0) + n(14).unwrap_or(0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_past_odd_command_names() {
        let line = "4242 (a (weird) name) S 1 4240 4240 0 -1 4194304 100 0 0 0 5 3 0 0 20 0 1 0 12345 10485760 2560 18446744073709551615";
        let s = parse_stat(line).expect("a stat line");
        assert_eq!((s.pgrp, s.threads, s.rss_pages, s.cpu_ticks), (4240, 1, 2560, 8));
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn a_group_is_its_leader_and_the_descendants_still_in_it() {
        use std::os::unix::process::CommandExt;
        // A shell leading its own group (as a job does), two children in the group, and one
        // that left it for a session of its own.
        let mut job = std::process::Command::new("sh").args(["-c", "sleep 30 & sleep 30 & setsid sleep 5 & wait"]).process_group(0).spawn().expect("sh");
        let pgid = job.id() as i32;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // Until the forks settled: the setsid child is briefly in the group (without pages of its
        // own yet) before it leaves.
        let members = loop {
            let m = group_members(pgid);
            if (m.len() == 3 && m.iter().all(|(_, s)| s.rss_pages > 0)) || std::time::Instant::now() > deadline {
                break m;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let seen = measure(pgid, true, None, None);
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
        let _ = job.wait();
        assert_eq!(members.len(), 3, "{members:?}");
        assert_eq!(members[0].0, pgid);
        assert!(members.iter().all(|(_, s)| s.rss_pages > 0), "{members:?}");
        assert!(seen.rss_bytes > 0 && seen.usage.is_some());
    }
}
