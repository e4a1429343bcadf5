//! The `kubernetes` provider through the real binary, against the fake Kubernetes API server of
//! `common::kube_fake` (no cluster is reachable here).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::kube_fake::{Shared, fake_api};
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

fn pods(f: &Shared) -> Vec<Value> {
    f.lock().unwrap().pods.values().cloned().collect()
}

fn creates(f: &Shared) -> usize {
    f.lock().unwrap().requests.iter().filter(|r| r.starts_with("POST")).count()
}

async fn until(what: &str, secs: u64, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pods made from the template (image, the worker's environment with the server's URL and the
/// pool's join token, resources, labels) run the jobs; idle ones are drained and deleted; a
/// restarted server adopts the pods it finds instead of creating new ones; an API that refuses
/// puts the pool in `error` with the reason after `provision_max_retries`, and it recovers.
#[tokio::test]
async fn a_kubernetes_pool_runs_jobs_in_pods_through_the_api() {
    let (api, fake) = fake_api().await;
    let dir = tempfile::tempdir().unwrap();
    let grpc_port = free_port();
    let yaml = format!(
        "autoscaling: {{ evaluation_interval_s: 1, provision_max_retries: 2 }}\n\
         resource_pools:\n  pools:\n    - id: kube\n      type: dynamic\n      provider: kubernetes\n      min_size: 0\n      max_size: 2\n\
         \x20     auto_scaling_enabled: true\n      idle_timeout_s: 1\n      worker_template: {{ cpu_m: 500, memory_mb: 256, slots: 1 }}\n\
         \x20     provider_config:\n        api_url: {api}\n        namespace: jobs\n        server_url: http://127.0.0.1:{grpc_port}\n\
         \x20       pod_template: {{ metadata: {{ labels: {{ team: ml }} }}, spec: {{ containers: [ {{ image: registry.example/hodei:test }} ] }} }}\n\
         \x20     scaling_policies:\n        - {{ name: grow, trigger: queue_depth > 0, action: scale_up, step: 2, cooldown: 1s, window: 1s }}\n"
    );
    let mut srv = Server::start(dir.path(), &[], grpc_port, Some(&yaml));
    assert!(pods(&fake).is_empty(), "no pod before any job");

    let gate = job_writable_dir();
    let go = gate.path().join("go");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let cmd = format!("while [ ! -e {} ]; do sleep 0.05; done", go.display());
        ids.push(srv.submit(json!({"command": ["sh", "-c", cmd], "resources": {"cpu_m": 500, "memory_mb": 128}})).await["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        srv.wait_for(id, 60, |s| s == "running").await;
    }
    let made = pods(&fake);
    assert_eq!(made.len(), 2, "{made:?}");
    let p = &made[0];
    assert_eq!(p["metadata"]["name"], "hodei-kube-0");
    assert_eq!((p["metadata"]["labels"]["hodei.io/pool"].as_str(), p["metadata"]["labels"]["team"].as_str()), (Some("kube"), Some("ml")));
    let c = &p["spec"]["containers"][0];
    assert_eq!((c["image"].as_str(), c["command"].clone()), (Some("registry.example/hodei:test"), json!(["hodei", "worker"])));
    assert_eq!(c["resources"]["requests"], json!({"cpu": "500m", "memory": "256Mi"}));
    let env: BTreeMap<&str, &str> = c["env"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap())).collect();
    assert_eq!(env["HODEI_WORKER_SERVER"], format!("http://127.0.0.1:{grpc_port}"));
    assert_eq!(env["HODEI_JOIN_TOKEN"], srv.join_token("kube"));
    let (_, w) = srv.call(Method::GET, "/workers?pool_id=kube", None).await;
    let mut names: Vec<&str> = w["items"].as_array().unwrap().iter().map(|w| w["instance_name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["hodei-kube-0", "hodei-kube-1"], "each pod's worker registers under the pod's name");
    std::fs::write(&go, "").unwrap();
    for id in &ids {
        assert_eq!(srv.wait_ended(id, 30).await["state"], "succeeded");
    }
    // Idle: drained, their agents exit, the pods end and are deleted.
    until("the idle pods to be deleted", 60, async || pods(&fake).is_empty()).await;
    assert!(fake.lock().unwrap().requests.iter().any(|r| r == "DELETE /api/v1/namespaces/jobs/pods/hodei-kube-1"));

    // A restarted server finds the pod it made instead of making another.
    let (s, _) = srv.call(Method::POST, "/pools/kube/scale", Some(json!({"target_size": 1}))).await;
    assert_eq!(s, 202);
    until("one pod", 30, async || pods(&fake).len() == 1).await;
    let before = creates(&fake);
    unsafe { libc::kill(srv.child.id() as i32, libc::SIGTERM) };
    assert!(srv.child.wait().unwrap().success());
    let mut srv = Server::start(dir.path(), &[], grpc_port, Some(&yaml));
    until("the pod's worker to be back", 30, async || srv.call(Method::GET, "/pools/kube/status", None).await.1["current_size"] == 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!((creates(&fake), pods(&fake).len()), (before, 1), "the restarted server adopted its pod");

    // The API refuses: retried with backoff, then `error` with the reason; then it recovers.
    fake.lock().unwrap().refuse_creates = true;
    let (s, _) = srv.call(Method::POST, "/pools/kube/scale", Some(json!({"target_size": 2}))).await;
    assert_eq!(s, 202);
    until("the pool in error", 60, async || srv.call(Method::GET, "/pools/kube/status", None).await.1["state"] == "error").await;
    let (_, st) = srv.call(Method::GET, "/pools/kube/status", None).await;
    assert!(st["state_reason"].as_str().unwrap().contains("forbidden"), "{st}");
    let (_, h) = srv.call(Method::GET, "/pools/kube/scaling/history?decision=failed", None).await;
    assert!(h["items"][0]["reason"].as_str().unwrap().contains("kubernetes"), "{h}");
    let metrics = srv.http_client.get(format!("{}/metrics", srv.metrics)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("hodei_pool_provisioning_failures_total{pool=\"kube\"}")), "{metrics}");
    fake.lock().unwrap().refuse_creates = false;
    until("the pool to recover", 60, async || {
        let st = srv.call(Method::GET, "/pools/kube/status", None).await.1;
        st["state"] == "active" && st["current_size"] == 2
    })
    .await;
    assert_eq!(pods(&fake).len(), 2);
    unsafe { libc::kill(srv.child.id() as i32, libc::SIGTERM) };
    let _ = srv.child.wait();
}
