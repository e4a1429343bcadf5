//! Black-box tests of multi-tenant scheduling: fair share, quotas, explain and ETA, through the
//! real binary with real workers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// One built-in worker with `slots` slots.
fn one_worker(slots: &str) -> Vec<(&'static str, &str)> {
    vec![("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__WORKERS", "1"), ("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__SLOTS", slots)]
}

async fn tenant(srv: &Server, id: &str, weight: u32, quota: Value) {
    let (s, t) = srv.call(Method::POST, "/tenants", Some(json!({"id": id, "name": id, "weight": weight, "quota": quota}))).await;
    assert_eq!(s, 201, "{t}");
}

async fn count(srv: &Server, tenant: &str, state: &str) -> usize {
    let (_, page) = srv.call(Method::GET, &format!("/jobs?tenant_id={tenant}&state={state}&limit=500"), None).await;
    page["items"].as_array().map_or(0, Vec::len)
}

fn millis(rfc3339: &str) -> i64 {
    rfc3339.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

#[tokio::test]
async fn weights_one_and_three_get_a_quarter_and_three_quarters_of_a_saturated_pool() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &one_worker("4"), 0, None);
    let roomy = json!({"cpu_m": 100_000, "memory_mb": 1_000_000, "max_concurrent_jobs": 100, "max_queued_jobs": 10_000});
    tenant(&srv, "light", 1, roomy.clone()).await;
    tenant(&srv, "heavy", 3, roomy).await;
    // Both tenants' jobs arrive in one batch, so both are backlogged from the first dispatch.
    let jobs: Vec<Value> = (0..800)
        .map(|i| {
            let t = if i % 2 == 0 { "light" } else { "heavy" };
            json!({"command": ["sleep", "0.05"], "tenant_id": t, "resources": {"cpu_m": 100, "memory_mb": 16}, "expected_duration_ms": 50})
        })
        .collect();
    let (s, r) = srv.call(Method::POST, "/jobs/batch", Some(json!({"jobs": jobs}))).await;
    assert_eq!(s, 201, "{r}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let (light, heavy) = loop {
        let (l, h) = (count(&srv, "light", "succeeded").await, count(&srv, "heavy", "succeeded").await);
        if l + h >= 240 {
            break (l, h);
        }
        assert!(Instant::now() < deadline, "only {l} + {h} jobs done");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let share = light as f64 / (light + heavy) as f64;
    eprintln!("completed work: light {light}, heavy {heavy} → light's share {share:.3} (target 0.25 ± 0.05)");
    assert!((0.20..=0.30).contains(&share), "light got {share:.3} of the completed work");
    assert!(heavy < 400, "heavy was still backlogged when measured");
}

#[tokio::test]
async fn strict_quota_refuses_and_soft_quota_holds_until_the_quota_grows() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    assert!(srv.cli(&["tenants", "create", "small", "--id", "small"]).status.success());
    assert!(srv.cli(&["tenants", "quota", "small", "--memory-mb", "100"]).status.success());
    let out = srv.cli(&["submit", "--tenant", "small", "--memory-mb", "200", "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("quota_exceeded") && err.contains("memory_mb"), "{err}");
    // The dry run says so too, without storing anything.
    let out = srv.cli(&["submit", "--dry-run", "--tenant", "small", "--memory-mb", "200", "--", "true"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("admissible: false"));
    assert_eq!(count(&srv, "small", "pending,held,succeeded").await, 0);
    drop(srv);

    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("HODEI_MULTI_TENANCY__QUOTA_ENFORCEMENT__STRICT_MODE", "false")], 0, None);
    assert!(srv.cli(&["tenants", "create", "small", "--id", "small"]).status.success());
    assert!(srv.cli(&["tenants", "quota", "small", "--memory-mb", "100"]).status.success());
    let job = srv.submit(json!({"command": ["true"], "tenant_id": "small", "resources": {"memory_mb": 200}})).await;
    let id = job["id"].as_str().unwrap();
    assert_eq!((job["state"].as_str(), job["state_reason"].as_str()), (Some("held"), Some("quota_ceiling")));
    let out = srv.cli(&["jobs", "explain", id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("quota_ceiling") && text.contains("ceiling 100"), "{text}");
    assert!(srv.cli(&["tenants", "quota", "small", "--memory-mb", "1000"]).status.success());
    assert_eq!(srv.wait_ended(id, 30).await["state"], "succeeded");
}

#[tokio::test]
async fn a_tenant_at_max_concurrent_jobs_waits_and_explain_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &one_worker("4"), 0, None);
    tenant(&srv, "one", 2, json!({"max_concurrent_jobs": 1})).await;
    let first = srv.submit(json!({"command": ["sleep", "30"], "tenant_id": "one"})).await;
    let second = srv.submit(json!({"command": ["true"], "tenant_id": "one"})).await;
    let first = first["id"].as_str().unwrap();
    let second = second["id"].as_str().unwrap();
    srv.wait_for(first, 20, |s| s == "running").await;
    let (_, e) = srv.call(Method::GET, &format!("/jobs/{second}/explain"), None).await;
    assert_eq!(e["state"], "pending");
    assert_eq!(e["blocking_reasons"][0]["code"], "max_concurrent_jobs", "{e}");
    let (_, q) = srv.call(Method::GET, "/tenants/one/quota", None).await;
    assert_eq!((q["current_usage"]["active_jobs"].as_u64(), q["utilization"]["jobs"].as_f64()), (Some(1), Some(1.0)));
    srv.call(Method::POST, &format!("/jobs/{first}/cancel"), None).await;
    assert_eq!(srv.wait_ended(second, 30).await["state"], "succeeded");
}

