//! The conformance suite of the [`LogStore`](crate::logs::LogStore) port: every storage of job
//! output must pass [`run_all`]. `open(cap)` gives a fresh [`Logs`] over the same storage each
//! time it is called, as a restarted server would have; each check uses attempts of its own.

use hodei_core::AttemptId;
use uuid::Uuid;

use crate::logs::{LogStream, Logs};

/// Opens [`Logs`] over the storage under test, with this cap per attempt.
pub type Open<'a> = &'a (dyn Fn(u64) -> Logs + Sync);

fn attempt(n: u128) -> AttemptId {
    AttemptId::from_uuid(Uuid::from_u128(0x4c06_0000_0000 + n))
}

async fn text(l: &Logs, a: AttemptId, stream: LogStream) -> String {
    String::from_utf8(l.read(a, stream, 0, u64::MAX).await.unwrap().0).unwrap()
}

pub async fn run_all(open: Open<'_>) {
    repeated_chunks_are_stored_once(open).await;
    output_over_the_cap_is_dropped_and_reported(open).await;
    the_cap_counts_both_streams_of_an_attempt(open).await;
    gaps_leave_a_marker_and_a_restart_keeps_the_workers_offsets(open).await;
    an_ended_attempt_is_forgotten_and_a_resend_still_deduplicated(open).await;
    truncation_outlives_a_restart_and_removal_takes_everything(open).await;
    known_offsets_name_only_attempts_with_output_in_memory(open).await;
    reads_are_pages_of_the_stored_stream(open).await;
    resends_are_idempotent_across_restarts(open).await;
}

async fn repeated_chunks_are_stored_once(open: Open<'_>) {
    let l = open(1024);
    let a = attempt(1);
    l.append(a, LogStream::Stdout, 0, b"hello ").await.unwrap();
    l.append(a, LogStream::Stdout, 0, b"hello ").await.unwrap();
    l.append(a, LogStream::Stdout, 3, b"lo world").await.unwrap();
    assert_eq!(text(&l, a, LogStream::Stdout).await, "hello world");
    assert_eq!(text(&l, a, LogStream::Stderr).await, "", "nothing was sent to stderr");
    assert_eq!(l.stored_offsets(a).await.unwrap(), (11, 0));
}

async fn output_over_the_cap_is_dropped_and_reported(open: Open<'_>) {
    let l = open(4);
    let a = attempt(2);
    assert!(!l.was_truncated(a).await.unwrap());
    l.append(a, LogStream::Stderr, 0, b"abcdef").await.unwrap();
    assert_eq!(text(&l, a, LogStream::Stderr).await, "abcd");
    assert!(l.was_truncated(a).await.unwrap());
    l.append(a, LogStream::Stdout, 0, b"more").await.unwrap();
    assert_eq!(text(&l, a, LogStream::Stdout).await, "", "nothing is stored past the cap");
}

async fn the_cap_counts_both_streams_of_an_attempt(open: Open<'_>) {
    let l = open(6);
    let a = attempt(3);
    l.append(a, LogStream::Stdout, 0, b"abcd").await.unwrap();
    assert!(!l.was_truncated(a).await.unwrap());
    // A restart in between: the other stream's length is read back.
    let l = open(6);
    l.append(a, LogStream::Stderr, 0, b"wxyz").await.unwrap();
    assert_eq!(text(&l, a, LogStream::Stderr).await, "wx", "4 + 2 bytes: the cap is per attempt");
    assert!(l.was_truncated(a).await.unwrap());
}

async fn gaps_leave_a_marker_and_a_restart_keeps_the_workers_offsets(open: Open<'_>) {
    let l = open(1024);
    let a = attempt(4);
    l.append(a, LogStream::Stdout, 0, b"ab").await.unwrap();
    l.append(a, LogStream::Stdout, 5, b"f").await.unwrap();
    assert_eq!(text(&l, a, LogStream::Stdout).await, "ab\n[hodei: 3 bytes of output lost]\nf");
    drop(l);
    let l = open(1024);
    assert_eq!(l.stored_offsets(a).await.unwrap(), (6, 0), "the worker's offset, not the stored length");
    l.append(a, LogStream::Stdout, 5, b"fgh").await.unwrap();
    assert_eq!(text(&l, a, LogStream::Stdout).await, "ab\n[hodei: 3 bytes of output lost]\nfgh");
}

async fn an_ended_attempt_is_forgotten_and_a_resend_still_deduplicated(open: Open<'_>) {
    let l = open(1024);
    let a = attempt(5);
    l.append(a, LogStream::Stdout, 0, b"hello").await.unwrap();
    l.finished(a);
    assert!(l.known_offsets(&[a]).is_empty(), "nothing is kept of an ended attempt");
    l.append(a, LogStream::Stdout, 0, b"hello").await.unwrap();
    assert_eq!(text(&l, a, LogStream::Stdout).await, "hello");
}

async fn truncation_outlives_a_restart_and_removal_takes_everything(open: Open<'_>) {
    let l = open(4);
    let (a, b) = (attempt(6), attempt(7));
    l.append(a, LogStream::Stdout, 0, b"ab").await.unwrap();
    l.append(a, LogStream::Stdout, 9, b"cdef").await.unwrap();
    l.append(b, LogStream::Stderr, 0, b"kept").await.unwrap();
    drop(l);
    let l = open(4);
    assert!(l.was_truncated(a).await.unwrap());
    assert_eq!(l.stored_offsets(a).await.unwrap(), (u64::MAX, u64::MAX), "nothing more is wanted");
    l.append(a, LogStream::Stderr, 0, b"z").await.unwrap();
    assert_eq!(text(&l, a, LogStream::Stderr).await, "");
    l.remove(&[a]).await.unwrap();
    assert_eq!(l.read(a, LogStream::Stdout, 0, 100).await.unwrap(), (Vec::new(), 0));
    assert!(!l.was_truncated(a).await.unwrap(), "its truncation went with it");
    assert_eq!(l.stored_offsets(a).await.unwrap(), (0, 0));
    assert_eq!(text(&l, b, LogStream::Stderr).await, "kept", "another attempt's output stays");
    l.remove(&[a, b]).await.expect("removing what is gone is no error");
    assert_eq!(text(&l, b, LogStream::Stderr).await, "");
}

