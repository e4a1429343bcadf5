//! The [`LogStore`] port on PostgreSQL: job output as rows of `log_chunks`, one per stored
//! piece, so that every server replica reads and resumes the same output. Held to the same
//! suite as the file adapter ([`crate::conformance_logs`]).

use std::io;

use async_trait::async_trait;
use futures::TryStreamExt;
use hodei_core::AttemptId;
use sqlx::PgPool;

use crate::logs::{Cursor, LogStore, LogStream, Piece};

pub struct PgLogs {
    pool: PgPool,
}

impl PgLogs {
    pub fn new(pool: PgPool) -> PgLogs {
        PgLogs { pool }
    }
}

fn stream_code(s: LogStream) -> i16 {
    match s {
        LogStream::Stdout => 0,
        LogStream::Stderr => 1,
    }
}

fn io_err(e: sqlx::Error) -> io::Error {
    io::Error::other(format!("job output in PostgreSQL: {e}"))
}

/// Offsets are `BIGINT`: a stream past 8 EiB is not stored.
fn db_offset(n: u64) -> io::Result<i64> {
    i64::try_from(n).map_err(|_| io::Error::other(format!("log offset {n} out of range")))
}

#[async_trait]
impl LogStore for PgLogs {
    /// Each piece is one row, written whole or not at all: nothing is left half written.
    async fn recover(&self, attempt: AttemptId, stream: LogStream) -> io::Result<Cursor> {
        let last: Option<(i64, i64)> =
            sqlx::query_as("SELECT worker_end, pos + length(data) FROM log_chunks WHERE attempt_id = $1 AND stream = $2 ORDER BY pos DESC LIMIT 1")
                .bind(attempt.as_uuid())
                .bind(stream_code(stream))
                .fetch_optional(&self.pool)
                .await
                .map_err(io_err)?;
        Ok(last.map_or(Cursor::default(), |(w, s)| Cursor { worker: w as u64, stored: s as u64 }))
    }

    async fn truncated(&self, attempt: AttemptId) -> io::Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM log_truncations WHERE attempt_id = $1)")
            .bind(attempt.as_uuid())
            .fetch_one(&self.pool)
            .await
            .map_err(io_err)
    }

    /// One statement: the piece and the attempt's truncation are stored together. A piece at a
    /// position already written (another server wrote there) is refused by the key.
    async fn write(&self, attempt: AttemptId, stream: LogStream, piece: &Piece) -> io::Result<()> {
        sqlx::query(
            "WITH truncation AS (INSERT INTO log_truncations (attempt_id) SELECT $1 WHERE $6 ON CONFLICT DO NOTHING) \
             INSERT INTO log_chunks (attempt_id, stream, pos, worker_end, data) SELECT $1, $2, $3, $4, $5 WHERE length($5) > 0",
        )
        .bind(attempt.as_uuid())
        .bind(stream_code(stream))
        .bind(db_offset(piece.at.stored)?)
        .bind(db_offset(piece.after.worker)?)
        .bind(&piece.bytes)
        .bind(piece.truncate)
        .execute(&self.pool)
        .await
        .map_err(io_err)?;
        Ok(())
    }

    /// The rows from the one holding `offset`, streamed until `limit` bytes are read.
    async fn read(&self, attempt: AttemptId, stream: LogStream, offset: u64, limit: u64) -> io::Result<(Vec<u8>, u64)> {
        let code = stream_code(stream);
        let len: Option<i64> = sqlx::query_scalar("SELECT pos + length(data) FROM log_chunks WHERE attempt_id = $1 AND stream = $2 ORDER BY pos DESC LIMIT 1")
            .bind(attempt.as_uuid())
            .bind(code)
            .fetch_optional(&self.pool)
            .await
            .map_err(io_err)?;
        let len = len.unwrap_or(0) as u64;
        if offset >= len || limit == 0 {
            return Ok((Vec::new(), len));
        }
        let end = offset.saturating_add(limit).min(len);
        let mut rows = sqlx::query_as::<_, (i64, Vec<u8>)>(
            "SELECT pos, data FROM log_chunks WHERE attempt_id = $1 AND stream = $2 \
             AND pos >= (SELECT max(pos) FROM log_chunks WHERE attempt_id = $1 AND stream = $2 AND pos <= $3) AND pos < $4 ORDER BY pos",
        )
        .bind(attempt.as_uuid())
        .bind(code)
        .bind(db_offset(offset)?)
        .bind(db_offset(end)?)
        .fetch(&self.pool);
        let mut out = Vec::with_capacity((end - offset).min(1 << 20) as usize);
        while let Some((pos, data)) = rows.try_next().await.map_err(io_err)? {
            let pos = pos as u64;
            let from = offset.saturating_sub(pos).min(data.len() as u64) as usize;
            let to = (end - pos).min(data.len() as u64) as usize;
            out.extend_from_slice(&data[from..to]);
            if pos + data.len() as u64 >= end {
                break;
            }
        }
        Ok((out, len))
    }

    async fn remove(&self, attempts: &[AttemptId]) -> io::Result<()> {
        let ids: Vec<uuid::Uuid> = attempts.iter().map(|a| a.as_uuid()).collect();
        sqlx::query("WITH t AS (DELETE FROM log_truncations WHERE attempt_id = ANY($1)) DELETE FROM log_chunks WHERE attempt_id = ANY($1)")
            .bind(&ids)
            .execute(&self.pool)
            .await
            .map_err(io_err)?;
        Ok(())
    }
}
