//! The store going away under a running engine (a network database restarting): nothing a
//! caller was refused is kept in memory, and scheduling resumes by itself once the store is back.
//! The store is the real SQLite engine behind a switch that makes every call fail as
//! unreachable (fault injection), so the engine and the API are the real ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use hodei_core::sched::Changes;
use hodei_core::sla_tally::SlaCount;
use hodei_core::{
    Attempt, BurstId, BurstSession, Job, JobEvent, JobId, Pool, PoolId, Principal, PrincipalId, Tenant, TenantId, Timestamp, Token, TokenId, Worker, WorkerId,
};
use hodei_server::ServerOptions;
use hodei_server::config::{Config, Secret};
use hodei_store::sqlite::SqliteStore;
use hodei_store::{BreachFilter, BurstFilter, Identity, JobFilter, LiveState, Result, Store, StoreError};
use serde_json::{Value, json};
use tower::ServiceExt;

/// SQLite, or nothing at all while `down` is set.
struct Switchable {
    inner: SqliteStore,
    down: AtomicBool,
}

impl Switchable {
    fn up(&self, doing: &'static str) -> Result<()> {
        match self.down.load(Ordering::SeqCst) {
            true => Err(StoreError::WriteUnavailable { doing, detail: "switched off by the test".into() }),
            false => Ok(()),
        }
    }
}

/// The `Store` and `Identity` impls: every call checks the switch, then passes through.
/// (Generated whole, so `async_trait` sees the methods.)
macro_rules! pass {
    ($tr:ident { $( fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )* } $($extra:tt)*) => {
        #[async_trait]
        impl $tr for Switchable {
            $( async fn $name(&self $(, $arg: $ty)*) -> Result<$ret> {
                self.up(stringify!($name))?;
                self.inner.$name($($arg),*).await
            } )*

            $($extra)*
        }
    };
}

pass! { Identity {
        fn create_principal(&self, p: &Principal) -> ();
        fn get_principal(&self, id: PrincipalId) -> Option<Principal>;
        fn get_principal_by_name(&self, name: &str) -> Option<Principal>;
        fn list_principals(&self, before: Option<PrincipalId>, limit: u32) -> Vec<Principal>;
        fn update_principal(&self, p: &Principal) -> ();
        fn create_token(&self, t: &Token) -> ();
        fn tokens_by_prefix(&self, prefix: &str) -> Vec<Token>;
        fn get_token(&self, id: TokenId) -> Option<Token>;
        fn list_tokens(&self, principal: Option<PrincipalId>, before: Option<TokenId>, limit: u32) -> Vec<Token>;
        fn delete_token(&self, id: TokenId) -> bool;
        fn touch_token(&self, id: TokenId, at: Timestamp) -> ();
        fn append_audit(&self, e: &hodei_core::AuditEntry) -> ();
        fn list_audit(&self, f: &hodei_store::AuditFilter) -> Vec<hodei_core::AuditEntry>;
} }

