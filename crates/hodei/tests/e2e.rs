//! Black-box tests: the real binary, real workers, real processes.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn submit_wait_prints_the_output_and_exits_with_the_jobs_code() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    let out = srv.cli(&["submit", "--wait", "--", "echo", "hello"]);
    assert_eq!((String::from_utf8_lossy(&out.stdout).as_ref(), out.status.code()), ("hello\n", Some(0)));
    let out = srv.cli(&["submit", "--wait", "--shell", "--", "echo out; echo err >&2; exit 7"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err\n"));
    assert_eq!(out.status.code(), Some(7));

    let ls = srv.cli(&["jobs", "ls", "-o", "json"]);
    let page: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!((items[0]["state"].as_str(), items[0]["exit_code"].as_i64()), (Some("failed"), Some(7)));
    let id = items[1]["id"].as_str().unwrap();
    let logs = srv.cli(&["jobs", "logs", id]);
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "hello\n");
    let get = srv.cli(&["jobs", "get", id]);
    assert!(String::from_utf8_lossy(&get.stdout).contains("succeeded"));
}

#[tokio::test]
async fn output_is_streamed_while_the_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    let job = srv.submit(json!({"command": sh("echo first; sleep 1; echo second")})).await;
    let id = job["id"].as_str().unwrap();
    srv.wait_for(id, 20, |s| s == "running").await;
    // The first line is readable before the job ends.
    let mut seen = String::new();
    for _ in 0..40 {
        let (_, logs) = srv.call(Method::GET, &format!("/jobs/{id}/logs"), None).await;
        seen = logs["chunks"].as_array().unwrap().iter().map(|c| c["data"].as_str().unwrap().to_owned()).collect();
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(seen, "first\n");
    assert_eq!(srv.job(id).await["state"], "running");
    let out = srv.cli(&["jobs", "logs", "-f", id]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "first\nsecond\n");
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    let shared = job_writable_dir();
    let pidfile = shared.path().join("bg.pid");
    let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
    let job = srv.submit(json!({"command": sh(&script), "timeout_ms": 700})).await;
    let j = srv.wait_ended(job["id"].as_str().unwrap(), 20).await;
    assert_eq!((j["state"].as_str(), j["failure_reason"].as_str()), (Some("timed_out"), Some("timeout")));
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    // Dead means gone, or a zombie waiting for whoever adopted it to reap it.
    let alive =
        || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| st.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z"));
    for _ in 0..100 {
        if !alive() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(), "the background child survived the timeout");
    let out = srv.cli(&["submit", "--wait", "--timeout", "300ms", "--", "sleep", "10"]);
    assert_eq!(out.status.code(), Some(124));
}

#[tokio::test]
async fn cancelling_a_running_job_kills_it() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    let job = srv.submit(json!({"command": ["sleep", "300"]})).await;
    let id = job["id"].as_str().unwrap();
    srv.wait_for(id, 20, |s| s == "running").await;
    let (status, j) = srv.call(Method::POST, &format!("/jobs/{id}/cancel"), None).await;
    assert_eq!((status, j["cancel_requested_at"].is_string()), (202, true));
    let out = srv.cli(&["jobs", "wait", id]);
    assert_eq!(out.status.code(), Some(130));
    let j = srv.job(id).await;
    assert_eq!((j["state"].as_str(), j["attempts"][0]["state"].as_str()), (Some("cancelled"), Some("cancelled")));
}

#[tokio::test]
async fn a_failing_attempt_is_retried_and_then_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    let work = job_writable_dir();
    let job = srv
        .submit(json!({"command": sh("test -f marker || { touch marker; exit 1; }"), "working_dir": work.path(), "max_retries": 2, "retry_backoff_ms": 50}))
        .await;
    let j = srv.wait_ended(job["id"].as_str().unwrap(), 20).await;
    assert_eq!((j["state"].as_str(), j["attempt_count"].as_i64()), (Some("succeeded"), Some(2)));
    let states: Vec<_> = j["attempts"].as_array().unwrap().iter().map(|a| a["state"].as_str().unwrap().to_owned()).collect();
    assert_eq!(states, ["failed", "succeeded"]);
}

#[tokio::test]
async fn a_remote_worker_registers_heartbeats_and_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, Some(REMOTE_POOL));
    let _w = WorkerProc::start(&srv.grpc, "remote", &srv.join_token("remote"), 2);
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(srv.submit(json!({"command": ["sh", "-c", format!("echo {i}")]})).await["id"].as_str().unwrap().to_owned());
    }
    let mut workers = HashSet::new();
    for id in &ids {
        let j = srv.wait_ended(id, 30).await;
        assert_eq!(j["state"], "succeeded");
        workers.insert(j["worker_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(workers.len(), 1, "one worker ran every job");
    let (_, ws) = srv.call(Method::GET, "/workers", None).await;
    let w = &ws["items"][0];
    assert_eq!((w["pool_id"].as_str(), w["labels"]["zone"].as_str(), w["slots"].as_i64()), (Some("remote"), Some("test"), Some(2)));
    let before = w["last_heartbeat_at"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, ws) = srv.call(Method::GET, "/workers", None).await;
    assert!(ws["items"][0]["last_heartbeat_at"].as_str().unwrap() > before.as_str(), "heartbeats are recorded");
    // A worker with the wrong join token is turned away.
    let mut bad = WorkerProc::start(&srv.grpc, "remote", "hodei_wrong", 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, ws) = srv.call(Method::GET, "/workers", None).await;
    assert_eq!(ws["items"].as_array().unwrap().len(), 1);
    bad.kill9();
}

#[tokio::test]
async fn bad_input_through_the_binary_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    let (s, p) = srv.call(Method::POST, "/jobs", Some(json!({"command": ["true"], "resources": {"memory_mb": -1}}))).await;
    assert_eq!((s, p["errors"][0]["field"].as_str()), (400, Some("/resources/memory_mb")));
    let (s, _) = srv.call(Method::POST, "/tenants", Some(json!({"name": ""}))).await;
    assert_eq!(s, 400);
    let out = srv.cli(&["submit", "--priority", "urgent", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/priority"));
    let (_, page) = srv.call(Method::GET, "/jobs", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
    let (_, t) = srv.call(Method::GET, "/tenants", None).await;
    assert_eq!(t["items"].as_array().unwrap().len(), 1);
}

#[test]
fn a_bad_config_stops_the_server_with_the_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, "scheduler:\n  tick_ms: soon\n").unwrap();
    let out = std::process::Command::new(BIN).args(["server", "--config"]).arg(&cfg).arg("--data-dir").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scheduler.tick_ms: \"soon\" is not a non-negative integer (milliseconds)"), "{err}");
}

/// With `database.auto_migrate: false` the server does not touch the schema: it refuses an
/// empty database and names the command that prepares it; after `hodei migrate` it starts.
#[tokio::test]
async fn without_auto_migrate_the_server_waits_for_hodei_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let no_auto = [("HODEI_DATABASE__AUTO_MIGRATE", "false")];
    let out = std::process::Command::new(BIN)
        .args(["server", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .envs(no_auto)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("schema is at version none") && err.contains("run `hodei migrate`"), "{err}");
    let out = std::process::Command::new(BIN).arg("migrate").arg("--data-dir").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let srv = Server::start(dir.path(), &no_auto, 0, None);
    let out = srv.cli(&["submit", "--wait", "--", "echo", "migrated"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "migrated\n");
}

#[tokio::test]
async fn a_killed_worker_loses_its_attempt_and_the_job_runs_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, Some(REMOTE_POOL));
    let token = srv.join_token("remote");
    let mut w1 = WorkerProc::start(&srv.grpc, "remote", &token, 1);
    let job = srv.submit(json!({"command": ["sleep", "1"]})).await;
    let id = job["id"].as_str().unwrap();
    let first = srv.wait_for(id, 20, |s| s == "running").await;
    w1.kill9();
    let _w2 = WorkerProc::start(&srv.grpc, "remote", &token, 1);
    let j = srv.wait_ended(id, 30).await;
    assert_eq!(j["state"], "succeeded");
    let attempts = j["attempts"].as_array().unwrap();
    assert_eq!((attempts[0]["state"].as_str(), attempts[0]["failure_reason"].as_str()), (Some("lost"), Some("worker_lost")));
    assert_eq!(attempts[1]["state"], "succeeded");
    assert_ne!(attempts[1]["worker_id"], first["worker_id"]);
    let metrics = srv.http_client.get(format!("{}/metrics", srv.http)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("hodei_workers_lost_total{pool=\"remote\"} 1"), "{metrics}");
    assert!(metrics.contains("hodei_jobs_requeued_total{pool=\"remote\",reason=\"worker_lost\"} 1"), "{metrics}");
}

/// A remote worker of the `remote` pool that spools in `spool`.
fn spooling_worker(srv: &Server, spool: &std::path::Path) -> WorkerProc {
    let args = [std::ffi::OsStr::new("--spool-dir"), spool.as_os_str()];
    WorkerProc::start_with(&srv.grpc, "remote", &srv.join_token("remote"), 1, &[], &args)
}

/// A server on a port of its own that a restart keeps, and a remote worker spooling in `spool`.
fn server_with_spooling_worker(dir: &std::path::Path, spool: &std::path::Path) -> (Server, u16, WorkerProc) {
    let grpc = free_port();
    let srv = Server::start(dir, &[], grpc, Some(REMOTE_POOL));
    let w = spooling_worker(&srv, spool);
    (srv, grpc, w)
}

/// A job that ends while its server is down and whose worker is then killed: the restarted
/// worker comes back as the same worker with the result from its spool, so the job is recorded
/// from that one run instead of being declared lost and run again.
#[tokio::test]
async fn a_restarted_worker_hands_in_the_results_in_its_spool() {
    let (dir, spool) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut srv, grpc, mut w1) = server_with_spooling_worker(dir.path(), spool.path());
    let job = srv.submit(json!({"command": ["sleep", "1"]})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let running = srv.wait_for(&id, 20, |s| s == "running").await;
    srv.kill9();
    // The job ends meanwhile; its result cannot be sent and is spooled.
    wait_for_a_spooled_result(spool.path()).await;
    w1.kill9();
    let srv = Server::start(dir.path(), &[], grpc, Some(REMOTE_POOL));
    let _w2 = spooling_worker(&srv, spool.path());
    let j = srv.wait_ended(&id, 20).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["attempts"].as_array().unwrap().len(), 1, "one run, handed in after the restart: {j}");
    assert_eq!(j["worker_id"], running["worker_id"], "the same worker");
    let (_, ws) = srv.call(Method::GET, "/workers", None).await;
    assert_eq!(ws["items"].as_array().unwrap().len(), 1, "no second registration: {ws}");
}

/// One stream of a job's stored output, as the API serves it.
/// The server is killed three times while a job writes to both streams on a remote worker
/// (see [`output_survives_server_kills`]); output in files beside the SQLite database.
#[tokio::test]
async fn output_written_while_the_server_dies_is_stored_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    output_survives_server_kills(dir.path(), &[]).await;
}

#[tokio::test]
async fn after_kill_9_of_the_server_every_acknowledged_job_ends_once() {
    let dir = tempfile::tempdir().unwrap();
    kill_9_mid_load_then_restart(dir.path(), &[]).await;
}

#[tokio::test]
async fn a_worker_stopped_with_sigterm_hands_its_jobs_back_instead_of_cancelling_them() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, Some(REMOTE_POOL));
    let token = srv.join_token("remote");
    let tmp = tempfile::tempdir().unwrap();
    let mut w1 = WorkerProc::start_with(&srv.grpc, "remote", &token, 1, &[("TMPDIR", tmp.path())], &[]);
    let job = srv.submit(json!({"command": ["sleep", "1"]})).await;
    let id = job["id"].as_str().unwrap();
    srv.wait_for(id, 20, |s| s == "running").await;
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2, "without --spool-dir the agent works under $TMPDIR: its directory and its jobs' scratch");
    unsafe { libc::kill(w1.0.id() as i32, libc::SIGTERM) };
    assert!(w1.0.wait().unwrap().success());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "and removes it when it stops");
    let _w2 = WorkerProc::start(&srv.grpc, "remote", &token, 1);
    let j = srv.wait_ended(id, 30).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    let attempts = j["attempts"].as_array().unwrap();
    assert_eq!((attempts[0]["state"].as_str(), attempts[0]["failure_reason"].as_str()), (Some("lost"), Some("worker_lost")));
    let (_, ws) = srv.call(Method::GET, "/workers", None).await;
    assert!(ws["items"].as_array().unwrap().iter().any(|w| w["state"] == "terminated"), "the stopped worker deregistered: {ws}");
}

