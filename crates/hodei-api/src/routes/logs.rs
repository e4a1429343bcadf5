//! Job output (SPEC §4.4): a page of chunks, or `follow=true` as server-sent events
//! (`log`, `state`, `end`), resumable with `Last-Event-ID: <stdout offset>:<stderr offset>`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use hodei_core::{AttemptId, Job, JobState};
use hodei_store::logs::LogStream;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::dto::{LogChunkView, LogsView};
use crate::error::{ApiError, ApiResult};

const CHUNK: u64 = 64 * 1024;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Attempt number (default: the latest).
    pub attempt: Option<u32>,
    /// stdout|stderr (default: both).
    pub stream: Option<String>,
    /// Start offset in stdout.
    pub offset: Option<u64>,
    /// Start offset in stderr.
    pub stderr_offset: Option<u64>,
    pub limit_bytes: Option<u64>,
    pub follow: Option<bool>,
}

fn streams(q: &LogQuery) -> ApiResult<Vec<LogStream>> {
    match q.stream.as_deref() {
        None | Some("all") => Ok(vec![LogStream::Stdout, LogStream::Stderr]),
        Some("stdout") => Ok(vec![LogStream::Stdout]),
        Some("stderr") => Ok(vec![LogStream::Stderr]),
        Some(o) => Err(ApiError::field("stream", "unknown stream", "stdout|stderr", Some(o.to_owned()))),
    }
}

async fn attempt_of(s: &ApiState, job: &Job, number: Option<u32>) -> ApiResult<Option<(AttemptId, u32)>> {
    match number {
        None => Ok(job.current_attempt.map(|a| (a, job.attempt_count))),
        Some(n) => {
            let attempts = s.store.list_attempts(job.id).await?;
            attempts.iter().find(|a| a.number == n).map(|a| Some((a.id, a.number))).ok_or_else(|| ApiError::not_found(format!("attempt {n} of job {}", job.id)))
        }
    }
}

fn unreadable(a: AttemptId) -> impl FnOnce(std::io::Error) -> ApiError {
    move |e| {
        tracing::error!(error = %e, attempt = %a, "reading job output");
        ApiError::new(crate::ErrorCode::Internal, "could not read the job's output")
    }
}

/// One server-sent event of `follow=true`: `state` (the job's state, JSON), `log` (output,
/// JSON, its `id` the stdout and stderr offsets after it) or `end`.
#[derive(ToSchema)]
#[allow(dead_code)] // The schema of events axum writes; never built.
pub struct LogEvent {
    event: String,
    data: String,
    id: Option<String>,
}

/// Job output: one page, or a live SSE stream with `follow=true`.
#[utoipa::path(get, path = "/jobs/{id}/logs", params(LogQuery), responses((status = 200, description = "a page of output, or with `follow=true` server-sent events (`state`, `log`, `end`)", content((LogsView = "application/json"), (LogEvent = "text/event-stream"))), (status = 404, body = crate::error::Problem)), tag = "jobs")]
pub async fn get_logs(
    State(s): State<ApiState>,
    who: crate::auth::Who,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    let job = super::jobs::load(&s, &who, &id).await?;
    let wanted = streams(&q)?;
    if q.follow.unwrap_or(false) {
        let (mut out, mut err) = (q.offset.unwrap_or(0), q.stderr_offset.unwrap_or(0));
        if let Some((o, e)) = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.split_once(':')) {
            out = o.parse().unwrap_or(out);
            err = e.parse().unwrap_or(err);
        }
        return Ok(follow(s, job, wanted, out, err).into_response());
    }
    let limit = q.limit_bytes.unwrap_or(1 << 20).clamp(1, 16 << 20);
    let attempt = attempt_of(&s, &job, q.attempt).await?;
    let (mut next_out, mut next_err) = (q.offset.unwrap_or(0), q.stderr_offset.unwrap_or(0));
    let mut chunks = Vec::new();
    let mut at_end = true;
    if let Some((a, _)) = attempt {
        for st in &wanted {
            let off = if *st == LogStream::Stdout { next_out } else { next_err };
            let (mut data, len) = s.logs.read(a, *st, off, limit).await.map_err(unreadable(a))?;
            // A page ends on a whole character, so that pages joined give the output byte for
            // byte: a character cut by the limit is left to the next page.
            if let Err(e) = std::str::from_utf8(&data)
                && e.error_len().is_none()
                && e.valid_up_to() > 0
                && off + (data.len() as u64) < len
            {
                data.truncate(e.valid_up_to());
            }
            let next = off + data.len() as u64;
            at_end &= next >= len;
            if !data.is_empty() {
                chunks.push(LogChunkView { stream: st.as_str().to_owned(), offset: off, data: String::from_utf8_lossy(&data).into_owned() });
            }
            if *st == LogStream::Stdout { next_out = next } else { next_err = next }
        }
    }
    let truncated = job.log_truncated
        || match attempt {
            Some((a, _)) => s.logs.was_truncated(a).await.map_err(unreadable(a))?,
            None => false,
        };
    Ok(Json(LogsView {
        attempt: attempt.map(|a| a.1),
        chunks,
        next_offset: next_out,
        next_stderr_offset: next_err,
        eof: job.is_terminal() && at_end,
        truncated,
    })
    .into_response())
}