pass! { Store {
        fn ping(&self) -> ();
        fn schema_is_current(&self) -> bool;
        fn create_tenant(&self, t: &Tenant) -> ();
        fn get_tenant(&self, id: &TenantId) -> Option<Tenant>;
        fn list_tenants(&self) -> Vec<Tenant>;
        fn update_tenant(&self, t: &Tenant) -> ();
        fn delete_tenant(&self, id: &TenantId) -> bool;
        fn count_live_jobs(&self, tenant: &TenantId) -> u64;
        fn upsert_pool(&self, p: &Pool, join_token_hash: Option<&str>) -> ();
        fn create_pool(&self, p: &Pool, join_token_hash: &str) -> ();
        fn get_pool(&self, id: &PoolId) -> Option<(Pool, String)>;
        fn set_pool_join_token(&self, id: &PoolId, join_token_hash: &str) -> bool;
        fn list_pools(&self) -> Vec<Pool>;
        fn set_pool_size(&self, id: &PoolId, desired_size: u32, state: hodei_core::PoolState, state_reason: &str) -> bool;
        fn record_scaling_event(&self, e: &hodei_core::autoscale::Event) -> i64;
        fn list_scaling_events(&self, f: &hodei_store::ScalingEventFilter) -> Vec<hodei_core::autoscale::Event>;
        fn delete_scaling_events_before(&self, before: Timestamp) -> u64;
        fn cost_breakdown(&self, q: &hodei_store::CostQuery) -> Vec<hodei_store::CostGroupRow>;
        fn create_burst(&self, b: &BurstSession) -> ();
        fn update_burst(&self, b: &BurstSession) -> ();
        fn get_burst(&self, id: BurstId) -> Option<BurstSession>;
        fn list_bursts(&self, f: &BurstFilter) -> Vec<BurstSession>;
        fn apply(&self, changes: Arc<Changes>) -> ();
        fn get_job(&self, id: JobId) -> Option<Job>;
        fn list_jobs(&self, f: &JobFilter) -> Vec<Job>;
        fn list_attempts(&self, job: JobId) -> Vec<Attempt>;
        fn job_costs(&self, jobs: &[JobId]) -> Vec<(JobId, i64)>;
        fn list_events(&self, job: JobId) -> Vec<JobEvent>;
        fn load_live(&self) -> LiveState;
        fn delete_ended_jobs(&self, before: Timestamp, limit: u32) -> hodei_store::Purged;
        fn sla_counts(&self, since: Timestamp, tenant: Option<&TenantId>) -> Vec<SlaCount>;
        fn forget_sla_counts(&self, before: Timestamp) -> u64;
        fn setting_overrides(&self) -> Option<String>;
        fn put_setting_overrides(&self, body: &str, at: Timestamp) -> ();
        fn put_metric_samples(&self, samples: &[hodei_store::MetricSample]) -> ();
        fn downsample_metric_samples(&self, width_s: u32, from: Timestamp, to: Timestamp) -> u64;
        fn last_metric_sample(&self, resolution_s: u32) -> Option<Timestamp>;
        fn metric_history(&self, q: &hodei_store::HistoryQuery) -> Vec<hodei_store::HistorySeries>;
        fn forget_metric_samples(&self, resolution_s: u32, before: Timestamp) -> u64;
        fn forget_cost_records(&self, before: Timestamp) -> u64;
        fn top_cost_jobs(&self, q: &hodei_store::CostQuery, limit: u32) -> Vec<hodei_store::JobCost>;
        fn put_cost_report(&self, r: &hodei_store::StoredReport) -> ();
        fn get_cost_report(&self, id: uuid::Uuid) -> Option<hodei_store::StoredReport>;
        fn list_cost_reports(&self, tenant: Option<&TenantId>, visible: Option<&[TenantId]>, before: Option<uuid::Uuid>, limit: u32) -> Vec<hodei_store::StoredReport>;
        fn put_usage(&self, usage: &[hodei_store::AttemptUsage]) -> ();
        fn attempt_usage(&self, attempts: &[hodei_core::AttemptId]) -> Vec<hodei_store::AttemptUsage>;
        fn forget_usage(&self, before: Timestamp) -> u64;
        fn usage_runs(&self, since: Timestamp, tenant: Option<&TenantId>, per_name: u32, limit: u32) -> Vec<hodei_store::UsageRun>;
        fn add_rate_version(&self, r: &hodei_store::StoredRates) -> ();
        fn raise_alert(&self, a: &hodei_core::alert::Alert) -> bool;
        fn list_alerts(&self, f: &hodei_store::AlertFilter) -> Vec<hodei_core::alert::Alert>;
        fn get_alert(&self, id: hodei_core::AlertId) -> Option<hodei_core::alert::Alert>;
        fn ack_alert(&self, id: hodei_core::AlertId, by: &str, at: Timestamp) -> bool;
        fn resolve_alerts(&self, scope: &str, still: &[String], at: Timestamp) -> u64;
        fn count_open_alerts(&self) -> Vec<(String, String, i64)>;
        fn create_budget(&self, b: &hodei_core::budget::Budget) -> ();
        fn update_budget(&self, b: &hodei_core::budget::Budget) -> ();
        fn get_budget(&self, id: hodei_core::BudgetId) -> Option<hodei_core::budget::Budget>;
        fn list_budgets(&self, tenant: Option<&TenantId>, visible: Option<&[TenantId]>) -> Vec<hodei_core::budget::Budget>;
        fn delete_budget(&self, id: hodei_core::BudgetId) -> bool;
        fn list_rate_versions(&self) -> Vec<hodei_store::StoredRates>;
        fn sla_breaches(&self, f: &BreachFilter) -> Vec<Job>;
        fn register_worker(&self, w: &Worker, session_token_hash: &str) -> ();
        fn worker_session_hash(&self, id: WorkerId) -> Option<String>;
        fn list_workers(&self, f: &hodei_store::WorkerFilter) -> Vec<Worker>;
        fn get_worker(&self, id: WorkerId) -> Option<Worker>;
}
    fn stage(&self, changes: Arc<Changes>) {
        // While down, the part is lost and the `apply` that follows fails: as a real outage.
        if self.up("stage").is_ok() {
            self.inner.stage(changes);
        }
    }
}

const TOKEN: &str = "test-admin-token";

