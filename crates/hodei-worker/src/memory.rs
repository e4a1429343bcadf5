//! The memory limit of running jobs (SPEC §5: "else RSS watch → `oom`"): one task per agent
//! samples the resident memory of every running job's process group — its leader and the
//! leader's descendants still in the group, so a shell's children count — and stops a job whose
//! total passes its `memory_mb`. A sample visits only the jobs' own processes (through
//! `/proc/PID/task/TID/children`), never the whole of `/proc`: with thousands of jobs on a
//! machine, every agent reading every process's `stat` four times a second took both cores.
//! Between two samples a job may briefly use more; this is the fallback for machines where the
//! agent cannot put jobs in cgroups.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

/// How often the resident memory of running jobs is sampled, at most.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// A sample waits at least this many times what the last one took, so the watch never takes
/// more than a twentieth of a core however many jobs run.
const PACE: u32 = 20;

struct Watched {
    limit_bytes: u64,
    over: oneshot::Sender<u64>,
}

/// The process groups being watched, by group id.
#[derive(Clone, Default)]
pub struct MemoryWatch {
    groups: Arc<Mutex<HashMap<i32, Watched>>>,
}

impl MemoryWatch {
    /// Starts the sampling task (on the current runtime).
    pub fn start() -> MemoryWatch {
        let w = MemoryWatch::default();
        tokio::spawn(w.clone().sample_forever());
        w
    }

    /// Watches process group `pgid`; the receiver gets the resident bytes seen when the group
    /// passes `limit_mb` (it is then no longer watched). Dropping the receiver stops nothing:
    /// call [`MemoryWatch::forget`] when the job ends.
    pub fn watch(&self, pgid: i32, limit_mb: u32) -> oneshot::Receiver<u64> {
        let (over, rx) = oneshot::channel();
        if let Ok(mut g) = self.groups.lock() {
            g.insert(pgid, Watched { limit_bytes: u64::from(limit_mb) << 20, over });
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
    /// job is watched, and pausing at least [`PACE`] times what the last sample took.
    async fn sample_forever(self) {
        let mut pause = SAMPLE_INTERVAL;
        loop {
            tokio::time::sleep(pause).await;
            let pgids: Vec<i32> = match self.groups.lock() {
                Ok(g) => g.keys().copied().collect(),
                Err(_) => return,
            };
            if pgids.is_empty() {
                pause = SAMPLE_INTERVAL;
                continue;
            }
            let started = std::time::Instant::now();
            let rss = tokio::task::spawn_blocking(move || resident_by_group(&pgids)).await.unwrap_or_default();
            pause = SAMPLE_INTERVAL.max(started.elapsed() * PACE);
            let Ok(mut g) = self.groups.lock() else { return };
            let over: Vec<i32> = g.iter().filter(|(p, w)| rss.get(p).is_some_and(|r| *r > w.limit_bytes)).map(|(p, _)| *p).collect();
            for p in over {
                if let Some(w) = g.remove(&p) {
                    let _ = w.over.send(rss[&p]);
                }
            }
        }
    }
}

/// Resident bytes of each of `pgids`.
fn resident_by_group(pgids: &[i32]) -> HashMap<i32, u64> {
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    pgids.iter().map(|&g| (g, group_members(g).iter().map(|(_, pages)| pages * page).sum())).collect()
}

/// The processes of group `pgid` with their resident pages: the leader (a job's process leads
/// its own group) and its descendants that are still in the group. A process that moved to
/// another group or session is not the job's to count any more, and neither are its children.
fn group_members(pgid: i32) -> Vec<(i32, u64)> {
    let mut found = Vec::new();
    let mut next = vec![pgid];
    while let Some(pid) = next.pop() {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(s) = parse_stat(&stat) else { continue };
        if s.pgrp != pgid {
            continue;
        }
        found.push((pid, s.rss_pages));
        // Children are listed under the thread that forked them.
        let threads: Vec<String> = match s.threads {
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

struct Stat {
    pgrp: i32,
    threads: u64,
    rss_pages: u64,
}

/// The process group, thread count and resident pages from a `/proc/PID/stat` line. The command
/// name may hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3), ppid (4), pgrp (5), …, num_threads (20), …, rss (24).
    Some(Stat { pgrp: fields.get(2)?.parse().ok()?, threads: fields.get(17)?.parse().ok()?, rss_pages: fields.get(21)?.parse().ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_past_odd_command_names() {
        let line = "4242 (a (weird) name) S 1 4240 4240 0 -1 4194304 100 0 0 0 5 3 0 0 20 0 1 0 12345 10485760 2560 18446744073709551615";
        let s = parse_stat(line).expect("a stat line");
        assert_eq!((s.pgrp, s.threads, s.rss_pages), (4240, 1, 2560));
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
        let members = loop {
            let m = group_members(pgid);
            if m.len() >= 3 || std::time::Instant::now() > deadline {
                break m;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let total = resident_by_group(&[pgid]);
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
        let _ = job.wait();
        assert_eq!(members.len(), 3, "{members:?}");
        assert_eq!(members[0].0, pgid);
        assert!(members.iter().all(|(_, pages)| *pages > 0), "{members:?}");
        assert!(total.get(&pgid).is_some_and(|r| *r > 0), "{total:?}");
    }
}
