//! Job output: one file per attempt and stream under `jobs.logs.dir`, deduplicated by offset
//! (SPEC §5.4), capped per attempt with the cap reported, never silent. Followers are woken
//! per topic — new output of one attempt, a change of one job — never by everyone's output.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;

use hodei_core::{AttemptId, JobId};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

#[derive(Default)]
struct State {
    /// Next offset expected from the worker, per attempt and stream.
    next: HashMap<(AttemptId, LogStream), u64>,
    truncated: HashSet<AttemptId>,
}

/// What a follower waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Topic {
    Output(AttemptId),
    Job(JobId),
}

#[derive(Default)]
struct Followers {
    by_topic: HashMap<Topic, watch::Sender<u64>>,
    /// Topics are pruned of departed followers when the map grows past this.
    prune_at: usize,
}

pub struct LogFiles {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    followers: Mutex<Followers>,
}

impl LogFiles {
    pub fn new(dir: PathBuf, max_bytes_per_attempt: u64) -> io::Result<LogFiles> {
        fs::create_dir_all(&dir)?;
        Ok(LogFiles { dir, max_bytes: max_bytes_per_attempt, state: Mutex::new(State::default()), followers: Mutex::default() })
    }

    pub fn path(&self, attempt: AttemptId, stream: LogStream) -> PathBuf {
        self.dir.join(format!("{attempt}.{}", stream.as_str()))
    }

