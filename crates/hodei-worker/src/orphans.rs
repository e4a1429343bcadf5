//! Jobs a killed agent left running. Every job's environment names its worker
//! (`HODEI_WORKER_ID`), and its processes and their children keep that environment; an agent
//! starting with the identity of a killed one ends the process groups of those processes. The
//! server runs their attempts again (the restarted worker does not report them), so leaving
//! them would run a job twice at once.

use std::collections::HashSet;

/// The variable naming the worker in every job's environment.
pub const WORKER_VAR: &str = "HODEI_WORKER_ID";

/// Ends (SIGKILL) every process group holding a process whose initial environment names this
/// worker, and those processes. Returns how many processes matched.
pub fn end(worker_id: &str) -> usize {
    let needle = format!("{WORKER_VAR}={worker_id}");
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    let mut groups = HashSet::new();
    let mut matched = 0;
    for pid in dir.flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()).filter(|p| *p > 1 && *p != me) {
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        if !env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            continue;
        }
        matched += 1;
        if let Some(pgid) = process_group(pid) {
            groups.insert(pgid);
        }
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for g in groups.into_iter().filter(|g| *g > 1) {
        unsafe { libc::kill(-g, libc::SIGKILL) };
    }
    matched
}

/// The process group of `pid` (`/proc/PID/stat` field 5).
fn process_group(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn the_processes_of_this_workers_jobs_are_ended_and_no_others() {
        let id = uuid::Uuid::now_v7().to_string();
        let spawn = |worker: &str| std::process::Command::new("sh").args(["-c", "sleep 60 & wait"]).env(WORKER_VAR, worker).process_group(0).spawn().unwrap();
        let (mut mine, mut other) = (spawn(&id), spawn("another-worker"));
        // The shell and its child sleep both carry the variable.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Until the child has become `sleep`: a child between fork and exec may not show its
        // environment yet.
        let sleeping = || {
            let children = std::fs::read_to_string(format!("/proc/{}/task/{0}/children", mine.id())).unwrap_or_default();
            children.split_whitespace().any(|c| std::fs::read(format!("/proc/{c}/cmdline")).is_ok_and(|cmd| cmd.starts_with(b"sleep")))
        };
        while !sleeping() {
            assert!(std::time::Instant::now() < deadline, "the job's child did not start");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(end(&id), 2, "the shell and its sleep");
        assert!(mine.wait().unwrap().code().is_none(), "killed by a signal");
        assert!(other.try_wait().unwrap().is_none(), "another worker's job runs on");
        unsafe { libc::kill(-(other.id() as i32), libc::SIGKILL) };
        let _ = other.wait();
    }
}