struct Follow {
    s: ApiState,
    job: Job,
    streams: Vec<LogStream>,
    attempt: Option<AttemptId>,
    out: u64,
    err: u64,
    last_state: Option<JobState>,
    /// Wakes when the engine changed the job: then, and only then, the store is read.
    job_rx: tokio::sync::watch::Receiver<u64>,
    /// Wakes when the current attempt has new output: read from its files alone.
    out_rx: Option<tokio::sync::watch::Receiver<u64>>,
    queue: VecDeque<Event>,
    /// The job may have changed since it was last read from the store.
    stale: bool,
    done: bool,
}

/// Longest wait without a wake before the store is read anyway.
const QUIET_RECHECK: Duration = Duration::from_secs(5);

fn follow(s: ApiState, job: Job, streams: Vec<LogStream>, out: u64, err: u64) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let job_rx = s.logs.follow_job(job.id);
    let out_rx = job.current_attempt.map(|a| s.logs.follow_output(a));
    let mut stopping = s.stopping.clone();
    let st =
        Follow { attempt: job.current_attempt, s, job, streams, out, err, last_state: None, job_rx, out_rx, queue: VecDeque::new(), stale: true, done: false };
    let stream = futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.queue.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            // Marked seen right before the read it calls for, so a change after it is not lost.
            if std::mem::take(&mut st.stale) || st.job_rx.has_changed().unwrap_or(false) {
                st.job_rx.borrow_and_update();
                st.reload().await;
            }
            if let Some(rx) = st.out_rx.as_mut() {
                rx.borrow_and_update();
            }
            st.read_output().await;
            if !st.queue.is_empty() || st.done {
                continue;
            }
            let output = async {
                match st.out_rx.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            st.stale = tokio::select! {
                _ = st.job_rx.changed() => true,
                true = output => false,
                _ = tokio::time::sleep(QUIET_RECHECK) => true,
            };
        }
    });
    // A stopping server ends its streams, so their connections can drain.
    let stream = futures::StreamExt::take_until(stream, async move {
        let _ = stopping.wait_for(|s| *s).await;
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

impl Follow {
    /// Reads the job from the store: its state, and which attempt's output to follow.
    async fn reload(&mut self) {
        match self.s.store.get_job(self.job.id).await {
            Ok(Some(j)) => self.job = j,
            Ok(None) => {
                self.done = true;
                return;
            }
            Err(e) => tracing::warn!(error = %e, "following a job: store read failed; retrying"),
        }
        if self.job.current_attempt != self.attempt || (self.out_rx.is_none() && self.attempt.is_some()) {
            // A new attempt writes new output from offset 0.
            if self.job.current_attempt != self.attempt {
                self.out = 0;
                self.err = 0;
            }
            self.attempt = self.job.current_attempt;
            self.out_rx = self.attempt.map(|a| self.s.logs.follow_output(a));
        }
        if self.last_state != Some(self.job.state) {
            self.last_state = Some(self.job.state);
            let data = json!({"state": self.job.state.as_str(), "attempt": self.job.attempt_count, "reason": self.job.state_reason});
            self.queue.push_back(Event::default().event("state").data(data.to_string()));
        }
    }

    /// Queues what the current attempt wrote since the last read; once the job has ended and
    /// everything is read, the `end` event.
    async fn read_output(&mut self) {
        if self.done {
            return;
        }
        let mut read_any = false;
        if let Some(a) = self.attempt {
            for st in self.streams.clone() {
                let off = if st == LogStream::Stdout { self.out } else { self.err };
                let Ok((data, _)) = self.s.logs.read(a, st, off, CHUNK).await else { continue };
                if data.is_empty() {
                    continue;
                }
                read_any = true;
                let next = off + data.len() as u64;
                if st == LogStream::Stdout {
                    self.out = next
                } else {
                    self.err = next
                }
                let body = json!({"stream": st.as_str(), "offset": off, "data": String::from_utf8_lossy(&data)});
                self.queue.push_back(Event::default().event("log").id(format!("{}:{}", self.out, self.err)).data(body.to_string()));
            }
        }
        if self.job.is_terminal() && !read_any {
            let data =
                json!({"state": self.job.state.as_str(), "exit_code": self.job.exit_code, "failure_reason": self.job.failure_reason.map(|f| f.as_str())});
            self.queue.push_back(Event::default().event("end").data(data.to_string()));
            self.done = true;
        }
    }
}