async fn call(router: &axum::Router, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut b = Request::builder().method(method).uri(path).header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    let body = match body {
        Some(v) => {
            b = b.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let resp = router.clone().oneshot(b.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// `hodei_scheduler_loop_lag_seconds` from `/metrics`.
async fn loop_lag(router: &axum::Router) -> f64 {
    let req = Request::builder().uri("/metrics").body(Body::empty()).unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    let line = text.lines().find(|l| l.starts_with("hodei_scheduler_loop_lag_seconds ")).unwrap_or_else(|| panic!("no loop lag in {text}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_submit_refused_during_a_store_outage_is_never_scheduled_and_scheduling_resumes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.server.data_dir = dir.path().to_owned();
    cfg.server.http_addr = "127.0.0.1:0".into();
    cfg.server.grpc_addr = "127.0.0.1:0".into();
    cfg.metrics.prometheus.port = 0;
    cfg.auth.admin_token = Some(Secret(TOKEN.into()));
    let store = Arc::new(Switchable { inner: SqliteStore::open_temporary().await.unwrap(), down: AtomicBool::new(false) });
    let server = hodei_server::start(ServerOptions { config: cfg, worker_exe: None, metrics_addr: None, store: Some(store.clone()) }).await.unwrap();
    let r = &server.router;
    let job = |name: &str| json!({"command": ["true"], "name": name, "hold": true});

    let (s, before) = call(r, "POST", "/api/v1/jobs", Some(job("before"))).await;
    assert_eq!(s, StatusCode::CREATED, "{before}");

    store.down.store(true, Ordering::SeqCst);
    let (s, refused) = call(r, "POST", "/api/v1/jobs", Some(job("during"))).await;
    assert_eq!((s, refused["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("store_unavailable")), "{refused}");
    // Still down: the scheduler says it is stalled, and answers at once rather than waiting.
    let (s, ready) = call(r, "GET", "/ready", None).await;
    assert_eq!((s, ready["checks"]["scheduler"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("stalled")), "{ready}");
    let started = Instant::now();
    let (s, again) = call(r, "POST", "/api/v1/jobs", Some(job("during-2"))).await;
    assert_eq!((s, again["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("store_unavailable")), "{again}");
    assert!(started.elapsed() < Duration::from_secs(3), "refused while stalled, not after a reload attempt");
    // The stall shows in the loop-lag gauge, read at scrape time.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stalled = loop_lag(r).await;
    assert!(stalled >= 2.0, "lag {stalled} s while stalled");

    store.down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, _) = call(r, "GET", "/ready", None).await;
        if s == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the scheduler did not resume after the store came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let healthy = loop_lag(r).await;
    assert!(healthy < stalled && healthy < 2.0, "lag {healthy} s once resumed (a round at least every tick, 1 s)");
    // Only what was acknowledged is known, to the store and to the scheduler alike.
    let (_, queue) = call(r, "GET", "/api/v1/queue", None).await;
    assert_eq!(queue["totals"]["held"], 1, "{queue}");
    let stored = store.list_jobs(&JobFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(stored.iter().map(|j| j.spec.name.as_str()).collect::<Vec<_>>(), ["before"]);
    let (s, after) = call(r, "POST", "/api/v1/jobs", Some(job("after"))).await;
    assert_eq!(s, StatusCode::CREATED, "{after}");
    let (_, queue) = call(r, "GET", "/api/v1/queue", None).await;
    assert_eq!(queue["totals"]["held"], 2, "{queue}");
}

/// Reads of the scheduler's state (`/queue`, `explain`) see only what is committed: a submit
/// in the same engine round as the read, whose commit then fails, is never shown.
#[tokio::test]
async fn the_queue_never_shows_a_job_whose_commit_failed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.server.data_dir = dir.path().to_owned();
    cfg.server.http_addr = "127.0.0.1:0".into();
    cfg.server.grpc_addr = "127.0.0.1:0".into();
    cfg.metrics.prometheus.port = 0;
    cfg.auth.admin_token = Some(Secret(TOKEN.into()));
    let store = Arc::new(Switchable { inner: SqliteStore::open_temporary().await.unwrap(), down: AtomicBool::new(false) });
    let server = hodei_server::start(ServerOptions { config: cfg, worker_exe: None, metrics_addr: None, store: Some(store.clone()) }).await.unwrap();
    let r = server.router.clone();
    let (mut seen, mut committed) = (0, 0);
    for round in 0..5 {
        // A committed job, which also leaves the tenant in the API's cache: the submits below
        // reach the engine, whose commit then fails.
        let (s, _) = call(&r, "POST", "/api/v1/jobs", Some(json!({"command": ["true"], "hold": true}))).await;
        assert_eq!(s, StatusCode::CREATED);
        committed += 1;
        store.down.store(true, Ordering::SeqCst);
        let mut tasks = Vec::new();
        for i in 0..16 {
            let r = r.clone();
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    let (s, _) = call(&r, "POST", "/api/v1/jobs", Some(json!({"command": ["true"], "hold": true}))).await;
                    assert_ne!(s, StatusCode::CREATED, "nothing is acknowledged while the store is down");
                    None
                } else {
                    let (s, q) = call(&r, "GET", "/api/v1/queue", None).await;
                    (s == StatusCode::OK).then(|| q["totals"]["held"].as_u64().unwrap_or(0))
                }
            }));
        }
        for t in tasks {
            if let Some(held) = t.await.unwrap() {
                seen += 1;
                assert_eq!(held, committed, "round {round}: the queue showed {} jobs that were never committed", held - committed);
            }
        }
        store.down.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(20);
        while call(&r, "GET", "/ready", None).await.0 != StatusCode::OK {
            assert!(Instant::now() < deadline, "the scheduler did not resume");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!("{seen} queue reads answered during the outages");
}