    fn follow(&self, topic: Topic) -> watch::Receiver<u64> {
        let Ok(mut f) = self.followers.lock() else { return watch::channel(0).1 };
        if f.by_topic.len() >= f.prune_at {
            f.by_topic.retain(|_, tx| tx.receiver_count() > 0);
            f.prune_at = (2 * f.by_topic.len()).max(1024);
        }
        f.by_topic.entry(topic).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    /// Changes when the attempt has new output.
    pub fn follow_output(&self, attempt: AttemptId) -> watch::Receiver<u64> {
        self.follow(Topic::Output(attempt))
    }

    /// Changes when [`LogFiles::jobs_changed`] names the job.
    pub fn follow_job(&self, job: JobId) -> watch::Receiver<u64> {
        self.follow(Topic::Job(job))
    }

    fn wake(f: &mut Followers, topic: Topic) {
        if let Some(tx) = f.by_topic.get(&topic) {
            if tx.receiver_count() == 0 {
                f.by_topic.remove(&topic);
            } else {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// Wakes the followers of these jobs (their state, attempt or result changed). One lock
    /// for the lot, and nothing more when nobody follows anything.
    pub fn jobs_changed(&self, jobs: impl Iterator<Item = JobId>) {
        let Ok(mut f) = self.followers.lock() else { return };
        if f.by_topic.is_empty() {
            return;
        }
        for j in jobs {
            Self::wake(&mut f, Topic::Job(j));
        }
    }

    /// The attempt ended: its offsets and truncation need not be kept (a late resend is
    /// deduplicated against the file, as after a restart).
    pub fn finished(&self, attempt: AttemptId) {
        if let Ok(mut st) = self.state.lock() {
            st.next.remove(&(attempt, LogStream::Stdout));
            st.next.remove(&(attempt, LogStream::Stderr));
            st.truncated.remove(&attempt);
        }
    }

    pub fn was_truncated(&self, attempt: AttemptId) -> bool {
        self.state.lock().map(|s| s.truncated.contains(&attempt)).unwrap_or(false)
    }

    /// Appends a chunk the worker sent at `offset` in its stream. Repeats are dropped; a gap
    /// leaves a marker; output past the cap is dropped and the attempt marked truncated.
    pub fn append(&self, attempt: AttemptId, stream: LogStream, offset: u64, data: &[u8]) -> io::Result<()> {
        let path = self.path(attempt, stream);
        let mut state = self.state.lock().map_err(|_| io::Error::other("log state poisoned"))?;
        let next = match state.next.get(&(attempt, stream)) {
            Some(n) => *n,
            None => fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
        };
        let end = offset.saturating_add(data.len() as u64);
        if end <= next {
            return Ok(());
        }
        let mut payload: Vec<u8> = Vec::new();
        if offset > next {
            payload.extend_from_slice(format!("\n[hodei: {} bytes of output lost]\n", offset - next).as_bytes());
            payload.extend_from_slice(data);
        } else {
            payload.extend_from_slice(&data[(next - offset) as usize..]);
        }
        state.next.insert((attempt, stream), end);
        // Readable by the server's user only: another tenant's output is nobody else's business.
        let mut file = OpenOptions::new().create(true).append(true).mode(0o600).open(&path)?;
        // The cap is per attempt: both streams together.
        let other = match stream {
            LogStream::Stdout => LogStream::Stderr,
            LogStream::Stderr => LogStream::Stdout,
        };
        let len = file.metadata()?.len() + fs::metadata(self.path(attempt, other)).map_or(0, |m| m.len());
        let room = self.max_bytes.saturating_sub(len);
        if (payload.len() as u64) > room {
            payload.truncate(room as usize);
            state.truncated.insert(attempt);
        }
        drop(state);
        if !payload.is_empty() {
            file.write_all(&payload)?;
            if let Ok(mut f) = self.followers.lock() {
                Self::wake(&mut f, Topic::Output(attempt));
            }
        }
        Ok(())
    }

    /// Deletes an attempt's output (retention) and forgets what was kept about it.
    pub fn remove(&self, attempt: AttemptId) -> io::Result<()> {
        self.finished(attempt);
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            match fs::remove_file(self.path(attempt, stream)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads up to `limit` bytes from `offset`. Returns the bytes and the current length.
    pub fn read(&self, attempt: AttemptId, stream: LogStream, offset: u64, limit: u64) -> io::Result<(Vec<u8>, u64)> {
        let mut file = match fs::File::open(self.path(attempt, stream)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if offset >= len {
            return Ok((Vec::new(), len));
        }
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::new();
        file.take(limit.min(len - offset)).read_to_end(&mut buf)?;
        Ok((buf, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn files(cap: u64) -> (tempfile::TempDir, LogFiles) {
        let dir = tempfile::tempdir().unwrap();
        let l = LogFiles::new(dir.path().join("logs"), cap).unwrap();
        (dir, l)
    }

    #[test]
    fn repeated_chunks_are_written_once() {
        let (_d, l) = files(1024);
        let a = AttemptId::from_uuid(Uuid::from_u128(1));
        l.append(a, LogStream::Stdout, 0, b"hello ").unwrap();
        l.append(a, LogStream::Stdout, 0, b"hello ").unwrap();
        l.append(a, LogStream::Stdout, 3, b"lo world").unwrap();
        assert_eq!(l.read(a, LogStream::Stdout, 0, 100).unwrap().0, b"hello world");
    }

    #[test]
    fn output_over_the_cap_is_dropped_and_reported() {
        let (_d, l) = files(4);
        let a = AttemptId::from_uuid(Uuid::from_u128(2));
        l.append(a, LogStream::Stderr, 0, b"abcdef").unwrap();
        assert_eq!(l.read(a, LogStream::Stderr, 0, 100).unwrap().0, b"abcd");
        assert!(l.was_truncated(a));
    }

    #[test]
    fn the_cap_counts_both_streams_of_an_attempt() {
        let (_d, l) = files(6);
        let a = AttemptId::from_uuid(Uuid::from_u128(4));
        l.append(a, LogStream::Stdout, 0, b"abcd").unwrap();
        assert!(!l.was_truncated(a));
        l.append(a, LogStream::Stderr, 0, b"wxyz").unwrap();
        assert_eq!(l.read(a, LogStream::Stderr, 0, 100).unwrap().0, b"wx", "4 + 2 bytes: the cap is per attempt");
        assert!(l.was_truncated(a));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(l.path(a, LogStream::Stdout)).unwrap().permissions().mode() & 0o777, 0o600, "log files are private");
    }

    #[test]
    fn followers_wake_for_their_own_topic_only() {
        let (_d, l) = files(1024);
        let (a, b) = (AttemptId::from_uuid(Uuid::from_u128(10)), AttemptId::from_uuid(Uuid::from_u128(11)));
        let (mut out_a, mut out_b) = (l.follow_output(a), l.follow_output(b));
        let job = JobId::from_uuid(Uuid::from_u128(12));
        let state = l.follow_job(job);
        l.append(a, LogStream::Stdout, 0, b"x").unwrap();
        assert!(out_a.has_changed().unwrap() && !out_b.has_changed().unwrap() && !state.has_changed().unwrap());
        out_a.borrow_and_update();
        l.append(a, LogStream::Stdout, 0, b"x").unwrap();
        assert!(!out_a.has_changed().unwrap(), "a repeat writes nothing and wakes no one");
        l.jobs_changed([JobId::from_uuid(Uuid::from_u128(13)), job].into_iter());
        assert!(state.has_changed().unwrap() && !out_b.has_changed().unwrap());
        out_b.borrow_and_update();
        // A departed follower's topic goes at the next wake.
        drop(out_b);
        l.append(b, LogStream::Stdout, 0, b"y").unwrap();
        assert!(!l.followers.lock().unwrap().by_topic.contains_key(&Topic::Output(b)));
    }

    #[test]
    fn an_ended_attempt_is_forgotten_and_a_resend_still_deduplicated() {
        let (_d, l) = files(1024);
        let a = AttemptId::from_uuid(Uuid::from_u128(20));
        l.append(a, LogStream::Stdout, 0, b"hello").unwrap();
        l.finished(a);
        assert!(l.state.lock().unwrap().next.is_empty());
        l.append(a, LogStream::Stdout, 0, b"hello").unwrap();
        assert_eq!(l.read(a, LogStream::Stdout, 0, 100).unwrap().0, b"hello");
    }

    #[test]
    fn gaps_leave_a_marker() {
        let (_d, l) = files(1024);
        let a = AttemptId::from_uuid(Uuid::from_u128(3));
        l.append(a, LogStream::Stdout, 0, b"ab").unwrap();
        l.append(a, LogStream::Stdout, 5, b"f").unwrap();
        let text = String::from_utf8(l.read(a, LogStream::Stdout, 0, 100).unwrap().0).unwrap();
        assert_eq!(text, "ab\n[hodei: 3 bytes of output lost]\nf");
    }
}
