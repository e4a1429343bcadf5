//! Start-up's read of the live jobs — up to millions of rows — through rusqlite on a blocking
//! thread: rows are stepped one at a time and read in place by position, and an array's spec
//! is parsed once for all its members. (Through sqlx, which copies every value of every row
//! and hands each row across threads, 1 000 000 held jobs took 49 s and left 8.6 KiB resident
//! per job.)

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use hodei_core::spec::JobSpec;
use hodei_core::{ArrayId, Job};
use rusqlite::types::{FromSqlError, ValueRef};
use rusqlite::{Connection, OpenFlags};
use uuid::Uuid;

use crate::rows::{JobCol, JobRow, job_from, spec_from};
use crate::sqlite_writer::map_err;
use crate::{Result, StoreError};

const D: &str = "loading live jobs";

/// A `SELECT {JobCol::list()}` row, read by position.
struct Positional<'a>(&'a rusqlite::Row<'a>);

impl Positional<'_> {
    fn value<T>(&self, c: JobCol, f: impl FnOnce(ValueRef<'_>) -> std::result::Result<Option<T>, FromSqlError>) -> Result<Option<T>> {
        let v = self.0.get_ref(c as usize).map_err(map_err(D))?;
        f(v).map_err(|e| StoreError::Corrupt { doing: D, detail: format!("{}: {e}", c.name()) })
    }
}

impl JobRow for Positional<'_> {
    fn int(&self, c: JobCol) -> Result<Option<i64>> {
        self.value(c, |v| v.as_i64_or_null())
    }
    fn int32(&self, c: JobCol) -> Result<Option<i32>> {
        self.int(c)?.map(|v| i32::try_from(v).map_err(|_| StoreError::Corrupt { doing: D, detail: format!("{}: {v} out of range", c.name()) })).transpose()
    }
    fn text(&self, c: JobCol) -> Result<Option<&str>> {
        let v = self.0.get_ref(c as usize).map_err(map_err(D))?;
        v.as_str_or_null().map_err(|e| StoreError::Corrupt { doing: D, detail: format!("{}: {e}", c.name()) })
    }
    fn uuid(&self, c: JobCol) -> Result<Option<Uuid>> {
        self.value(c, |v| v.as_blob_or_null().map(|b| b.map(|b| Uuid::from_slice(b).map_err(|e| FromSqlError::Other(Box::new(e))))))?
            .transpose()
            .map_err(|e| StoreError::Corrupt { doing: D, detail: format!("{}: {e}", c.name()) })
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
    let mut rows = stmt.query([]).map_err(map_err(D))?;
    let mut specs: HashMap<ArrayId, Arc<JobSpec>> = HashMap::new();
    let mut jobs = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    while let Some(row) = rows.next().map_err(map_err(D))? {
        let r = Positional(row);
        let spec = match r.uuid(JobCol::ArrayId)?.map(ArrayId::from_uuid) {
            None => None,
            Some(a) => Some(match specs.get(&a) {
                Some(s) => s.clone(),
                None => specs.entry(a).or_insert(Arc::new(spec_from(&r)?)).clone(),
            }),
        };
        jobs.push(job_from(&r, spec)?);
    }
    Ok(jobs)
}
