//! Support for tests that need a real PostgreSQL server: the server is the one the libpq
//! environment names (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`; what Debian's
//! `pg_virtualenv` sets), and each test gets a database of its own.
//!
//! Without a server the tests say so on stderr and pass, so `cargo test` works on a machine
//! without PostgreSQL; under CI (`CI` set and not `false`) a missing server fails them instead:
//! PostgreSQL tests are never skipped silently there.

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection};

/// A database created for one test, with the URL and options that reach it.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    pub options: PgConnectOptions,
    admin: PgConnectOptions,
}

impl TestDatabase {
    /// Creates a fresh, empty database; `None` (after saying why) when no server is configured
    /// outside CI. Panics under CI without a server.
    pub async fn create(test: &str) -> Option<TestDatabase> {
        let host = std::env::var("PGHOST").ok().filter(|h| !h.is_empty());
        let Some(host) = host else {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            assert!(!ci, "{test}: PostgreSQL tests need a server under CI: run the tests inside `pg_virtualenv` (PGHOST is not set)");
            eprintln!("SKIPPED {test}: no PostgreSQL server (set PGHOST, or run the tests inside `pg_virtualenv`)");
            return None;
        };
        let admin = PgConnectOptions::new();
        let mut conn = PgConnection::connect_with(&admin).await.unwrap_or_else(|e| panic!("{test}: connecting to PostgreSQL at {host}: {e}"));
        let name = format!("hodei_test_{}", uuid::Uuid::new_v4().simple());
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.unwrap_or_else(|e| panic!("{test}: creating database {name}: {e}"));
        let port = std::env::var("PGPORT").unwrap_or_else(|_| "5432".into());
        let user = std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into());
        let auth = match std::env::var("PGPASSWORD") {
            Ok(p) => format!("{user}:{p}"),
            Err(_) => user,
        };
        let url = format!("postgres://{auth}@{host}:{port}/{name}");
        Some(TestDatabase { options: admin.clone().database(&name), name, url, admin })
    }

    /// Ends the sessions holding an advisory lock on this database (other tests hold theirs on
    /// the same server), as a restart of the database would.
    pub async fn end_lock_sessions(&self) {
        let mut conn = PgConnection::connect_with(&self.options).await.expect("connecting to the test database");
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks \
             WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .await
        .expect("ending the lock sessions");
    }

    /// Drops the database (connections to it are closed first).
    pub async fn drop_database(self) {
        if let Ok(mut conn) = PgConnection::connect_with(&self.admin).await {
            let _ = conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))).await;
        }
    }
}

/// The bin bounds a store's `sla_counts` migration computes in SQL, as a query returning
/// `(bin, lo, hi)` per bin: tests compare them with `hodei_core::sla_tally::bin_range`.
pub fn sla_bins_query(migration: &str) -> String {
    let start = migration.find("WITH RECURSIVE").expect("the migration has the bins CTE");
    let end = migration.find("INSERT INTO sla_counts").expect("the migration backfills sla_counts");
    format!("{} SELECT bin, lo, hi FROM bins ORDER BY bin", &migration[start..end])
}

/// `(bin, lo, hi)` of every bin as the core computes them, the last one open-ended.
pub fn sla_bins_expected() -> Vec<(i64, i64, i64)> {
    use hodei_core::sla_tally::{WAIT_BINS, bin_range};
    (0..WAIT_BINS)
        .map(|b| {
            let (lo, hi) = bin_range(b);
            (i64::from(b), lo as i64, hi as i64)
        })
        .collect()
}
