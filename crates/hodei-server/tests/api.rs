//! API tests through the router (no socket): the real engine over an in-memory SQLite store,
//! with no workers, so accepted jobs stay pending.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use hodei_server::config::{Config, Secret};
use hodei_server::{RunningServer, ServerOptions};
use hodei_store::sqlite::SqliteStore;
use hodei_store::{JobFilter, Store};
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "test-admin-token";

struct App {
    server: RunningServer,
    _dir: tempfile::TempDir,
}

async fn app() -> App {
    app_with(|_| {}).await
}

async fn app_with(configure: impl FnOnce(&mut Config)) -> App {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    configure(&mut cfg);
    cfg.server.data_dir = dir.path().to_owned();
    cfg.server.http_addr = "127.0.0.1:0".into();
    cfg.server.grpc_addr = "127.0.0.1:0".into();
    cfg.metrics.prometheus.port = 0;
    cfg.auth.admin_token = Some(Secret(TOKEN.into()));
    cfg.limits.max_body_bytes = 64 * 1024;
    cfg.jobs.max_batch_size = 10;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_temporary().await.unwrap());
    let server = hodei_server::start(ServerOptions { config: cfg, worker_exe: None, metrics_addr: None, store: Some(store) }).await.unwrap();
    App { server, _dir: dir }
}

impl App {
    async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.server.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(path).header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        let body = match body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(b.body(body).unwrap()).await
    }

    /// A JSON POST with an `Idempotency-Key`; returns whether the answer says it was replayed.
    async fn post_keyed(&self, path: &str, key: &str, body: &Value) -> (StatusCode, Value, bool) {
        let req = Request::builder()
            .method("POST")
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = self.server.router.clone().oneshot(req).await.unwrap();
        let (status, replayed) = (resp.status(), resp.headers().get("idempotent-replayed").is_some_and(|v| v == "true"));
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), replayed)
    }

    async fn stored_jobs(&self) -> usize {
        self.server.store.list_jobs(&JobFilter { limit: 500, ..Default::default() }).await.unwrap().len()
    }
}

fn fields(problem: &Value) -> Vec<String> {
    problem["errors"].as_array().map(|e| e.iter().map(|x| x["field"].as_str().unwrap().to_owned()).collect()).unwrap_or_default()
}

#[tokio::test]
async fn a_submitted_job_is_stored_before_the_answer() {
    let app = app().await;
    let (status, job) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["echo", "hi"], "labels": {"team": "a"}}))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(job["state"], "pending");
    assert_eq!(job["name"], "echo");
    assert_eq!(job["tenant_id"], "default");
    let id: hodei_core::JobId = job["id"].as_str().unwrap().parse().unwrap();
    let stored = app.server.store.get_job(id).await.unwrap().expect("durable before the 201");
    assert_eq!(stored.spec.command, ["echo", "hi"]);
    insta::assert_json_snapshot!("submitted_job", job, {
        ".id" => "[id]", ".submitted_at" => "[time]", ".eligible_at" => "[time]", ".sla_deadline_at" => "[time]", ".submitted_by" => "[admin principal]"
    });
}

#[tokio::test]
async fn every_bad_field_is_named_and_nothing_is_stored() {
    let app = app().await;
    let bad = json!({"command": [], "priority": "urgent", "resources": {"cpu_m": 0}, "env": {"HODEI_X": "1"}, "max_retries": 99, "timeout_ms": -5});
    let (status, problem) = app.call("POST", "/api/v1/jobs", Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["code"], "validation_failed");
    assert_eq!(fields(&problem), ["/command", "/env/HODEI_X", "/resources/cpu_m", "/timeout_ms", "/max_retries", "/priority"]);
    assert_eq!(app.stored_jobs().await, 0);
    insta::assert_json_snapshot!("validation_problem", problem, { ".request_id" => "[request-id]" });
}

#[tokio::test]
async fn unknown_fields_and_wrong_types_name_their_json_pointer() {
    let app = app().await;
    let (status, p) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["x"], "resources": {"cpu_m": "lots"}}))).await;
    assert_eq!((status, fields(&p)), (StatusCode::BAD_REQUEST, vec!["/resources/cpu_m".to_owned()]));
    let (status, p) = app.call("POST", "/api/v1/jobs", Some(json!({"commnd": ["x"]}))).await;
    assert_eq!((status, fields(&p)), (StatusCode::BAD_REQUEST, vec!["/commnd".to_owned()]));
    let (status, p) = app.call("POST", "/api/v1/tenants", Some(json!({"name": "x", "weight": 0}))).await;
    assert_eq!((status, fields(&p)), (StatusCode::BAD_REQUEST, vec!["/weight".to_owned()]));
    assert_eq!(app.stored_jobs().await, 0);
}

#[tokio::test]
async fn malformed_bodies_wrong_media_types_and_oversized_bodies_are_refused() {
    let app = app().await;
    let req = |ct: &str, body: String| {
        Request::builder()
            .method("POST")
            .uri("/api/v1/jobs")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body))
            .unwrap()
    };
    let (s, p) = app.send(req("application/json", "{\"command\": [".into())).await;
    assert_eq!((s, p["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")));
    let (s, p) = app.send(req("text/plain", "{}".into())).await;
    assert_eq!((s, p["code"].as_str()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("unsupported_media_type")));
    let huge = json!({"command": ["echo", "x".repeat(70 * 1024)]}).to_string();
    let (s, p) = app.send(req("application/json", huge)).await;
    assert_eq!((s, p["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")));
    assert_eq!(app.stored_jobs().await, 0);
}

#[tokio::test]
async fn requests_without_the_token_are_unauthorized() {
    let app = app().await;
    let (s, p) = app.send(Request::builder().uri("/api/v1/jobs").body(Body::empty()).unwrap()).await;
    assert_eq!((s, p["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    let (s, _) = app.send(Request::builder().uri("/api/v1/jobs").header(header::AUTHORIZATION, "Bearer nope").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = app.send(Request::builder().uri("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK, "health needs no token");
}

#[tokio::test]
async fn an_atomic_batch_with_one_bad_job_stores_nothing() {
    let app = app().await;
    let (s, p) = app.call("POST", "/api/v1/jobs/batch", Some(json!({"jobs": [{"command": ["true"]}, {"command": ["true"], "priority": "x"}]}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(fields(&p), ["/jobs/1/priority"]);
    assert_eq!(app.stored_jobs().await, 0);
    let (s, r) = app.call("POST", "/api/v1/jobs/batch", Some(json!({"jobs": [{"command": ["true"]}, {"command": ["false"]}]}))).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(r["items"].as_array().unwrap().len(), 2);
    assert_eq!(app.stored_jobs().await, 2);
}

#[tokio::test]
async fn a_non_atomic_batch_stores_the_good_jobs_and_reports_the_bad() {
    let app = app().await;
    let (s, r) = app.call("POST", "/api/v1/jobs/batch", Some(json!({"atomic": false, "jobs": [{"command": ["true"]}, {"command": []}]}))).await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(r["items"][0]["job_id"].is_string());
    assert_eq!(r["items"][1]["error"]["code"], "validation_failed");
    assert_eq!(app.stored_jobs().await, 1);
}

#[tokio::test]
async fn a_batch_over_the_size_limit_is_too_large() {
    let app = app().await;
    let jobs: Vec<Value> = (0..11).map(|_| json!({"command": ["true"]})).collect();
    let (s, p) = app.call("POST", "/api/v1/jobs/batch", Some(json!({ "jobs": jobs }))).await;
    assert_eq!((s, p["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")));
    assert_eq!(app.stored_jobs().await, 0);
}

#[tokio::test]
async fn a_job_no_pool_could_ever_run_is_unschedulable() {
    let app = app().await;
    let (s, p) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["true"], "resources": {"cpu_m": 10_000_000}}))).await;
    assert_eq!((s, p["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("unschedulable")));
    assert_eq!(fields(&p), ["/resources"], "{p}");
    assert!(p["errors"][0]["message"].as_str().unwrap().contains("nearest is pool local, where the job needs"), "{p}");
    let (s, p) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["true"], "pool_selector": {"pool": "nope"}}))).await;
    assert_eq!((s, fields(&p)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/pool_selector/pool".to_owned()]), "{p}");
    // No worker of this version runs container images: refused now, not failed on a worker.
    let (s, p) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["true"], "image": "alpine:3"}))).await;
    assert_eq!((s, p["code"].as_str(), fields(&p)), (StatusCode::UNPROCESSABLE_ENTITY, Some("unschedulable"), vec!["/image".to_owned()]), "{p}");
    assert!(p["errors"][0]["message"].as_str().unwrap().contains("lack the capability `container`"), "{p}");
    let (s, p) = app.call("POST", "/api/v1/jobs/batch", Some(json!({"jobs": [{"command": ["true"]}, {"command": ["true"], "image": "x"}]}))).await;
    assert_eq!((s, fields(&p)), (StatusCode::BAD_REQUEST, vec!["/jobs/1/image".to_owned()]), "an atomic batch names the member: {p}");
    // No pool's workers carry the label: refused, naming what the pools carry.
    let (s, p) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["true"], "pool_selector": {"labels": {"zone": "a"}}}))).await;
    assert_eq!((s, fields(&p)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/pool_selector/labels".to_owned()]), "{p}");
    assert!(p["errors"][0]["message"].as_str().unwrap().contains("do not carry the label `zone=a`"), "{p}");
    let (s, p) = app.call("POST", "/api/v1/jobs/batch", Some(json!({"jobs": [{"command": ["true"], "pool_selector": {"labels": {"Bad Key": "a"}}}]}))).await;
    assert_eq!((s, fields(&p)), (StatusCode::BAD_REQUEST, vec!["/jobs/0/pool_selector/labels/Bad Key".to_owned()]), "{p}");
    assert_eq!(app.stored_jobs().await, 0);
}

/// `allowed_tenants` and labels of a pool decide, at submit, which jobs could ever run there;
/// the scheduler hears of a change at once.
#[tokio::test]
async fn pools_run_only_their_tenants_jobs_and_jobs_select_them_by_label() {
    let app = app().await;
    let (s, t) = app.call("POST", "/api/v1/tenants", Some(json!({"name": "ML"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let ml = t["id"].as_str().unwrap().to_owned();
    let farm = json!({"id": "farm", "worker_template": {"cpu_m": 8000, "memory_mb": 8192, "slots": 4}, "labels": {"zone": "b"}, "allowed_tenants": [ml]});
    let (s, e) = app
        .call("POST", "/api/v1/pools", Some(json!({"id": "x", "worker_template": {"cpu_m": 1, "memory_mb": 1, "slots": 1}, "allowed_tenants": ["nobody"]})))
        .await;
    assert_eq!((s, fields(&e)), (StatusCode::BAD_REQUEST, vec!["/allowed_tenants/0".to_owned()]), "{e}");
    let (s, p) = app.call("POST", "/api/v1/pools", Some(farm)).await;
    assert_eq!((s, p["allowed_tenants"].clone(), p["labels"]["zone"].as_str()), (StatusCode::CREATED, json!([ml]), Some("b")), "{p}");
    // The default tenant may not use it: by id (nearest is the pool it names) or by label.
    let (s, e) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["true"], "pool_selector": {"pool": "farm"}}))).await;
    assert_eq!((s, fields(&e)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/tenant_id".to_owned()]), "{e}");
    let (s, e) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["true"], "pool_selector": {"labels": {"zone": "b"}}}))).await;
    assert_eq!((s, fields(&e)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/pool_selector/labels".to_owned()]), "{e}");
    // Its tenant may, by label; a worker joining by itself may carry labels its pool does not name.
    let (s, j) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["true"], "tenant_id": ml, "pool_selector": {"labels": {"zone": "b"}}}))).await;
    assert_eq!(s, StatusCode::CREATED, "{j}");
    assert_eq!(j["pool_selector"], json!({"pool": null, "labels": {"zone": "b"}}), "{j}");
    let (s, j) = app
        .call("POST", "/api/v1/jobs", Some(json!({"command": ["true"], "tenant_id": ml, "pool_selector": {"pool": "farm", "labels": {"disk": "ssd"}}})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{j}");
    let (s, j) = app.call("GET", &format!("/api/v1/jobs/{}", j["id"].as_str().unwrap()), None).await;
    assert_eq!((s, j["pool_selector"].clone()), (StatusCode::OK, json!({"pool": "farm", "labels": {"disk": "ssd"}})), "read back from the store");
    // Opened to every tenant.
    let (s, p) = app.call("PUT", "/api/v1/pools/farm", Some(json!({"allowed_tenants": []}))).await;
    assert_eq!((s, p["allowed_tenants"].clone()), (StatusCode::OK, json!([])), "{p}");
    let (s, e) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["true"], "pool_selector": {"pool": "farm"}}))).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
}