#[tokio::test]
async fn jobs_see_their_own_hodei_variables_but_not_the_workers_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    let out = srv.cli(&["submit", "--wait", "--", "env"]);
    let env = String::from_utf8_lossy(&out.stdout);
    assert!(!env.contains("HODEI_JOIN_TOKEN"), "the pool's join token leaked into a job:\n{env}");
    for var in ["HODEI_JOB_ID=", "HODEI_ATTEMPT_ID=", "HODEI_ATTEMPT_NUMBER=1", "HODEI_TENANT_ID=default", "HODEI_CPU_M=250", "HODEI_MEMORY_MB=256"] {
        assert!(env.contains(var), "{var} missing from the job's environment:\n{env}");
    }
}

#[tokio::test]
async fn waiting_shows_progress_on_a_terminal_and_stays_quiet_when_piped() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    let piped = srv.cli(&["submit", "--wait", "--", "echo", "hi"]);
    assert_eq!(String::from_utf8_lossy(&piped.stdout), "hi\n");
    assert!(!String::from_utf8_lossy(&piped.stderr).contains("[hodei]"), "progress printed into a pipe");
    // `script` gives the command a terminal (util-linux, in every Debian install).
    let line = format!("HODEI_SERVER={} HODEI_TOKEN={} {BIN} submit --wait -- sh -c 'sleep 0.3; echo hi'", srv.http, srv.token);
    let tty = std::process::Command::new("script").args(["-qec", &line, "/dev/null"]).output().unwrap();
    let text = String::from_utf8_lossy(&tty.stdout);
    assert!(text.contains("[hodei] job") && text.contains(": running"), "no progress on a terminal:\n{text}");
    assert!(text.contains("hi"), "{text}");
}

