//! Job output: one file per attempt and stream under `jobs.logs.dir`, deduplicated by the
//! worker's offsets (SPEC §5.4), capped per attempt with the cap reported, never silent.
//! Followers are woken per topic — new output of one attempt, a change of one job — never by
//! everyone's output.
//!
//! A file holds the worker's bytes as sent, except where the worker's offsets jump (output it
//! could not keep): there a marker line says how much was lost. Before a marker is written, a
//! line `B F W` is added to the stream's `.idx` file — the file was `B` bytes long, and from
//! byte `F` on it holds the worker's bytes from offset `W` on — so the offset the worker is
//! at is known again after a restart, and a resend of what a stopped server missed is written
//! exactly once. An attempt over the cap gets an empty `.truncated` file.

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

/// Where an attempt's stream stands: the next offset expected from the worker and the
/// file's length. The two differ by the gap markers written so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cursor {
    worker: u64,
    file: u64,
}

#[derive(Default)]
struct State {
    /// Per attempt and stream, while it sends output; rebuilt from the files after a restart.
    next: HashMap<(AttemptId, LogStream), Cursor>,
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

fn parse_index_line(line: &str) -> Option<[u64; 3]> {
    let mut it = line.split_ascii_whitespace().map(|n| n.parse::<u64>().ok());
    let v = [it.next()??, it.next()??, it.next()??];
    it.next().is_none().then_some(v)
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

    fn index_path(&self, attempt: AttemptId, stream: LogStream) -> PathBuf {
        self.dir.join(format!("{attempt}.{}.idx", stream.as_str()))
    }

    fn truncated_path(&self, attempt: AttemptId) -> PathBuf {
        self.dir.join(format!("{attempt}.truncated"))
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

    /// The attempt ended: its offsets and truncation need not be kept in memory (a late
    /// resend is deduplicated against the files, as after a restart).
    pub fn finished(&self, attempt: AttemptId) {
        if let Ok(mut st) = self.state.lock() {
            st.next.remove(&(attempt, LogStream::Stdout));
            st.next.remove(&(attempt, LogStream::Stderr));
            st.truncated.remove(&attempt);
        }
    }

    pub fn was_truncated(&self, attempt: AttemptId) -> bool {
        self.state.lock().is_ok_and(|s| s.truncated.contains(&attempt)) || self.truncated_path(attempt).exists()
    }

    /// The worker offsets up to which each stream of the attempt is stored (stdout, stderr):
    /// what the worker need not send again. `u64::MAX` once the attempt is over its cap.
    /// Read from the files when this server has not seen the attempt's output yet.
    pub fn stored_offsets(&self, attempt: AttemptId) -> io::Result<(u64, u64)> {
        let st = self.state.lock().map_err(|_| io::Error::other("log state poisoned"))?;
        if st.truncated.contains(&attempt) || self.truncated_path(attempt).exists() {
            return Ok((u64::MAX, u64::MAX));
        }
        // Not kept: an attempt that sends nothing more (lost with its worker) leaves no entry.
        let at = |stream| -> io::Result<u64> {
            match st.next.get(&(attempt, stream)) {
                Some(c) => Ok(c.worker),
                None => Ok(self.recover(attempt, stream)?.worker),
            }
        };
        Ok((at(LogStream::Stdout)?, at(LogStream::Stderr)?))
    }

    /// [`LogFiles::stored_offsets`] of those of `attempts` whose output this server has taken
    /// since it started, without touching the disk (the others are answered at reconnection).
    pub fn known_offsets(&self, attempts: &[AttemptId]) -> Vec<(AttemptId, u64, u64)> {
        let Ok(st) = self.state.lock() else { return Vec::new() };
        let at = |a, s| st.next.get(&(a, s)).map(|c: &Cursor| c.worker);
        attempts
            .iter()
            .filter_map(|&a| {
                if st.truncated.contains(&a) {
                    return Some((a, u64::MAX, u64::MAX));
                }
                let (out, err) = (at(a, LogStream::Stdout), at(a, LogStream::Stderr));
                (out.is_some() || err.is_some()).then(|| (a, out.unwrap_or(0), err.unwrap_or(0)))
            })
            .collect()
    }

    /// Where a stream stands according to its files, repairing the end of a write that a
    /// stopped server left half done: an index line whose marker is not (fully) in the file is
    /// undone with the marker's bytes, a torn index line is dropped.
    fn recover(&self, attempt: AttemptId, stream: LogStream) -> io::Result<Cursor> {
        let path = self.path(attempt, stream);
        let mut len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let index = self.index_path(attempt, stream);
        let text = match fs::read_to_string(&index) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Cursor { worker: len, file: len }),
            Err(e) => return Err(e),
        };
        let whole: Vec<&str> = text.split_inclusive('\n').filter(|l| l.ends_with('\n')).collect();
        let mut lines: Vec<[u64; 3]> = whole.iter().filter_map(|l| parse_index_line(l)).collect();
        let mut rewrite = whole.len() != lines.len() || whole.iter().map(|l| l.len()).sum::<usize>() != text.len();
        if let Some(&[before, from, _]) = lines.last()
            && len < from
        {
            if before <= len {
                OpenOptions::new().write(true).open(&path)?.set_len(before)?;
                len = before;
            }
            lines.pop();
            rewrite = true;
        }
        if rewrite {
            let tmp = index.with_extension("idx.tmp");
            let body: String = lines.iter().map(|[b, f, w]| format!("{b} {f} {w}\n")).collect();
            OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?.write_all(body.as_bytes())?;
            fs::rename(&tmp, &index)?;
        }
        Ok(match lines.last() {
            Some(&[_, from, worker]) => Cursor { worker: worker + len.saturating_sub(from), file: len },
            None => Cursor { worker: len, file: len },
        })
    }