#[tokio::test]
async fn tenants_are_created_updated_and_deleted() {
    let app = app().await;
    let (s, t) = app.call("POST", "/api/v1/tenants", Some(json!({"name": "Team Alpha", "tier": "premium"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!((t["id"].as_str(), t["effective_weight"].as_i64()), (Some("team-alpha"), Some(3)));
    let (s, p) = app.call("POST", "/api/v1/tenants", Some(json!({"name": "Team Alpha"}))).await;
    assert_eq!((s, p["code"].as_str()), (StatusCode::CONFLICT, Some("already_exists")));
    let (s, p) = app.call("POST", "/api/v1/tenants", Some(json!({"name": "b", "tier": "gold"}))).await;
    assert_eq!((s, fields(&p)), (StatusCode::BAD_REQUEST, vec!["/tier".to_owned()]));
    let (s, t) = app.call("PUT", "/api/v1/tenants/team-alpha", Some(json!({"weight": 7}))).await;
    assert_eq!((s, t["effective_weight"].as_i64(), t["version"].as_i64()), (StatusCode::OK, Some(7), Some(2)));
    let stale = Request::builder()
        .method("PUT")
        .uri("/api/v1/tenants/team-alpha")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::IF_MATCH, "\"1\"")
        .body(Body::from(json!({"weight": 9}).to_string()))
        .unwrap();
    let (s, p) = app.send(stale).await;
    assert_eq!((s, p["code"].as_str()), (StatusCode::PRECONDITION_FAILED, Some("precondition_failed")));
    let (s, _) = app.call("DELETE", "/api/v1/tenants/team-alpha", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.call("GET", "/api/v1/tenants/team-alpha", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, p) = app.call("DELETE", "/api/v1/tenants/default", None).await;
    assert_eq!((s, p["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
}

#[tokio::test]
async fn suspended_and_unknown_tenants_cannot_submit() {
    let app = app().await;
    app.call("POST", "/api/v1/tenants", Some(json!({"name": "sleepy"}))).await;
    app.call("PUT", "/api/v1/tenants/sleepy", Some(json!({"status": "suspended"}))).await;
    let (s, p) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["true"], "tenant_id": "sleepy"}))).await;
    assert_eq!((s, p["code"].as_str()), (StatusCode::FORBIDDEN, Some("tenant_suspended")));
    let (s, _) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["true"], "tenant_id": "ghost"}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(app.stored_jobs().await, 0);
}

#[tokio::test]
async fn state_commands_follow_the_state_machine() {
    let app = app().await;
    let (_, job) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["true"]}))).await;
    let id = job["id"].as_str().unwrap();
    let (s, j) = app.call("POST", &format!("/api/v1/jobs/{id}/hold"), None).await;
    assert_eq!((s, j["state"].as_str()), (StatusCode::OK, Some("held")));
    let (s, j) = app.call("POST", &format!("/api/v1/jobs/{id}/release"), None).await;
    assert_eq!((s, j["state"].as_str()), (StatusCode::OK, Some("pending")));
    let (s, j) = app.call("POST", &format!("/api/v1/jobs/{id}/cancel"), None).await;
    assert_eq!((s, j["state"].as_str()), (StatusCode::OK, Some("cancelled")));
    let (s, p) = app.call("POST", &format!("/api/v1/jobs/{id}/cancel"), None).await;
    assert_eq!((s, p["code"].as_str(), p["state"].as_str()), (StatusCode::CONFLICT, Some("invalid_state"), Some("cancelled")));
    let (s, p) = app.call("POST", &format!("/api/v1/jobs/{id}/release"), None).await;
    assert_eq!((s, p["code"].as_str()), (StatusCode::CONFLICT, Some("invalid_state")));
    let (s, j) = app.call("POST", &format!("/api/v1/jobs/{id}/retry"), None).await;
    assert_eq!((s, j["state"].as_str()), (StatusCode::OK, Some("pending")));
    let (_, ev) = app.call("GET", &format!("/api/v1/jobs/{id}/events"), None).await;
    let moves: Vec<_> = ev["items"].as_array().unwrap().iter().map(|e| e["to"].as_str().unwrap().to_owned()).collect();
    assert_eq!(moves, ["pending", "held", "pending", "cancelled", "pending"]);
    // Each move names the principal whose request made it (here the admin), the submit too.
    let (_, me) = app.call("GET", "/api/v1/whoami", None).await;
    let admin = format!("principal:{}", me["principal_id"].as_str().unwrap());
    let actors: Vec<_> = ev["items"].as_array().unwrap().iter().map(|e| e["actor"].as_str().unwrap().to_owned()).collect();
    assert_eq!(actors, [admin.as_str(); 5]);
    let (s, _) = app.call("POST", "/api/v1/jobs/not-a-uuid/cancel", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Tenants, pools and budgets are lists like the others: `limit` (≤ 500) and the cursor of the
/// previous page walk them whole, each item once.
#[tokio::test]
async fn tenant_pool_and_budget_lists_are_paginated() {
    let app = app().await;
    for i in 0..4 {
        let (s, _) = app.call("POST", "/api/v1/tenants", Some(json!({"name": format!("team-{i}")}))).await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, b) = app.call("POST", "/api/v1/budgets", Some(json!({"tenant_id": format!("team-{i}"), "amount": "10"}))).await;
        assert_eq!((s, &b["project_id"]), (StatusCode::CREATED, &Value::Null), "a tenant's budget: {b}");
        // A project's budget is refused until projects exist, and nothing is stored.
        let (s, p) = app.call("POST", "/api/v1/budgets", Some(json!({"tenant_id": format!("team-{i}"), "project_id": "web", "amount": "10"}))).await;
        assert_eq!((s, fields(&p)), (StatusCode::BAD_REQUEST, vec!["/project_id".to_owned()]), "{p}");
        let pool = json!({"id": format!("pool-{i}"), "worker_template": {"cpu_m": 1000, "memory_mb": 1024, "slots": 1}});
        let (s, p) = app.call("POST", "/api/v1/pools", Some(pool)).await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
    }
    for (list, key, at_least) in [("tenants", "id", 5), ("pools", "id", 4), ("budgets", "id", 4)] {
        let (_, whole) = app.call("GET", &format!("/api/v1/{list}?limit=500"), None).await;
        let whole: Vec<Value> = whole["items"].as_array().unwrap().iter().map(|i| i[key].clone()).collect();
        assert!(whole.len() >= at_least, "{list}: {whole:?}");
        if list == "budgets" {
            assert_eq!(whole.len(), 4, "only the tenants' budgets were stored");
        }
        let mut walked = Vec::new();
        let mut path = format!("/api/v1/{list}?limit=2");
        loop {
            let (s, page) = app.call("GET", &path, None).await;
            assert_eq!(s, StatusCode::OK, "{page}");
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= 2, "{list}: {page}");
            walked.extend(items.iter().map(|i| i[key].clone()));
            match page["next_cursor"].as_str() {
                Some(c) => path = format!("/api/v1/{list}?limit=2&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(walked, whole, "{list}: the pages are the whole list, in order");
        let (_, default) = app.call("GET", &format!("/api/v1/{list}"), None).await;
        assert_eq!(default["items"].as_array().unwrap().len(), whole.len().min(50), "{list}: 50 by default");
        for bad in ["limit=0", "limit=501", "cursor=abc"] {
            let (s, p) = app.call("GET", &format!("/api/v1/{list}?{bad}"), None).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{list}?{bad}: {p}");
        }
    }
}

#[tokio::test]
async fn job_lists_filter_and_paginate_newest_first() {
    let app = app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (_, j) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["true"], "labels": {"i": i.to_string()}}))).await;
        ids.push(j["id"].as_str().unwrap().to_owned());
    }
    let (_, page) = app.call("GET", "/api/v1/jobs?limit=3", None).await;
    let got: Vec<_> = page["items"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(got, [ids[4].clone(), ids[3].clone(), ids[2].clone()]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = app.call("GET", &format!("/api/v1/jobs?limit=3&cursor={cursor}"), None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert!(page["next_cursor"].is_null());
    let (_, page) = app.call("GET", "/api/v1/jobs?label=i=2", None).await;
    assert_eq!(page["items"][0]["id"].as_str(), Some(ids[2].as_str()));
    let (s, p) = app.call("GET", "/api/v1/jobs?state=bogus", None).await;
    assert_eq!((s, fields(&p)), (StatusCode::BAD_REQUEST, vec!["state".to_owned()]));
    let (s, _) = app.call("GET", "/api/v1/jobs?limit=501", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // An empty value is a parameter left out (an HTML form's empty field, a script's unset
    // variable); a label whose value is empty is still a filter.
    let (s, page) = app.call("GET", "/api/v1/jobs?cursor=&state=&limit=3&array_id=&", None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let (_, page) = app.call("GET", "/api/v1/jobs?label=i=", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0, "label i with the empty value: no job has it");
}

#[tokio::test]
async fn errors_echo_the_request_id() {
    let app = app().await;
    let req = Request::builder()
        .uri("/api/v1/jobs/0192a000-0000-7000-8000-000000000000")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header("x-request-id", "req-42")
        .body(Body::empty())
        .unwrap();
    let (s, p) = app.send(req).await;
    assert_eq!((s, p["request_id"].as_str(), p["type"].as_str()), (StatusCode::NOT_FOUND, Some("req-42"), Some("urn:hodei:problem:not_found")));
}

#[tokio::test]
async fn the_openapi_document_lists_every_endpoint() {
    let app = app().await;
    let (s, doc) = app.send(Request::builder().uri("/api/openapi.json").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer", "Swagger UI can authorize");
    assert_eq!(doc["security"][0]["bearer"], json!([]), "every operation takes the bearer token");
    let paths: Vec<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    for p in [
        "/api/v1/jobs",
        "/api/v1/jobs/batch",
        "/api/v1/jobs/{id}",
        "/api/v1/jobs/{id}/logs",
        "/api/v1/jobs/{id}/cancel",
        "/api/v1/tenants",
        "/api/v1/tenants/{id}",
        "/api/v1/workers",
        "/api/v1/whoami",
        "/api/v1/tokens",
        "/api/v1/principals",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
}

#[tokio::test]
async fn ready_and_metrics_report_the_running_server() {
    let app = app().await;
    let (s, r) = app.send(Request::builder().uri("/ready").body(Body::empty()).unwrap()).await;
    assert_eq!((s, r["checks"]["store"].as_str(), r["checks"]["scheduler"].as_str()), (StatusCode::OK, Some("ok"), Some("leader")));
    assert_eq!((r["checks"]["migrations"].as_str(), r["checks"]["grpc"].as_str()), (Some("ok"), Some("ok")), "{r}");
    app.call("GET", "/api/v1/jobs", None).await;
    let resp = app.server.router.clone().oneshot(Request::builder().uri("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    assert!(text.contains("hodei_http_requests_total{method=\"GET\",route=\"/api/v1/jobs\",status=\"200\"}"), "{text}");
    // Known tenants and pools are exported from the start (at zero), not only once they have jobs.
    app.call("POST", "/api/v1/tenants", Some(json!({"name": "quiet-tenant"}))).await;
    let resp = app.server.router.clone().oneshot(Request::builder().uri("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    assert!(text.contains("hodei_jobs_queued{tenant=\"quiet-tenant\",priority=\"normal\",state=\"pending\"} 0"), "{text}");
    assert!(text.contains("hodei_pool_max_size{pool=\"local\"}"), "{text}");
    assert!(text.contains("hodei_tenant_quota_utilization{tenant=\"quiet-tenant\",resource=\"cpu\"} 0"), "{text}");
    assert!(text.contains("hodei_sla_breaches_total{tenant=\"quiet-tenant\",level=\"critical\"} 0"), "{text}");
}

async fn small_tenant(app: &App, id: &str, quota: Value) {
    let (status, t) = app.call("POST", "/api/v1/tenants", Some(json!({"id": id, "name": id, "quota": quota}))).await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
}

#[tokio::test]
async fn a_job_alone_over_the_quota_is_refused_with_the_numbers_and_not_stored() {
    let app = app().await;
    small_tenant(&app, "small", json!({"memory_mb": 100})).await;
    let (status, p) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["x"], "tenant_id": "small", "resources": {"memory_mb": 200}}))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{p}");
    assert_eq!((p["code"].as_str(), p["limit"].as_str()), (Some("quota_exceeded"), Some("memory_mb")));
    assert_eq!((p["ceiling"].as_u64(), p["requested"].as_u64(), p["retryable"].as_bool()), (Some(100), Some(200), Some(false)));
    assert_eq!(app.stored_jobs().await, 0);
}

#[tokio::test]
async fn max_queued_jobs_refuses_the_next_submit_and_an_atomic_batch_stores_nothing() {
    let app = app().await;
    small_tenant(&app, "q", json!({"max_queued_jobs": 2})).await;
    let job = json!({"command": ["x"], "tenant_id": "q"});
    for _ in 0..2 {
        assert_eq!(app.call("POST", "/api/v1/jobs", Some(job.clone())).await.0, StatusCode::CREATED);
    }
    let (status, p) = app.call("POST", "/api/v1/jobs", Some(job.clone())).await;
    assert_eq!((status, p["limit"].as_str(), p["retryable"].as_bool()), (StatusCode::TOO_MANY_REQUESTS, Some("max_queued_jobs"), Some(true)));
    // Raise the limit by one: an atomic batch of two does not fit, nothing of it is stored.
    let (status, q) = app.call("PUT", "/api/v1/tenants/q/quota", Some(json!({"max_queued_jobs": 3}))).await;
    assert_eq!((status, q["max_queued_jobs"].as_u64(), q["current_usage"]["queued_jobs"].as_u64()), (StatusCode::OK, Some(3), Some(2)));
    let batch = json!({"jobs": [job.clone(), job.clone()]});
    let (status, p) = app.call("POST", "/api/v1/jobs/batch", Some(batch)).await;
    assert_eq!((status, p["index"].as_u64()), (StatusCode::TOO_MANY_REQUESTS, Some(1)));
    assert_eq!(app.stored_jobs().await, 2);
    // Not atomic: the first fits, the second is refused, per item.
    let (status, r) = app.call("POST", "/api/v1/jobs/batch", Some(json!({"jobs": [job.clone(), job], "atomic": false}))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(r["items"][0]["job_id"].is_string());
    assert_eq!(r["items"][1]["error"]["code"], "quota_exceeded");
    assert_eq!(app.stored_jobs().await, 3);
}

#[tokio::test]
async fn quota_reads_and_bad_quota_values_name_the_field() {
    let app = app().await;
    small_tenant(&app, "acme", json!({"max_concurrent_jobs": 4})).await;
    let (status, q) = app.call("GET", "/api/v1/tenants/acme/quota", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((q["max_concurrent_jobs"].as_u64(), q["cpu_m"].as_u64()), (Some(4), Some(4000)), "the rest from default_tenant_quota");
    assert_eq!(q["ceiling"]["max_concurrent_jobs"], 4);
    assert_eq!(q["utilization"]["jobs"], 0.0);
    let (status, p) = app.call("PUT", "/api/v1/tenants/acme/quota", Some(json!({"cpu_m": -1}))).await;
    assert_eq!((status, fields(&p)), (StatusCode::BAD_REQUEST, vec!["/cpu_m".to_owned()]));
    let (status, p) = app.call("PUT", "/api/v1/tenants/acme/quota", Some(json!({"cpus": 1}))).await;
    assert_eq!((status, fields(&p)), (StatusCode::BAD_REQUEST, vec!["/cpus".to_owned()]));
    let (_, q) = app.call("GET", "/api/v1/tenants/acme/quota", None).await;
    assert_eq!(q["cpu_m"], 4000, "a refused PUT changes nothing");
    let (status, _) = app.call("GET", "/api/v1/tenants/nope/quota", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn explain_names_why_a_job_waits_and_the_queue_counts_it() {
    let app = app().await;
    let (_, held) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["x"], "hold": true}))).await;
    let (_, pending) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["x"]}))).await;
    let (status, e) = app.call("GET", &format!("/api/v1/jobs/{}/explain", held["id"].as_str().unwrap()), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(e["blocking_reasons"][0]["code"], "user_hold");
    assert!(e["estimated_start_at"].is_null(), "a user hold is not time-bounded");
    let (_, e) = app.call("GET", &format!("/api/v1/jobs/{}/explain", pending["id"].as_str().unwrap()), None).await;
    // No worker is connected in these tests.
    assert_eq!(e["blocking_reasons"][0]["code"], "no_matching_pool", "{e}");
    assert_eq!(e["position"]["in_tenant"], 0);
    let (status, q) = app.call("GET", "/api/v1/queue", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((q["totals"]["pending"].as_u64(), q["totals"]["held"].as_u64()), (Some(1), Some(1)));
    assert_eq!(q["tenants"][0]["tenant_id"], "default");
    let (status, t) = app.call("GET", "/api/v1/queue/tenants/default", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t["by_priority"], json!({"normal": 1}), "{t}");
    assert_eq!(t["jobs"][0]["job_id"], pending["id"]);
}

#[tokio::test]
async fn a_burst_session_widens_the_ceiling_once_per_tenant_then_cools_down() {
    let app = app().await;
    small_tenant(&app, "b", json!({"memory_mb": 1000})).await;
    let big = json!({"command": ["x"], "tenant_id": "b", "resources": {"memory_mb": 1500}});
    let (status, p) = app.call("POST", "/api/v1/jobs", Some(big.clone())).await;
    assert_eq!((status, p["retryable"].as_bool()), (StatusCode::TOO_MANY_REQUESTS, Some(false)));

    // 150 % of 1000 is the most: 600 more is refused, naming the field.
    let (status, p) = app.call("POST", "/api/v1/tenants/b/burst", Some(json!({"requested_memory_mb": 600, "reason": "q4"}))).await;
    assert_eq!((status, fields(&p)), (StatusCode::BAD_REQUEST, vec!["/requested_memory_mb".to_owned()]), "{p}");
    let (status, p) = app.call("POST", "/api/v1/tenants/b/burst", Some(json!({"requested_memory_mb": 100, "duration_minutes": 0, "reason": "q4"}))).await;
    assert_eq!((status, fields(&p)), (StatusCode::BAD_REQUEST, vec!["/duration_minutes".to_owned()]), "{p}");
    assert_eq!(app.call("GET", "/api/v1/burst/sessions", None).await.1["items"], json!([]), "refused requests store nothing");

    let (status, b) = app.call("POST", "/api/v1/tenants/b/burst", Some(json!({"requested_memory_mb": 500, "reason": "q4"}))).await;
    assert_eq!((status, b["state"].as_str(), b["duration_minutes"].as_u64()), (StatusCode::CREATED, Some("active"), Some(60)), "{b}");
    let sid = b["id"].as_str().unwrap().to_owned();
    let (_, q) = app.call("GET", "/api/v1/tenants/b/quota", None).await;
    assert_eq!((q["ceiling"]["memory_mb"].as_u64(), q["burst"]["session_id"].as_str()), (Some(1500), Some(sid.as_str())), "{q}");
    let (status, job) = app.call("POST", "/api/v1/jobs", Some(big)).await;
    assert_eq!((status, job["state"].as_str()), (StatusCode::CREATED, Some("pending")), "the grant admits it: {job}");

    let (status, p) = app.call("POST", "/api/v1/tenants/b/burst", Some(json!({"requested_memory_mb": 100, "reason": "again"}))).await;
    assert_eq!((status, p["code"].as_str()), (StatusCode::CONFLICT, Some("burst_unavailable")), "{p}");

    let (status, ended) = app.call("POST", &format!("/api/v1/tenants/b/burst/sessions/{sid}/end"), None).await;
    assert_eq!((status, ended["state"].as_str()), (StatusCode::OK, Some("ended")), "{ended}");
    assert!(ended["cooldown_until"].is_string());
    let (_, q) = app.call("GET", "/api/v1/tenants/b/quota", None).await;
    assert_eq!((q["ceiling"]["memory_mb"].as_u64(), q["burst"].is_null()), (Some(1000), true));
    let (_, j) = app.call("GET", &format!("/api/v1/jobs/{}", job["id"].as_str().unwrap()), None).await;
    assert_eq!((j["state"].as_str(), j["state_reason"].as_str()), (Some("held"), Some("quota_ceiling")), "alone over the quota again: {j}");

    let (status, p) = app.call("POST", "/api/v1/tenants/b/burst", Some(json!({"requested_memory_mb": 100, "reason": "again"}))).await;
    assert_eq!((status, p["code"].as_str()), (StatusCode::CONFLICT, Some("burst_unavailable")));
    let wait = p["retry_after_s"].as_u64().unwrap();
    assert!((1700..=1800).contains(&wait), "cooldown of 30 min: {p}");
    let (status, p) = app.call("POST", &format!("/api/v1/tenants/b/burst/sessions/{sid}/end"), None).await;
    assert_eq!((status, p["code"].as_str()), (StatusCode::CONFLICT, Some("invalid_state")));

    let (_, list) = app.call("GET", "/api/v1/burst/sessions?tenant_id=b&state=ended", None).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    let (status, one) = app.call("GET", &format!("/api/v1/tenants/b/burst/sessions/{sid}"), None).await;
    assert_eq!((status, one["version"].as_i64()), (StatusCode::OK, Some(2)));
    let (status, p) = app.call("GET", "/api/v1/burst/sessions?state=open", None).await;
    assert_eq!((status, fields(&p)), (StatusCode::BAD_REQUEST, vec!["state".to_owned()]));
    let (status, _) = app.call("GET", &format!("/api/v1/tenants/default/burst/sessions/{sid}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a session is only found under its own tenant");
}

#[tokio::test]
async fn a_burst_request_waits_for_approval_when_required() {
    let app = app_with(|c| {
        c.burst_capacity.require_approval = true;
        c.multi_tenancy.quota_enforcement.strict_mode = false;
    })
    .await;
    small_tenant(&app, "r", json!({"cpu_m": 500, "max_concurrent_jobs": 2})).await;
    let (status, b) = app.call("POST", "/api/v1/tenants/r/burst", Some(json!({"requested_concurrent_jobs": 1, "reason": "demo"}))).await;
    assert_eq!((status, b["state"].as_str(), b["expires_at"].is_null()), (StatusCode::CREATED, Some("pending_approval"), true), "{b}");
    let sid = b["id"].as_str().unwrap();
    let (_, q) = app.call("GET", "/api/v1/tenants/r/quota", None).await;
    assert_eq!(q["ceiling"]["max_concurrent_jobs"], 2, "nothing granted before approval");
    // A job alone over the quota is held, and says what it waits for.
    let (_, job) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["x"], "tenant_id": "r", "resources": {"cpu_m": 800}}))).await;
    assert_eq!(job["state_reason"], "quota_ceiling", "{job}");
    let (_, e) = app.call("GET", &format!("/api/v1/jobs/{}/explain", job["id"].as_str().unwrap()), None).await;
    let codes: Vec<&str> = e["blocking_reasons"].as_array().unwrap().iter().filter_map(|b| b["code"].as_str()).collect();
    assert_eq!(codes, ["quota_ceiling", "burst_pending_approval"], "{e}");
    let (status, b) = app.call("POST", &format!("/api/v1/tenants/r/burst/sessions/{sid}/approve"), None).await;
    assert_eq!((status, b["state"].as_str(), b["decided_by"].as_str()), (StatusCode::OK, Some("active"), Some("admin")), "{b}");
    assert!(b["expires_at"].is_string());
    let (_, q) = app.call("GET", "/api/v1/tenants/r/quota", None).await;
    assert_eq!(q["ceiling"]["max_concurrent_jobs"], 3);
    let (status, p) = app.call("POST", &format!("/api/v1/tenants/r/burst/sessions/{sid}/reject"), None).await;
    assert_eq!((status, p["code"].as_str(), p["state"].as_str()), (StatusCode::CONFLICT, Some("invalid_state"), Some("active")));
}

