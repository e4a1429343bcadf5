//! Per-request context (request id, path) for error bodies and spans, carried in a task-local
//! set by the outermost middleware.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

#[derive(Clone)]
struct RequestCtx {
    id: String,
    path: String,
}

tokio::task_local! {
    static CTX: RequestCtx;
}

/// `(request_id, path)` of the request being served, empty outside one.
pub fn current() -> (String, String) {
    CTX.try_with(|c| (c.id.clone(), c.path.clone())).unwrap_or_default()
}

/// Records `field = value` on the request's span (`principal`, `tenant`, `job_id`).
pub fn record(field: &'static str, value: &dyn std::fmt::Display) {
    tracing::Span::current().record(field, tracing::field::display(value));
}

/// Takes `X-Request-Id` or mints one, echoes it, and scopes the context.
pub async fn request_context(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    let ctx = RequestCtx { id: id.clone(), path: req.uri().path().to_owned() };
    // Who asks and what about, recorded as the request is authenticated and its tenant and job
    // are looked up (`record`), so every line logged while serving it carries them.
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %id,
        principal = tracing::field::Empty,
        tenant = tracing::field::Empty,
        job_id = tracing::field::Empty,
    );
    let mut resp = CTX.scope(ctx, tracing::Instrument::instrument(next.run(req), span)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
