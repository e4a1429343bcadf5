//! Black-box tests of the server on PostgreSQL (`database.url: postgres://…`), on the server the
//! libpq environment names (see `hodei_store::testing`; CI runs them inside `pg_virtualenv`).

mod common;

use common::*;
use hodei_store::testing::TestDatabase;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn the_server_runs_jobs_on_postgres_and_a_second_server_is_refused() {
    let Some(db) = TestDatabase::create("the_server_runs_jobs_on_postgres_and_a_second_server_is_refused").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let env = [("HODEI_DATABASE__URL", db.url.as_str())];
    let srv = Server::start(dir.path(), &env, 0, None);
    let out = srv.cli(&["submit", "--wait", "--", "echo", "hello"]);
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).as_ref()), (Some(0), "hello\n"));
    let out = srv.cli(&["submit", "--wait", "--shell", "--", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "the job's exit code");
    let (s, batch) = srv.call(Method::POST, "/jobs/batch", Some(json!({"jobs": [{"command": ["true"]}, {"command": ["false"]}]}))).await;
    assert_eq!(s, 201, "{batch}");
    let ids: Vec<String> = batch["items"].as_array().unwrap().iter().map(|i| i["job_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(srv.wait_ended(&ids[0], 30).await["state"], "succeeded");
    assert_eq!(srv.wait_ended(&ids[1], 30).await["state"], "failed");
    let array = srv.submit(json!({"command": ["sh", "-c", "echo $HODEI_ARRAY_INDEX"], "array": {"start": 0, "end": 4, "max_parallel": 2}})).await;
    assert_eq!(array["count"], 5);
    let (_, members) = srv.call(Method::GET, &format!("/jobs?array_id={}", array["array_id"].as_str().unwrap()), None).await;
    let members = members["items"].as_array().unwrap().clone();
    assert_eq!(members.len(), 5);
    for m in &members {
        assert_eq!(srv.wait_ended(m["id"].as_str().unwrap(), 30).await["state"], "succeeded");
    }

    // A second server on the same database would run the same jobs: it is refused.
    let other = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["server", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--data-dir"])
        .arg(other.path())
        .env("HODEI_DATABASE__URL", &db.url)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("another hodei server is running the scheduler"), "{err}");
    assert!(!err.contains(&std::env::var("PGPASSWORD").unwrap_or_else(|_| "\u{0}".into())), "the password is not printed: {err}");
    drop(srv);
    db.drop_database().await;
}

#[tokio::test]
async fn after_kill_9_on_postgres_every_acknowledged_job_ends_once() {
    let Some(db) = TestDatabase::create("after_kill_9_on_postgres_every_acknowledged_job_ends_once").await else { return };
    let dir = tempfile::tempdir().unwrap();
    kill_9_mid_load_then_restart(dir.path(), &[("HODEI_DATABASE__URL", db.url.as_str())]).await;
    db.drop_database().await;
}

/// SPEC §1.2: when the first server's lock session ends (as in a database restart) and a second
/// server takes the scheduler, the first exits instead of scheduling beside it, and the second
/// carries on with what the first had stored.
#[tokio::test]
async fn a_server_that_loses_the_scheduler_lock_to_another_exits() {
    let Some(db) = TestDatabase::create("a_server_that_loses_the_scheduler_lock_to_another_exits").await else { return };
    let env = [("HODEI_DATABASE__URL", db.url.as_str()), ("HODEI_SCHEDULER__TICK_MS", "200")];
    let first_dir = tempfile::tempdir().unwrap();
    let mut first = Server::start(first_dir.path(), &env, 0, None);
    let held = first.submit(json!({"command": ["echo", "carried over"], "hold": true})).await;
    let id = held["id"].as_str().unwrap().to_owned();
    let ran = first.submit(json!({"command": ["echo", "written through the first server"]})).await;
    let ran = ran["id"].as_str().unwrap().to_owned();
    assert_eq!(first.wait_ended(&ran, 30).await["state"], "succeeded");

    // The first server takes its lock again at its next tick when nobody else has: end its
    // session until the second server is the one that holds it.
    let second_dir = tempfile::tempdir().unwrap();
    let mut tries = 0;
    let second = loop {
        db.end_lock_sessions().await;
        if let Some(s) = Server::try_start(second_dir.path(), &env, 0, None) {
            break s;
        }
        tries += 1;
        assert!(tries < 20, "the second server never took the scheduler lock");
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let code = loop {
        if let Some(status) = first.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(std::time::Instant::now() < deadline, "the first server is still running beside the second");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(code, Some(3), "it exits, saying why");
    let (s, _) = second.call(Method::POST, &format!("/jobs/{id}/release"), None).await;
    assert_eq!(s, 200);
    assert_eq!(second.wait_ended(&id, 30).await["state"], "succeeded", "the job stored by the first runs on the second");
    // Job output is in the database: the second server, with a data dir of its own, reads what
    // the first one stored.
    assert_eq!(stored_output(&second, &ran, "stdout").await, "written through the first server\n");
    assert_eq!(stored_output(&second, &id, "stdout").await, "carried over\n");
    drop(second);
    db.drop_database().await;
}

/// As on SQLite (`e2e.rs`), with job output in the database: killing the server three times
/// mid-output loses and repeats nothing, and no output is written beside it.
#[tokio::test]
async fn output_in_the_database_survives_server_kills_exactly_once() {
    let Some(db) = TestDatabase::create("output_in_the_database_survives_server_kills_exactly_once").await else { return };
    let dir = tempfile::tempdir().unwrap();
    output_survives_server_kills(dir.path(), &[("HODEI_DATABASE__URL", db.url.as_str())]).await;
    let logs = dir.path().join("logs");
    assert!(!logs.exists() || std::fs::read_dir(&logs).unwrap().count() == 0, "no output in files: it is in the database");
    db.drop_database().await;
}