#[tokio::test]
async fn a_job_waiting_past_its_sla_is_reported_breached_with_its_blocking_reason() {
    let app = app_with(|c| c.sla.max_wait_s.medium = 1).await;
    let (_, job) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["x"]}))).await;
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["sla_status"], "on_track");
    assert!(job["sla_deadline_at"].is_string());
    // No worker: it waits, crosses 70 %, 90 %, 100 % of its second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let j = loop {
        let (_, j) = app.call("GET", &format!("/api/v1/jobs/{id}"), None).await;
        if j["sla_status"] == "breached" {
            break j;
        }
        assert!(std::time::Instant::now() < deadline, "still {}", j["sla_status"]);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(j["sla_breached_at"].is_string());
    let (status, b) = app.call("GET", "/api/v1/sla/breaches?tenant_id=default&level=medium", None).await;
    assert_eq!(status, StatusCode::OK);
    let row = &b["items"][0];
    assert_eq!((row["job_id"].as_str(), row["state"].as_str()), (Some(id.as_str()), Some("pending")), "{b}");
    assert_eq!((row["max_wait_ms"].as_u64(), row["dominant_blocking_reason"].as_str()), (Some(1000), Some("no_matching_pool")));
    assert!(row["wait_ms"].as_u64().unwrap() > 1000);
    let (_, r) = app.call("GET", "/api/v1/sla/at-risk", None).await;
    assert_eq!(r["items"][0]["status"], "breached");
    let (_, r) = app.call("GET", "/api/v1/sla?window_hours=1", None).await;
    let medium = r["levels"].as_array().unwrap().iter().find(|l| l["level"] == "medium").unwrap();
    assert_eq!((medium["breached_waiting"].as_u64(), medium["started"].as_u64()), (Some(1), Some(0)), "{r}");
    assert!(medium["compliance_ratio"].is_null(), "nothing started in the window");
    let (_, q) = app.call("GET", "/api/v1/queue", None).await;
    assert_eq!((q["sla"]["breached_waiting"].as_u64(), q["tenants"][0]["at_risk"].as_u64()), (Some(1), Some(1)));
    let (status, p) = app.call("GET", "/api/v1/sla/breaches?level=urgent", None).await;
    assert_eq!((status, fields(&p)), (StatusCode::BAD_REQUEST, vec!["level".to_owned()]));
    let (status, p) = app.call("GET", "/api/v1/sla?window_hours=0", None).await;
    assert_eq!((status, fields(&p)), (StatusCode::BAD_REQUEST, vec!["window_hours".to_owned()]));
    let (status, _) = app.call("GET", "/api/v1/tenants/nope/sla", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let resp = app.server.router.clone().oneshot(Request::builder().uri("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    assert!(text.contains("hodei_sla_breaches_total{tenant=\"default\",level=\"medium\"} 1"), "{text}");
}

#[tokio::test]
async fn tier_weights_come_from_the_configuration() {
    let app = app_with(|c| c.multi_tenancy.tier_weights.premium = 7).await;
    let (_, t) = app.call("POST", "/api/v1/tenants", Some(json!({"id": "p", "name": "P", "tier": "premium"}))).await;
    assert_eq!(t["effective_weight"], 7);
    let (_, t) = app.call("POST", "/api/v1/tenants", Some(json!({"id": "q", "name": "Q", "tier": "premium", "weight": 2}))).await;
    assert_eq!(t["effective_weight"], 2, "an explicit weight wins");
    app.call("POST", "/api/v1/jobs", Some(json!({"command": ["x"], "tenant_id": "p"}))).await;
    let (_, q) = app.call("GET", "/api/v1/queue/tenants/p", None).await;
    assert_eq!(q["weight"], 7, "the scheduler uses it too: {q}");
}

#[tokio::test]
async fn an_array_job_creates_one_job_per_index_listed_by_its_array_id() {
    let app = app().await;
    let body = json!({"command": ["echo"], "hold": true, "array": {"start": 10, "end": 20, "step": 5, "max_parallel": 2}});
    let (status, a) = app.call("POST", "/api/v1/jobs", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    assert_eq!(a["count"], 3);
    let array_id = a["array_id"].as_str().unwrap();
    let (status, page) = app.call("GET", &format!("/api/v1/jobs?array_id={array_id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let items = page["items"].as_array().unwrap();
    let mut indices: Vec<u64> = items.iter().map(|j| j["array_index"].as_u64().unwrap()).collect();
    indices.sort();
    assert_eq!(indices, [10, 15, 20]);
    assert!(items.iter().all(|j| j["array_id"] == array_id && j["array"]["max_parallel"] == 2 && j["state"] == "held"));
    // Newest first: the last index is the last job id.
    assert_eq!(items[0]["id"], a["last_job_id"]);
    assert_eq!(items[2]["id"], a["first_job_id"]);
    // Jobs outside the array are not listed with it.
    app.call("POST", "/api/v1/jobs", Some(json!({"command": ["x"]}))).await;
    let (_, page) = app.call("GET", &format!("/api/v1/jobs?array_id={array_id}"), None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_bad_array_names_its_field_and_stores_nothing() {
    let app = app_with(|cfg| cfg.jobs.max_array_size = 100).await;
    for (array, field) in [
        (json!({"start": 5, "end": 1}), "/array/end"),
        (json!({"start": -1, "end": 1}), "/array/start"),
        (json!({"end": 3}), "/array/start"),
        (json!({"start": 0, "end": 3, "step": 0}), "/array/step"),
        (json!({"start": 0, "end": 3, "max_parallel": 0}), "/array/max_parallel"),
        (json!({"start": 0, "end": 100}), "/array"),
        (json!({"start": 0, "end": 3, "size": 2}), "/array/size"),
    ] {
        let (status, p) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["x"], "array": array}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{array}: {p}");
        assert_eq!(fields(&p), [field], "{array}: {p}");
    }
    let (status, p) = app.call("GET", "/api/v1/jobs?array_id=nope", None).await;
    assert_eq!((status, fields(&p)), (StatusCode::BAD_REQUEST, vec!["array_id".to_owned()]));
    assert_eq!(app.stored_jobs().await, 0);
}

#[tokio::test]
async fn an_array_over_the_queued_jobs_limit_stores_none_of_its_jobs() {
    let app = app().await;
    small_tenant(&app, "q", json!({"max_queued_jobs": 5})).await;
    let (status, p) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["x"], "tenant_id": "q", "array": {"start": 1, "end": 6}}))).await;
    assert_eq!((status, p["limit"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("max_queued_jobs")), "{p}");
    assert_eq!(app.stored_jobs().await, 0);
    let (status, _) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["x"], "tenant_id": "q", "array": {"start": 1, "end": 5}}))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(app.stored_jobs().await, 5);
}