async fn known_offsets_name_only_attempts_with_output_in_memory(open: Open<'_>) {
    let l = open(1024);
    let (a, b) = (attempt(8), attempt(9));
    l.append(a, LogStream::Stderr, 0, b"abc").await.unwrap();
    assert_eq!(l.known_offsets(&[a, b]), [(a, 0, 3)]);
    assert!(open(1024).known_offsets(&[a]).is_empty(), "a restarted server knows nothing before reading");
}

async fn reads_are_pages_of_the_stored_stream(open: Open<'_>) {
    let l = open(1 << 20);
    let a = attempt(10);
    let mut printed = Vec::new();
    for i in 0..200u32 {
        let line = format!("line {i}\n").repeat(1 + (i as usize % 7));
        l.append(a, LogStream::Stdout, printed.len() as u64, line.as_bytes()).await.unwrap();
        printed.extend_from_slice(line.as_bytes());
    }
    let len = printed.len() as u64;
    for (offset, limit) in [(0, 1), (0, 10), (3, 100), (1000, 4096), (len - 5, 100), (len, 10), (len + 7, 10), (0, u64::MAX)] {
        let (got, total) = l.read(a, LogStream::Stdout, offset, limit).await.unwrap();
        let from = (offset as usize).min(printed.len());
        let to = (offset.saturating_add(limit) as usize).min(printed.len());
        assert_eq!(got, &printed[from..to], "read({offset}, {limit})");
        assert_eq!(total, len);
    }
    // Page by page, as the API's followers read.
    let (mut at, mut all) = (0, Vec::new());
    loop {
        let (page, _) = l.read(a, LogStream::Stdout, at, 1000).await.unwrap();
        if page.is_empty() {
            break;
        }
        at += page.len() as u64;
        all.extend(page);
    }
    assert_eq!(all, printed);
}

/// What a worker does to one stream, as the log storage sees it.
#[derive(Clone, Debug)]
pub enum Op {
    /// New output, delivered.
    Send(usize),
    /// The worker dropped this much of its output (its buffer overflowed): a gap.
    Skip(usize),
    /// An old chunk again (a late duplicate).
    Repeat(usize, usize),
    /// The stream breaks with this much new output in flight; on the next stream the worker
    /// resends from what the server says it has, the server restarted or not.
    Break(usize, bool),
    /// The attempt's result came in.
    Finish,
}

/// Runs the ops on one attempt; `restarts` says whether `Break(_, true)` and `Finish` really
/// reopen the storage and forget the attempt. Returns what is stored and what the worker printed.
pub async fn run_ops(open: Open<'_>, a: AttemptId, ops: &[Op], restarts: bool, chunk: usize) -> (Vec<u8>, Vec<u8>) {
    let mut l = open(u64::MAX);
    let st = LogStream::Stdout;
    // The worker's stream: byte i is (i % 251), `produced` bytes of it so far.
    let bytes = |from: usize, to: usize| (from..to).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
    let mut produced = 0usize;
    for op in ops {
        match *op {
            Op::Send(n) => {
                l.append(a, st, produced as u64, &bytes(produced, produced + n)).await.unwrap();
                produced += n;
            }
            Op::Skip(n) => produced += n,
            Op::Repeat(from, n) => {
                let from = from.min(produced);
                l.append(a, st, from as u64, &bytes(from, (from + n).min(produced))).await.unwrap();
            }
            Op::Break(n, restart) => {
                produced += n;
                if restart && restarts {
                    l = open(u64::MAX);
                }
                let mut at = l.stored_offsets(a).await.unwrap().0 as usize;
                while at < produced {
                    let to = (at + chunk).min(produced);
                    l.append(a, st, at as u64, &bytes(at, to)).await.unwrap();
                    at = to;
                }
            }
            Op::Finish if restarts => l.finished(a),
            Op::Finish => {}
        }
    }
    (l.read(a, st, 0, u64::MAX).await.unwrap().0, bytes(0, produced))
}

/// Seeded sequences of [`Op`]s (the file adapter's property test explores many more).
async fn resends_are_idempotent_across_restarts(open: Open<'_>) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n) as usize
    };
    for case in 0..24u128 {
        let ops: Vec<Op> = (0..1 + next(30))
            .map(|_| match next(10) {
                0..4 => Op::Send(1 + next(300)),
                4 => Op::Skip(1 + next(50)),
                5..7 => Op::Repeat(next(2000), 1 + next(300)),
                7..9 => Op::Break(next(300), next(2) == 1),
                _ => Op::Finish,
            })
            .collect();
        let chunk = 1 + next(200);
        let (stored, _) = run_ops(open, attempt(1000 + 2 * case), &ops, false, chunk).await;
        let (restarted, printed) = run_ops(open, attempt(1001 + 2 * case), &ops, true, chunk).await;
        assert_eq!(restarted, stored, "restarts changed what is stored: {ops:?}, chunks of {chunk}");
        if !ops.iter().any(|o| matches!(o, Op::Skip(_))) {
            assert_eq!(restarted, printed, "without gaps the stored output is what was printed: {ops:?}");
        }
    }
}
