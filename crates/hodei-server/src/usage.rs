//! Usage of running attempts (SPEC §8.7): workers' samples arrive on the job streams, each
//! attempt's series (at most 720 points, the core's [`Series`]) is written to the store every
//! [`FLUSH`] while it changes, and once the attempt ends its summary with it.
//!
//! One task owns the series being written. Samples reach it through a bounded queue: when the
//! store is slower than the samples arrive, samples are dropped and counted
//! (`hodei_usage_samples_dropped_total`) — a job is never slowed for its usage chart. Ends wait
//! for room instead, so a finished attempt always gets its summary. After a restart the next
//! sample of a running attempt first reads back what was stored of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hodei_api::Clock;
use hodei_core::usage::{Sample, Series, summarize};
use hodei_core::{AttemptId, Timestamp};
use hodei_store::{AttemptUsage, Store};
use tokio::sync::{mpsc, watch};

/// How often changed series are written.
pub const FLUSH: Duration = Duration::from_secs(2);

/// Samples waiting for the writer, at most.
const QUEUE: usize = 16_384;

/// A series not sampled for this long (its attempt was lost with its worker) is written and
/// let go.
const IDLE: Duration = Duration::from_secs(600);

enum Report {
    Sample(AttemptId, Sample),
    End { attempt: AttemptId, started_at: Timestamp, run_ms: u64, cpu_time_ms: u64, max_rss_mb: u32 },
}

/// Where the job streams hand usage in. Cheap to clone.
#[derive(Clone)]
pub struct UsageSink {
    tx: mpsc::Sender<Report>,
}

impl UsageSink {
    /// A sample of a running attempt; dropped (and counted) when the writer is behind.
    pub fn sample(&self, attempt: AttemptId, s: Sample) {
        if self.tx.try_send(Report::Sample(attempt, s)).is_err() {
            metrics::counter!("hodei_usage_samples_dropped_total").increment(1);
        }
    }

    /// An attempt that started at `started_at` ended after `run_ms` with `cpu_time_ms` of cpu
    /// and `max_rss_mb` at most: its summary is written with its series.
    pub async fn end(&self, attempt: AttemptId, started_at: Timestamp, run_ms: u64, cpu_time_ms: u64, max_rss_mb: u32) {
        let _ = self.tx.send(Report::End { attempt, started_at, run_ms, cpu_time_ms, max_rss_mb }).await;
    }
}

struct Tracked {
    series: Series,
    dirty: bool,
    seen: tokio::time::Instant,
}

/// Starts the writer; it stops when `stop` turns true, writing what changed first.
pub fn start(store: Arc<dyn Store>, clock: Arc<dyn Clock>, stop: watch::Receiver<bool>) -> (UsageSink, tokio::task::JoinHandle<()>) {
    metrics::counter!("hodei_usage_samples_dropped_total").increment(0);
    let (tx, rx) = mpsc::channel(QUEUE);
    (UsageSink { tx }, tokio::spawn(run(store, clock, rx, stop)))
}

async fn run(store: Arc<dyn Store>, clock: Arc<dyn Clock>, mut rx: mpsc::Receiver<Report>, mut stop: watch::Receiver<bool>) {
    let mut w = Writer { boot: clock.now(), tracked: HashMap::new(), done: Vec::new() };
    let mut tick = tokio::time::interval(FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Some(r) => w.on_report(store.as_ref(), clock.as_ref(), r).await,
                None => break,
            },
            _ = tick.tick() => w.flush(store.as_ref(), clock.as_ref()).await,
            // (`changed`, not `wait_for`: its guard may not live across the other arms' awaits.)
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
    w.flush(store.as_ref(), clock.as_ref()).await;
}

struct Writer {
    /// When this server started: only an attempt started before may have a stored series this
    /// writer has not seen.
    boot: Timestamp,
    tracked: HashMap<AttemptId, Tracked>,
    done: Vec<AttemptUsage>,
}

impl Writer {
    async fn on_report(&mut self, store: &dyn Store, clock: &dyn Clock, r: Report) {
        let tracked = &mut self.tracked;
        match r {
            Report::Sample(attempt, s) => {
                let t = match tracked.entry(attempt) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        // Attempt ids are UUIDv7s minted when assigned: one minted after this
                        // server started has nothing stored yet (no read per running job).
                        let minted = attempt.as_uuid().get_timestamp().map(|t| t.to_unix()).map(|(s, n)| s as i64 * 1000 + i64::from(n / 1_000_000));
                        let series = match minted {
                            Some(ms) if ms >= self.boot.as_millis() => Series::default(),
                            _ => stored(store, attempt).await,
                        };
                        v.insert(Tracked { series, dirty: false, seen: tokio::time::Instant::now() })
                    }
                };
                t.series.push(&s);
                t.dirty = true;
                t.seen = tokio::time::Instant::now();
            }
            Report::End { attempt, started_at, run_ms, cpu_time_ms, max_rss_mb } => {
                // A job shorter than the sampling interval has no series: nothing to read back
                // (one read per trivial job would cost more than running it).
                let series = match tracked.remove(&attempt) {
                    Some(t) => t.series,
                    None if started_at < self.boot => stored(store, attempt).await,
                    None => Series::default(),
                };
                let summary = summarize(&series, run_ms, cpu_time_ms, max_rss_mb);
                self.done.push(AttemptUsage { attempt, series, summary: Some(summary), updated_at: clock.now() });
                // Ends come in bursts with trivial jobs: written with the next flush, in one go.
                if self.done.len() >= 500 {
                    self.flush(store, clock).await;
                }
            }
        }
    }

    /// Writes the ended attempts and the series that changed, and lets idle ones go.
    async fn flush(&mut self, store: &dyn Store, clock: &dyn Clock) {
        let now = clock.now();
        let mut batch = std::mem::take(&mut self.done);
        for (id, t) in self.tracked.iter_mut().filter(|(_, t)| t.dirty) {
            batch.push(AttemptUsage { attempt: *id, series: t.series.clone(), summary: None, updated_at: now });
            t.dirty = false;
        }
        self.tracked.retain(|_, t| t.seen.elapsed() < IDLE);
        if batch.is_empty() {
            return;
        }
        if let Err(e) = store.put_usage(&batch).await {
            // Running series are written again at their next change; a summary is not.
            tracing::warn!(attempts = batch.len(), error = %e, "cannot write usage; series of ended attempts lost");
        }
    }
}

/// What is stored of `attempt`'s series (empty when nothing or the store cannot say).
async fn stored(store: &dyn Store, attempt: AttemptId) -> Series {
    match store.attempt_usage(&[attempt]).await {
        Ok(mut v) => v.pop().map(|u| u.series).unwrap_or_default(),
        Err(e) => {
            tracing::debug!(%attempt, error = %e, "cannot read an attempt's stored usage");
            Series::default()
        }
    }
}
