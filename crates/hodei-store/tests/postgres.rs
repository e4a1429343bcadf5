//! The conformance suite against a real PostgreSQL server (see `hodei_store::testing`).

use hodei_store::postgres::PgStore;
use hodei_store::testing::TestDatabase;
use hodei_store::{Schema, Store, StoreError};

#[tokio::test]
async fn postgres_store_conforms() {
    let Some(db) = TestDatabase::create("postgres_store_conforms").await else { return };
    let store = PgStore::open_with(db.options.clone(), 4, Schema::Migrate).await.unwrap();
    hodei_store::conformance::run_all(&store).await;
    drop(store);
    db.drop_database().await;
}

#[tokio::test]
async fn reopening_keeps_committed_jobs() {
    let Some(db) = TestDatabase::create("reopening_keeps_committed_jobs").await else { return };
    {
        let store = PgStore::open_with(db.options.clone(), 4, Schema::Migrate).await.unwrap();
        hodei_store::conformance::run_all(&store).await;
    }
    // Migrations are not run twice, and what was committed is there.
    let store = PgStore::open_with(db.options.clone(), 4, Schema::Migrate).await.unwrap();
    let live = store.load_live().await.unwrap();
    // The retention test leaves three: one waiting for a retry, two pending; the usage test one
    // waiting for a retry.
    assert_eq!(live.jobs.len(), 18 + 2 + 20_000 + 1 + 3 + 3 + 10 + 1, "the suite's unfinished jobs survive a reopen");
    drop(store);
    db.drop_database().await;
}

/// The migration that counted the outcomes stored before it bins waits as the core does.
#[tokio::test]
async fn the_migrations_wait_bins_are_the_cores() {
    let Some(db) = TestDatabase::create("the_migrations_wait_bins_are_the_cores").await else { return };
    let store = PgStore::open_with(db.options.clone(), 1, Schema::Migrate).await.unwrap();
    drop(store);
    use sqlx::Connection;
    let mut conn = sqlx::postgres::PgConnection::connect_with(&db.options).await.unwrap();
    let sql = hodei_store::testing::sla_bins_query(include_str!("../migrations/postgres/0007_sla_counts.sql"));
    let got: Vec<(i32, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&mut conn).await.unwrap();
    let got: Vec<(i64, i64, i64)> = got.into_iter().map(|(b, lo, hi)| (i64::from(b), lo, hi)).collect();
    assert_eq!(got, hodei_store::testing::sla_bins_expected());
    drop(conn);
    db.drop_database().await;
}

