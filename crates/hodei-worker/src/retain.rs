//! Output sent to the server but not yet known to be stored there, kept per attempt and
//! stream so that a new job stream can resend what the old one lost with it (a restarted or
//! unreachable server). The server says how far it has stored each stream in every heartbeat
//! answer and at the start of every job stream; what is before that is dropped. Bounded: past
//! [`RETAIN_BYTES`] per stream the oldest bytes go, and a resend then leaves a gap that the
//! server marks in the log.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use hodei_proto::v1 as pb;

/// Unacknowledged output kept per attempt and stream: a heartbeat interval's worth of output
/// for all but the chattiest jobs.
pub const RETAIN_BYTES: usize = 4 << 20;

/// Largest chunk a resend sends, as the pumps do.
const CHUNK: usize = 64 * 1024;

#[derive(Default)]
struct Ring {
    /// Worker offset of `buf[0]`.
    start: u64,
    buf: VecDeque<u8>,
}

impl Ring {
    fn push(&mut self, offset: u64, data: &[u8], cap: usize) {
        if self.buf.is_empty() || offset != self.start + self.buf.len() as u64 {
            // The pumps send in order; anything else starts over from this chunk.
            self.buf.clear();
            self.start = offset;
        }
        self.buf.extend(data);
        let over = self.buf.len().saturating_sub(cap);
        self.buf.drain(..over);
        self.start += over as u64;
    }

    fn stored(&mut self, offset: u64) {
        let n = offset.saturating_sub(self.start).min(self.buf.len() as u64) as usize;
        self.buf.drain(..n);
        self.start += n as u64;
    }
}

pub struct Retained {
    by_attempt: Mutex<HashMap<String, [Ring; 2]>>,
    cap: usize,
}

impl Default for Retained {
    fn default() -> Retained {
        Retained { by_attempt: Mutex::default(), cap: RETAIN_BYTES }
    }
}

fn index(stream: pb::LogStream) -> usize {
    usize::from(stream == pb::LogStream::Stderr)
}

impl Retained {
    #[cfg(test)]
    fn with_cap(cap: usize) -> Retained {
        Retained { cap, ..Retained::default() }
    }

    /// Keeps a chunk that is about to be sent.
    pub fn push(&self, attempt: &str, stream: pb::LogStream, offset: u64, data: &[u8]) {
        if let Ok(mut m) = self.by_attempt.lock() {
            m.entry(attempt.to_owned()).or_default()[index(stream)].push(offset, data, self.cap);
        }
    }

    /// The server has stored this much: it need not be kept.
    pub fn stored(&self, offsets: &[pb::LogOffsets]) {
        let Ok(mut m) = self.by_attempt.lock() else { return };
        for o in offsets {
            if let Some(r) = m.get_mut(&o.attempt_id) {
                r[0].stored(o.stdout_offset);
                r[1].stored(o.stderr_offset);
            }
        }
    }

    /// The attempt's output is complete on the server (its result was acknowledged).
    pub fn forget(&self, attempt: &str) {
        if let Ok(mut m) = self.by_attempt.lock() {
            m.remove(attempt);
        }
    }

    /// A new job stream began: the chunks to resend for the attempts the server names, from
    /// where it says it stands. Output of attempts it does not name is not wanted and dropped.
    pub fn resume(&self, wanted: &[pb::LogOffsets]) -> Vec<pb::LogChunk> {
        let Ok(mut m) = self.by_attempt.lock() else { return Vec::new() };
        let names: HashSet<&str> = wanted.iter().map(|o| o.attempt_id.as_str()).collect();
        m.retain(|a, _| names.contains(a.as_str()));
        let mut chunks = Vec::new();
        for o in wanted {
            let Some(rings) = m.get_mut(&o.attempt_id) else { continue };
            for (stream, from) in [(pb::LogStream::Stdout, o.stdout_offset), (pb::LogStream::Stderr, o.stderr_offset)] {
                let ring = &mut rings[index(stream)];
                ring.stored(from);
                let (a, b) = ring.buf.as_slices();
                let bytes: Vec<u8> = [a, b].concat();
                for (i, piece) in bytes.chunks(CHUNK).enumerate() {
                    let offset = ring.start + (i * CHUNK) as u64;
                    chunks.push(pb::LogChunk { attempt_id: o.attempt_id.clone(), stream: stream as i32, offset, data: piece.to_vec() });
                }
            }
        }
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(a: &str, out: u64, err: u64) -> pb::LogOffsets {
        pb::LogOffsets { attempt_id: a.into(), stdout_offset: out, stderr_offset: err }
    }

    fn summary(chunks: &[pb::LogChunk]) -> Vec<(String, i32, u64, Vec<u8>)> {
        chunks.iter().map(|c| (c.attempt_id.clone(), c.stream, c.offset, c.data.clone())).collect()
    }

    #[test]
    fn a_resume_resends_what_the_server_lacks_and_drops_the_rest() {
        let r = Retained::default();
        r.push("a", pb::LogStream::Stdout, 0, b"hello ");
        r.push("a", pb::LogStream::Stdout, 6, b"world");
        r.push("a", pb::LogStream::Stderr, 0, b"oops");
        r.push("b", pb::LogStream::Stdout, 0, b"unwanted");
        r.stored(&[at("a", 3, 0)]);
        let chunks = r.resume(&[at("a", 6, 4)]);
        assert_eq!(summary(&chunks), [("a".to_owned(), pb::LogStream::Stdout as i32, 6, b"world".to_vec())]);
        assert!(r.resume(&[at("b", 0, 0)]).is_empty(), "b was not named the first time: dropped");
    }

    #[test]
    fn the_oldest_bytes_go_past_the_cap_and_acknowledged_attempts_are_forgotten() {
        let r = Retained::with_cap(4);
        r.push("a", pb::LogStream::Stdout, 0, b"abcdef");
        let chunks = r.resume(&[at("a", 0, 0)]);
        assert_eq!(summary(&chunks), [("a".to_owned(), pb::LogStream::Stdout as i32, 2, b"cdef".to_vec())], "a gap of 2 the server marks");
        r.forget("a");
        assert!(r.resume(&[at("a", 0, 0)]).is_empty());
    }
}
