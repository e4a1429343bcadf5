//! Job output (SPEC §5.4): deduplicated by the worker's offsets, gaps left as markers, capped
//! per attempt with the cap reported, never silent. Followers are woken per topic — new output
//! of one attempt, a change of one job — never by everyone's output.
//!
//! [`Logs`] holds what every storage shares: where each stream of a running attempt stands,
//! the cap, and the followers. Storage is a port, [`LogStore`], with two adapters: one file per
//! attempt and stream in a directory ([`LogFiles`], the embedded default) and a table in the
//! PostgreSQL database ([`crate::postgres_logs::PgLogs`]), which every server replica reaches.
//! Both pass the same suite, [`crate::conformance_logs`].
//!
//! A stored stream is the worker's bytes as sent, except where the worker's offsets jump
//! (output it could not keep): there a marker line says how much was lost. The storage keeps,
//! for each such jump, where the worker's bytes resume, so the offset the worker is at is
//! known again after a restart, and a resend of what a stopped server missed is stored exactly
//! once.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
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

    fn other(self) -> LogStream {
        match self {
            LogStream::Stdout => LogStream::Stderr,
            LogStream::Stderr => LogStream::Stdout,
        }
    }
}

/// Where a stream stands: the next offset expected from the worker and the length stored.
/// The two differ by the gap markers written so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub worker: u64,
    pub stored: u64,
}

/// What one chunk adds to a stream, decided by [`Logs`]: the storage writes it as it is.
#[derive(Debug)]
pub struct Piece {
    /// Where the stream stood before.
    pub at: Cursor,
    /// Where it stands after (`after.stored - at.stored == bytes.len()`).
    pub after: Cursor,
    /// A gap marker opens `bytes`: its length, and the worker offset its bytes resume at.
    pub gap: Option<(u64, u64)>,
    /// What to append (marker and output), already cut to the cap.
    pub bytes: Vec<u8>,
    /// The cap was reached: the attempt stores nothing more.
    pub truncate: bool,
}

/// The storage of job output. It makes no decisions: [`Logs`] says what to write.
#[async_trait]
pub trait LogStore: Send + Sync + 'static {
    /// Where a stream stands as stored, repairing what a stopped server left half written.
    async fn recover(&self, attempt: AttemptId, stream: LogStream) -> io::Result<Cursor>;
    /// Whether the attempt reached its cap.
    async fn truncated(&self, attempt: AttemptId) -> io::Result<bool>;
    /// Stores a piece. Pieces of one stream come in order, one at a time.
    async fn write(&self, attempt: AttemptId, stream: LogStream, piece: &Piece) -> io::Result<()>;
    /// Up to `limit` bytes from `offset`, and the stream's stored length.
    async fn read(&self, attempt: AttemptId, stream: LogStream, offset: u64, limit: u64) -> io::Result<(Vec<u8>, u64)>;
    /// Deletes the attempts' output (retention).
    async fn remove(&self, attempts: &[AttemptId]) -> io::Result<()>;
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

/// What is known of an attempt that sends output, while it does; read from the storage when
/// not known (after a restart, or once the attempt has ended).
#[derive(Default)]
struct AttemptLog {
    stdout: Option<Cursor>,
    stderr: Option<Cursor>,
    truncated: Option<bool>,
}

impl AttemptLog {
    fn cursor(&mut self, stream: LogStream) -> &mut Option<Cursor> {
        match stream {
            LogStream::Stdout => &mut self.stdout,
            LogStream::Stderr => &mut self.stderr,
        }
    }
}

/// Job output over a [`LogStore`]: deduplication, gaps, the cap and followers.
pub struct Logs {
    store: Arc<dyn LogStore>,
    max_bytes: u64,
    /// One lock per attempt: its chunks are appended one at a time, other attempts' meanwhile.
    attempts: Mutex<HashMap<AttemptId, Arc<tokio::sync::Mutex<AttemptLog>>>>,
    followers: Mutex<Followers>,
}

impl Logs {
    pub fn new(store: Arc<dyn LogStore>, max_bytes_per_attempt: u64) -> Logs {
        Logs { store, max_bytes: max_bytes_per_attempt, attempts: Mutex::default(), followers: Mutex::default() }
    }

