//! The memory limit of running jobs (SPEC §5: "else RSS watch → `oom`"): one task per agent
//! samples the resident memory of every running job's process group — all its processes, so a
//! shell's children count — and stops a job whose total passes its `memory_mb`. A sample is a
//! single walk of `/proc` for all jobs. Between two samples a job may briefly use more; this is
//! the fallback for machines where the agent cannot put jobs in cgroups.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

/// How often the resident memory of running jobs is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

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

    /// Samples on a fixed beat (a new job is not a wake-up: waking another thread as a job
    /// starts measurably delayed the start on a two-core machine), scanning only while some
    /// job is watched.
    async fn sample_forever(self) {
        let mut beat = tokio::time::interval(SAMPLE_INTERVAL);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            beat.tick().await;
            let pgids: Vec<i32> = match self.groups.lock() {
                Ok(g) => g.keys().copied().collect(),
                Err(_) => return,
            };
            if pgids.is_empty() {
                continue;
            }
            let rss = tokio::task::spawn_blocking(move || resident_by_group(&pgids)).await.unwrap_or_default();
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

/// Resident bytes of every process in each of `pgids`, from one walk of `/proc`.
fn resident_by_group(pgids: &[i32]) -> HashMap<i32, u64> {
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let mut out: HashMap<i32, u64> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        if let Some((pgrp, pages)) = parse_stat(&stat)
            && pgids.contains(&pgrp)
        {
            *out.entry(pgrp).or_default() += pages * page;
        }
    }
    out
}

/// The process group and resident pages from a `/proc/PID/stat` line. The command name may
/// hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(i32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3), ppid (4), pgrp (5), …, rss (24).
    Some((fields.get(2)?.parse().ok()?, fields.get(21)?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_past_odd_command_names() {
        let line = "4242 (a (weird) name) S 1 4240 4240 0 -1 4194304 100 0 0 0 5 3 0 0 20 0 1 0 12345 10485760 2560 18446744073709551615";
        assert_eq!(parse_stat(line), Some((4240, 2560)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_group_is_measured() {
        let me = unsafe { libc::getpgrp() };
        let rss = resident_by_group(&[me]);
        assert!(rss.get(&me).is_some_and(|r| *r > 1 << 20), "{rss:?}");
    }
}