    /// Appends a chunk the worker sent at `offset` in its stream. What is stored already is
    /// dropped; a jump past what is stored leaves a marker; output past the cap is dropped and
    /// the attempt marked truncated.
    pub fn append(&self, attempt: AttemptId, stream: LogStream, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock().map_err(|_| io::Error::other("log state poisoned"))?;
        if st.truncated.contains(&attempt) {
            return Ok(());
        }
        let cur = match st.next.get(&(attempt, stream)) {
            Some(c) => *c,
            None if self.truncated_path(attempt).exists() => {
                st.truncated.insert(attempt);
                return Ok(());
            }
            None => self.recover(attempt, stream)?,
        };
        let end = offset.saturating_add(data.len() as u64);
        if end <= cur.worker {
            st.next.insert((attempt, stream), cur);
            return Ok(());
        }
        // The cap is per attempt: both streams together.
        let other = match stream {
            LogStream::Stdout => LogStream::Stderr,
            LogStream::Stderr => LogStream::Stdout,
        };
        let other_len = match st.next.get(&(attempt, other)) {
            Some(c) => c.file,
            None => fs::metadata(self.path(attempt, other)).map_or(0, |m| m.len()),
        };
        let room = self.max_bytes.saturating_sub(cur.file + other_len);
        // Written while the state is held: one stream's writes land in the order of its offsets.
        let written = self.write(attempt, stream, cur, offset, data, room);
        match written {
            Ok((n, truncated)) => {
                st.next.insert((attempt, stream), Cursor { worker: end, file: cur.file + n });
                if truncated {
                    st.truncated.insert(attempt);
                }
                drop(st);
                if n > 0
                    && let Ok(mut f) = self.followers.lock()
                {
                    Self::wake(&mut f, Topic::Output(attempt));
                }
                Ok(())
            }
            Err(e) => {
                // What reached the file is read back from it at the next chunk.
                st.next.remove(&(attempt, stream));
                Err(e)
            }
        }
    }

