//! `/health`, `/ready`, `/metrics`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::ApiState;
use crate::error::{ApiError, ErrorCode};

pub fn router() -> Router<ApiState> {
    Router::new().route("/health", get(health)).route("/ready", get(ready)).route("/metrics", get(metrics))
}

async fn health(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "version": s.cfg.version, "uptime_s": s.started.elapsed().as_secs()}))
}

/// Each check measures now: a store round trip, the applied migrations, the scheduler loop, and
/// a TCP connect to the worker gRPC listener.
async fn ready(State(s): State<ApiState>) -> Response {
    let store = s.store.ping().await.is_ok();
    let migrations = if store { s.store.schema_is_current().await.ok() } else { None };
    let scheduler = s.control.is_running();
    let grpc = match s.cfg.grpc_addr {
        Some(addr) => matches!(tokio::time::timeout(std::time::Duration::from_millis(500), tokio::net::TcpStream::connect(addr)).await, Ok(Ok(_))),
        None => true,
    };
    let ok = store && migrations == Some(true) && scheduler && grpc;
    let body = json!({
        "status": if ok { "ready" } else { "not_ready" },
        "checks": {
            "store": if store { "ok" } else { "unreachable" },
            "migrations": match migrations { Some(true) => "ok", Some(false) => "behind", None => "unknown" },
            "scheduler": if scheduler { "leader" } else { "stalled" },
            "grpc": if grpc { "ok" } else { "not_accepting" },
        }
    });
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// The exposition, behind `metrics.prometheus.bearer_token` when one is set: the series name
/// every tenant and pool, which not everyone who can reach the port should learn.
pub async fn metrics(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(want) = &s.cfg.metrics_bearer_token {
        let given = crate::auth::bearer(&headers).unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(want.as_bytes())) {
            return ApiError::new(ErrorCode::Unauthorized, "send metrics.prometheus.bearer_token as Authorization: Bearer <token>").into_response();
        }
    }
    // Read at scrape time: a stalled loop cannot report its own lag.
    metrics::gauge!("hodei_scheduler_loop_lag_seconds").set(s.control.loop_lag().as_secs_f64());
    match &s.metrics {
        // Rendering reads every series: off the async workers.
        Some(h) => match tokio::task::spawn_blocking({
            let h = h.clone();
            move || h.render()
        })
        .await
        {
            Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
            Err(e) => ApiError::new(ErrorCode::Internal, format!("rendering metrics failed: {e}")).into_response(),
        },
        None => (StatusCode::NOT_FOUND, "metrics are disabled").into_response(),
    }
}