#[tokio::test]
async fn a_tenant_over_its_submit_rate_is_refused_429_with_retry_after_and_nothing_is_stored() {
    let app = app_with(|c| {
        c.limits.submit_rate_per_tenant = 1;
        c.limits.submit_burst_per_tenant = 3;
    })
    .await;
    let job = json!({"command": ["true"], "hold": true});
    for _ in 0..3 {
        let (s, v) = app.call("POST", "/api/v1/jobs", Some(job.clone())).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/jobs")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(job.to_string()))
        .unwrap();
    let resp = app.server.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("1"), "one job per second");
    let body: Value = serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap()).unwrap();
    assert_eq!((body["code"].as_str(), body["retryable"].as_bool(), body["rate_per_s"].as_u64()), (Some("rate_limited"), Some(true), Some(1)), "{body}");
    // A dry run takes no token and is answered.
    let (s, _) = app.call("POST", "/api/v1/jobs?dry_run=true", Some(job.clone())).await;
    assert_eq!(s, StatusCode::OK);
    // Another tenant has a bucket of its own; a batch over the burst is refused whole.
    let (s, v) = app.call("POST", "/api/v1/tenants", Some(json!({"name": "Other", "id": "other"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let other = json!({"command": ["true"], "hold": true, "tenant_id": "other"});
    let (s, v) = app.call("POST", "/api/v1/jobs/batch", Some(json!({"jobs": [other.clone(), other.clone(), other.clone(), other.clone()]}))).await;
    assert_eq!((s, v["code"].as_str(), v["retryable"].as_bool()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"), Some(false)), "{v}");
    let (s, v) = app.call("POST", "/api/v1/jobs/batch", Some(json!({"jobs": [other.clone(), other]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let stored = app.server.store.list_jobs(&JobFilter { limit: 50, ..Default::default() }).await.unwrap();
    assert_eq!(stored.len(), 5, "three of the default tenant's, two of the other's");
}

#[tokio::test]
async fn a_repeated_submit_with_its_idempotency_key_gets_the_first_job_and_stores_nothing_new() {
    let app = app().await;
    let body = json!({"command": ["echo", "once"]});
    let (status, first, replayed) = app.post_keyed("/api/v1/jobs", "order-17", &body).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));
    let (status, again, replayed) = app.post_keyed("/api/v1/jobs", "order-17", &body).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
    assert_eq!(again["id"], first["id"]);
    assert_eq!(app.stored_jobs().await, 1);
    // The same key with another body (or another path) is a conflict and changes nothing.
    let (status, problem, _) = app.post_keyed("/api/v1/jobs", "order-17", &json!({"command": ["echo", "twice"]})).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    assert!(problem["detail"].as_str().unwrap().contains("order-17"), "{problem}");
    let (status, _, _) = app.post_keyed("/api/v1/jobs/batch", "order-17", &json!({"jobs": [body]})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Another key is another submit; keys are per tenant.
    let (_, other, replayed) = app.post_keyed("/api/v1/jobs", "order-18", &body).await;
    assert!(!replayed && other["id"] != first["id"]);
    app.call("POST", "/api/v1/tenants", Some(json!({"id": "acme", "name": "Acme"}))).await;
    let (status, theirs, replayed) = app.post_keyed("/api/v1/jobs", "order-17", &json!({"command": ["echo", "once"], "tenant_id": "acme"})).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{theirs}");
    assert_eq!(app.stored_jobs().await, 3);
    // A bad key is refused, naming the header, before anything is stored.
    for bad in ["", &"k".repeat(256)] {
        let (status, problem, _) = app.post_keyed("/api/v1/jobs", bad, &body).await;
        assert_eq!((status, fields(&problem)), (StatusCode::BAD_REQUEST, vec!["Idempotency-Key".to_owned()]), "{problem}");
    }
    assert_eq!(app.stored_jobs().await, 3);
}

#[tokio::test]
async fn concurrent_repeats_of_one_key_store_one_job() {
    let app = Arc::new(app().await);
    let body = json!({"command": ["true"]});
    let calls = (0..32).map(|_| {
        let (app, body) = (app.clone(), body.clone());
        tokio::spawn(async move { app.post_keyed("/api/v1/jobs", "same", &body).await })
    });
    let answers = futures::future::join_all(calls).await;
    let ids: std::collections::HashSet<String> = answers.iter().map(|a| a.as_ref().unwrap().1["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 1, "every caller got the one job");
    assert_eq!(answers.iter().filter(|a| !a.as_ref().unwrap().2).count(), 1, "one call stored it, the others were replays");
    assert_eq!(app.stored_jobs().await, 1);
}

#[tokio::test]
async fn batches_and_arrays_replay_their_ids_under_their_key() {
    let app = app().await;
    small_tenant(&app, "tight", json!({"max_queued_jobs": 2})).await;
    // Non-atomic: one invalid, three valid of which quota takes two.
    let batch = json!({"atomic": false, "jobs": [
        {"command": ["true"], "tenant_id": "tight"},
        {"command": []},
        {"command": ["true"], "tenant_id": "tight"},
        {"command": ["true"], "tenant_id": "tight"},
    ]});
    let (status, first, replayed) = app.post_keyed("/api/v1/jobs/batch", "b-1", &batch).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{first}");
    let ids = |v: &Value| v["items"].as_array().unwrap().iter().map(|i| i["job_id"].as_str().map(str::to_owned)).collect::<Vec<_>>();
    assert_eq!(ids(&first).iter().filter(|i| i.is_some()).count(), 2);
    let (status, again, replayed) = app.post_keyed("/api/v1/jobs/batch", "b-1", &batch).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
    assert_eq!(ids(&again), ids(&first));
    assert_eq!(again["items"][1]["error"]["code"], "validation_failed");
    assert_eq!(again["items"][3]["error"]["code"], "quota_exceeded");
    assert_eq!(app.stored_jobs().await, 2);
    // An array job: the same members.
    let array = json!({"command": ["true"], "array": {"start": 0, "end": 4}});
    let (status, first, _) = app.post_keyed("/api/v1/jobs", "a-1", &array).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again, replayed) = app.post_keyed("/api/v1/jobs", "a-1", &array).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
    assert_eq!(again, first);
    assert_eq!(app.stored_jobs().await, 2 + 5);
    // A call that stored nothing (refused by quota) leaves no record: its retry is a new call.
    let refused = json!({"command": ["true"], "tenant_id": "tight"});
    let (status, _, _) = app.post_keyed("/api/v1/jobs", "r-1", &refused).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _, replayed) = app.post_keyed("/api/v1/jobs", "r-1", &refused).await;
    assert_eq!((status, replayed), (StatusCode::TOO_MANY_REQUESTS, false));
}

#[tokio::test]
async fn an_idempotent_replay_does_not_use_up_the_submit_rate() {
    let app = app_with(|c| {
        c.limits.submit_rate_per_tenant = 1;
        c.limits.submit_burst_per_tenant = 2;
    })
    .await;
    let job = json!({"command": ["true"], "hold": true});
    assert_eq!(app.post_keyed("/api/v1/jobs", "k1", &job).await.0, StatusCode::CREATED);
    let (status, _, replayed) = app.post_keyed("/api/v1/jobs", "k1", &job).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
    // The replay gave its token back: one new submit still fits the burst, the next does not.
    assert_eq!(app.call("POST", "/api/v1/jobs", Some(job.clone())).await.0, StatusCode::CREATED);
    assert_eq!(app.call("POST", "/api/v1/jobs", Some(job)).await.0, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn framework_errors_are_problem_json_too() {
    let app = app().await;
    for (method, path, status, code) in [
        ("GET", "/api/v1/jobs?no_such_key=1", StatusCode::BAD_REQUEST, "bad_request"),
        ("GET", "/api/v1/jobs?limit=many", StatusCode::BAD_REQUEST, "bad_request"),
        ("GET", "/api/v1/jobs/x/logs?offset=-3", StatusCode::BAD_REQUEST, "bad_request"),
        ("DELETE", "/api/v1/jobs", StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    ] {
        let req = Request::builder().method(method).uri(path).header(header::AUTHORIZATION, format!("Bearer {TOKEN}")).body(Body::empty()).unwrap();
        let resp = app.server.router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), status, "{method} {path}");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/problem+json", "{method} {path}");
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(resp.headers().contains_key(header::ALLOW), "405 keeps its Allow header");
        }
        let body: Value = serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap()).unwrap();
        assert_eq!(body["code"], code, "{method} {path}: {body}");
        assert!(!body["detail"].as_str().unwrap_or("").is_empty(), "{body}");
    }
}

#[tokio::test]
async fn attempts_events_and_workers_are_paginated() {
    let app = app().await;
    let (_, job) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["true"], "hold": true}))).await;
    let id = job["id"].as_str().unwrap().to_owned();
    for action in ["release", "hold", "release"] {
        let (s, v) = app.call("POST", &format!("/api/v1/jobs/{id}/{action}"), None).await;
        assert_eq!(s, StatusCode::OK, "{action}: {v}");
    }
    let (_, all) = app.call("GET", &format!("/api/v1/jobs/{id}/events?limit=500"), None).await;
    let n = all["items"].as_array().unwrap().len();
    assert!(n >= 4, "{all}");
    let (_, first) = app.call("GET", &format!("/api/v1/jobs/{id}/events?limit=2"), None).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().expect("more to come").to_owned();
    let (_, rest) = app.call("GET", &format!("/api/v1/jobs/{id}/events?limit=500&cursor={cursor}"), None).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), n - 2);
    assert_eq!(rest["next_cursor"], Value::Null);
    assert_eq!(rest["items"][0], all["items"][2], "the pages join up");
    for bad in ["limit=501", "cursor=abc"] {
        let (s, p) = app.call("GET", &format!("/api/v1/jobs/{id}/events?{bad}"), None).await;
        assert_eq!((s, p["code"].as_str()), (StatusCode::BAD_REQUEST, Some("validation_failed")), "{bad}: {p}");
    }
    let (s, page) = app.call("GET", &format!("/api/v1/jobs/{id}/attempts?limit=1"), None).await;
    assert_eq!((s, page["next_cursor"].clone()), (StatusCode::OK, Value::Null), "{page}");
    let (s, page) = app.call("GET", "/api/v1/workers?limit=1", None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page["items"].as_array().unwrap().len() <= 1, "{page}");
}

/// A tenant deleted while submits race it: once the delete answered 204, no job of the tenant
/// is live (a submit that had passed its tenant check commits before the delete counts, and
/// is then refused by it with 409; later ones find no tenant).
#[tokio::test]
async fn a_tenant_deleted_under_concurrent_submits_keeps_no_live_job() {
    let app = std::sync::Arc::new(app().await);
    for round in 0..20 {
        let id = format!("racy-{round}");
        let (s, _) = app.call("POST", "/api/v1/tenants", Some(json!({"id": id, "name": id}))).await;
        assert_eq!(s, StatusCode::CREATED);
        // Warm the tenant cache, as a busy tenant's would be.
        app.call("POST", "/api/v1/jobs?dry_run=true", Some(json!({"command": ["true"], "tenant_id": id}))).await;
        let submits: Vec<_> = (0..8)
            .map(|_| {
                let (app, id) = (app.clone(), id.clone());
                tokio::spawn(async move { app.call("POST", "/api/v1/jobs", Some(json!({"command": ["true"], "tenant_id": id, "hold": true}))).await.0 })
            })
            .collect();
        let (deleted, _) = app.call("DELETE", &format!("/api/v1/tenants/{id}"), None).await;
        let mut stored = 0;
        for t in submits {
            let s = t.await.unwrap();
            assert!(matches!(s, StatusCode::CREATED | StatusCode::NOT_FOUND), "{s}");
            stored += usize::from(s == StatusCode::CREATED);
        }
        let live = app.server.store.count_live_jobs(&hodei_core::TenantId::parse(&id).unwrap()).await.unwrap();
        if deleted == StatusCode::NO_CONTENT {
            assert_eq!(live, 0, "round {round}: {stored} jobs landed in a deleted tenant");
        } else {
            assert_eq!((deleted, live), (StatusCode::CONFLICT, stored as u64), "round {round}");
        }
    }
}

/// Once retention has told the engine its horizon, a manual retry of a job that ended before it
/// is refused as if the job were already gone: the delete that follows cannot lose a retried job.
#[tokio::test]
async fn a_retry_behind_the_retention_horizon_is_refused() {
    let app = app().await;
    let (_, job) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["true"]}))).await;
    let id = job["id"].as_str().unwrap();
    let (s, _) = app.call("POST", &format!("/api/v1/jobs/{id}/cancel"), None).await;
    assert_eq!(s, StatusCode::OK);
    let later = hodei_core::Timestamp::from_millis(jiff::Timestamp::now().as_millisecond() + 60_000);
    app.server.engine.retention_horizon(later).await.unwrap();
    let (s, p) = app.call("POST", &format!("/api/v1/jobs/{id}/retry"), None).await;
    assert_eq!((s, p["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{p}");
    let (_, j) = app.call("GET", &format!("/api/v1/jobs/{id}"), None).await;
    assert_eq!(j["state"], "cancelled", "nothing changed");
}

#[tokio::test]
async fn pools_are_created_changed_and_deleted_through_the_api() {
    let app = app().await;
    let body = json!({"id": "gpu-farm", "name": "GPU farm", "worker_template": {"cpu_m": 8000, "memory_mb": 32768, "gpu": 2, "slots": 4}, "min_size": 0, "max_size": 8, "labels": {"zone": "b"}});
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/pools")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.server.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["location"], "/api/v1/pools/gpu-farm");
    let p: Value = serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap()).unwrap();
    assert_eq!(
        (p["provider"].as_str(), p["managed_by"].as_str(), p["state"].as_str(), p["max_size"].as_u64()),
        (Some("external"), Some("api"), Some("active"), Some(8)),
        "{p}"
    );
    assert!(p["join_token"].as_str().unwrap().starts_with("hodei_"), "{p}");
    let (s, e) = app.call("POST", "/api/v1/pools", Some(body.clone())).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("already_exists")), "{e}");
    for (bad, field) in [
        (json!({"id": "x", "type": "elastic", "worker_template": {"cpu_m": 1, "memory_mb": 1, "slots": 1}}), "/type"),
        (json!({"id": "x", "provider": "kubernetes", "worker_template": {"cpu_m": 1, "memory_mb": 1, "slots": 1}}), "/provider"),
        (json!({"id": "x", "worker_template": {"cpu_m": 0, "memory_mb": 1, "slots": 1}}), "/worker_template/cpu_m"),
        (json!({"id": "x", "worker_template": {"cpu_m": 1, "memory_mb": 1, "slots": 1}, "min_size": 3, "max_size": 2}), "/min_size"),
        (json!({"id": "Not A Slug", "worker_template": {"cpu_m": 1, "memory_mb": 1, "slots": 1}}), "/id"),
    ] {
        let (s, e) = app.call("POST", "/api/v1/pools", Some(bad.clone())).await;
        assert_eq!((s, fields(&e)), (StatusCode::BAD_REQUEST, vec![field.to_owned()]), "{bad}: {e}");
    }
    // Jobs may now select it, within its worker shape.
    let (s, job) =
        app.call("POST", "/api/v1/jobs", Some(json!({"command": ["true"], "pool_selector": {"pool": "gpu-farm"}, "resources": {"cpu_m": 4000}}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, p) = app.call("PUT", "/api/v1/pools/gpu-farm", Some(json!({"min_size": 1, "max_size": 4, "name": "GPUs"}))).await;
    assert_eq!((s, p["min_size"].as_u64(), p["max_size"].as_u64(), p["version"].as_i64()), (StatusCode::OK, Some(1), Some(4), Some(2)), "{p}");
    let (s, e) = app.call("PUT", "/api/v1/pools/gpu-farm", Some(json!({"min_size": 5}))).await;
    assert_eq!((s, fields(&e)), (StatusCode::BAD_REQUEST, vec!["/min_size".to_owned()]));
    let (s, e) = app.call("PUT", "/api/v1/pools/gpu-farm", Some(json!({"provider": "local"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "type and provider do not change: {e}");
    let (s, e) = app.call("PUT", "/api/v1/pools/local", Some(json!({"max_size": 9}))).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "the configuration file's pool: {e}");
    let (s, e) = app.call("DELETE", "/api/v1/pools/local", None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{e}");

    let (s, e) = app.call("DELETE", "/api/v1/pools/gpu-farm", None).await;
    assert_eq!((s, e["code"].as_str(), e["jobs"].as_u64()), (StatusCode::CONFLICT, Some("invalid_state"), Some(1)), "a job waits for it: {e}");
    let (s, _) = app.call("POST", &format!("/api/v1/jobs/{}/cancel", job["id"].as_str().unwrap()), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app.call("DELETE", "/api/v1/pools/gpu-farm", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, p) = app.call("GET", "/api/v1/pools/gpu-farm", None).await;
    assert_eq!((s, p["state"].as_str()), (StatusCode::OK, Some("destroyed")));
    let (s, _) = app.call("DELETE", "/api/v1/pools/gpu-farm", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "deleted once");
    let (s, e) = app.call("POST", "/api/v1/pools/gpu-farm/scale", Some(json!({"target_size": 1}))).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("invalid_state")), "a destroyed pool is not scaled: {e}");
    let ids = |v: &Value| v["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let (_, gone) = app.call("GET", "/api/v1/pools?state=destroyed", None).await;
    assert_eq!(ids(&gone), ["gpu-farm"]);
    // The built-in pool waits for its workers (no autoscaler runs behind this router).
    let (_, starting) = app.call("GET", "/api/v1/pools?state=initializing&type=static", None).await;
    assert_eq!(ids(&starting), ["local"]);
    let (s, _) = app.call("GET", "/api/v1/pools?size=3", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "an unknown filter is refused, not ignored");
    let (s, e) = app.call("POST", "/api/v1/pools", Some(body)).await;
    assert_eq!(s, StatusCode::CONFLICT, "an id is not reused: {e}");
    let (s, e) = app.call("POST", "/api/v1/jobs", Some(json!({"command": ["true"], "pool_selector": {"pool": "gpu-farm"}}))).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("unschedulable")), "a deleted pool runs nothing: {e}");
}

/// Scaling policies of a pool made through the API: created with their defaults, a bad trigger
/// is 400 naming the position, ids are the names' slugs and unique, config pools answer 409;
/// manual scale is bounded and recorded in the history with its actor.
#[tokio::test]
async fn scaling_policies_and_manual_scale_through_the_api() {
    let app = app().await;
    let (s, _) = app
        .call(
            "POST",
            "/api/v1/pools",
            Some(json!({"id": "elastic", "worker_template": {"cpu_m": 1000, "memory_mb": 512, "slots": 1}, "min_size": 1, "max_size": 4})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let base = "/api/v1/pools/elastic/scaling/policies";
    let (s, p) = app.call("POST", base, Some(json!({"name": "Grow on Queue", "trigger": "queue_depth > 5", "action": "scale_up"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(
        (p["id"].as_str(), p["mode"].as_str(), p["step"].as_u64(), p["cooldown_s"].as_u64(), p["window_s"].as_u64(), p["enabled"].as_bool()),
        (Some("grow-on-queue"), Some("threshold"), Some(1), Some(60), Some(60), Some(true)),
        "{p}"
    );
    let (s, e) = app.call("POST", base, Some(json!({"name": "Grow on queue!", "trigger": "queue_depth > 1", "action": "scale_up"}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "the same id: {e}");
    let (s, e) = app.call("POST", base, Some(json!({"name": "bad", "trigger": "queue_depth => 5", "action": "scale_up"}))).await;
    assert_eq!((s, e["errors"][0]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("/trigger")), "{e}");
    assert!(e["errors"][0]["message"].as_str().unwrap().starts_with("at position 12: expected a comparison"), "{e}");
    let (s, e) = app.call("POST", base, Some(json!({"name": "fc", "mode": "forecast", "trigger": "queue_depth > 5", "action": "scale_up"}))).await;
    assert_eq!((s, e["errors"][0]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("/trigger")), "{e}");
    let (s, e) = app.call("POST", base, Some(json!({"name": "h", "trigger": "idle_workers > 2", "action": "scale_down", "hysteresis_pct": 10}))).await;
    assert_eq!((s, e["errors"][0]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("/hysteresis_pct")), "a threshold policy has no hysteresis: {e}");
    let (s, e) = app.call("POST", base, Some(json!({"name": "w", "mode": "forecast", "action": "scale_up", "window_s": 30}))).await;
    assert_eq!((s, e["errors"][0]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("/window_s")), "a forecast has no window: {e}");
    let (s, e) = app.call("PUT", "/api/v1/pools/elastic", Some(json!({"idle_timeout_s": 60}))).await;
    assert_eq!((s, e["errors"][0]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("/idle_timeout_s")), "a static pool keeps idle workers: {e}");
    let (s, e) = app.call("POST", base, Some(json!({"name": "x", "trigger": "idle_workers > 2", "action": "scale_down", "step": 0}))).await;
    assert_eq!((s, e["errors"][0]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("/step")), "{e}");
    let (s, p) = app.call("POST", base, Some(json!({"name": "shrink", "trigger": "idle_workers > 2", "action": "scale_down"}))).await;
    assert_eq!((s, p["cooldown_s"].as_u64()), (StatusCode::CREATED, Some(120)), "scale-down's default cooldown: {p}");
    let (s, p) = app
        .call("PUT", &format!("{base}/shrink"), Some(json!({"name": "shrink", "trigger": "idle_workers > 3", "action": "scale_down", "enabled": false})))
        .await;
    assert_eq!((s, p["trigger"].as_str(), p["enabled"].as_bool()), (StatusCode::OK, Some("idle_workers > 3"), Some(false)), "{p}");
    let (s, _) = app.call("PUT", &format!("{base}/shrink"), Some(json!({"name": "other", "trigger": "idle_workers > 3", "action": "scale_down"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a name that changes the id");
    let (_, list) = app.call("GET", base, None).await;
    assert_eq!(list["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect::<Vec<_>>(), ["grow-on-queue", "shrink"]);
    let (_, pool) = app.call("GET", "/api/v1/pools/elastic", None).await;
    assert_eq!(pool["scaling_policies"].as_array().map(Vec::len), Some(2), "{pool}");
    let (s, _) = app.call("DELETE", &format!("{base}/shrink"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.call("GET", &format!("{base}/shrink"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app.call("POST", "/api/v1/pools/local/scaling/policies", Some(json!({"name": "g", "trigger": "queue_depth > 1", "action": "scale_up"}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "config pools change in the file");
    let (_, t) = app.call("GET", "/api/v1/pools/elastic/scaling/triggers", None).await;
    assert_eq!((t[0]["policy_id"].as_str(), t[0]["value"].as_f64(), t[0]["condition_met"].as_bool()), (Some("grow-on-queue"), Some(0.0), Some(false)), "{t}");

    let (s, e) = app.call("POST", "/api/v1/pools/elastic/scale", Some(json!({"target_size": 0}))).await;
    assert_eq!((s, e["errors"][0]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("/target_size")), "below min_size: {e}");
    let (s, ev) = app.call("POST", "/api/v1/pools/elastic/scale", Some(json!({"target_size": 3, "reason": "load test"}))).await;
    assert_eq!((s, ev["from_size"].as_u64(), ev["to_size"].as_u64(), ev["source"].as_str()), (StatusCode::ACCEPTED, Some(1), Some(3), Some("manual")), "{ev}");
    let (_, st) = app.call("GET", "/api/v1/pools/elastic/status", None).await;
    assert_eq!((st["desired_size"].as_u64(), st["last_event"]["reason"].as_str()), (Some(3), Some("load test")), "{st}");
    let (_, h) = app.call("GET", "/api/v1/pools/elastic/scaling/history?decision=executed", None).await;
    assert_eq!((h["items"][0]["actor"].as_str(), h["items"][0]["to_size"].as_u64()), (Some("admin"), Some(3)), "{h}");
    let (s, _) = app.call("GET", "/api/v1/pools/elastic/scaling/history?decision=maybe", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_dashboard_is_served_without_a_token_with_its_policy_and_versioned_assets() {
    let app = app().await;
    let get = |path: &str| {
        let req = Request::builder().uri(path).body(Body::empty()).unwrap();
        let router = app.server.router.clone();
        async move {
            let resp = router.oneshot(req).await.unwrap();
            let (parts, body) = resp.into_parts();
            (parts.status, parts.headers, String::from_utf8(axum::body::to_bytes(body, usize::MAX).await.unwrap().to_vec()).unwrap())
        }
    };
    let (s, h, _) = get("/ui").await;
    assert_eq!((s, h.get(header::LOCATION).map(|v| v.to_str().unwrap())), (StatusCode::PERMANENT_REDIRECT, Some("/ui/")));

    let (s, h, page) = get("/ui/").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe"), "{csp}");
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(h.get(header::SET_COOKIE).is_none());
    let script = page.split('"').find(|p| p.starts_with("/ui/assets/") && p.ends_with("/app.js")).expect("the page names its script").to_owned();

    // Every page address answers the same document; the script reads the path.
    let (s, _, deep) = get("/ui/jobs/01a2532f-1476-75dd-b363-b0063908f556").await;
    assert_eq!((s, deep == page), (StatusCode::OK, true));

    let (s, h, js) = get(&script).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
    assert_eq!(h[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
    assert!(js.contains("import "));

    let (s, h, body) = get("/ui/assets/000000000000/app.js").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "another version's file is not served as this one");
    assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/problem+json"), "{body}");
    let (s, _, _) = get(&script.replace("app.js", "nope.js")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// SPEC's pool rule from a synthetic week of history: the built-in static pool of 2 workers,
/// its cpu 10 % allocated and at most one worker busy, is told to keep 1, saving one worker's
/// month; the advice is an admin's, and the `kind` filter knows both families.
#[tokio::test]
async fn a_pool_whose_minimum_sits_idle_is_advised_from_its_history() {
    let app = app().await;
    let (_, pool) = app.call("GET", "/api/v1/pools/local", None).await;
    let (min, cpu_m, memory_mb) =
        (pool["min_size"].as_u64().unwrap(), pool["worker_template"]["cpu_m"].as_u64().unwrap(), pool["worker_template"]["memory_mb"].as_u64().unwrap());
    assert_eq!(min, 2);
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let step = 300_000;
    let first = (now_ms - 7 * 86_400_000) / step * step;
    let mut samples = Vec::new();
    for at in (first..now_ms).step_by(step as usize) {
        for (metric, value) in [("size", 2.0), ("busy_ratio", 0.1), ("cpu_utilization", 0.1)] {
            samples.push(hodei_store::MetricSample {
                scope: "pool".into(),
                scope_id: "local".into(),
                metric: metric.into(),
                resolution_s: 300,
                at: hodei_core::Timestamp::from_millis(at),
                value,
            });
        }
    }
    app.server.store.put_metric_samples(&samples).await.unwrap();

    let (s, r) = app.call("GET", "/api/v1/cost-optimization/recommendations", None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let pools = r["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 1, "{r}");
    let p = &pools[0];
    assert_eq!(
        (p["kind"].as_str(), p["pool_id"].as_str(), p["current"].as_u64(), p["suggested"].as_u64()),
        (Some("pool_reduce_min_size"), Some("local"), Some(2), Some(1))
    );
    assert_eq!(
        (p["evidence"]["cpu_allocated_pct"].as_u64(), p["evidence"]["busy_workers_p95"].as_u64(), p["evidence"]["at_min_pct"].as_u64()),
        (Some(10), Some(1), Some(100))
    );
    assert!(p["evidence"]["hours"].as_u64().unwrap() >= 167, "{p}");
    // One worker for a month at the default rates.
    let worker = hodei_core::Resources::new(cpu_m as u32, memory_mb as u32, 0);
    let month = hodei_core::cost::cost_micros(30 * 86_400, &worker, &hodei_core::cost::Rates::DEFAULT);
    let saving = p["estimated_monthly_savings_micros"].as_i64().unwrap();
    assert!((saving - month).abs() <= month / 100, "{saving} vs {month}");
    assert_eq!(r["potential_savings_micros"].as_i64(), Some(saving));

    let (_, r) = app.call("GET", "/api/v1/cost-optimization/recommendations?kind=pool_reduce_min_size", None).await;
    assert_eq!((r["items"].as_array().unwrap().len(), r["pools"].as_array().unwrap().len()), (0, 1));
    let (_, r) = app.call("GET", "/api/v1/cost-optimization/recommendations?kind=job_reduce_cpu", None).await;
    assert_eq!(r["pools"].as_array().unwrap().len(), 0);
    let (_, r) = app.call("GET", "/api/v1/cost-optimization/recommendations?tenant_id=default", None).await;
    assert_eq!(r["pools"].as_array().unwrap().len(), 0, "a tenant's advice is about its jobs");
    let (s, r) = app.call("GET", "/api/v1/cost-optimization/recommendations?kind=bigger", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(r["errors"][0]["expected"].as_str().unwrap().contains("pool_switch_to_dynamic"), "{r}");
    // A report made by an admin about every tenant carries it too.
    let (s, rep) = app.call("POST", "/api/v1/cost-optimization/reports", Some(json!({"period": "last_week"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{rep}");
    assert_eq!(rep["pool_recommendations"][0]["kind"], "pool_reduce_min_size");
}