    /// Writes what the chunk adds after `cur`, at most `room` bytes; returns the bytes written
    /// and whether some were dropped for the cap.
    fn write(&self, attempt: AttemptId, stream: LogStream, cur: Cursor, offset: u64, data: &[u8], room: u64) -> io::Result<(u64, bool)> {
        // Readable by the server's user only: another tenant's output is nobody else's business.
        let open = |p: PathBuf| OpenOptions::new().create(true).append(true).mode(0o600).open(p);
        let mut payload: Vec<u8> = Vec::new();
        if offset > cur.worker {
            let marker = format!("\n[hodei: {} bytes of output lost]\n", offset - cur.worker);
            // The index line goes first: a stop between the two leaves a line without its
            // marker, which `recover` undoes; the other order would count the marker as output.
            let line = format!("{} {} {offset}\n", cur.file, cur.file + marker.len() as u64);
            open(self.index_path(attempt, stream))?.write_all(line.as_bytes())?;
            payload.extend_from_slice(marker.as_bytes());
            payload.extend_from_slice(data);
        } else {
            payload.extend_from_slice(&data[(cur.worker - offset) as usize..]);
        }
        let truncated = payload.len() as u64 > room;
        if truncated {
            payload.truncate(room as usize);
            open(self.truncated_path(attempt))?;
        }
        if !payload.is_empty() {
            open(self.path(attempt, stream))?.write_all(&payload)?;
        }
        Ok((payload.len() as u64, truncated))
    }