#[tokio::test]
async fn output_over_the_cap_is_dropped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("HODEI_JOBS__LOGS__MAX_BYTES_PER_ATTEMPT", "1000")], 0, None);
    let job = srv.submit(json!({"command": sh("yes xxxxxxxxx | head -c 5000")})).await;
    let id = job["id"].as_str().unwrap();
    let j = srv.wait_ended(id, 20).await;
    assert_eq!((j["state"].as_str(), j["log_truncated"].as_bool()), (Some("succeeded"), Some(true)), "{j}");
    let (_, logs) = srv.call(Method::GET, &format!("/jobs/{id}/logs"), None).await;
    let text: String = logs["chunks"].as_array().unwrap().iter().map(|c| c["data"].as_str().unwrap().to_owned()).collect();
    assert_eq!((text.len(), logs["truncated"].as_bool()), (1000, Some(true)));
    assert!(text.starts_with("xxxxxxxxx\n") && text.chars().all(|c| c == 'x' || c == '\n'));
    let out = srv.cli(&["jobs", "logs", id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"), "the CLI says so");
}

/// The server and its built-in workers die together (a machine crash): the restarted server
/// sees no agent holding their spool directories and requeues their jobs at once, instead of
/// waiting for their leases.
#[tokio::test]
async fn after_a_restart_jobs_of_dead_built_in_workers_are_requeued_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // A long lease: only recognizing the old local workers as dead can requeue within the test.
    let env = [("HODEI_WORKERS__HEARTBEAT_TIMEOUT_MS", "30000"), ("HODEI_WORKERS__HEARTBEAT_INTERVAL_MS", "1000")];
    let mut srv = Server::start(dir.path(), &env, 0, None);
    let job = srv.submit(json!({"command": ["sleep", "2"]})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    srv.wait_for(&id, 20, |s| s == "running").await;
    let agents = local_agents(dir.path());
    srv.kill9();
    for (pid, spool) in &agents {
        unsafe { libc::kill(*pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while agent_pid(spool).is_some() {
            assert!(Instant::now() < deadline, "agent {pid} still holds its spool");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let srv = Server::start(dir.path(), &env, 0, None);
    let started = std::time::Instant::now();
    let j = srv.wait_ended(&id, 20).await;
    assert!(started.elapsed() < Duration::from_secs(10), "requeued only after {:?}", started.elapsed());
    assert_eq!(j["state"], "succeeded");
    let attempts = j["attempts"].as_array().unwrap();
    assert_eq!((attempts[0]["state"].as_str(), attempts[0]["failure_reason"].as_str()), (Some("lost"), Some("worker_lost")));
}

/// Without cgroups (the default): a job whose processes together hold more resident memory
/// than its `memory_mb` is killed by the procfs watch (`oom`); its siblings within their
/// memory run on.
#[tokio::test]
async fn a_job_over_its_memory_is_killed_as_oom() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    // The shell holds 300 MB of output in a variable, then waits.
    let hog = srv.submit(json!({"command": sh("x=$(head -c 300000000 /dev/zero | tr '\\0' a); sleep 30"), "resources": {"memory_mb": 64}})).await;
    let fine = srv.submit(json!({"command": sh("x=$(head -c 10000000 /dev/zero | tr '\\0' a); sleep 1; echo ok"), "resources": {"memory_mb": 64}})).await;
    let started = std::time::Instant::now();
    let j = srv.wait_ended(hog["id"].as_str().unwrap(), 25).await;
    assert!(started.elapsed() < Duration::from_secs(20), "killed only after {:?}", started.elapsed());
    assert_eq!((j["state"].as_str(), j["failure_reason"].as_str()), (Some("failed"), Some("oom")), "{j}");
    assert_eq!(j["attempts"][0]["failure_reason"], "oom");
    assert_eq!(srv.wait_ended(fine["id"].as_str().unwrap(), 20).await["state"], "succeeded");
}

/// With `workers.cgroups: true`: each job runs in a cgroup of its own; over its `memory_mb`
/// the kernel kills it and the job ends `oom`; its cpu is held to its `cpu_m` (a busy loop
/// asking for 300 m uses about 300 m). Where the machine gives us no cgroups the server refuses
/// to start, saying why (tested then instead — never under CI on a machine whose cgroup file
/// system we may write).
#[tokio::test]
async fn a_job_in_its_cgroup_is_killed_by_the_kernel_over_its_memory_and_held_to_its_cpu() {
    let writable = unsafe { libc::geteuid() } == 0 && unsafe { libc::access(c"/sys/fs/cgroup".as_ptr(), libc::W_OK) } == 0;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let log_s = log.to_str().unwrap();
    let env = [("HODEI_WORKERS__CGROUPS", "true"), ("HODEI_WORKERS__USAGE_SAMPLE_INTERVAL_MS", "200"), (STDERR_TO, log_s)];
    let Some(srv) = Server::try_start(&dir.path().join("data"), &env, 0, None) else {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(said.contains("workers.cgroups:"), "the refusal names the key and why: {said}");
        assert!(!(std::env::var_os("CI").is_some() && writable), "jobs should get cgroups on this machine: {said}");
        eprintln!("SKIPPED: this machine gives jobs no cgroups ({})", said.trim());
        return;
    };
    let probe = srv.submit(json!({"command": ["cat", "/proc/self/cgroup"]})).await;
    let id = probe["id"].as_str().unwrap();
    assert_eq!(srv.wait_ended(id, 20).await["state"], "succeeded");
    let where_ = srv.cli(&["jobs", "logs", id]);
    let where_ = String::from_utf8_lossy(&where_.stdout).into_owned();
    assert!(where_.contains("/hodei/agent-"), "the job ran in its cgroup: {where_}");
    let hog = srv.submit(json!({"command": sh("x=$(head -c 300000000 /dev/zero | tr '\\0' a); sleep 30"), "resources": {"memory_mb": 64}})).await;
    let fine = srv.submit(json!({"command": sh("x=$(head -c 10000000 /dev/zero | tr '\\0' a); sleep 1; echo ok"), "resources": {"memory_mb": 64}})).await;
    let burn = "import time\nt = time.time() + 2\nwhile time.time() < t: pass\n";
    let slow = srv.submit(json!({"command": ["python3", "-c", burn], "resources": {"cpu_m": 300, "memory_mb": 256}})).await;
    let j = srv.wait_ended(hog["id"].as_str().unwrap(), 25).await;
    assert_eq!((j["state"].as_str(), j["failure_reason"].as_str()), (Some("failed"), Some("oom")), "{j}");
    assert_eq!(srv.wait_ended(fine["id"].as_str().unwrap(), 20).await["state"], "succeeded");
    let id = slow["id"].as_str().unwrap();
    let j = srv.wait_ended(id, 20).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let sum = loop {
        let (_, u) = srv.call(Method::GET, &format!("/jobs/{id}/usage"), None).await;
        if !u["attempts"][0]["summary"].is_null() {
            break u["attempts"][0]["summary"].clone();
        }
        assert!(Instant::now() < deadline, "no summary: {u}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let avg = sum["cpu_avg_m"].as_f64().unwrap();
    assert!((200.0..=330.0).contains(&avg), "a busy loop held to 300 m: {sum}");
    // Sampled from the cgroup: about the quota at most (3 bursts of 30 ms in a 250 ms sample are
    // 360 m) — a reused cgroup's earlier jobs not counted.
    let (_, u) = srv.call(Method::GET, &format!("/jobs/{id}/usage"), None).await;
    let points = u["attempts"][0]["points"].as_array().unwrap();
    assert!(!points.is_empty() && points.iter().all(|p| p["cpu_m"].as_f64().unwrap() <= 450.0), "{u}");
}

/// An idempotency key outlives a kill -9: the repeat after the restart gets the first job.
#[tokio::test]
async fn a_submit_repeated_with_its_key_after_a_kill_9_gets_the_first_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[], 0, None);
    let submit = |srv: &Server| {
        let out = srv.cli(&["submit", "--idempotency-key", "nightly-2026-12-01", "-o", "json", "--", "echo", "once"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"].as_str().unwrap().to_owned()
    };
    let first = submit(&srv);
    srv.kill9();
    let srv = Server::start(dir.path(), &[], 0, None);
    assert_eq!(submit(&srv), first);
    let out = srv.cli(&["submit", "--idempotency-key", "nightly-2026-12-01", "--", "echo", "another"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("409 conflict"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(srv.wait_ended(&first, 20).await["state"], "succeeded");
    let (_, page) = srv.call(Method::GET, "/jobs", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_array_job_runs_each_index_at_most_max_parallel_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    let out = srv.cli(&["submit", "--array", "1-5:2%1", "-o", "json", "--shell", "--", "echo index=$HODEI_ARRAY_INDEX; sleep 0.2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let a: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(a["count"], 3);
    let array_id = a["array_id"].as_str().unwrap();
    let out = srv.cli(&["jobs", "ls", "--array-id", array_id, "-o", "json"]);
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut runs = vec![];
    for j in page["items"].as_array().unwrap() {
        let id = j["id"].as_str().unwrap();
        let done = srv.wait_ended(id, 30).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        let logs = srv.cli(&["jobs", "logs", id]);
        assert_eq!(String::from_utf8_lossy(&logs.stdout), format!("index={}\n", j["array_index"]));
        let t = |k: &str| done[k].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
        runs.push((t("started_at"), t("finished_at")));
    }
    runs.sort();
    for w in runs.windows(2) {
        assert!(w[0].1 <= w[1].0, "max_parallel 1, yet two runs overlapped: {runs:?}");
    }
    // A bad range is refused by the CLI before anything is sent.
    let bad = srv.cli(&["submit", "--array", "1..5", "--", "true"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("A-B[:S][%P]"));
}

#[tokio::test]
async fn a_submit_written_in_several_store_parts_is_one_commit_that_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[], 0, None);
    // 20 000 jobs: the engine hands them to the store in parts of 8 192, one transaction.
    let body = json!({"command": ["true"], "hold": true, "resources": {"cpu_m": 1, "memory_mb": 1}, "array": {"start": 0, "end": 19999}});
    let (status, a) = srv.call(Method::POST, "/jobs", Some(body)).await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["count"], 20000);
    srv.kill9();
    let srv = Server::start(dir.path(), &[], 0, None);
    let (_, q) = srv.call(Method::GET, "/queue", None).await;
    assert_eq!(q["totals"]["held"], 20000, "{}", q["totals"]);
    for id in [&a["first_job_id"], &a["last_job_id"]] {
        let j = srv.job(id.as_str().unwrap()).await;
        assert_eq!(j["state"], "held", "{j}");
    }
}

/// SIGTERM: the server stops taking connections, ends the log streams it serves (they would
/// otherwise hold it for the whole `server.shutdown_grace_ms`) and exits cleanly.
#[tokio::test]
async fn sigterm_ends_log_streams_and_the_server_exits_cleanly() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[("HODEI_SERVER__SHUTDOWN_GRACE_MS", "120000")], 0, None);
    let job = srv.submit(json!({"command": sh("echo started; sleep 300")})).await;
    let id = job["id"].as_str().unwrap();
    srv.wait_for(id, 20, |s| s == "running").await;
    let resp = srv.http_client.get(format!("{}/api/v1/jobs/{id}/logs?follow=true", srv.http)).bearer_auth(&srv.token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("started") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next()).await.expect("output within 20 s").expect("stream open").unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    unsafe { libc::kill(srv.child.id() as i32, libc::SIGTERM) };
    let ended = tokio::time::timeout(Duration::from_secs(30), async { while let Some(Ok(_)) = body.next().await {} });
    ended.await.expect("the log stream ended when the server began to stop");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = srv.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the server did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

/// `server.request_timeout_ms`: a request not answered in time is 503 `unavailable` naming the
/// key, and the server goes on serving.
#[tokio::test]
async fn a_request_over_the_timeout_is_answered_503_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("HODEI_SERVER__REQUEST_TIMEOUT_MS", "1")], 0, None);
    // Five thousand held jobs cannot be validated, stored and queued in a millisecond.
    let jobs: Vec<Value> = (0..5000).map(|_| json!({"command": ["true"], "hold": true})).collect();
    let (s, problem) = srv.call(Method::POST, "/jobs/batch", Some(json!({"jobs": jobs}))).await;
    assert_eq!((s, problem["code"].as_str()), (503, Some("unavailable")), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("server.request_timeout_ms"), "{problem}");
    let health = srv.http_client.get(format!("{}/health", srv.http)).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

/// `jobs.retention_days` (here 3.5 s): an ended job goes with its attempts, events and log
/// files; a live one stays whatever its age; an array goes as a unit once all of it ended.
#[tokio::test]
async fn retention_deletes_ended_jobs_with_their_logs_and_keeps_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("HODEI_JOBS__RETENTION_DAYS", "0.00004")], 0, None);
    let held = srv.submit(json!({"command": ["true"], "hold": true})).await;
    let done = srv.submit(json!({"command": ["echo", "kept for a while"]})).await;
    let (id, held) = (done["id"].as_str().unwrap(), held["id"].as_str().unwrap());
    let (s, array) = srv.call(Method::POST, "/jobs", Some(json!({"command": ["true"], "array": {"start": 0, "end": 2}}))).await;
    assert_eq!(s, 201, "{array}");
    let array_id = array["array_id"].as_str().unwrap();
    srv.wait_ended(id, 30).await;
    let attempt = srv.job(id).await["attempts"][0]["id"].as_str().unwrap().to_owned();
    let logs = dir.path().join("logs");
    assert!(std::fs::read_dir(&logs).unwrap().any(|f| f.unwrap().file_name().to_string_lossy().starts_with(&attempt)), "its output is stored");
    let members = || async { srv.call(Method::GET, &format!("/jobs?array_id={array_id}"), None).await.1["items"].as_array().unwrap().len() };
    assert_eq!(members().await, 3);
    // Gone within a few sweeps (each a tenth of the retention, at least 1 s) of its expiry.
    let deadline = Instant::now() + Duration::from_secs(30);
    while srv.call(Method::GET, &format!("/jobs/{id}"), None).await.0 != 404 || members().await != 0 {
        assert!(Instant::now() < deadline, "retention did not delete the ended job and array within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(srv.call(Method::GET, &format!("/jobs/{id}/events"), None).await.0, 404);
    let left: Vec<String> = std::fs::read_dir(&logs).unwrap().map(|f| f.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!left.iter().any(|f| f.starts_with(&attempt)), "its log files are deleted too: {left:?}");
    let (s, j) = srv.call(Method::GET, &format!("/jobs/{held}"), None).await;
    assert_eq!((s, j["state"].as_str()), (200, Some("held")), "a live job is never deleted");
    let (s, _) = srv.call(Method::POST, &format!("/jobs/{id}/retry"), None).await;
    assert_eq!(s, 404, "a deleted job cannot be retried");
}

/// One agent runs hundreds of jobs at once, and waiting on them holds no thread each: every
/// job blocks on a lock the test holds until all of them run (so they truly run together),
/// the agent's thread count stays small meanwhile, and once the lock is let go each job
/// succeeds on its first attempt. (With a blocking thread per pipe and per wait, the agent
/// needed three threads a job, ran into tokio's pool of 512 and stalled.)
#[tokio::test]
async fn one_agent_runs_hundreds_of_jobs_at_once_without_a_thread_each() {
    const JOBS: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, Some(REMOTE_POOL));
    let mut agent = WorkerProc::start(&srv.grpc, "remote", &srv.join_token("remote"), JOBS as u32);
    let quota = json!({"cpu_m": 4000, "memory_mb": 4096, "max_concurrent_jobs": JOBS, "max_queued_jobs": JOBS});
    let (s, v) = srv.call(Method::POST, "/tenants", Some(json!({"id": "many", "name": "many", "quota": quota}))).await;
    assert_eq!(s, 201, "{v}");
    let shared = job_writable_dir();
    let gate = shared.path().join("gate");
    std::fs::write(&gate, "").unwrap();
    std::fs::set_permissions(&gate, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let held = std::fs::File::open(&gate).unwrap();
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&held), libc::LOCK_EX) }, 0);
    let array = srv
        .submit(json!({
            "command": ["flock", "-s", gate.to_str().unwrap(), "true"],
            "tenant_id": "many",
            "pool_selector": {"pool": "remote"},
            "resources": {"cpu_m": 10, "memory_mb": 10},
            "array": {"start": 0, "end": JOBS - 1},
        }))
        .await;
    let array = array["array_id"].as_str().unwrap().to_owned();
    let count = |state: &'static str| {
        let (srv, array) = (&srv, &array);
        async move {
            let (_, page) = srv.call(Method::GET, &format!("/jobs?array_id={array}&state={state}&limit=500"), None).await;
            page["items"].as_array().map_or(0, Vec::len)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while count("running").await < JOBS {
        assert!(Instant::now() < deadline, "only {} of {JOBS} jobs running after 120 s", count("running").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.0.id())).unwrap();
    let threads: usize = status.lines().find_map(|l| l.strip_prefix("Threads:")).unwrap().trim().parse().unwrap();
    assert!(threads < 64, "the agent holds {threads} threads for {JOBS} running jobs");
    drop(held);
    while count("succeeded").await < JOBS {
        assert!(Instant::now() < deadline, "only {} of {JOBS} jobs succeeded", count("succeeded").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, page) = srv.call(Method::GET, &format!("/jobs?array_id={array}&limit=500"), None).await;
    assert!(page["items"].as_array().unwrap().iter().all(|j| j["attempt_count"] == 1 && j["state"] == "succeeded"));
    agent.kill9();
}

/// Scratch directories are handed from one attempt to the next only when left empty: a job
/// never finds what an earlier one left, and runs in a directory named after its attempt.
#[tokio::test]
async fn each_job_starts_in_an_empty_scratch_directory_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__WORKERS", "1"), ("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__SLOTS", "1")], 0, None);
    for script in ["pwd; ls -A; touch left; mkdir sub", "pwd; ls -A", "pwd; ls -A", "pwd; ls -A; chmod 755 ."] {
        let id = srv.submit(json!({"command": ["sh", "-c", script]})).await["id"].as_str().unwrap().to_owned();
        let j = srv.wait_ended(&id, 30).await;
        assert_eq!(j["state"], "succeeded", "{j}");
        let out = stored_output(&srv, &id, "stdout").await;
        let mut lines = out.lines();
        let cwd = lines.next().unwrap();
        assert_eq!(lines.next(), None, "{script}: the directory was not empty: {out}");
        let attempt = j["attempts"][0]["id"].as_str().unwrap();
        assert!(cwd.ends_with(attempt), "{cwd} is named after attempt {attempt}");
    }
    let again = srv.submit(json!({"command": ["sh", "-c", "ls -A; stat -c %a ."]})).await["id"].as_str().unwrap().to_owned();
    srv.wait_ended(&again, 30).await;
    assert_eq!(stored_output(&srv, &again, "stdout").await, "700\n", "private and empty after a job changed its mode");
}

/// The built-in pool's workers outlive their server: kill -9 of the server while they run 600
/// short jobs and a long one leaves them running; the restarted server (on another gRPC port)
/// adopts the same agents instead of starting new ones, and every job succeeds exactly once —
/// each job's own side effect, a line in a file named after it, happened once, one attempt of
/// each started, and the long job running across the restart finished on its first attempt.
#[tokio::test]
async fn built_in_workers_outlive_a_kill_9_of_the_server_and_are_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let marks = job_writable_dir();
    let m = marks.path().display().to_string();
    let env = [("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__WORKERS", "2"), ("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__SLOTS", "8")];
    let mut srv = Server::start(dir.path(), &env, 0, None);
    let mut agents: Vec<i32> = local_agents(dir.path()).into_iter().map(|(pid, _)| pid).collect();
    agents.sort();
    assert_eq!(agents.len(), 2, "two agents hold their spool directories");
    let connected = |v: &Value| -> Vec<String> {
        let mut ids: Vec<String> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["state"] != "terminated" && w["state"] != "offline")
            .map(|w| w["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let workers_before = connected(&srv.call(Method::GET, "/workers", None).await.1);
    assert_eq!(workers_before.len(), 2);

    let long = srv.submit(json!({"command": ["sh", "-c", format!("echo x >> {m}/long; sleep 3")]})).await["id"].as_str().unwrap().to_owned();
    srv.wait_for(&long, 20, |s| s == "running").await;
    let short = format!("echo x >> {m}/$HODEI_JOB_ID; sleep 0.05");
    let jobs: Vec<Value> = (0..600).map(|_| json!({"command": ["sh", "-c", short]})).collect();
    let (s, batch) = srv.call(Method::POST, "/jobs/batch", Some(json!({ "jobs": jobs }))).await;
    assert_eq!(s, 201, "{batch}");
    let ids: Vec<String> = batch["items"].as_array().unwrap().iter().map(|i| i["job_id"].as_str().unwrap().to_owned()).collect();
    // Kill it once some have run and most have not.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(marks.path()).unwrap().count() < 60 {
        assert!(Instant::now() < deadline, "the short jobs do not run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    srv.kill9();
    for pid in &agents {
        assert_eq!(unsafe { libc::kill(*pid, 0) }, 0, "agent {pid} died with the server");
    }

    let srv = Server::start(dir.path(), &env, 0, None);
    let mut adopted: Vec<i32> = local_agents(dir.path()).into_iter().map(|(pid, _)| pid).collect();
    adopted.sort();
    assert_eq!(adopted, agents, "the restarted server adopted the running agents, it did not start new ones");
    assert_eq!(connected(&srv.call(Method::GET, "/workers", None).await.1), workers_before, "the same workers, under their identities");
    let j = srv.wait_ended(&long, 30).await;
    assert_eq!((j["state"].as_str(), j["attempts"].as_array().unwrap().len()), (Some("succeeded"), 1), "the long job ran through: {j}");
    for id in &ids {
        let j = srv.wait_ended(id, 120).await;
        assert_eq!(j["state"], "succeeded", "job {id}: {j}");
        // An assignment in flight when the server died never reached the worker: that attempt
        // is lost without having started, and the job runs once, on the next one.
        let started = j["attempts"].as_array().unwrap().iter().filter(|a| !a["started_at"].is_null()).count();
        assert_eq!(started, 1, "job {id} started more than once (or a running attempt was lost): {j}");
        let runs = std::fs::read_to_string(marks.path().join(id)).unwrap_or_default().lines().count();
        assert_eq!(runs, 1, "job {id}'s side effect happened {runs} times");
    }
    assert_eq!(std::fs::read_to_string(marks.path().join("long")).unwrap().lines().count(), 1);
}

/// Built-in workers whose server does not come back within `workers.gc_after_ms` stop; a clean
/// stop of the server stops its workers too, adopted ones included.
#[tokio::test]
async fn built_in_workers_stop_with_a_clean_stop_or_when_their_server_stays_away() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__WORKERS", "2"), ("HODEI_WORKERS__GC_AFTER_MS", "1500")];
    let mut srv = Server::start(dir.path(), &env, 0, None);
    let alive = |pid: i32| unsafe { libc::kill(pid, 0) } == 0;
    let agents: Vec<i32> = local_agents(dir.path()).into_iter().map(|(pid, _)| pid).collect();
    assert_eq!(agents.len(), 2);
    srv.kill9();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !local_agents(dir.path()).is_empty() {
        assert!(Instant::now() < deadline, "the agents still run 30 s after their server died (gc_after_ms 1500)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Adopted agents stop with a clean stop of the server that adopted them.
    let mut first = Server::start(dir.path(), &env, 0, None);
    let agents: Vec<i32> = local_agents(dir.path()).into_iter().map(|(pid, _)| pid).collect();
    first.kill9();
    let mut second = Server::start(dir.path(), &env, 0, None);
    let mut adopted: Vec<i32> = local_agents(dir.path()).into_iter().map(|(pid, _)| pid).collect();
    adopted.sort();
    let mut expected = agents.clone();
    expected.sort();
    assert_eq!(adopted, expected);
    unsafe { libc::kill(second.child.id() as i32, libc::SIGTERM) };
    assert!(second.child.wait().unwrap().success());
    assert!(local_agents(dir.path()).is_empty(), "the server stopped the agents it adopted before exiting");
    assert!(agents.iter().all(|p| !alive(*p) || std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| s.contains(") Z "))));
}

/// A static pool of the configuration file with provider `local` is kept at `min_size` workers
/// from the start, shaped by its `worker_template`; a killed one is replaced.
#[tokio::test]
async fn a_static_local_pool_keeps_min_size_workers_warm() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "resource_pools:\n  pools:\n    - id: warm\n      type: static\n      provider: local\n      worker_template: { cpu_m: 500, memory_mb: 256, slots: 2 }\n      min_size: 2\n      max_size: 2\n";
    let srv = Server::start(dir.path(), &[], 0, Some(yaml));
    let live = |v: &Value| -> Vec<Value> {
        v["items"].as_array().unwrap().iter().filter(|w| w["state"] != "terminated" && w["state"] != "offline").cloned().collect()
    };
    let (_, ws) = srv.call(Method::GET, "/workers?pool_id=warm", None).await;
    let ws = live(&ws);
    assert_eq!(ws.len(), 2, "min_size workers when the server is ready: {ws:?}");
    for w in &ws {
        assert_eq!((w["resources"]["cpu_m"].as_u64(), w["resources"]["memory_mb"].as_u64(), w["slots"].as_u64()), (Some(500), Some(256), Some(2)), "{w}");
    }
    let (s, status) = srv.call(Method::GET, "/pools/warm/status", None).await;
    assert_eq!(s, 200, "{status}");
    assert_eq!(
        (status["current_size"].as_u64(), status["desired_size"].as_u64(), status["slots"].as_u64(), status["workers_by_state"]["idle"].as_u64()),
        (Some(2), Some(2), Some(4), Some(2)),
        "{status}"
    );
    let out = srv.cli(&["pools", "status", "warm"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pool warm: active, 2 workers (desired 2, min 2, max 2); idle 2; slots 0/4 in use"), "{text}");
    let (_, pool) = srv.call(Method::GET, "/pools/warm", None).await;
    assert_eq!((pool["min_size"].as_u64(), pool["managed_by"].as_str()), (Some(2), Some("config")), "{pool}");
    let id = srv.submit(json!({"command": ["echo", "warm"]})).await["id"].as_str().unwrap().to_owned();
    let j = srv.wait_ended(&id, 30).await;
    assert_eq!((j["state"].as_str(), j["pool_id"].as_str()), (Some("succeeded"), Some("warm")), "{j}");

    let agents = local_agents(dir.path());
    assert_eq!(agents.len(), 2);
    unsafe { libc::kill(agents[0].0, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = local_agents(dir.path());
        if now.len() == 2 && now.iter().all(|(pid, _)| *pid != agents[0].0) {
            break;
        }
        assert!(Instant::now() < deadline, "the killed worker was not replaced: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = srv.submit(json!({"command": ["echo", "again"]})).await["id"].as_str().unwrap().to_owned();
    assert_eq!(srv.wait_ended(&id, 30).await["state"], "succeeded");
    let (_, ws) = srv.call(Method::GET, "/workers?pool_id=warm", None).await;
    assert_eq!(live(&ws).len(), 2, "the replacement came back as the same worker: {ws}");
}

/// `hodei workers drain ID`: the worker takes no new job, the job it runs finishes, then it is
/// terminated and its agent exits; a job submitted meanwhile runs on another worker.
#[tokio::test]
async fn a_drained_worker_finishes_its_job_takes_no_new_one_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, Some(REMOTE_POOL));
    let token = srv.join_token("remote");
    let mut w1 = WorkerProc::start(&srv.grpc, "remote", &token, 2);
    let gate = job_writable_dir();
    let gate_file = gate.path().join("go");
    let long = srv.submit(json!({"command": ["sh", "-c", format!("while [ ! -e {} ]; do sleep 0.05; done; echo finished", gate_file.display())]})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let running = srv.wait_for(&long, 20, |s| s == "running").await;
    let worker = running["worker_id"].as_str().unwrap().to_owned();
    let out = srv.cli(&["workers", "drain", &worker]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("draining"), "{}", String::from_utf8_lossy(&out.stdout));
    let (_, w) = srv.call(Method::GET, &format!("/workers/{worker}"), None).await;
    assert_eq!(w["state"], "draining");

    // A new job waits: the only worker is draining. Another worker takes it.
    let next = srv.submit(json!({"command": ["echo", "elsewhere"]})).await["id"].as_str().unwrap().to_owned();
    let _w2 = WorkerProc::start(&srv.grpc, "remote", &token, 1);
    let j = srv.wait_ended(&next, 30).await;
    assert_eq!(j["state"], "succeeded");
    assert_ne!(j["worker_id"].as_str(), Some(worker.as_str()), "the draining worker took a new job: {j}");

    std::fs::write(&gate_file, "").unwrap();
    let j = srv.wait_ended(&long, 30).await;
    assert_eq!((j["state"].as_str(), j["attempts"].as_array().unwrap().len()), (Some("succeeded"), 1), "the running job finished where it ran: {j}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = w1.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the drained agent did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "a drained agent exits 0: {status:?}");
    let (_, w) = srv.call(Method::GET, &format!("/workers/{worker}"), None).await;
    assert_eq!(w["state"], "terminated");
    let (s, p) = srv.call(Method::POST, &format!("/workers/{worker}/drain"), None).await;
    assert_eq!((s, p["code"].as_str(), p["state"].as_str()), (409, Some("invalid_state"), Some("terminated")), "{p}");
    let (s, _) = srv.call(Method::POST, "/workers/00000000-0000-0000-0000-000000000000/drain", None).await;
    assert_eq!(s, 404);
}

/// A pool created through the CLI (POST /pools): a worker joins with the token printed once and
/// runs the pool's jobs; the pool cannot be deleted while that worker lives; once it is drained
/// the pool is deleted and its token registers nothing more.
#[tokio::test]
async fn a_pool_created_through_the_api_takes_workers_and_is_deleted_once_drained() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    let out = srv.cli(&[
        "pools",
        "create",
        "farm",
        "--cpu-m",
        "2000",
        "--memory-mb",
        "1024",
        "--slots",
        "2",
        "--max-size",
        "4",
        "--label",
        "zone=b",
        "--allowed-tenant",
        "default",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(token.starts_with("hodei_"), "{token:?}");
    let mut w = WorkerProc::start(&srv.grpc, "farm", &token, 2);
    let id = srv.submit(json!({"command": ["echo", "on the farm"], "pool_selector": {"pool": "farm"}})).await["id"].as_str().unwrap().to_owned();
    let j = srv.wait_ended(&id, 30).await;
    assert_eq!((j["state"].as_str(), j["pool_id"].as_str()), (Some("succeeded"), Some("farm")), "{j}");
    // Selected by its label from the CLI: only its worker carries it.
    let out = srv.cli(&["submit", "--pool-label", "zone=b", "--wait", "--", "echo", "by label"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, jobs) = srv.call(Method::GET, "/jobs?limit=1", None).await;
    assert_eq!(jobs["items"][0]["pool_id"].as_str(), Some("farm"), "{jobs}");

    let out = srv.cli(&["pools", "delete", "farm"]);
    assert!(!out.status.success(), "deleted with a live worker");
    assert!(String::from_utf8_lossy(&out.stderr).contains("drain them first"), "{}", String::from_utf8_lossy(&out.stderr));
    let worker = j["worker_id"].as_str().unwrap();
    assert!(srv.cli(&["workers", "drain", worker]).status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the drained worker did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = srv.cli(&["pools", "delete", "farm"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, p) = srv.call(Method::GET, "/pools/farm", None).await;
    assert_eq!(p["state"], "destroyed");
    let refused = register_with(&srv.grpc, "farm", &token).await.expect_err("a deleted pool's token registers a worker");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
}

/// An agent killed with -9 leaves its job running; the agent restarted on the same spool ends
/// it (its attempt is run again, and must not go on beside the new run), and the job then
/// succeeds on its second attempt.
#[tokio::test]
async fn a_restarted_agent_ends_the_jobs_its_killed_predecessor_left_running() {
    let (dir, spool) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let srv = Server::start(dir.path(), &[], 0, Some(REMOTE_POOL));
    let mut first = spooling_worker(&srv, spool.path());
    let marks = job_writable_dir();
    let pid_file = marks.path().join("pid");
    let script = format!("if [ -e {p} ]; then exit 0; fi; echo $$ > {p}; exec sleep 60", p = pid_file.display());
    let id = srv.submit(json!({"command": ["sh", "-c", script]})).await["id"].as_str().unwrap().to_owned();
    srv.wait_for(&id, 20, |s| s == "running").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid: i32 = loop {
        if let Some(p) = std::fs::read_to_string(&pid_file).ok().and_then(|t| t.trim().parse().ok()) {
            break p;
        }
        assert!(Instant::now() < deadline, "the job did not write its pid");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    first.kill9();
    let alive = |p: i32| unsafe { libc::kill(p, 0) } == 0;
    assert!(alive(pid), "the job outlives its killed agent");
    let _second = spooling_worker(&srv, spool.path());
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive(pid) && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z ")) {
        assert!(Instant::now() < deadline, "the restarted agent left its predecessor's job running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let j = srv.wait_ended(&id, 30).await;
    assert_eq!((j["state"].as_str(), j["attempts"].as_array().unwrap().len()), (Some("succeeded"), 2), "{j}");
}

/// A dynamic local pool from 0: a queue builds → the `grow` policy adds a worker per cooldown
/// up to max_size (never above; at max the decision is `clamped`) → the jobs run → idle workers
/// are dropped after idle_timeout_s back to min_size (0). Manual scale outside min/max is 400,
/// inside it starts a worker at once; the history holds every decision with its reason.
#[tokio::test]
async fn a_dynamic_local_pool_scales_up_with_its_queue_and_down_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "autoscaling: { evaluation_interval_s: 1 }\nresource_pools:\n  pools:\n    - id: burst\n      type: dynamic\n      min_size: 0\n      max_size: 2\n      auto_scaling_enabled: true\n      idle_timeout_s: 1\n      worker_template: { cpu_m: 500, memory_mb: 256, slots: 1 }\n      scaling_policies:\n        - { name: grow, trigger: queue_depth > 0, action: scale_up, cooldown: 2s, window: 1s }\n";
    let srv = Server::start(dir.path(), &[], 0, Some(yaml));
    async fn status(srv: &Server) -> Value {
        srv.call(Method::GET, "/pools/burst/status", None).await.1
    }
    let st = status(&srv).await;
    assert_eq!((st["current_size"].as_u64(), st["desired_size"].as_u64()), (Some(0), Some(0)), "no worker before any job: {st}");
    assert!(local_agents(dir.path()).is_empty());

    let gate = job_writable_dir();
    let gate_file = gate.path().join("go");
    let mut ids = Vec::new();
    for i in 0..4 {
        let cmd = format!("while [ ! -e {g} ]; do sleep 0.05; done; echo {i} >> {d}/ran", g = gate_file.display(), d = gate.path().display());
        ids.push(srv.submit(json!({"command": ["sh", "-c", cmd], "resources": {"cpu_m": 500, "memory_mb": 128}})).await["id"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = status(&srv).await;
        assert!(st["desired_size"].as_u64() <= Some(2) && st["current_size"].as_u64() <= Some(2), "never above max_size: {st}");
        if st["current_size"].as_u64() == Some(2) && st["workers_by_state"]["busy"].as_u64() == Some(2) {
            break;
        }
        assert!(Instant::now() < deadline, "the pool did not grow to max_size: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two jobs still wait: the policy fires at max_size, and that is recorded as clamped.
    loop {
        let (_, h) = srv.call(Method::GET, "/pools/burst/scaling/history?decision=clamped", None).await;
        if let Some(e) = h["items"].as_array().unwrap().first() {
            assert_eq!((e["from_size"].as_u64(), e["to_size"].as_u64()), (Some(2), Some(2)), "{e}");
            assert!(e["reason"].as_str().unwrap().ends_with("already at max_size 2"), "{e}");
            break;
        }
        assert!(Instant::now() < deadline, "no clamped decision at max_size: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(&srv).await["current_size"].as_u64(), Some(2));
    let (_, m) = srv.call(Method::GET, "/pools/burst/metrics", None).await;
    assert_eq!(
        (m["busy_workers"].as_u64(), m["jobs_running"].as_u64(), m["queue_depth"].as_u64(), m["busy_ratio"].as_f64(), m["cpu_utilization"].as_f64()),
        (Some(2), Some(2), Some(2), Some(1.0), Some(100.0)),
        "{m}"
    );
    assert_eq!((m["capacity"]["cpu_m"].as_u64(), m["worker_reuse_ratio"].as_f64()), (Some(1000), Some(0.0)), "the workers were started for these jobs: {m}");
    assert!(m["allocation_latency_p95_ms"].as_u64().is_some() && m["cost_rate_micros_per_hour"].as_i64() > Some(0), "{m}");
    std::fs::write(&gate_file, "").unwrap();
    for id in &ids {
        assert_eq!(srv.wait_ended(id, 60).await["state"], "succeeded");
    }
    let mut ran: Vec<String> = std::fs::read_to_string(gate.path().join("ran")).unwrap().lines().map(str::to_owned).collect();
    ran.sort();
    assert_eq!(ran, ["0", "1", "2", "3"], "each job ran once");

    // Idle for idle_timeout_s: back to min_size, agents gone.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(status(&srv).await["current_size"].as_u64() == Some(0) && local_agents(dir.path()).is_empty()) {
        assert!(Instant::now() < deadline, "the idle pool did not shrink to 0: {}", status(&srv).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Manual scale: outside the bounds changes nothing; inside, a worker is started.
    let (s, e) = srv.call(Method::POST, "/pools/burst/scale", Some(json!({"target_size": 3}))).await;
    assert_eq!((s, e["errors"][0]["field"].as_str()), (400, Some("/target_size")), "{e}");
    let out = srv.cli(&["pools", "scale", "burst", "1", "--reason", "warm up for the demo"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&srv).await["current_size"].as_u64() != Some(1) {
        assert!(Instant::now() < deadline, "manual scale started no worker: {}", status(&srv).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (_, h) = srv.call(Method::GET, "/pools/burst/scaling/history?limit=500", None).await;
    let events: Vec<&Value> = h["items"].as_array().unwrap().iter().rev().collect();
    let ups: Vec<&&Value> = events.iter().filter(|e| e["source"] == "policy" && e["decision"] == "executed").collect();
    assert_eq!(ups.iter().map(|e| (e["from_size"].as_u64().unwrap(), e["to_size"].as_u64().unwrap())).collect::<Vec<_>>(), [(0, 1), (1, 2)], "{h}");
    assert_eq!(ups[0]["trigger"], "queue_depth > 0");
    assert!(ups[0]["reason"].as_str().unwrap().starts_with("queue_depth > 0: queue_depth = "), "{}", ups[0]);
    let at = |e: &Value| e["at"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
    assert!(at(ups[1]).duration_since(at(ups[0])) >= jiff::SignedDuration::from_secs(2), "the scale-up cooldown was respected: {h}");
    let reaped: u64 = events.iter().filter(|e| e["source"] == "idle_reaper").map(|e| e["from_size"].as_u64().unwrap() - e["to_size"].as_u64().unwrap()).sum();
    assert!(reaped >= 2, "idle workers were dropped by the idle reaper: {h}");
    let manual = events.iter().find(|e| e["source"] == "manual").expect("the manual scale is in the history");
    assert_eq!(
        (manual["to_size"].as_u64(), manual["reason"].as_str(), manual["actor"].as_str()),
        (Some(1), Some("warm up for the demo"), Some("admin")),
        "{manual}"
    );
    let metrics = srv.http_client.get(format!("{}/metrics", srv.metrics)).send().await.unwrap().text().await.unwrap();
    for line in [
        "hodei_autoscaler_decisions_total{pool=\"burst\",action=\"scale_up\",decision=\"executed\"} 2",
        "hodei_autoscaler_decisions_total{pool=\"burst\",action=\"scale_up\",decision=\"clamped\"} 1",
        "hodei_pool_max_size{pool=\"burst\"} 2",
        "hodei_pool_state{pool=\"burst\",state=\"destroyed\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{}", metrics.lines().filter(|l| l.contains("burst")).collect::<Vec<_>>().join("\n"));
    }
    let out = srv.cli(&["pools", "history", "burst", "--decision", "executed"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("idle_reaper") && text.contains("manual") && !text.contains("clamped"), "{text}");
}

/// A local pool created through the API: the server starts its workers when it needs them (a
/// policy given at creation), jobs selecting it run there, and after a restart it is still
/// there — selectable at submit, its agents started again.
#[tokio::test]
async fn a_local_pool_created_through_the_api_gets_workers_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("HODEI_AUTOSCALING__EVALUATION_INTERVAL_S", "1")];
    let mut srv = Server::start(dir.path(), &env, 0, None);
    let body = json!({"id": "made", "provider": "local", "type": "dynamic", "worker_template": {"cpu_m": 500, "memory_mb": 256, "slots": 2},
        "min_size": 0, "max_size": 2, "auto_scaling_enabled": true,
        "scaling_policies": [{"name": "grow", "trigger": "queue_depth > 0", "action": "scale_up", "cooldown_s": 1, "window_s": 1}]});
    let (s, p) = srv.call(Method::POST, "/pools", Some(body.clone())).await;
    assert_eq!((s, p["provider"].as_str(), p["scaling_policies"][0]["id"].as_str()), (201, Some("local"), Some("grow")), "{p}");
    let (s, e) = srv
        .call(
            Method::POST,
            "/pools",
            Some(json!({"id": "bad", "worker_template": {"cpu_m": 1, "memory_mb": 1, "slots": 1},
        "scaling_policies": [{"name": "x", "trigger": "queue_depth >", "action": "scale_up"}]})),
        )
        .await;
    assert_eq!((s, e["errors"][0]["field"].as_str()), (400, Some("/scaling_policies/0/trigger")), "{e}");
    let id = srv.submit(json!({"command": ["echo", "made here"], "pool_selector": {"pool": "made"}})).await["id"].as_str().unwrap().to_owned();
    let j = srv.wait_ended(&id, 60).await;
    assert_eq!((j["state"].as_str(), j["pool_id"].as_str()), (Some("succeeded"), Some("made")), "{j}");
    assert!(
        local_agents(dir.path()).iter().any(|(_, spool)| spool.file_name().unwrap().to_string_lossy().starts_with("made-")),
        "its agent runs on this machine"
    );

    unsafe { libc::kill(srv.child.id() as i32, libc::SIGTERM) };
    assert!(srv.child.wait().unwrap().success());
    let srv = Server::start(dir.path(), &env, 0, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, p) = srv.call(Method::GET, "/pools/made", None).await;
        assert_eq!(p["managed_by"], "api", "{p}");
        if p["state"] == "active" {
            break;
        }
        assert!(Instant::now() < deadline, "the pool is not active again after the restart: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = srv.submit(json!({"command": ["echo", "after restart"], "pool_selector": {"pool": "made"}})).await["id"].as_str().unwrap().to_owned();
    assert_eq!(srv.wait_ended(&id, 60).await["state"], "succeeded", "the pool is selectable and gets a worker after a restart");

    // Deleted with force while a job runs there and another waits for it: both cancelled, its
    // workers drained, then it is destroyed and its agents are gone.
    let running = srv.submit(json!({"command": ["sleep", "300"], "pool_selector": {"pool": "made"}})).await["id"].as_str().unwrap().to_owned();
    srv.wait_for(&running, 60, |s| s == "running").await;
    let waiting = srv.submit(json!({"command": ["true"], "pool_selector": {"pool": "made"}, "hold": true})).await["id"].as_str().unwrap().to_owned();
    let (s, e) = srv.call(Method::DELETE, "/pools/made", None).await;
    assert_eq!((s, e["code"].as_str()), (409, Some("invalid_state")), "without force a pool with jobs is kept: {e}");
    let (s, p) = srv.call(Method::DELETE, "/pools/made?force=true", None).await;
    assert_eq!((s, p["state"].as_str()), (202, Some("draining")), "{p}");
    for id in [&running, &waiting] {
        assert_eq!(srv.wait_ended(id, 60).await["state"], "cancelled");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, p) = srv.call(Method::GET, "/pools?state=destroyed", None).await;
        let agents = local_agents(dir.path()).into_iter().filter(|(_, s)| s.file_name().unwrap().to_string_lossy().starts_with("made-")).count();
        if p["items"].as_array().unwrap().iter().any(|p| p["id"] == "made") && agents == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the pool was not destroyed: {p}, {agents} agents left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, _) = srv.call(Method::POST, "/jobs", Some(json!({"command": ["true"], "pool_selector": {"pool": "made"}}))).await;
    assert_eq!(s, 422, "a destroyed pool runs nothing");
    let (_, h) = srv.call(Method::GET, "/pools/made/scaling/history", None).await;
    let reasons: Vec<&str> = h["items"].as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert!(reasons.iter().any(|r| r.starts_with("deleted with force by admin")) && reasons.contains(&"destroyed: its last worker is gone"), "{reasons:?}");
}

/// A worker's health is judged from what it measures at each heartbeat: a nearly full disk
/// makes it unhealthy (shown with the reason, counted in `hodei_workers_unhealthy`), and it is
/// healthy again once the disk has room.
#[tokio::test]
async fn a_worker_reporting_a_full_disk_is_unhealthy_until_it_has_room() {
    use hodei_proto::v1 as pb;
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    let mut client = pb::worker_service_client::WorkerServiceClient::connect(srv.grpc.clone()).await.unwrap();
    let reg = client
        .register_worker(pb::RegisterWorkerRequest {
            instance_name: "probe".into(),
            pool_id: "local".into(),
            resources: Some(pb::Resources { cpu_m: 1000, memory_mb: 1024, gpu: 0 }),
            slots: 1,
            join_token: srv.join_token("local"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let now_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let beat = |disk_free_mb: u64| pb::HeartbeatRequest {
        worker_id: reg.worker_id.clone(),
        session_token: reg.session_token.clone(),
        node: Some(pb::NodeStatus { disk_free_mb, disk_total_mb: 10_000, memory_available_mb: 4096, memory_total_mb: 8192, clock_unix_ms: now_ms() }),
        ..Default::default()
    };
    let health = |w: &Value| (w["health"].as_str().unwrap_or_default().to_owned(), w["health_reason"].as_str().unwrap_or_default().to_owned());
    let unhealthy_gauge = || async {
        let m = srv.http_client.get(format!("{}/metrics", srv.metrics)).send().await.unwrap().text().await.unwrap();
        m.lines().find(|l| l.starts_with("hodei_workers_unhealthy{pool=\"local\"}")).map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    client.heartbeat(beat(50)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, w) = srv.call(Method::GET, &format!("/workers/{}", reg.worker_id), None).await;
        if health(&w).0 == "unhealthy" && unhealthy_gauge().await.as_deref() == Some("1") {
            assert_eq!(health(&w).1, "disk 0.5% free (50 of 10000 MiB)", "{w}");
            break;
        }
        assert!(Instant::now() < deadline, "not unhealthy: {w}, gauge {:?}", unhealthy_gauge().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.heartbeat(beat(5_000)).await.unwrap();
    loop {
        let (_, w) = srv.call(Method::GET, &format!("/workers/{}", reg.worker_id), None).await;
        if health(&w) == ("healthy".to_owned(), String::new()) && unhealthy_gauge().await.as_deref() == Some("0") {
            break;
        }
        assert!(Instant::now() < deadline, "not healthy again: {w}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `cost_tracking.track_by_job: false` and `track_by_pool: false`: no cost record is kept by job
/// and nothing by pool, the rollups still add up to the jobs' own costs exactly; breakdowns by
/// job name or pool are refused, reports list no top jobs and no pools, and the pool cost
/// counter is not exported.
#[tokio::test]
async fn without_tracking_by_job_or_pool_costs_still_add_up_but_nothing_is_kept_by_them() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("HODEI_COST_TRACKING__TRACK_BY_JOB", "false"), ("HODEI_COST_TRACKING__TRACK_BY_POOL", "false")], 0, None);
    let mut sum = 0;
    for i in 0..3 {
        let id = srv.submit(json!({"command": ["true"], "resources": {"cpu_m": 500 + 100 * i}})).await["id"].as_str().unwrap().to_owned();
        let j = srv.wait_ended(&id, 20).await;
        assert!(j["state"] == "succeeded" && j["cost_micros"].as_i64() > Some(0), "a job still shows its own cost: {j}");
        sum += j["cost_micros"].as_i64().unwrap();
    }
    let (s, b) = srv.call(Method::GET, "/cost-optimization/breakdown?group_by=tenant&period=last_day", None).await;
    assert_eq!((s, b["total_cost_micros"].as_i64(), b["groups"][0]["attempts"].as_i64()), (200, Some(sum), Some(3)), "{b}");
    let (s, e) = srv.call(Method::GET, "/cost-optimization/breakdown?group_by=job_name", None).await;
    assert_eq!((s, e["errors"][0]["field"].as_str()), (400, Some("group_by")), "{e}");
    assert!(e["errors"][0]["message"].as_str().unwrap().contains("track_by_job"), "{e}");
    for q in ["group_by=pool", "pool_id=local"] {
        let (s, e) = srv.call(Method::GET, &format!("/cost-optimization/breakdown?{q}"), None).await;
        assert_eq!((s, e["errors"][0]["message"].as_str().map(|m| m.contains("track_by_pool"))), (400, Some(true)), "{q}: {e}");
    }
    let (s, e) = srv.call(Method::POST, "/cost-optimization/reports", Some(json!({"period": "last_day", "pool_id": "local"}))).await;
    assert_eq!((s, e["errors"][0]["field"].as_str()), (400, Some("/pool_id")), "{e}");
    let (s, r) = srv.call(Method::POST, "/cost-optimization/reports", Some(json!({"period": "last_day"}))).await;
    assert_eq!((s, r["total_cost_micros"].as_i64(), r["top_jobs"].as_array().map(Vec::len)), (201, Some(sum), Some(0)), "{r}");
    assert_eq!(r["breakdown"]["by_pool"], json!([]), "{r}");
    let metrics = srv.http_client.get(format!("{}/metrics", srv.metrics)).send().await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("hodei_pool_cost_micros_total"), "{metrics}");
    assert!(metrics.lines().any(|l| l == format!("hodei_tenant_cost_micros_total{{tenant=\"default\"}} {sum}")), "{metrics}");
}

/// The ledger through the binary: 20 jobs of `sleep 1` each cost exactly their billed seconds
/// × requested resources × the configured rates (re-derived here from the attempt's own
/// start and end), and the jobs' costs, the breakdown's total and
/// `hodei_tenant_cost_micros_total` are the same number to the micro-dollar.
#[tokio::test]
async fn twenty_jobs_cost_exactly_what_they_ran_and_every_total_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("HODEI_COST_TRACKING__HOURLY_RATE_CPU", "0.1234"), ("HODEI_COST_TRACKING__HOURLY_RATE_MEMORY_GB", "0.05")], 0, None);
    let mut ids = Vec::new();
    for i in 0..20 {
        let v = srv.submit(json!({"command": ["sleep", "1"], "resources": {"cpu_m": 100 + 20 * i, "memory_mb": 64 + i}})).await;
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let ms = |v: &Value| v.as_str().unwrap().parse::<jiff::Timestamp>().unwrap().as_millisecond();
    let mut sum = 0i64;
    for (i, id) in ids.iter().enumerate() {
        let j = srv.wait_ended(id, 60).await;
        assert_eq!(j["state"], "succeeded", "{j}");
        let a = &j["attempts"][0];
        let billed = ((ms(&a["finished_at"]) - ms(&a["started_at"])) as u64).div_ceil(1000).max(1);
        assert!(billed >= 1, "{a}");
        let (cpu, mem) = (100 + 20 * i as i128, 64 + i as i128);
        // round(s·(cpu_m·Rc·1024 + memory_mb·Rm·1000) / 3 686 400 000), half up.
        let num = billed as i128 * (cpu * 123_400 * 1024 + mem * 50_000 * 1000);
        let expected = ((num + 1_843_200_000) / 3_686_400_000) as i64;
        assert_eq!((a["billed_seconds"].as_u64(), a["cost_micros"].as_i64()), (Some(billed), Some(expected)), "{a}");
        assert_eq!(j["cost_micros"].as_i64(), Some(expected), "{j}");
        sum += expected;
    }
    let (_, list) = srv.call(Method::GET, "/jobs?limit=50", None).await;
    let listed: i64 = list["items"].as_array().unwrap().iter().map(|j| j["cost_micros"].as_i64().unwrap()).sum();
    assert_eq!(listed, sum, "list views carry each job's cost");
    let (s, b) = srv.call(Method::GET, "/cost-optimization/breakdown?group_by=tenant&period=last_day", None).await;
    assert_eq!((s, b["total_cost_micros"].as_i64(), b["groups"][0]["key"].as_str()), (200, Some(sum), Some("default")), "{b}");
    assert_eq!(b["groups"][0]["attempts"].as_i64(), Some(20), "{b}");
    let (_, by_pool) = srv.call(Method::GET, "/cost-optimization/breakdown?group_by=pool", None).await;
    assert_eq!(by_pool["total_cost_micros"].as_i64(), Some(sum), "{by_pool}");
    let (_, by_name) = srv.call(Method::GET, "/cost-optimization/breakdown?group_by=job_name&period=last_day", None).await;
    assert_eq!((by_name["total_cost_micros"].as_i64(), by_name["groups"][0]["key"].as_str()), (Some(sum), Some("sleep")), "{by_name}");
    let metrics = srv.http_client.get(format!("{}/metrics", srv.metrics)).send().await.unwrap().text().await.unwrap();
    let line = format!("hodei_tenant_cost_micros_total{{tenant=\"default\"}} {sum}");
    assert!(metrics.lines().any(|l| l == line), "{line} in:\n{}", metrics.lines().filter(|l| l.contains("cost")).collect::<Vec<_>>().join("\n"));
    let out = srv.cli(&["costs", "--group-by", "pool"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("local") && text.contains(&format!("{}.{:06} USD", sum / 1_000_000, sum % 1_000_000)), "{text}");
    // A report of the same day agrees to the micro-dollar, and lists the most costly jobs.
    let (s, r) = srv.call(Method::POST, "/cost-optimization/reports", Some(json!({"period": "last_day"}))).await;
    assert_eq!((s, r["total_cost_micros"].as_i64()), (201, Some(sum)), "{r}");
    assert_eq!(r["breakdown"]["by_pool"][0]["cost_micros"].as_i64(), Some(sum), "{r}");
    let top: Vec<i64> = r["top_jobs"].as_array().unwrap().iter().map(|j| j["cost_micros"].as_i64().unwrap()).collect();
    let (_, jobs) = srv.call(Method::GET, "/jobs?limit=50", None).await;
    let mut costs: Vec<i64> = jobs["items"].as_array().unwrap().iter().map(|j| j["cost_micros"].as_i64().unwrap()).collect();
    costs.sort_by_key(|c| std::cmp::Reverse(*c));
    assert_eq!(top, costs[..10], "the ten most costly jobs, most costly first");
    assert!(r["forecast_period_end_micros"].as_i64().unwrap() >= sum, "{r}");
    let id = r["id"].as_str().unwrap();
    let (s, again) = srv.call(Method::GET, &format!("/cost-optimization/reports/{id}"), None).await;
    assert_eq!((s, &again), (200, &r), "stored as made");
    let (_, listed) = srv.call(Method::GET, "/cost-reports?tenant_id=default", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 0, "a report of every tenant is not one tenant's: {listed}");
    let (_, all) = srv.call(Method::GET, "/cost-optimization/reports", None).await;
    assert_eq!(all["items"][0]["id"].as_str(), Some(id), "{all}");
    let (s, e) = srv.call(Method::POST, "/cost-optimization/reports", Some(json!({"period": "fortnight"}))).await;
    assert_eq!((s, e["errors"][0]["field"].as_str()), (400, Some("/period")), "{e}");
    let out = srv.cli(&["reports", "create", "--period", "last_day", "--tenant", "default"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("total:    {}.{:06} USD", sum / 1_000_000, sum % 1_000_000)) && text.contains("TOP JOB"), "{text}");
    let (_, mine) = srv.call(Method::GET, "/cost-reports?tenant_id=default", None).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1, "{mine}");
}

/// Rate versions: an admin's new rates price what runs from then on; a restart keeps them; an
/// edit of the configuration file's rates is recorded as a version of its own from that start.
#[tokio::test]
async fn new_rates_apply_from_their_instant_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    let (_, r) = srv.call(Method::GET, "/cost-rates", None).await;
    assert_eq!((r["current"]["hourly_rate_cpu"].as_str(), r["versions"].as_array().map(Vec::len)), (Some("0.050000"), Some(1)), "{r}");
    let (s, e) = srv.call(Method::PUT, "/cost-rates", Some(json!({"hourly_rate_cpu": "0.1234567"}))).await;
    assert_eq!((s, e["errors"][0]["field"].as_str()), (400, Some("/hourly_rate_cpu")), "{e}");
    let (s, r) = srv.call(Method::PUT, "/cost-rates", Some(json!({"hourly_rate_cpu": 3.6, "hourly_rate_memory_gb": "0"}))).await;
    assert_eq!((s, r["current"]["hourly_rate_cpu"].as_str(), r["current"]["hourly_rate_gpu"].as_str()), (200, Some("3.600000"), Some("2.500000")), "{r}");
    // 1000 m for b billed seconds at 3.6 per core-hour: exactly 1000 micros a second.
    let id = srv.submit(json!({"command": ["sleep", "1"], "resources": {"cpu_m": 1000, "memory_mb": 64}})).await["id"].as_str().unwrap().to_owned();
    let j = srv.wait_ended(&id, 30).await;
    let a = &j["attempts"][0];
    assert_eq!(a["cost_micros"].as_i64(), a["billed_seconds"].as_i64().map(|b| b * 1000), "{a}");
    drop(srv);
    let srv = Server::start(dir.path(), &[], 0, None);
    let (_, r) = srv.call(Method::GET, "/cost-rates", None).await;
    assert_eq!(
        (r["current"]["hourly_rate_cpu"].as_str(), r["versions"].as_array().map(Vec::len)),
        (Some("3.600000"), Some(2)),
        "the admin's version stays: {r}"
    );
    drop(srv);
    let srv = Server::start(dir.path(), &[("HODEI_COST_TRACKING__HOURLY_RATE_CPU", "0.07")], 0, None);
    let (_, r) = srv.call(Method::GET, "/cost-rates", None).await;
    let sources: Vec<&str> = r["versions"].as_array().unwrap().iter().map(|v| v["source"].as_str().unwrap()).collect();
    assert_eq!((r["current"]["hourly_rate_cpu"].as_str(), sources), (Some("0.070000"), vec!["config", "api", "config"]), "{r}");
}

/// Budgets through the binary: once a tenant has spent its budget its new jobs are held
/// `budget_exhausted` (explain says so) while a job already running finishes and is billed;
/// with `reject` submits are 402; a larger amount releases the held job, which then runs.
#[tokio::test]
async fn a_spent_budget_holds_new_jobs_never_kills_running_ones_and_a_larger_one_releases_them() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    let (s, b) = srv.call(Method::POST, "/budgets", Some(json!({"tenant_id": "default", "amount": "0.000020", "period": "daily"}))).await;
    assert_eq!((s, b["state"].as_str(), b["on_exhausted"].as_str()), (201, Some("ok"), Some("hold")), "{b}");
    let budget = b["id"].as_str().unwrap().to_owned();
    let (s, e) = srv.call(Method::POST, "/budgets", Some(json!({"tenant_id": "default", "amount": "-1"}))).await;
    assert_eq!((s, e["errors"][0]["field"].as_str()), (400, Some("/amount")), "{e}");
    // ≈ 14.6 micro-dollars a second each at the default rates: the short one alone spends it.
    let res = json!({"cpu_m": 1000, "memory_mb": 256});
    let long = srv.submit(json!({"command": ["sleep", "4"], "resources": res})).await["id"].as_str().unwrap().to_owned();
    let short = srv.submit(json!({"command": ["sleep", "1"], "resources": res})).await["id"].as_str().unwrap().to_owned();
    srv.wait_ended(&short, 30).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, b) = srv.call(Method::GET, &format!("/budgets/{budget}"), None).await;
        if b["state"] == "exhausted" {
            break;
        }
        assert!(Instant::now() < deadline, "never exhausted: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let late = loop {
        let v = srv.submit(json!({"command": ["echo", "later"]})).await;
        if v["state"] == "held" {
            break v;
        }
        // The watcher tells the scheduler within a second of the spend.
        assert!(Instant::now() < deadline, "a new job was not held: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(late["state_reason"], "budget_exhausted", "{late}");
    let late = late["id"].as_str().unwrap().to_owned();
    let (_, why) = srv.call(Method::GET, &format!("/jobs/{late}/explain"), None).await;
    assert_eq!(why["blocking_reasons"][0]["code"].as_str(), Some("budget_exhausted"), "{why}");
    // Each threshold fired once, however many rounds the watcher ran since.
    let (_, alerts) = srv.call(Method::GET, "/alerts?kind=budget_threshold", None).await;
    let mut fired: Vec<(String, String)> = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (a["message"].as_str().unwrap().split(" % ").next().unwrap().rsplit(' ').next().unwrap().to_owned(), a["severity"].as_str().unwrap().to_owned())
        })
        .collect();
    fired.sort_by_key(|f| f.0.parse::<u32>().unwrap());
    let want = [("80", "warning"), ("90", "critical"), ("100", "critical")].map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(fired, want, "{alerts}");
    let first = alerts["items"][0]["id"].as_str().unwrap().to_owned();
    let (s, a) = srv.call(Method::POST, &format!("/alerts/{first}/ack"), None).await;
    assert_eq!((s, a["state"].as_str(), a["acknowledged_by"].as_str()), (200, Some("acknowledged"), Some("admin")), "{a}");
    let (s, _) = srv.call(Method::POST, &format!("/alerts/{first}/ack"), None).await;
    assert_eq!(s, 409, "only a firing alert is acknowledged");
    let j = srv.wait_ended(&long, 30).await;
    assert_eq!(j["state"], "succeeded", "the running job was not stopped: {j}");
    assert!(j["cost_micros"].as_i64().unwrap() > 0, "and it was billed: {j}");
    // Reject: submits are refused with 402 while it is spent.
    let (s, _) = srv.call(Method::PUT, &format!("/budgets/{budget}"), Some(json!({"on_exhausted": "reject"}))).await;
    assert_eq!(s, 200);
    loop {
        let (s, e) = srv.call(Method::POST, "/jobs", Some(json!({"command": ["true"]}))).await;
        if s == 402 {
            assert_eq!(e["code"], "budget_exhausted", "{e}");
            break;
        }
        assert!(Instant::now() < deadline, "submits not refused: {s} {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A larger amount releases the held job and lets submits in again.
    let (s, b) = srv.call(Method::PUT, &format!("/budgets/{budget}"), Some(json!({"amount": "1000"}))).await;
    assert_eq!((s, b["state"].as_str()), (200, Some("ok")), "{b}");
    let j = srv.wait_ended(&late, 30).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    let (s, _) = srv.call(Method::POST, "/jobs", Some(json!({"command": ["true"]}))).await;
    assert_eq!(s, 201);
    let out = srv.cli(&["budgets"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("daily") && text.contains("1000.000000 USD") && text.contains(" ok "), "{text}");
    // Below every threshold again: its alerts are resolved.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, open) = srv.call(Method::GET, "/alerts?state=firing", None).await;
        if open["items"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "alerts not resolved: {open}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = srv.http_client.get(format!("{}/metrics", srv.metrics)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "hodei_alerts_firing{kind=\"budget_threshold\",severity=\"critical\"} 0"), "{metrics}");
    let out = srv.cli(&["alerts", "--state", "resolved"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().filter(|l| l.contains("budget_threshold") && l.contains("resolved")).count(), 3, "{text}");
}

/// A running job is billed as it runs (`cost_tracking.accrual_interval_s`): its cost and the
/// breakdown grow before it ends, and at its end the parts add up to its whole billed time.
#[tokio::test]
async fn a_running_job_is_billed_as_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("HODEI_COST_TRACKING__ACCRUAL_INTERVAL_S", "1")], 0, None);
    let id = srv.submit(json!({"command": ["sleep", "4"], "resources": {"cpu_m": 1000, "memory_mb": 256}})).await["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = srv.job(&id).await;
        assert!(j["state"] != "succeeded", "ended before any accrual was seen: {j}");
        let (_, b) = srv.call(Method::GET, "/cost-optimization/breakdown?period=last_day", None).await;
        if j["state"] == "running" && j["cost_micros"].as_i64() > Some(0) && b["total_cost_micros"].as_i64() == j["cost_micros"].as_i64() {
            break;
        }
        assert!(Instant::now() < deadline, "no cost while running: {j} {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let j = srv.wait_ended(&id, 30).await;
    let a = &j["attempts"][0];
    let ms = |v: &Value| v.as_str().unwrap().parse::<jiff::Timestamp>().unwrap().as_millisecond();
    let billed = ((ms(&a["finished_at"]) - ms(&a["started_at"])) as u64).div_ceil(1000);
    assert_eq!(a["billed_seconds"].as_u64(), Some(billed), "the parts add up to the whole run: {a}");
    let (_, b) = srv.call(Method::GET, "/cost-optimization/breakdown?period=last_day", None).await;
    assert_eq!(b["total_cost_micros"].as_i64(), j["cost_micros"].as_i64(), "{b} {j}");
}

/// Usage (SPEC §8.7): a job that holds 200 MiB and keeps one core busy for 3 s shows it — its
/// samples while it runs, its summary once it ended — through the API and `hodei jobs usage`.
#[tokio::test]
async fn a_jobs_cpu_and_memory_are_sampled_while_it_runs_and_summed_up_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("HODEI_WORKERS__USAGE_SAMPLE_INTERVAL_MS", "200")], 0, None);
    let burn = "import time\nb = b'a' * (200 << 20)\nt = time.time() + 3\nwhile time.time() < t: pass\n";
    let job = srv.submit(json!({"command": ["python3", "-c", burn], "resources": {"cpu_m": 1000, "memory_mb": 1024}})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    // Points arrive while it runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, u) = srv.call(Method::GET, &format!("/jobs/{id}/usage"), None).await;
        let points = u["attempts"][0]["points"].as_array().map_or(0, Vec::len);
        if points >= 3 && u["attempts"][0]["summary"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "no samples while it ran: {u}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let j = srv.wait_ended(&id, 30).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    // The summary is written with the next flush of usage (every 2 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    let u = loop {
        let (s, u) = srv.call(Method::GET, &format!("/jobs/{id}/usage"), None).await;
        assert_eq!(s, 200);
        if !u["attempts"][0]["summary"].is_null() {
            break u;
        }
        assert!(Instant::now() < deadline, "no summary: {u}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (_, j) = srv.call(Method::GET, &format!("/jobs/{id}"), None).await;
    let a = &u["attempts"][0];
    let sum = &a["summary"];
    let n = |v: &Value| v.as_f64().unwrap_or(-1.0);
    let within = |v: f64, want: f64| (v - want).abs() <= want * 0.1;
    assert!(within(n(&sum["memory_peak_mb"]), 200.0), "peak memory ≈ 200 MiB: {sum}");
    let sampled_peak = a["points"].as_array().unwrap().iter().map(|p| n(&p["memory_mb"])).fold(0.0, f64::max);
    assert!(within(sampled_peak, 200.0), "the samples saw it too: {a}");
    // The average is the process accounting's, exact; the samples agree with it. (How close to
    // a whole core it gets depends on what else this machine runs.)
    let attempt = &j["attempts"][0];
    let ms = |v: &Value| v.as_str().unwrap().parse::<jiff::Timestamp>().unwrap().as_millisecond();
    let run_ms = (ms(&attempt["finished_at"]) - ms(&attempt["started_at"])) as f64;
    assert!(within(n(&sum["cpu_avg_m"]), n(&attempt["cpu_time_ms"]) * 1000.0 / run_ms), "{sum} vs {attempt}");
    assert!(n(&sum["cpu_avg_m"]) >= 500.0, "a busy loop: {sum}");
    let points = a["points"].as_array().unwrap();
    let sampled_avg = points.iter().map(|p| n(&p["cpu_m"]) * n(&p["samples"])).sum::<f64>() / points.iter().map(|p| n(&p["samples"])).sum::<f64>();
    assert!((sampled_avg - n(&sum["cpu_avg_m"])).abs() <= 150.0, "sampled {sampled_avg} vs accounted {sum}");
    assert!(n(&sum["samples"]) >= 5.0, "{sum}");
    assert_eq!(attempt["usage"], *sum, "the attempt's view carries its summary");
    let out = srv.cli(&["jobs", "usage", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("attempt 1 (succeeded)") && text.contains("memory ") && text.contains('█'), "{text}");
    let (s, e) = srv.call(Method::GET, &format!("/jobs/{id}/usage?attempt=7"), None).await;
    assert_eq!((s, e["code"].as_str()), (400, Some("validation_failed")), "{e}");
}

/// Budget-aware fair share: a tenant that has spent more of its weekly budget than the week
/// has elapsed waits with its fair-share weight lowered by (1 − spent)/(1 − elapsed), shown by
/// `explain` and `hodei_budget_fair_share_factor`, and so starts a third of the jobs of a full
/// one-slot pool against half; with `fair_share_demotion: false`, never.
#[tokio::test]
async fn a_tenant_ahead_of_its_budgets_pace_waits_with_a_lower_fair_share_weight() {
    for demotion in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let flag = demotion.to_string();
        let env = [("HODEI_BUDGETS__FAIR_SHARE_DEMOTION", flag.as_str())];
        // The first jobs are billed in `paid`; what runs after in `free` costs nothing, so the
        // spending (and the factor) stays where the test put it whatever the day of the week
        // (late in a period, a little more spending would exhaust the budget and hold the jobs).
        let pool = |id: &str, rates: &str| {
            format!(
                "    - id: {id}\n      provider: local\n      worker_template: {{ cpu_m: 1000, memory_mb: 1024, slots: 1 }}\n      min_size: 1\n      max_size: 1\n{rates}"
            )
        };
        let yaml = format!(
            "resource_pools:\n  pools:\n{}{}",
            pool("paid", ""),
            pool("free", "      cost_rates: { hourly_rate_cpu: 0, hourly_rate_memory_gb: 0, hourly_rate_gpu: 0 }\n")
        );
        let srv = Server::start(dir.path(), &env, 0, Some(&yaml));
        let free = json!({"pool": "free"});
        // Two tenants alike in all but their budget: the same first job each.
        let mut firsts = Vec::new();
        for t in ["spender", "saver"] {
            let (s, _) = srv.call(Method::POST, "/tenants", Some(json!({"id": t, "name": t}))).await;
            assert_eq!(s, 201);
            let first = srv
                .submit(json!({"command": ["sleep", "1"], "tenant_id": t, "resources": {"cpu_m": 1000, "memory_mb": 256}, "expected_duration_ms": 1000, "pool_selector": {"pool": "paid"}}))
                .await;
            firsts.push(first["id"].as_str().unwrap().to_owned());
        }
        let spent = srv.wait_ended(&firsts[0], 30).await["cost_micros"].as_i64().unwrap();
        srv.wait_ended(&firsts[1], 30).await;
        // An amount that puts the factor at one half now: s = 1 − (1 − e)/2.
        let now = jiff::Timestamp::now().as_millisecond();
        let week = 7 * 86_400_000i64;
        let monday = (now.div_euclid(86_400_000) - (now.div_euclid(86_400_000) + 3).rem_euclid(7)) * 86_400_000;
        let e = (now - monday) as f64 / week as f64;
        let amount = (spent as f64 / (1.0 - (1.0 - e) / 2.0)).round() as i64;
        let body =
            json!({"tenant_id": "spender", "amount": format!("{}.{:06}", amount / 1_000_000, amount % 1_000_000), "period": "weekly", "thresholds_pct": [100]});
        let (s, b) = srv.call(Method::POST, "/budgets", Some(body)).await;
        assert_eq!(s, 201, "{b}");
        // The whole pool busy, so the tenant's next job waits in the queue.
        let blocker = srv.submit(json!({"command": ["sleep", "30"], "pool_selector": free})).await["id"].as_str().unwrap().to_owned();
        srv.wait_for(&blocker, 20, |s| s == "running").await;
        let waiting = srv.submit(json!({"command": ["true"], "tenant_id": "spender", "expected_duration_ms": 1000, "pool_selector": free})).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        let factor = loop {
            let (_, why) = srv.call(Method::GET, &format!("/jobs/{waiting}/explain"), None).await;
            let f = why["fair_share"]["budget_factor"].as_f64().unwrap_or(-1.0);
            if !demotion || (0.4..=0.6).contains(&f) {
                break f;
            }
            assert!(Instant::now() < deadline, "no demotion: {why}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let metrics = srv.http_client.get(format!("{}/metrics", srv.metrics)).send().await.unwrap().text().await.unwrap();
        let line = metrics.lines().find(|l| l.starts_with("hodei_budget_fair_share_factor{tenant=\"spender\"}")).unwrap_or("").to_owned();
        if demotion {
            let m: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!((m - factor).abs() < 0.05, "{line} vs {factor}");
        } else {
            // Give the watcher a round to (not) act, then look again.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let (_, why) = srv.call(Method::GET, &format!("/jobs/{waiting}/explain"), None).await;
            assert_eq!(why["fair_share"]["budget_factor"].as_f64(), Some(1.0), "{why}");
            assert!(line.is_empty() || line.ends_with(" 1"), "{line}");
        }
        // The share it gets: 30 short jobs of each tenant queue behind the blocker, all with
        // the same expected duration (so each dispatch charges the same); once it is gone
        // they run one at a time, and the order they started in is the fair queue's.
        let mut queued = vec![(waiting.clone(), true)];
        let also = srv.submit(json!({"command": ["true"], "tenant_id": "saver", "expected_duration_ms": 1000, "pool_selector": free})).await;
        queued.push((also["id"].as_str().unwrap().to_owned(), false));
        for _ in 0..30 {
            for (tenant, mine) in [("spender", true), ("saver", false)] {
                let v = srv.submit(json!({"command": ["true"], "tenant_id": tenant, "expected_duration_ms": 1000, "pool_selector": free})).await;
                queued.push((v["id"].as_str().unwrap().to_owned(), mine));
            }
        }
        let (s, _) = srv.call(Method::POST, &format!("/jobs/{blocker}/cancel"), None).await;
        assert!(s == 200 || s == 202);
        let ms = |v: &Value| v.as_str().unwrap().parse::<jiff::Timestamp>().unwrap().as_millisecond();
        let mut started = Vec::new();
        for (id, mine) in &queued {
            let j = srv.wait_ended(id, 60).await;
            started.push((ms(&j["attempts"][0]["started_at"]), *mine));
        }
        started.sort();
        let spenders = started[..30].iter().filter(|(_, mine)| *mine).count();
        // Weights 1 : 2 → a third of the first 30; 1 : 1 → half.
        let want = if demotion { 9..=11 } else { 14..=16 };
        assert!(want.contains(&spenders), "the spender started {spenders} of the first 30 (demotion {demotion})");
    }
}

/// Recommendations (SPEC §8.8) from what runs measured: idle runs of a job name asking for a
/// whole core are told to ask for 100 m, one that ran out of memory is told to ask for more,
/// and a name with fewer runs than `optimization.min_runs` (2 here) gets nothing.
#[tokio::test]
async fn recommendations_come_from_the_measured_runs_of_a_job_name() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("HODEI_WORKERS__USAGE_SAMPLE_INTERVAL_MS", "200"), ("HODEI_OPTIMIZATION__MIN_RUNS", "2")], 0, None);
    let mut ids = Vec::new();
    for _ in 0..5 {
        let v = srv.submit(json!({"name": "nightly", "command": ["sleep", "1"], "resources": {"cpu_m": 1000, "memory_mb": 64}})).await;
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    for _ in 0..2 {
        let hog = json!({"name": "hungry", "command": sh("x=$(head -c 300000000 /dev/zero | tr '\\0' a); sleep 30"), "resources": {"cpu_m": 1000, "memory_mb": 64}, "max_retries": 0});
        ids.push(srv.submit(hog).await["id"].as_str().unwrap().to_owned());
    }
    let once = srv.submit(json!({"name": "rare", "command": ["sleep", "1"], "resources": {"cpu_m": 1000}})).await;
    ids.push(once["id"].as_str().unwrap().to_owned());
    for id in &ids {
        srv.wait_ended(id, 60).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let recs = loop {
        let (s, r) = srv.call(Method::GET, "/cost-optimization/recommendations", None).await;
        assert_eq!(s, 200, "{r}");
        if r["items"].as_array().unwrap().len() >= 2 {
            break r;
        }
        assert!(Instant::now() < deadline, "no recommendations: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let items = recs["items"].as_array().unwrap();
    let got: Vec<(&str, &str, u64, u64)> = items
        .iter()
        .map(|i| (i["kind"].as_str().unwrap(), i["target"].as_str().unwrap(), i["current"].as_u64().unwrap(), i["suggested"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, [("job_reduce_cpu", "default/nightly", 1000, 100), ("job_increase_memory", "default/hungry", 64, 256)], "{recs}");
    assert_eq!((items[0]["evidence"]["runs"].as_u64(), items[1]["evidence"]["ooms"].as_u64()), (Some(5), Some(2)), "{recs}");
    assert!(items[0]["estimated_monthly_savings_micros"].as_i64().unwrap() > 0 && items[1]["estimated_monthly_savings_micros"].as_i64().unwrap() < 0);
    assert_eq!(recs["potential_savings_micros"], items[0]["estimated_monthly_savings_micros"]);
    let (_, only) = srv.call(Method::GET, "/cost-optimization/recommendations?kind=job_increase_memory&tenant_id=default", None).await;
    assert_eq!(only["items"].as_array().unwrap().len(), 1, "{only}");
    let (s, e) = srv.call(Method::GET, "/cost-optimization/recommendations?kind=shrink", None).await;
    assert_eq!((s, e["errors"][0]["field"].as_str()), (400, Some("kind")), "{e}");
    let out = srv.cli(&["recommendations"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("job_reduce_cpu") && text.contains("1000 → 100 m") && text.contains("default/nightly"), "{text}");
}

/// A pool's own `cost_rates` price what runs there; the rates it leaves out, and the other
/// pools, follow the global ones.
#[tokio::test]
async fn a_pool_with_its_own_cpu_rate_bills_its_jobs_at_it() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "resource_pools:\n  pools:\n    - id: premium\n      type: static\n      provider: local\n      worker_template: { cpu_m: 1000, memory_mb: 1024, slots: 1 }\n      min_size: 1\n      max_size: 1\n      cost_rates: { hourly_rate_cpu: 3.6 }\n    - id: standard\n      type: static\n      provider: local\n      worker_template: { cpu_m: 1000, memory_mb: 1024, slots: 1 }\n      min_size: 1\n      max_size: 1\n";
    let srv = Server::start(dir.path(), &[], 0, Some(yaml));
    let res = json!({"cpu_m": 1000, "memory_mb": 1024});
    let premium = srv.submit(json!({"command": ["sleep", "1"], "resources": res, "pool_selector": {"pool": "premium"}})).await;
    let plain = srv.submit(json!({"command": ["sleep", "1"], "resources": res, "pool_selector": {"pool": "standard"}})).await;
    let ms = |v: &Value| v.as_str().unwrap().parse::<jiff::Timestamp>().unwrap().as_millisecond();
    for (job, cpu_rate) in [(premium, 3_600_000i128), (plain, 50_000)] {
        let j = srv.wait_ended(job["id"].as_str().unwrap(), 30).await;
        let a = &j["attempts"][0];
        assert_eq!(a["pool_id"].as_str(), Some(if cpu_rate == 50_000 { "standard" } else { "premium" }), "{a}");
        let billed = ((ms(&a["finished_at"]) - ms(&a["started_at"])) as u64).div_ceil(1000).max(1) as i128;
        let want = ((billed * (1000 * cpu_rate * 1024 + 1024 * 10_000 * 1000) + 1_843_200_000) / 3_686_400_000) as i64;
        assert_eq!(j["cost_micros"].as_i64(), Some(want), "{j}");
    }
    // A pool's cost rate an hour is priced at its own rates too: one worker of 1 core, 1 GiB.
    for (pool, want) in [("premium", 3_610_000), ("standard", 60_000)] {
        let (_, m) = srv.call(Method::GET, &format!("/pools/{pool}/metrics"), None).await;
        assert_eq!(m["cost_rate_micros_per_hour"].as_i64(), Some(want), "{pool}: {m}");
    }
}

/// GPU use through the vendor's tool: with an `nvidia-smi` on the worker's PATH (a stand-in
/// here that reports 4 % and 512 MiB for the job's processes — no GPU on this machine), a GPU
/// job's samples carry it, its summary averages it, and two runs that barely used their GPU are
/// told to drop it.
#[tokio::test]
async fn gpu_use_reported_by_nvidia_smi_is_sampled_and_an_idle_gpu_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let tool = bin.join("nvidia-smi");
    std::fs::write(
        &tool,
        "#!/bin/sh\n[ \"$1\" = pmon ] || exit 2\necho '# gpu         pid   type     sm    mem    enc    dec     fb   command'\necho '# Idx           #    C/G      %      %      %      %     MB   name'\nfor pid in $(pgrep -f gpu-job-marker); do echo \"    0 $pid     C      4      1      -      -    512   python\"; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let yaml = "resource_pools:\n  pools:\n    - id: gpus\n      type: static\n      provider: local\n      worker_template: { cpu_m: 2000, memory_mb: 2048, gpu: 1, slots: 2 }\n      min_size: 1\n      max_size: 1\n";
    let env = [("PATH", path.as_str()), ("HODEI_WORKERS__USAGE_SAMPLE_INTERVAL_MS", "200"), ("HODEI_OPTIMIZATION__MIN_RUNS", "2")];
    let srv = Server::start(dir.path(), &env, 0, Some(yaml));
    let mut ids = Vec::new();
    for _ in 0..2 {
        let job = json!({"name": "trainer", "command": ["sh", "-c", "sleep 1.5", "gpu-job-marker"], "resources": {"cpu_m": 100, "gpu": 1}, "pool_selector": {"pool": "gpus"}});
        ids.push(srv.submit(job).await["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        assert_eq!(srv.wait_ended(id, 30).await["state"], "succeeded");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let recs = loop {
        let (_, r) = srv.call(Method::GET, "/cost-optimization/recommendations", None).await;
        if !r["items"].as_array().unwrap().is_empty() {
            break r;
        }
        assert!(Instant::now() < deadline, "no recommendation: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let item = &recs["items"][0];
    assert_eq!(
        (item["kind"].as_str(), item["target"].as_str(), item["current"].as_u64(), item["suggested"].as_u64(), item["evidence"]["gpu_avg_pct"].as_u64()),
        (Some("job_drop_gpu"), Some("default/trainer"), Some(1), Some(0), Some(4)),
        "{recs}"
    );
    assert_eq!(recs["items"].as_array().unwrap().len(), 1, "{recs}");
    let (_, u) = srv.call(Method::GET, &format!("/jobs/{}/usage", ids[0]), None).await;
    let a = &u["attempts"][0];
    // Sampled more than once (a loaded machine may space samples out well past 200 ms).
    assert!(a["summary"]["gpu_samples"].as_u64().unwrap() >= 2, "{u}");
    assert_eq!(a["summary"]["gpu_avg_pct"].as_u64(), Some(4), "{u}");
    assert!(a["points"].as_array().unwrap().iter().any(|p| p["gpu_memory_mb"] == 512), "{u}");
}
