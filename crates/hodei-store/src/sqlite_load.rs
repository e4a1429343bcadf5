//! Reads of many jobs through rusqlite on a blocking thread: rows are stepped one at a time and
//! read in place by position, and an array's spec is parsed once for all its members. Through
//! sqlx, which copies every value of every row (a `malloc` each) and hands each row across
//! threads, start-up's read of 1 000 000 held jobs took 49 s and left 8.6 KiB resident per
//! job, and a page of 50 jobs cost ~1 ms of CPU, a third of it in `malloc`.
//!
//! Start-up reads on a connection of its own ([`jobs`]); pages of the job list on the pooled
//! read-only connections of [`Readers`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hodei_core::Job;
use rusqlite::types::{FromSqlError, ValueRef};
use rusqlite::{Connection, OpenFlags};
use uuid::Uuid;

use crate::rows::{JobCol, JobRow, SharedSpecs};
use crate::sqlite_writer::map_err;
use crate::{Result, StoreError};

const D: &str = "loading live jobs";

/// A `SELECT {JobCol::list()}` row, read by position; `doing` names the read in errors.
struct Positional<'a> {
    row: &'a rusqlite::Row<'a>,
    doing: &'static str,
}

impl Positional<'_> {
    fn value<T>(&self, c: JobCol, f: impl FnOnce(ValueRef<'_>) -> std::result::Result<Option<T>, FromSqlError>) -> Result<Option<T>> {
        let v = self.row.get_ref(c as usize).map_err(map_err(self.doing))?;
        f(v).map_err(|e| StoreError::Corrupt { doing: self.doing, detail: format!("{}: {e}", c.name()) })
    }
}

impl JobRow for Positional<'_> {
    fn int(&self, c: JobCol) -> Result<Option<i64>> {
        self.value(c, |v| v.as_i64_or_null())
    }
    fn int32(&self, c: JobCol) -> Result<Option<i32>> {
        let doing = self.doing;
        self.int(c)?.map(|v| i32::try_from(v).map_err(|_| StoreError::Corrupt { doing, detail: format!("{}: {v} out of range", c.name()) })).transpose()
    }
    fn text(&self, c: JobCol) -> Result<Option<&str>> {
        let v = self.row.get_ref(c as usize).map_err(map_err(self.doing))?;
        v.as_str_or_null().map_err(|e| StoreError::Corrupt { doing: self.doing, detail: format!("{}: {e}", c.name()) })
    }
    fn uuid(&self, c: JobCol) -> Result<Option<Uuid>> {
        self.value(c, |v| v.as_blob_or_null().map(|b| b.map(|b| Uuid::from_slice(b).map_err(|e| FromSqlError::Other(Box::new(e))))))?
            .transpose()
            .map_err(|e| StoreError::Corrupt { doing: self.doing, detail: format!("{}: {e}", c.name()) })
    }
    fn flag(&self, c: JobCol) -> Result<Option<bool>> {
        Ok(self.int(c)?.map(|v| v != 0))
    }
}

/// Runs `sql` — a `SELECT {JobCol::list()} FROM job_rows …` — on a connection of its own, in
/// one read transaction with `count`, which counts its rows (so the list is allocated once).
pub(crate) fn jobs(path: &Path, count: &str, sql: &str) -> Result<Vec<Job>> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(map_err(D))?;
    conn.execute_batch("BEGIN").map_err(map_err(D))?;
    let n: i64 = conn.query_row(count, [], |r| r.get(0)).map_err(map_err(D))?;
    let mut stmt = conn.prepare(sql).map_err(map_err(D))?;
    read_jobs(stmt.query([]).map_err(map_err(D))?, usize::try_from(n).unwrap_or(0), D)
}

/// Every row of `rows` as a job.
fn read_jobs(mut rows: rusqlite::Rows<'_>, capacity: usize, doing: &'static str) -> Result<Vec<Job>> {
    let mut specs = SharedSpecs::default();
    let mut jobs = Vec::with_capacity(capacity);
    while let Some(row) = rows.next().map_err(map_err(doing))? {
        jobs.push(specs.job(&Positional { row, doing })?);
    }
    Ok(jobs)
}

/// Read-only connections kept for reads of job pages, opened as needed, at most
/// [`Readers::KEPT`] kept idle; statements are cached on each.
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    const KEPT: usize = 4;

    pub(crate) fn new(path: &Path) -> Readers {
        Readers { path: path.to_owned(), idle: Mutex::new(Vec::new()) }
    }

    fn take(&self, doing: &'static str) -> Result<Connection> {
        if let Some(c) = self.idle.lock().ok().and_then(|mut i| i.pop()) {
            return Ok(c);
        }
        let conn = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(map_err(doing))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(map_err(doing))?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    fn give(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < Self::KEPT
        {
            idle.push(conn);
        }
    }

    /// The jobs `sql` (a `SELECT {JobCol::list()} FROM job_rows …` with `?` parameters) finds.
    pub(crate) async fn jobs(self: &Arc<Self>, sql: String, params: Vec<rusqlite::types::Value>, doing: &'static str) -> Result<Vec<Job>> {
        let me = self.clone();
        let read = tokio::task::spawn_blocking(move || {
            let conn = me.take(doing)?;
            let jobs = (|| {
                let mut stmt = conn.prepare_cached(&sql).map_err(map_err(doing))?;
                read_jobs(stmt.query(rusqlite::params_from_iter(params)).map_err(map_err(doing))?, 0, doing)
            })();
            me.give(conn);
            jobs
        });
        read.await.map_err(|e| StoreError::Corrupt { doing, detail: format!("the read's thread failed: {e}") })?
    }
}
