//! What token authentication costs one request, through the real router (no socket) of a real
//! server (engine, SQLite store in a temporary file): the same read with authentication off
//! (`auth.mode: none`), with the admin token (a constant-time compare) and with a researcher's
//! API token (SHA-256 of the secret, a cache lookup, tenant scoping), and `whoami` alone.
//! `cargo bench -p hodei-server --bench auth [-- --rounds 30 --requests 500]`; results in
//! BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, header};
use hodei_server::config::{AuthMode, Config, Secret};
use hodei_server::{RunningServer, ServerOptions};
use hodei_store::Store;
use hodei_store::sqlite::SqliteStore;
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "bench-admin-token";

struct App {
    server: RunningServer,
    job: String,
    api_token: Option<String>,
    _dir: tempfile::TempDir,
}

async fn call(server: &RunningServer, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = match body {
        Some(v) => {
            b = b.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let resp = server.router.clone().oneshot(b.body(body).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn start(mode: AuthMode) -> App {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.server.data_dir = dir.path().to_owned();
    cfg.server.http_addr = "127.0.0.1:0".into();
    cfg.server.grpc_addr = "127.0.0.1:0".into();
    cfg.metrics.prometheus.enabled = false;
    cfg.auth.mode = mode;
    cfg.auth.admin_token = Some(Secret(ADMIN.into()));
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("hodei.db")).await.unwrap());
    let server = hodei_server::start(ServerOptions { config: cfg, worker_exe: None, metrics_addr: None, store: Some(store) }).await.unwrap();
    let (s, job) = call(&server, "POST", "/api/v1/jobs", Some(ADMIN), Some(json!({"command": ["true"], "hold": true}))).await;
    assert_eq!(s, 201, "{job}");
    let job = job["id"].as_str().unwrap().to_owned();
    let api_token = match mode {
        AuthMode::None => None,
        AuthMode::Token => {
            let body = json!({"name": "bench", "kind": "user", "role_bindings": [{"role": "researcher", "scope": "tenant:default"}]});
            let (s, p) = call(&server, "POST", "/api/v1/principals", Some(ADMIN), Some(body)).await;
            assert_eq!(s, 201, "{p}");
            let (s, t) = call(&server, "POST", "/api/v1/tokens", Some(ADMIN), Some(json!({"name": "bench", "principal_id": p["id"]}))).await;
            assert_eq!(s, 201, "{t}");
            Some(t["secret"].as_str().unwrap().to_owned())
        }
    };
    App { server, job, api_token, _dir: dir }
}

/// CPU time of this thread: with a current-thread runtime, the request's whole work (router,
/// middleware, handler, engine) runs here, so other load on the machine barely moves it.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

struct Variant {
    name: &'static str,
    app: &'static App,
    token: Option<String>,
    path: String,
    status: u16,
    cpu: Vec<f64>,
    wall: Vec<f64>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: &str, d: usize| args.iter().position(|a| a == k).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(d);
    let (rounds, per_round) = (arg("--rounds", 30), arg("--requests", 500));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let off: &'static App = Box::leak(Box::new(rt.block_on(start(AuthMode::None))));
    let on: &'static App = Box::leak(Box::new(rt.block_on(start(AuthMode::Token))));
    let api = on.api_token.clone();
    let job = |a: &App| format!("/api/v1/jobs/{}", a.job);
    let mut variants = vec![
        // Controls: the same unauthenticated request to each server.
        Variant { name: "GET /health, server 1 (off)", app: off, token: None, path: "/health".into(), status: 200, cpu: vec![], wall: vec![] },
        Variant { name: "GET /health, server 2 (on)", app: on, token: None, path: "/health".into(), status: 200, cpu: vec![], wall: vec![] },
        Variant { name: "GET /jobs/{id}, auth off", app: off, token: None, path: job(off), status: 200, cpu: vec![], wall: vec![] },
        Variant { name: "GET /jobs/{id}, admin token", app: on, token: Some(ADMIN.into()), path: job(on), status: 200, cpu: vec![], wall: vec![] },
        Variant { name: "GET /jobs/{id}, API token", app: on, token: api.clone(), path: job(on), status: 200, cpu: vec![], wall: vec![] },
        Variant { name: "GET /whoami, auth off", app: off, token: None, path: "/api/v1/whoami".into(), status: 200, cpu: vec![], wall: vec![] },
        Variant { name: "GET /whoami, admin token", app: on, token: Some(ADMIN.into()), path: "/api/v1/whoami".into(), status: 200, cpu: vec![], wall: vec![] },
        Variant { name: "GET /whoami, API token", app: on, token: api.clone(), path: "/api/v1/whoami".into(), status: 200, cpu: vec![], wall: vec![] },
        // Authenticated, then refused by the handler before any store read: authentication
        // and the router alone.
        Variant { name: "GET /jobs/x (404), auth off", app: off, token: None, path: "/api/v1/jobs/x".into(), status: 404, cpu: vec![], wall: vec![] },
        Variant {
            name: "GET /jobs/x (404), admin token",
            app: on,
            token: Some(ADMIN.into()),
            path: "/api/v1/jobs/x".into(),
            status: 404,
            cpu: vec![],
            wall: vec![],
        },
        Variant { name: "GET /jobs/x (404), API token", app: on, token: api, path: "/api/v1/jobs/x".into(), status: 404, cpu: vec![], wall: vec![] },
    ];
    for v in &variants {
        let (s, body) = rt.block_on(call(&v.app.server, "GET", &v.path, v.token.as_deref(), None));
        assert_eq!(s, v.status, "{}: {body}", v.name);
    }
    // Interleaved rounds: every variant sees the same machine, table sizes and caches.
    for round in 0..=rounds {
        for v in variants.iter_mut() {
            let (c0, w0) = (thread_cpu(), Instant::now());
            rt.block_on(async {
                for _ in 0..per_round {
                    call(&v.app.server, "GET", &v.path, v.token.as_deref(), None).await;
                }
            });
            if round > 0 {
                v.cpu.push((thread_cpu() - c0).as_secs_f64() * 1e6 / per_round as f64);
                v.wall.push(w0.elapsed().as_secs_f64() * 1e6 / per_round as f64);
            }
        }
    }
    println!("{rounds} interleaved rounds of {per_round} requests each; median per request (min–max of the rounds' means)");
    println!("{:<32} {:>24} {:>24}", "request", "CPU µs", "wall µs");
    for v in variants.iter_mut() {
        let (cmin, cmax) = (v.cpu.iter().copied().fold(f64::MAX, f64::min), v.cpu.iter().copied().fold(0.0, f64::max));
        let (wmin, wmax) = (v.wall.iter().copied().fold(f64::MAX, f64::min), v.wall.iter().copied().fold(0.0, f64::max));
        let (c, w) = (median(&mut v.cpu), median(&mut v.wall));
        println!("{:<32} {:>24} {:>24}", v.name, format!("{c:.1} ({cmin:.1}–{cmax:.1})"), format!("{w:.1} ({wmin:.1}–{wmax:.1})"));
    }
}