#[tokio::test]
async fn the_eta_of_a_queued_job_matches_its_real_start() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &one_worker("1"), 0, None);
    let a = srv.submit(json!({"command": ["sleep", "1.5"], "expected_duration_ms": 1500})).await;
    let a = a["id"].as_str().unwrap();
    srv.wait_for(a, 20, |s| s == "running").await;
    let b = srv.submit(json!({"command": ["true"], "expected_duration_ms": 100})).await;
    let b = b["id"].as_str().unwrap();
    let (_, e) = srv.call(Method::GET, &format!("/jobs/{b}/explain"), None).await;
    assert_eq!(e["blocking_reasons"][0]["code"], "no_capacity", "{e}");
    let eta = millis(e["estimated_start_at"].as_str().expect("an ETA"));
    let done = srv.wait_ended(b, 30).await;
    let started = millis(done["started_at"].as_str().unwrap());
    let error_ms = started - eta;
    eprintln!("ETA error: real start − ETA = {error_ms} ms");
    assert!(error_ms.abs() < 1000, "ETA off by {error_ms} ms");
}

#[tokio::test]
async fn a_burst_session_admits_more_then_expires_and_running_jobs_continue() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &one_worker("8"), 0, None);
    tenant(&srv, "bursty", 2, json!({"memory_mb": 200})).await;
    let sleeper = json!({"command": ["sleep", "300"], "tenant_id": "bursty", "resources": {"memory_mb": 100}});
    let mut ids = vec![];
    for _ in 0..3 {
        ids.push(srv.submit(sleeper.clone()).await["id"].as_str().unwrap().to_owned());
    }
    srv.wait_for(&ids[0], 20, |s| s == "running").await;
    srv.wait_for(&ids[1], 20, |s| s == "running").await;
    let (_, e) = srv.call(Method::GET, &format!("/jobs/{}/explain", ids[2]), None).await;
    assert_eq!(e["blocking_reasons"][0]["code"], "quota_memory", "{e}");

    // A one-minute session through the CLI: the third job starts at once.
    let out = srv.cli(&["burst", "request", "bursty", "--memory-mb", "100", "--duration-minutes", "1", "--reason", "demo", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let session: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(session["state"], "active");
    srv.wait_for(&ids[2], 20, |s| s == "running").await;
    let fourth = srv.submit(sleeper.clone()).await["id"].as_str().unwrap().to_owned();

    // Expiry: the session says so, the three running jobs continue, the fourth does not start.
    let started = Instant::now();
    let path = format!("/tenants/bursty/burst/sessions/{}", session["id"].as_str().unwrap());
    loop {
        let (_, b) = srv.call(Method::GET, &path, None).await;
        if b["state"] == "expired" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "session still {} after 90 s", b["state"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for id in &ids {
        assert_eq!(srv.job(id).await["state"], "running", "running jobs continue after expiry");
    }
    let (_, q) = srv.call(Method::GET, "/tenants/bursty/quota", None).await;
    assert_eq!((q["ceiling"]["memory_mb"].as_u64(), q["current_usage"]["memory_mb"].as_u64()), (Some(200), Some(300)), "{q}");
    // Back under the quota by one job is still at it: the fourth waits until two have ended.
    srv.call(Method::POST, &format!("/jobs/{}/cancel", ids[0]), None).await;
    srv.wait_ended(&ids[0], 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(srv.job(&fourth).await["state"], "pending");
    srv.call(Method::POST, &format!("/jobs/{}/cancel", ids[1]), None).await;
    srv.wait_for(&fourth, 20, |s| s == "running").await;
    let out = srv.cli(&["burst", "ls", "--tenant", "bursty"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("expired"));
    for id in [&ids[2], &fourth] {
        srv.call(Method::POST, &format!("/jobs/{id}/cancel"), None).await;
    }
}

#[test]
fn simulate_prints_the_same_report_for_the_same_seed() {
    let workload = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/workloads/flood-10k.yaml");
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(BIN).arg("simulate").arg(workload).args(extra).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let (a, b) = (run(&[]), run(&[]));
    assert_eq!(a, b, "byte for byte");
    assert!(String::from_utf8_lossy(&a).contains("Jain's index"));
    let json: Value = serde_json::from_slice(&run(&["--seed", "9", "-o", "json"])).unwrap();
    assert_eq!(json["seed"], 9);
    let light = json["tenants"].as_array().unwrap().iter().find(|t| t["tenant"] == "light").unwrap();
    assert_eq!(light["max_overtaken"], 0, "{light}");
    let out = std::process::Command::new(BIN).args(["simulate", "/nonexistent.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.yaml"));
}

#[tokio::test]
async fn sla_compliance_counts_started_jobs_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &one_worker("2"), 0, None);
    for priority in ["critical", "normal"] {
        let out = srv.cli(&["submit", "--wait", "--priority", priority, "--", "true"]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = srv.cli(&["sla", "-o", "json"]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    for level in ["critical", "medium"] {
        let row = r["levels"].as_array().unwrap().iter().find(|l| l["level"] == level).unwrap();
        assert_eq!((row["started"].as_u64(), row["met"].as_u64(), row["compliance_ratio"].as_f64()), (Some(1), Some(1), Some(1.0)), "{r}");
    }
    let text = String::from_utf8(srv.cli(&["sla", "--tenant", "default"]).stdout).unwrap();
    assert!(text.contains("default") && text.contains("critical"), "{text}");
    let out = srv.cli(&["sla", "at-risk", "-o", "json"]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["items"], json!([]));
}

#[tokio::test]
async fn a_thousand_concurrent_submits_at_the_limit_never_exceed_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__WORKERS", "1"),
        ("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__SLOTS", "32"),
        ("HODEI_MULTI_TENANCY__QUOTA_ENFORCEMENT__VIOLATION_POLICY", "reject"),
    ];
    let srv = Server::start(dir.path(), &env, 0, None);
    // Room for exactly 10 jobs of 100 MB (violation_policy reject counts pending + running).
    tenant(&srv, "edge", 2, json!({"memory_mb": 1000, "max_concurrent_jobs": 100})).await;
    let job = json!({"command": ["sleep", "30"], "tenant_id": "edge", "resources": {"memory_mb": 100, "cpu_m": 10}});
    let answers = futures::future::join_all((0..1000).map(|_| srv.call(Method::POST, "/jobs", Some(job.clone())))).await;
    let admitted: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 201).map(|(_, v)| v).collect();
    let refused = answers.iter().filter(|(s, v)| *s == 429 && v["code"] == "quota_exceeded" && v["retryable"] == true).count();
    eprintln!("1000 concurrent submits at the limit: {} admitted, {refused} refused", admitted.len());
    assert_eq!((admitted.len(), refused), (10, 990), "exactly the quota is admitted, the rest refused");
    for j in &admitted {
        srv.wait_for(j["id"].as_str().unwrap(), 20, |s| s == "running").await;
    }
    let (_, q) = srv.call(Method::GET, "/tenants/edge/quota", None).await;
    assert_eq!((q["current_usage"]["memory_mb"].as_u64(), q["current_usage"]["active_jobs"].as_u64()), (Some(1000), Some(10)), "{q}");
    for j in admitted {
        srv.call(Method::POST, &format!("/jobs/{}/cancel", j["id"].as_str().unwrap()), None).await;
    }
}

#[tokio::test]
async fn a_critical_job_preempts_a_batch_job_which_runs_again_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = one_worker("1");
    env.push(("HODEI_SCHEDULER__PREEMPTION__ENABLED", "true"));
    let srv = Server::start(dir.path(), &env, 0, None);
    let batch = srv.submit(json!({"command": ["sleep", "300"], "priority": "batch"})).await;
    let batch = batch["id"].as_str().unwrap().to_owned();
    srv.wait_for(&batch, 20, |s| s == "running").await;
    let urgent = srv.submit(json!({"command": ["true"], "priority": "critical"})).await;
    let urgent = urgent["id"].as_str().unwrap().to_owned();
    assert_eq!(srv.wait_ended(&urgent, 30).await["state"], "succeeded");
    // The batch job went back to the queue without using a retry, and runs again.
    let j = srv.wait_for(&batch, 20, |s| s == "running").await;
    assert_eq!((j["attempt_count"].as_u64(), j["retries_left"].as_u64()), (Some(2), Some(0)), "{j}");
    let (_, attempts) = srv.call(Method::GET, &format!("/jobs/{batch}/attempts"), None).await;
    assert_eq!(attempts["items"][0]["state"], "preempted", "{attempts}");
    srv.call(Method::POST, &format!("/jobs/{batch}/cancel"), None).await;
}
