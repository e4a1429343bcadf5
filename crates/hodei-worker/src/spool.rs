//! The agent's spool directory (SPEC §5.3): its identity, and the results of attempts the
//! server has not acknowledged yet. An agent that crashes or is restarted comes back as the
//! same worker and hands in the results of jobs that ended meanwhile, instead of the server
//! declaring them lost and running them again. Files are written before the result is sent and
//! renamed into place, so a crash leaves either the whole file or none; they are not fsynced
//! (a result spooled just before the machine loses power may be lost: its job is then retried).
//! One agent per directory, held by an advisory lock.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use hodei_proto::v1 as pb;
use prost::Message;

/// How long a starting agent waits for the spool directory's previous agent to stop.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(10);

pub(crate) struct Spool {
    dir: PathBuf,
    _lock: File,
}

/// A worker's identity as the server issued it at registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SavedIdentity {
    pub worker_id: String,
    pub session: String,
    pub heartbeat_interval_ms: u64,
    pub usage_sample_interval_ms: u64,
}

impl Spool {
    /// Opens `dir`, waiting up to `wait` for a previous agent still stopping to let go of it.
    pub(crate) async fn open(dir: &Path, wait: Duration) -> anyhow::Result<Spool> {
        fs::create_dir_all(dir.join("results")).with_context(|| format!("creating {}", dir.join("results").display()))?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("lock")).context("opening the spool lock")?;
        let deadline = tokio::time::Instant::now() + wait;
        while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("{} is in use by another worker agent (one agent per --spool-dir)", dir.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Who holds it: the server adopting its built-in workers after a restart signals them.
        let mut holder = &lock;
        let _ = lock.set_len(0).and_then(|()| holder.write_all(format!("{}\n", std::process::id()).as_bytes()));
        Ok(Spool { dir: dir.to_owned(), _lock: lock })
    }

    fn identity_path(&self) -> PathBuf {
        self.dir.join("identity")
    }

    fn result_path(&self, attempt_id: &str) -> Option<PathBuf> {
        // Attempt ids are UUIDs; anything else is not a file name this agent writes.
        uuid::Uuid::parse_str(attempt_id).ok().map(|u| self.dir.join("results").join(format!("{u}.pb")))
    }

    /// Writes `data` to `path` whole or not at all (a temporary file renamed into place).
    fn put(path: &Path, data: &[u8]) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut f = OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
        f.write_all(data)?;
        fs::rename(&tmp, path)
    }

    pub(crate) fn identity(&self) -> Option<SavedIdentity> {
        let text = fs::read_to_string(self.identity_path()).ok()?;
        let mut lines = text.lines();
        let (worker_id, session, interval) = (lines.next()?, lines.next()?, lines.next()?);
        // Saved before usage sampling existed: the server's default.
        let usage = lines.next().and_then(|l| l.parse().ok()).unwrap_or(10_000);
        Some(SavedIdentity {
            worker_id: worker_id.to_owned(),
            session: session.to_owned(),
            heartbeat_interval_ms: interval.parse().ok()?,
            usage_sample_interval_ms: usage,
        })
    }

    pub(crate) fn save_identity(&self, id: &SavedIdentity) -> std::io::Result<()> {
        Spool::put(
            &self.identity_path(),
            format!("{}\n{}\n{}\n{}\n", id.worker_id, id.session, id.heartbeat_interval_ms, id.usage_sample_interval_ms).as_bytes(),
        )
    }

    /// The identity is no longer valid (the server forgot the worker, or it deregistered);
    /// the results spooled under it can no longer be handed in either.
    pub(crate) fn forget_identity(&self) {
        let _ = fs::remove_file(self.identity_path());
        for r in self.results() {
            self.remove_result(&r.attempt_id);
        }
    }

    pub(crate) fn results(&self) -> Vec<pb::Result> {
        let Ok(dir) = fs::read_dir(self.dir.join("results")) else { return Vec::new() };
        dir.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pb"))
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|b| pb::Result::decode(b.as_slice()).ok())
            .collect()
    }

    pub(crate) fn save_result(&self, r: &pb::Result) -> std::io::Result<()> {
        match self.result_path(&r.attempt_id) {
            Some(p) => Spool::put(&p, &r.encode_to_vec()),
            None => Ok(()),
        }
    }

    pub(crate) fn remove_result(&self, attempt_id: &str) {
        if let Some(p) = self.result_path(attempt_id) {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn identity_and_results_survive_a_reopen_and_one_agent_holds_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let id = SavedIdentity { worker_id: "w-1".into(), session: "secret".into(), heartbeat_interval_ms: 3000, usage_sample_interval_ms: 500 };
        let attempt = uuid::Uuid::now_v7().to_string();
        {
            let s = Spool::open(dir.path(), Duration::ZERO).await.unwrap();
            assert!(Spool::open(dir.path(), Duration::from_millis(300)).await.is_err(), "a second agent is refused once the wait is over");
            assert_eq!(s.identity(), None);
            s.save_identity(&id).unwrap();
            s.save_result(&pb::Result { attempt_id: attempt.clone(), exit_code: Some(3), ..Default::default() }).unwrap();
            s.save_result(&pb::Result { attempt_id: "../../etc/passwd".into(), ..Default::default() }).unwrap();
        }
        let s = Spool::open(dir.path(), Duration::ZERO).await.unwrap();
        assert_eq!(s.identity(), Some(id));
        let results = s.results();
        assert_eq!(results.iter().map(|r| (r.attempt_id.as_str(), r.exit_code)).collect::<Vec<_>>(), [(attempt.as_str(), Some(3))]);
        s.remove_result(&attempt);
        assert!(s.results().is_empty());
        s.save_result(&pb::Result { attempt_id: attempt.clone(), ..Default::default() }).unwrap();
        s.forget_identity();
        assert_eq!((s.identity(), s.results().len()), (None, 0));
    }

    #[tokio::test]
    async fn a_starting_agent_waits_for_the_previous_one_to_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let previous = Spool::open(dir.path(), Duration::ZERO).await.unwrap();
        let stopping = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(previous);
        });
        assert!(Spool::open(dir.path(), Duration::from_secs(5)).await.is_ok());
        stopping.await.unwrap();
    }
}
