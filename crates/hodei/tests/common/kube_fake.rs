//! A fake Kubernetes API server for the `kubernetes` provider's tests (no cluster is reachable
//! here): an axum service that stores pods, answers as the API server does (objects, lists,
//! `Status` errors) and records every request — and plays the kubelet, running each pod's
//! `hodei worker` as a real process from the pod's environment, reporting `Succeeded` or
//! `Failed` when it exits and killing it when the pod is deleted.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use serde_json::{Value, json};

use super::BIN;

#[derive(Default)]
pub struct Fake {
    pub pods: BTreeMap<String, Value>,
    procs: HashMap<String, Child>,
    /// "METHOD path" of every request, in order.
    pub requests: Vec<String>,
    /// Creating a pod answers 403 while set.
    pub refuse_creates: bool,
    version: u64,
}

impl Drop for Fake {
    fn drop(&mut self) {
        for c in self.procs.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub type Shared = Arc<Mutex<Fake>>;

fn status(code: u16, reason: &str, message: &str) -> (StatusCode, Json<Value>) {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), Json(body))
}

/// The kubelet's part: pods whose worker exited are `Succeeded` or `Failed`.
fn refresh(f: &mut Fake) {
    let ended: Vec<(String, bool)> = f.procs.iter_mut().filter_map(|(n, c)| c.try_wait().ok().flatten().map(|s| (n.clone(), s.success()))).collect();
    for (name, ok) in ended {
        f.procs.remove(&name);
        if let Some(p) = f.pods.get_mut(&name) {
            p["status"]["phase"] = json!(if ok { "Succeeded" } else { "Failed" });
        }
    }
}

async fn create_pod(State(s): State<Shared>, Path(ns): Path<String>, Json(mut pod): Json<Value>) -> (StatusCode, Json<Value>) {
    let mut f = s.lock().unwrap();
    f.requests.push(format!("POST /api/v1/namespaces/{ns}/pods"));
    if f.refuse_creates {
        return status(403, "Forbidden", "pods \"x\" is forbidden: exceeded quota: compute-resources");
    }
    let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    if f.pods.contains_key(&name) {
        return status(409, "AlreadyExists", &format!("pods \"{name}\" already exists"));
    }
    f.version += 1;
    pod["metadata"]["uid"] = json!(format!("uid-{}", f.version));
    pod["metadata"]["resourceVersion"] = json!(f.version.to_string());
    pod["metadata"]["creationTimestamp"] = json!(jiff::Timestamp::now().round(jiff::Unit::Second).unwrap().to_string());
    pod["status"] = json!({"phase": "Running"});
    // Run the container's command (`hodei worker`) with its environment, as the kubelet would.
    let c = &pod["spec"]["containers"][0];
    let args: Vec<String> = c["command"].as_array().unwrap().iter().skip(1).map(|a| a.as_str().unwrap().to_owned()).collect();
    let mut cmd = Command::new(BIN);
    cmd.args(&args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("RUST_LOG", "warn");
    for e in c["env"].as_array().unwrap() {
        cmd.env(e["name"].as_str().unwrap(), e["value"].as_str().unwrap());
    }
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start the pod's worker");
    f.procs.insert(name.clone(), child);
    f.pods.insert(name, pod.clone());
    (StatusCode::CREATED, Json(pod))
}

async fn list_pods(State(s): State<Shared>, Path(ns): Path<String>, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let mut f = s.lock().unwrap();
    f.requests.push(format!("GET /api/v1/namespaces/{ns}/pods"));
    refresh(&mut f);
    let wanted: Vec<(&str, &str)> = q.get("labelSelector").map_or(vec![], |sel| sel.split(',').filter_map(|kv| kv.split_once('=')).collect());
    let items: Vec<Value> = f.pods.values().filter(|p| wanted.iter().all(|(k, v)| p["metadata"]["labels"][*k] == *v)).cloned().collect();
    Json(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": f.version.to_string()}, "items": items}))
}

async fn delete_pod(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> (StatusCode, Json<Value>) {
    let mut f = s.lock().unwrap();
    f.requests.push(format!("DELETE /api/v1/namespaces/{ns}/pods/{name}"));
    let Some(pod) = f.pods.remove(&name) else { return status(404, "NotFound", &format!("pods \"{name}\" not found")) };
    if let Some(mut c) = f.procs.remove(&name) {
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let _ = c.wait();
    }
    (StatusCode::OK, Json(pod))
}

pub async fn fake_api() -> (String, Shared) {
    let shared: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/api/v1/namespaces/{ns}/pods", get(list_pods).post(create_pod))
        .route("/api/v1/namespaces/{ns}/pods/{name}", delete(delete_pod))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, shared)
}