/// Two servers on one database would both run its jobs: the second is refused the lock until
/// the first is gone.
#[tokio::test]
async fn only_one_store_holds_the_scheduler_lock() {
    let Some(db) = TestDatabase::create("only_one_store_holds_the_scheduler_lock").await else { return };
    let first = PgStore::open_with(db.options.clone(), 2, Schema::Migrate).await.unwrap();
    let second = PgStore::open_with(db.options.clone(), 2, Schema::Migrate).await.unwrap();
    assert!(first.lock_scheduler().await.unwrap(), "the first server takes the lock");
    assert!(first.lock_scheduler().await.unwrap(), "taking it again is a no-op");
    assert!(!second.lock_scheduler().await.unwrap(), "the second is refused while the first holds it");
    drop(first);
    let mut got = false;
    for _ in 0..50 {
        if second.lock_scheduler().await.unwrap() {
            got = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(got, "the lock is free once the first server's connection is closed");
    drop(second);
    db.drop_database().await;
}

/// With `database.auto_migrate: false` an empty or outdated database is refused, not changed.
#[tokio::test]
async fn a_database_without_the_schema_is_refused_unless_migrating() {
    let Some(db) = TestDatabase::create("a_database_without_the_schema_is_refused_unless_migrating").await else { return };
    let refused = PgStore::open_with(db.options.clone(), 2, Schema::RequireCurrent).await.err();
    assert!(matches!(refused, Some(StoreError::SchemaBehind { applied: None, .. })), "{refused:?}");
    drop(PgStore::open_with(db.options.clone(), 2, Schema::Migrate).await.unwrap());
    assert!(PgStore::open_with(db.options.clone(), 2, Schema::RequireCurrent).await.is_ok(), "current once migrated");
    db.drop_database().await;
}

/// `database.statement_timeout_ms` bounds reads; a scheduler batch is not cut off by it (a large
/// submit refused as a whole after seconds of work would only be retried, bigger).
#[tokio::test]
async fn a_large_batch_is_not_cut_off_by_the_statement_timeout() {
    let Some(db) = TestDatabase::create("a_large_batch_is_not_cut_off_by_the_statement_timeout").await else { return };
    let opts = hodei_store::postgres::PgOptions {
        url: db.url.clone(),
        max_connections: 2,
        statement_timeout: std::time::Duration::from_millis(1),
        schema: Schema::Migrate,
    };
    let store = PgStore::open(&opts).await.unwrap();
    let mut s = hodei_core::sched::Scheduler::new(hodei_core::sched::SchedConfig::default());
    let tenant = hodei_core::TenantId::parse("big").unwrap();
    let roomy = hodei_core::Quota { max_queued_jobs: 100_000, ..hodei_core::Quota::DEFAULT };
    s.set_tenant(&tenant, hodei_core::TenantPolicy { weight: 1, quota: roomy, version: 1, ..Default::default() }, hodei_core::Timestamp::from_millis(0));
    let spec =
        hodei_core::spec::JobSpecInput { command: vec!["true".into()], ..Default::default() }.validate(&hodei_core::spec::SpecLimits::default(), "").unwrap();
    let spec = std::sync::Arc::new(spec);
    let jobs: Vec<hodei_core::Job> = (1..=30_000u128)
        .map(|n| {
            hodei_core::Job::new(
                hodei_core::JobId::from_uuid(uuid::Uuid::from_u128(n << 80)),
                tenant.clone(),
                spec.clone(),
                hodei_core::Timestamp::from_millis(1),
            )
        })
        .collect();
    assert!(s.submit_all(jobs, true, hodei_core::Timestamp::from_millis(1)).iter().all(Result::is_ok));
    store.apply(std::sync::Arc::new(s.take_changes())).await.expect("the batch commits despite a 1 ms statement timeout");
    drop(store);
    // Counted through a store without the tight timeout (a read may well hit 1 ms).
    let check = PgStore::open_with(db.options.clone(), 2, Schema::RequireCurrent).await.unwrap();
    assert_eq!(check.count_live_jobs(&tenant).await.unwrap(), 30_000);
    drop(check);
    db.drop_database().await;
}

/// A large submit has the job tables analyzed by the store, without waiting for autovacuum: a
/// plan made with the statistics of a small table sorted a million rows to list fifty.
#[tokio::test]
async fn a_large_submit_refreshes_the_planners_statistics() {
    let Some(db) = TestDatabase::create("a_large_submit_refreshes_the_planners_statistics").await else { return };
    let store = PgStore::open_with(db.options.clone(), 2, Schema::Migrate).await.unwrap();
    use sqlx::Connection;
    let mut conn = sqlx::postgres::PgConnection::connect_with(&db.options).await.unwrap();
    const ANALYZED: &str = "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'jobs'";
    store.apply(submit_of(1)).await.unwrap();
    assert!(!sqlx::query_scalar::<_, bool>(ANALYZED).fetch_one(&mut conn).await.unwrap(), "one job is no reason to analyze");
    let mut s = hodei_core::sched::Scheduler::new(hodei_core::sched::SchedConfig::default());
    let tenant = hodei_core::TenantId::parse("big").unwrap();
    let roomy = hodei_core::Quota { max_queued_jobs: 100_000, ..hodei_core::Quota::DEFAULT };
    let now = hodei_core::Timestamp::from_millis(1);
    s.set_tenant(&tenant, hodei_core::TenantPolicy { weight: 1, quota: roomy, version: 1, ..Default::default() }, now);
    let spec = hodei_core::spec::JobSpecInput { command: vec!["true".into()], hold: Some(true), ..Default::default() }
        .validate(&hodei_core::spec::SpecLimits::default(), "")
        .unwrap();
    let spec = std::sync::Arc::new(spec);
    let jobs = (2..=10_001u128).map(|n| hodei_core::Job::new(hodei_core::JobId::from_uuid(uuid::Uuid::from_u128(n << 80)), tenant.clone(), spec.clone(), now));
    assert!(s.submit_all(jobs.collect(), true, now).iter().all(Result::is_ok));
    store.apply(std::sync::Arc::new(s.take_changes())).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !sqlx::query_scalar::<_, bool>(ANALYZED).fetch_one(&mut conn).await.unwrap() {
        assert!(std::time::Instant::now() < deadline, "the jobs table was not analyzed within 30 s of 10 001 new jobs");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop((conn, store));
    db.drop_database().await;
}

/// One held job's submit, as a batch of scheduler changes.
fn submit_of(n: u128) -> std::sync::Arc<hodei_core::sched::Changes> {
    let mut s = hodei_core::sched::Scheduler::new(hodei_core::sched::SchedConfig::default());
    let spec = hodei_core::spec::JobSpecInput { command: vec!["true".into()], hold: Some(true), ..Default::default() }
        .validate(&hodei_core::spec::SpecLimits::default(), "")
        .unwrap();
    let id = hodei_core::JobId::from_uuid(uuid::Uuid::from_u128(n << 80));
    s.submit(
        hodei_core::Job::new(id, hodei_core::TenantId::parse("fenced").unwrap(), spec, hodei_core::Timestamp::from_millis(1)),
        hodei_core::Timestamp::from_millis(1),
    )
    .unwrap();
    std::sync::Arc::new(s.take_changes())
}

/// SPEC §1.2: a server whose lock session ended while another server took the lock can write
/// nothing more (its next batch fails whole) and is told so; a server whose session ended but
/// whose lock nobody took takes it again and is told to reload.
#[tokio::test]
async fn a_server_that_lost_the_scheduler_lock_cannot_write() {
    let Some(db) = TestDatabase::create("a_server_that_lost_the_scheduler_lock_cannot_write").await else { return };
    let a = PgStore::open_with(db.options.clone(), 2, Schema::Migrate).await.unwrap();
    assert!(a.lock_scheduler().await.unwrap());
    a.apply(submit_of(1)).await.expect("the leader writes");
    assert!(!a.hold_scheduler_lock().await.unwrap(), "still the leader, nothing to reload");

    db.end_lock_sessions().await;
    let b = PgStore::open_with(db.options.clone(), 2, Schema::Migrate).await.unwrap();
    let mut took = false;
    for _ in 0..50 {
        if b.lock_scheduler().await.unwrap() {
            took = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(took, "the lock is free once the first server's session ended");
    let refused = a.apply(submit_of(2)).await;
    assert!(matches!(refused, Err(StoreError::LeadershipLost { epoch: 1 })), "{refused:?}");
    assert_eq!(b.get_job(hodei_core::JobId::from_uuid(uuid::Uuid::from_u128(2 << 80))).await.unwrap(), None, "nothing of the stale batch is stored");
    assert!(matches!(a.hold_scheduler_lock().await, Err(StoreError::LeadershipLost { .. })), "the stale server is told");
    b.apply(submit_of(3)).await.expect("the new leader writes");

    // The new leader's session ends and nobody takes the lock: it takes it again, is told to
    // reload, and goes on writing.
    db.end_lock_sessions().await;
    let mut retaken = false;
    for _ in 0..50 {
        if matches!(b.hold_scheduler_lock().await, Ok(true)) {
            retaken = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(retaken, "the lock is taken again after its session was lost");
    b.apply(submit_of(4)).await.expect("and the leader writes again");
    drop((a, b));
    db.drop_database().await;
}

/// The job output port on PostgreSQL: the same suite as the file adapter's.
#[tokio::test]
async fn postgres_logs_conform() {
    let Some(db) = TestDatabase::create("postgres_logs_conform").await else { return };
    let store = PgStore::open_with(db.options.clone(), 4, Schema::Migrate).await.unwrap();
    let logs = store.log_store().expect("PostgreSQL keeps job output itself");
    hodei_store::conformance_logs::run_all(&move |cap| hodei_store::logs::Logs::new(logs.clone(), cap)).await;
    drop(store);
    db.drop_database().await;
}