    /// Output in one file per attempt and stream under `dir`.
    pub fn in_dir(dir: PathBuf, max_bytes_per_attempt: u64) -> io::Result<Logs> {
        Ok(Logs::new(Arc::new(LogFiles::new(dir)?), max_bytes_per_attempt))
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

    /// Changes when [`Logs::jobs_changed`] names the job.
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

    fn entry(&self, attempt: AttemptId) -> io::Result<Arc<tokio::sync::Mutex<AttemptLog>>> {
        let mut map = self.attempts.lock().map_err(|_| io::Error::other("log state poisoned"))?;
        Ok(map.entry(attempt).or_default().clone())
    }

    /// The attempt ended: what is known of it need not be kept in memory (a late resend is
    /// deduplicated against the storage, as after a restart).
    pub fn finished(&self, attempt: AttemptId) {
        if let Ok(mut map) = self.attempts.lock() {
            map.remove(&attempt);
        }
    }

    /// Whether the attempt reached its cap.
    pub async fn was_truncated(&self, attempt: AttemptId) -> io::Result<bool> {
        let known = self.attempts.lock().ok().and_then(|m| m.get(&attempt).and_then(|e| e.try_lock().ok().and_then(|l| l.truncated)));
        match known {
            Some(t) => Ok(t),
            None => self.store.truncated(attempt).await,
        }
    }

    /// The worker offsets up to which each stream of the attempt is stored (stdout, stderr):
    /// what the worker need not send again. `u64::MAX` once the attempt is over its cap.
    pub async fn stored_offsets(&self, attempt: AttemptId) -> io::Result<(u64, u64)> {
        let entry = self.attempts.lock().ok().and_then(|m| m.get(&attempt).cloned());
        // Not kept when unknown: an attempt that sends nothing more (lost with its worker)
        // leaves no entry.
        let mut log = match &entry {
            Some(e) => Some(e.lock().await),
            None => None,
        };
        let truncated = match log.as_ref().and_then(|l| l.truncated) {
            Some(t) => t,
            None => self.store.truncated(attempt).await?,
        };
        if truncated {
            return Ok((u64::MAX, u64::MAX));
        }
        let mut offsets = [0; 2];
        for (i, stream) in [LogStream::Stdout, LogStream::Stderr].into_iter().enumerate() {
            offsets[i] = match log.as_mut().and_then(|l| *l.cursor(stream)) {
                Some(c) => c.worker,
                None => self.store.recover(attempt, stream).await?.worker,
            };
        }
        Ok((offsets[0], offsets[1]))
    }

    /// [`Logs::stored_offsets`] of those of `attempts` whose output this server has taken
    /// since it started, without reading the storage (the others are answered at reconnection).
    pub fn known_offsets(&self, attempts: &[AttemptId]) -> Vec<(AttemptId, u64, u64)> {
        let Ok(map) = self.attempts.lock() else { return Vec::new() };
        attempts
            .iter()
            .filter_map(|&a| {
                // One being appended to is answered at the next heartbeat.
                let log = map.get(&a)?.try_lock().ok()?;
                if log.truncated == Some(true) {
                    return Some((a, u64::MAX, u64::MAX));
                }
                let (out, err) = (log.stdout.map(|c| c.worker), log.stderr.map(|c| c.worker));
                (out.is_some() || err.is_some()).then(|| (a, out.unwrap_or(0), err.unwrap_or(0)))
            })
            .collect()
    }

    /// Appends a chunk the worker sent at `offset` in its stream. What is stored already is
    /// dropped; a jump past what is stored leaves a marker; output past the cap is dropped and
    /// the attempt marked truncated.
    pub async fn append(&self, attempt: AttemptId, stream: LogStream, offset: u64, data: &[u8]) -> io::Result<()> {
        let entry = self.entry(attempt)?;
        let mut log = entry.lock().await;
        let truncated = match log.truncated {
            Some(t) => t,
            None => *log.truncated.insert(self.store.truncated(attempt).await?),
        };
        if truncated {
            return Ok(());
        }
        let cur = match *log.cursor(stream) {
            Some(c) => c,
            None => *log.cursor(stream).insert(self.store.recover(attempt, stream).await?),
        };
        let end = offset.saturating_add(data.len() as u64);
        if end <= cur.worker {
            return Ok(());
        }
        // The cap is per attempt: both streams together.
        let other = match *log.cursor(stream.other()) {
            Some(c) => c,
            None => *log.cursor(stream.other()).insert(self.store.recover(attempt, stream.other()).await?),
        };
        let room = self.max_bytes.saturating_sub(cur.stored + other.stored);
        let mut bytes: Vec<u8> = Vec::new();
        let mut gap = None;
        if offset > cur.worker {
            let marker = format!("\n[hodei: {} bytes of output lost]\n", offset - cur.worker);
            gap = Some((marker.len() as u64, offset));
            bytes.extend_from_slice(marker.as_bytes());
            bytes.extend_from_slice(data);
        } else {
            bytes.extend_from_slice(&data[(cur.worker - offset) as usize..]);
        }
        let truncate = bytes.len() as u64 > room;
        if truncate {
            bytes.truncate(room as usize);
        }
        let piece = Piece { at: cur, after: Cursor { worker: end, stored: cur.stored + bytes.len() as u64 }, gap, bytes, truncate };
        match self.store.write(attempt, stream, &piece).await {
            Ok(()) => {
                *log.cursor(stream) = Some(piece.after);
                log.truncated = Some(truncate);
                drop(log);
                if !piece.bytes.is_empty()
                    && let Ok(mut f) = self.followers.lock()
                {
                    Self::wake(&mut f, Topic::Output(attempt));
                }
                Ok(())
            }
            Err(e) => {
                // What reached the storage is read back from it at the next chunk.
                *log = AttemptLog::default();
                Err(e)
            }
        }
    }

    /// Up to `limit` bytes from `offset`, and the stream's stored length.
    pub async fn read(&self, attempt: AttemptId, stream: LogStream, offset: u64, limit: u64) -> io::Result<(Vec<u8>, u64)> {
        self.store.read(attempt, stream, offset, limit).await
    }

    /// Deletes the attempts' output (retention) and forgets what was kept about them.
    pub async fn remove(&self, attempts: &[AttemptId]) -> io::Result<()> {
        for a in attempts {
            self.finished(*a);
        }
        self.store.remove(attempts).await
    }
}

fn parse_index_line(line: &str) -> Option<[u64; 3]> {
    let mut it = line.split_ascii_whitespace().map(|n| n.parse::<u64>().ok());
    let v = [it.next()??, it.next()??, it.next()??];
    it.next().is_none().then_some(v)
}

/// Output in files: `<attempt>.<stream>` holds a stream as stored. Before a gap marker is
/// written, a line `B F W` is added to the stream's `.idx` file — the file was `B` bytes long,
/// and from byte `F` on it holds the worker's bytes from offset `W` on. An attempt over the cap
/// gets an empty `.truncated` file. Files are readable by the server's user only.
pub struct LogFiles {
    dir: PathBuf,
}

impl LogFiles {
    pub fn new(dir: PathBuf) -> io::Result<LogFiles> {
        fs::create_dir_all(&dir)?;
        Ok(LogFiles { dir })
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
}

fn open_append(p: PathBuf) -> io::Result<fs::File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(p)
}

#[async_trait]
impl LogStore for LogFiles {
    /// An index line whose marker is not (fully) in the file is undone with the marker's
    /// bytes; a torn index line is dropped.
    async fn recover(&self, attempt: AttemptId, stream: LogStream) -> io::Result<Cursor> {
        let path = self.path(attempt, stream);
        let mut len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let index = self.index_path(attempt, stream);
        let text = match fs::read_to_string(&index) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Cursor { worker: len, stored: len }),
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
            Some(&[_, from, worker]) => Cursor { worker: worker + len.saturating_sub(from), stored: len },
            None => Cursor { worker: len, stored: len },
        })
    }

    async fn truncated(&self, attempt: AttemptId) -> io::Result<bool> {
        self.truncated_path(attempt).try_exists()
    }

    async fn write(&self, attempt: AttemptId, stream: LogStream, piece: &Piece) -> io::Result<()> {
        if let Some((marker_len, resume)) = piece.gap {
            // The index line goes first: a stop between the two leaves a line without its
            // marker, which `recover` undoes; the other order would count the marker as output.
            let line = format!("{} {} {resume}\n", piece.at.stored, piece.at.stored + marker_len);
            open_append(self.index_path(attempt, stream))?.write_all(line.as_bytes())?;
        }
        if piece.truncate {
            open_append(self.truncated_path(attempt))?;
        }
        if !piece.bytes.is_empty() {
            open_append(self.path(attempt, stream))?.write_all(&piece.bytes)?;
        }
        Ok(())
    }

    async fn read(&self, attempt: AttemptId, stream: LogStream, offset: u64, limit: u64) -> io::Result<(Vec<u8>, u64)> {
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

    async fn remove(&self, attempts: &[AttemptId]) -> io::Result<()> {
        for &attempt in attempts {
            let files = [LogStream::Stdout, LogStream::Stderr].into_iter().flat_map(|s| [self.path(attempt, s), self.index_path(attempt, s)]);
            for path in files.chain([self.truncated_path(attempt)]) {
                match fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance_logs::{Op, run_ops};
    use uuid::Uuid;

    fn open_in(dir: &std::path::Path) -> impl Fn(u64) -> Logs + Sync + use<> {
        let dir = dir.join("logs");
        move |cap| Logs::in_dir(dir.clone(), cap).unwrap()
    }

    #[tokio::test]
    async fn files_conform() {
        let dir = tempfile::tempdir().unwrap();
        crate::conformance_logs::run_all(&open_in(dir.path())).await;
    }

    #[tokio::test]
    async fn files_are_private_and_removal_takes_every_one() {
        let dir = tempfile::tempdir().unwrap();
        let l = open_in(dir.path())(4);
        let a = AttemptId::from_uuid(Uuid::from_u128(33));
        l.append(a, LogStream::Stdout, 0, b"ab").await.unwrap();
        l.append(a, LogStream::Stdout, 9, b"cdef").await.unwrap();
        l.append(a, LogStream::Stderr, 0, b"z").await.unwrap();
        let logs = dir.path().join("logs");
        use std::os::unix::fs::PermissionsExt;
        for f in fs::read_dir(&logs).unwrap() {
            let f = f.unwrap();
            assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600, "{:?} is private", f.file_name());
        }
        l.remove(&[a]).await.unwrap();
        assert_eq!(fs::read_dir(&logs).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn followers_wake_for_their_own_topic_only() {
        let dir = tempfile::tempdir().unwrap();
        let l = open_in(dir.path())(1024);
        let (a, b) = (AttemptId::from_uuid(Uuid::from_u128(10)), AttemptId::from_uuid(Uuid::from_u128(11)));
        let (mut out_a, mut out_b) = (l.follow_output(a), l.follow_output(b));
        let job = JobId::from_uuid(Uuid::from_u128(12));
        let state = l.follow_job(job);
        l.append(a, LogStream::Stdout, 0, b"x").await.unwrap();
        assert!(out_a.has_changed().unwrap() && !out_b.has_changed().unwrap() && !state.has_changed().unwrap());
        out_a.borrow_and_update();
        l.append(a, LogStream::Stdout, 0, b"x").await.unwrap();
        assert!(!out_a.has_changed().unwrap(), "a repeat writes nothing and wakes no one");
        l.jobs_changed([JobId::from_uuid(Uuid::from_u128(13)), job].into_iter());
        assert!(state.has_changed().unwrap() && !out_b.has_changed().unwrap());
        out_b.borrow_and_update();
        // A departed follower's topic goes at the next wake.
        drop(out_b);
        l.append(b, LogStream::Stdout, 0, b"y").await.unwrap();
        assert!(!l.followers.lock().unwrap().by_topic.contains_key(&Topic::Output(b)));
    }

    #[tokio::test]
    async fn a_marker_cut_by_a_stop_is_undone_and_a_torn_index_line_dropped() {
        let d = tempfile::tempdir().unwrap();
        let open = open_in(d.path());
        let dir = d.path().join("logs");
        let l = open(1024);
        let a = AttemptId::from_uuid(Uuid::from_u128(31));
        l.append(a, LogStream::Stdout, 0, b"ab").await.unwrap();
        l.append(a, LogStream::Stdout, 5, b"fg").await.unwrap();
        drop(l);
        // The server stopped three bytes into the marker.
        OpenOptions::new().write(true).open(dir.join(format!("{a}.stdout"))).unwrap().set_len(5).unwrap();
        let l = open(1024);
        assert_eq!(l.stored_offsets(a).await.unwrap(), (2, 0));
        l.append(a, LogStream::Stdout, 2, b"cdefg").await.unwrap();
        assert_eq!(l.read(a, LogStream::Stdout, 0, 100).await.unwrap().0, b"abcdefg");
        let b = AttemptId::from_uuid(Uuid::from_u128(32));
        l.append(b, LogStream::Stderr, 0, b"xy").await.unwrap();
        drop(l);
        fs::write(dir.join(format!("{b}.stderr.idx")), "2 4").unwrap();
        let l = open(1024);
        assert_eq!(l.stored_offsets(b).await.unwrap(), (0, 2));
        assert_eq!(fs::read_to_string(dir.join(format!("{b}.stderr.idx"))).unwrap(), "");
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

    proptest::proptest! {
        /// Restarts and forgetting change nothing in what is stored, and without gaps what is
        /// stored is what the worker printed, byte for byte.
        #[test]
        fn resends_are_idempotent_across_restarts(ops in proptest::collection::vec(op(), 1..40), chunk in 1usize..200) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let open = open_in(dir.path());
            let a = |n| AttemptId::from_uuid(Uuid::from_u128(n));
            let (stored, _) = rt.block_on(run_ops(&open, a(40), &ops, false, chunk));
            let (restarted, printed) = rt.block_on(run_ops(&open, a(41), &ops, true, chunk));
            proptest::prop_assert_eq!(&restarted, &stored);
            if !ops.iter().any(|o| matches!(o, Op::Skip(_))) {
                proptest::prop_assert_eq!(&restarted, &printed);
            }
        }
    }
}
