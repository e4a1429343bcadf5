//! Errors as RFC 9457 problem+json with the stable codes of SPEC §4.1. Internals are logged,
//! never returned.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hodei_core::spec::FieldError;
use hodei_store::StoreError;
use serde_json::{Map, Value, json};

use crate::ctx;

/// One row per stable error code: HTTP status and title.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    ValidationFailed,
    Unauthorized,
    Forbidden,
    TenantSuspended,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    AlreadyExists,
    InvalidState,
    Conflict,
    PreconditionFailed,
    Unschedulable,
    QuotaExceeded,
    BudgetExhausted,
    RateLimited,
    BurstUnavailable,
    Internal,
    StoreUnavailable,
    Unavailable,
    BadGateway,
}

impl ErrorCode {
    pub fn parts(self) -> (StatusCode, &'static str, &'static str) {
        use ErrorCode::*;
        match self {
            BadRequest => (StatusCode::BAD_REQUEST, "bad_request", "Bad request"),
            ValidationFailed => (StatusCode::BAD_REQUEST, "validation_failed", "Validation failed"),
            Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "Missing or invalid token"),
            Forbidden => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            TenantSuspended => (StatusCode::FORBIDDEN, "tenant_suspended", "Tenant suspended"),
            NotFound => (StatusCode::NOT_FOUND, "not_found", "Not found"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed"),
            PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "Payload too large"),
            UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Unsupported media type"),
            AlreadyExists => (StatusCode::CONFLICT, "already_exists", "Already exists"),
            InvalidState => (StatusCode::CONFLICT, "invalid_state", "Not allowed in the current state"),
            Conflict => (StatusCode::CONFLICT, "conflict", "Conflict"),
            PreconditionFailed => (StatusCode::PRECONDITION_FAILED, "precondition_failed", "Precondition failed"),
            Unschedulable => (StatusCode::UNPROCESSABLE_ENTITY, "unschedulable", "No pool can ever run this job"),
            QuotaExceeded => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", "Quota exceeded"),
            BudgetExhausted => (StatusCode::PAYMENT_REQUIRED, "budget_exhausted", "Budget exhausted"),
            RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Submit rate exceeded"),
            BurstUnavailable => (StatusCode::CONFLICT, "burst_unavailable", "Burst unavailable"),
            Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
            StoreUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "Store unavailable"),
            Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
            BadGateway => (StatusCode::BAD_GATEWAY, "bad_gateway", "A service the server called failed"),
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub extra: Map<String, Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        ApiError { code, detail: detail.into(), errors: Vec::new(), extra: Map::new() }
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {} (expected {})", one.field, one.message, one.expected),
            many => format!("{} fields are invalid", many.len()),
        };
        ApiError { code: ErrorCode::ValidationFailed, detail, errors, extra: Map::new() }
    }

    pub fn field(field: &str, message: impl Into<String>, expected: impl Into<String>, value: Option<String>) -> Self {
        Self::validation(vec![FieldError::new(field, message, expected, value)])
    }

    /// The same error with its fields' pointers under `prefix` (an item of a list in the body).
    pub fn under(mut self, prefix: &str) -> Self {
        for e in &mut self.errors {
            e.field = format!("{prefix}{}", e.field);
        }
        if !self.errors.is_empty() {
            self = Self::validation(self.errors);
        }
        self
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::AlreadyExists { what } => ApiError::new(ErrorCode::AlreadyExists, format!("{what} already exists")),
            StoreError::VersionMismatch { what } => {
                ApiError::new(ErrorCode::PreconditionFailed, format!("{what} was changed by someone else; reload and retry"))
            }
            _ if e.is_unavailable() => {
                tracing::error!(error = ?e, "store unavailable");
                ApiError::new(ErrorCode::StoreUnavailable, "the database cannot be reached; retry later")
            }
            _ => {
                tracing::error!(error = ?e, "store error");
                ApiError::new(ErrorCode::StoreUnavailable, "the database failed the request; retry later")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.code.parts();
        let (request_id, instance) = ctx::current();
        let mut body = json!({
            "type": format!("urn:hodei:problem:{code}"),
            "title": title,
            "status": status.as_u16(),
            "detail": self.detail,
            "instance": instance,
            "code": code,
            "request_id": request_id,
        });
        if !self.errors.is_empty() {
            body["errors"] =
                Value::Array(self.errors.iter().map(|e| json!({"field": e.field, "message": e.message, "expected": e.expected, "value": e.value})).collect());
        }
        let retry_after = self.extra.get("retry_after_s").and_then(Value::as_u64);
        if let Value::Object(map) = &mut body {
            map.extend(self.extra);
        }
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The problem+json body, for the OpenAPI document.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub instance: String,
    /// Stable error code, e.g. `validation_failed`.
    pub code: String,
    pub request_id: String,
    pub errors: Option<Vec<ProblemField>>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ProblemField {
    /// JSON pointer into the request body.
    pub field: String,
    pub message: String,
    pub expected: String,
    pub value: Option<String>,
}

impl From<hodei_core::Rejection> for ApiError {
    /// 429 `quota_exceeded` with the numbers (SPEC §2.4).
    fn from(r: hodei_core::Rejection) -> Self {
        let b = r.breach;
        let why = if r.retryable {
            "retry when the tenant's usage goes down"
        } else {
            "the job alone is over the tenant's ceiling; it can never run under this quota"
        };
        ApiError::new(ErrorCode::QuotaExceeded, format!("{}: usage {} + requested {} > ceiling {} — {why}", b.limit, b.usage, b.requested, b.ceiling))
            .with("limit", b.limit.as_str().into())
            .with("quota", b.quota.into())
            .with("ceiling", b.ceiling.into())
            .with("usage", b.usage.into())
            .with("requested", b.requested.into())
            .with("retryable", r.retryable.into())
    }
}

/// Middleware: every error answer is problem+json, also the ones the framework makes itself (a
/// bad query string or path parameter, 405, 413 from the body limit), with their text as the
/// detail and their status and `Allow`/`Retry-After` headers kept.
pub async fn problems_only(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    // JSON answers are ours already (problem+json, or `/ready`'s checks with its 503).
    let is_json = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.to_str().is_ok_and(|t| t.starts_with("application/") && t.contains("json")));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).trim().to_owned()).unwrap_or_default();
    use ErrorCode::*;
    let code = match status.as_u16() {
        401 => Unauthorized,
        403 => Forbidden,
        404 => NotFound,
        405 => MethodNotAllowed,
        413 => PayloadTooLarge,
        415 => UnsupportedMediaType,
        429 => RateLimited,
        503 => Unavailable,
        s if s >= 500 => Internal,
        _ => BadRequest,
    };
    let detail = if text.is_empty() { code.parts().2.to_owned() } else { text };
    let mut out = ApiError::new(code, detail).into_response();
    *out.status_mut() = status;
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}