    /// Deletes an attempt's output (retention) and forgets what was kept about it.
    pub fn remove(&self, attempt: AttemptId) -> io::Result<()> {
        self.finished(attempt);
        let files = [LogStream::Stdout, LogStream::Stderr].into_iter().flat_map(|s| [self.path(attempt, s), self.index_path(attempt, s)]);
        for path in files.chain([self.truncated_path(attempt)]) {
            match fs::remove_file(path) {
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

    #[test]
    fn a_restart_keeps_the_workers_offsets_past_a_gap() {
        let (d, l) = files(1024);
        let a = AttemptId::from_uuid(Uuid::from_u128(30));
        l.append(a, LogStream::Stdout, 0, b"ab").unwrap();
        l.append(a, LogStream::Stdout, 5, b"f").unwrap();
        drop(l);
        let l = LogFiles::new(d.path().join("logs"), 1024).unwrap();
        assert_eq!(l.stored_offsets(a).unwrap(), (6, 0), "the worker's offset, not the file's length");
        l.append(a, LogStream::Stdout, 5, b"fgh").unwrap();
        let text = String::from_utf8(l.read(a, LogStream::Stdout, 0, 100).unwrap().0).unwrap();
        assert_eq!(text, "ab\n[hodei: 3 bytes of output lost]\nfgh");
    }

    #[test]
    fn a_marker_cut_by_a_stop_is_undone() {
        let (d, l) = files(1024);
        let a = AttemptId::from_uuid(Uuid::from_u128(31));
        l.append(a, LogStream::Stdout, 0, b"ab").unwrap();
        l.append(a, LogStream::Stdout, 5, b"fg").unwrap();
        drop(l);
        // The server stopped three bytes into the marker.
        let dir = d.path().join("logs");
        OpenOptions::new().write(true).open(dir.join(format!("{a}.stdout"))).unwrap().set_len(5).unwrap();
        let l = LogFiles::new(dir, 1024).unwrap();
        assert_eq!(l.stored_offsets(a).unwrap(), (2, 0));
        l.append(a, LogStream::Stdout, 2, b"cdefg").unwrap();
        assert_eq!(l.read(a, LogStream::Stdout, 0, 100).unwrap().0, b"abcdefg");
        // A torn index line is dropped too.
        let b = AttemptId::from_uuid(Uuid::from_u128(32));
        l.append(b, LogStream::Stderr, 0, b"xy").unwrap();
        drop(l);
        let dir = d.path().join("logs");
        fs::write(dir.join(format!("{b}.stderr.idx")), "2 4").unwrap();
        let l = LogFiles::new(dir.clone(), 1024).unwrap();
        assert_eq!(l.stored_offsets(b).unwrap(), (0, 2));
        assert_eq!(fs::read_to_string(dir.join(format!("{b}.stderr.idx"))).unwrap(), "");
    }

    #[test]
    fn truncation_outlives_a_restart_and_removal_takes_every_file() {
        let (d, l) = files(4);
        let a = AttemptId::from_uuid(Uuid::from_u128(33));
        l.append(a, LogStream::Stdout, 0, b"ab").unwrap();
        l.append(a, LogStream::Stdout, 9, b"cdef").unwrap();
        drop(l);
        let l = LogFiles::new(d.path().join("logs"), 4).unwrap();
        assert!(l.was_truncated(a));
        assert_eq!(l.stored_offsets(a).unwrap(), (u64::MAX, u64::MAX), "nothing more is wanted");
        l.append(a, LogStream::Stderr, 0, b"z").unwrap();
        assert_eq!(l.read(a, LogStream::Stderr, 0, 100).unwrap().0, b"");
        l.remove(a).unwrap();
        assert_eq!(fs::read_dir(d.path().join("logs")).unwrap().count(), 0);
    }

    #[test]
    fn known_offsets_name_only_attempts_with_output_in_memory() {
        let (_d, l) = files(1024);
        let (a, b) = (AttemptId::from_uuid(Uuid::from_u128(34)), AttemptId::from_uuid(Uuid::from_u128(35)));
        l.append(a, LogStream::Stderr, 0, b"abc").unwrap();
        assert_eq!(l.known_offsets(&[a, b]), [(a, 0, 3)]);
    }

    /// What a worker does to one stream, as the log store sees it.
    #[derive(Clone, Debug)]
    enum Op {
        /// New output, delivered.
        Send(usize),
        /// The worker dropped this much of its output (its buffer overflowed): a gap.
        Skip(usize),
        /// An old chunk again (a late duplicate).
        Repeat(usize, usize),
        /// The stream breaks with this much new output in flight; on the next stream the
        /// worker resends from what the server says it has, the server restarted or not.
        Break(usize, bool),
        /// The attempt's result came in.
        Finish,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (1usize..300).prop_map(Op::Send),
            1 => (1usize..50).prop_map(Op::Skip),
            2 => (0usize..2000, 1usize..300).prop_map(|(a, n)| Op::Repeat(a, n)),
            2 => (0usize..300, any::<bool>()).prop_map(|(n, r)| Op::Break(n, r)),
            1 => Just(Op::Finish),
        ]
    }

    /// Runs the ops; `restarts` says whether `Break(_, true)` and `Finish` really restart the
    /// store and forget the attempt. Returns the stored file and the worker's output.
    fn run(ops: &[Op], restarts: bool, chunk: usize) -> (Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs");
        let mut l = LogFiles::new(path.clone(), u64::MAX).unwrap();
        let a = AttemptId::from_uuid(Uuid::from_u128(40));
        let st = LogStream::Stdout;
        // The worker's stream: byte i is (i % 251), `produced` bytes of it so far.
        let byte = |i: usize| (i % 251) as u8;
        let bytes = |from: usize, to: usize| (from..to).map(byte).collect::<Vec<u8>>();
        let mut produced = 0usize;
        for op in ops {
            match *op {
                Op::Send(n) => {
                    l.append(a, st, produced as u64, &bytes(produced, produced + n)).unwrap();
                    produced += n;
                }
                Op::Skip(n) => produced += n,
                Op::Repeat(from, n) => {
                    let from = from.min(produced);
                    l.append(a, st, from as u64, &bytes(from, (from + n).min(produced))).unwrap();
                }
                Op::Break(n, restart) => {
                    produced += n;
                    if restart && restarts {
                        l = LogFiles::new(path.clone(), u64::MAX).unwrap();
                    }
                    let mut at = l.stored_offsets(a).unwrap().0 as usize;
                    while at < produced {
                        let to = (at + chunk).min(produced);
                        l.append(a, st, at as u64, &bytes(at, to)).unwrap();
                        at = to;
                    }
                }
                Op::Finish if restarts => l.finished(a),
                Op::Finish => {}
            }
        }
        (l.read(a, st, 0, u64::MAX).unwrap().0, bytes(0, produced))
    }

    proptest::proptest! {
        /// Restarts and forgetting change nothing in what is stored, and without gaps what is
        /// stored is what the worker printed, byte for byte.
        #[test]
        fn resends_are_idempotent_across_restarts(ops in proptest::collection::vec(op(), 1..40), chunk in 1usize..200) {
            let (stored, _) = run(&ops, false, chunk);
            let (restarted, printed) = run(&ops, true, chunk);
            proptest::prop_assert_eq!(&restarted, &stored);
            if !ops.iter().any(|o| matches!(o, Op::Skip(_))) {
                proptest::prop_assert_eq!(&restarted, &printed);
            }
        }
    }
}
