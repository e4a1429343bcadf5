//! The conformance suite against SQLite: a data-dir file (as in production) and a throwaway one (as in API tests).

use hodei_store::sqlite::SqliteStore;
use hodei_store::{Schema, StoreError};

#[tokio::test]
async fn sqlite_file_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hodei.db")).await.unwrap();
    hodei_store::conformance::run_all(&store).await;
}

#[tokio::test]
async fn sqlite_temporary_store_conforms() {
    let store = SqliteStore::open_temporary().await.unwrap();
    hodei_store::conformance::run_all(&store).await;
}

#[tokio::test]
async fn reopening_keeps_committed_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hodei.db");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        hodei_store::conformance::run_all(&store).await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let live = hodei_store::Store::load_live(&store).await.unwrap();
    // The retention test leaves three: one waiting for a retry, two pending; the usage test one
    // waiting for a retry.
    assert_eq!(live.jobs.len(), 18 + 2 + 20_000 + 1 + 3 + 3 + 10 + 1, "the suite's unfinished jobs survive a reopen");
}

/// With `database.auto_migrate: false` an empty or outdated database is refused, not changed.
#[tokio::test]
async fn a_database_without_the_schema_is_refused_unless_migrating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hodei.db");
    let refused = SqliteStore::open_with(&path, true, Schema::RequireCurrent).await.err();
    assert!(matches!(refused, Some(StoreError::SchemaBehind { applied: None, .. })), "{refused:?}");
    drop(SqliteStore::open_with(&path, true, Schema::Migrate).await.unwrap());
    assert!(SqliteStore::open_with(&path, true, Schema::RequireCurrent).await.is_ok(), "current once migrated");
}
