//! A JSON extractor whose failures are problem+json naming the JSON pointer of the bad field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};

pub struct ApiJson<T>(pub T);

fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => out.push_str(&format!("/{}", key.replace('~', "~0").replace('/', "~1"))),
            Segment::Enum { variant } => out.push_str(&format!("/{variant}")),
            Segment::Unknown => {}
        }
    }
    out
}

/// Parses `bytes` as `T`, mapping errors to 400s. Valid bodies take the plain (fast) path;
/// only a failure is parsed again with path tracking, to name the bad field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::new(ErrorCode::BadRequest, format!("malformed JSON: {inner}"));
        }
        let mut field = pointer(e.path());
        let msg = inner.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
        if let Some(rest) = msg.strip_prefix("unknown field `") {
            let name = rest.split('`').next().unwrap_or("");
            // The path names the object; the pointer should name the field itself.
            if !field.ends_with(&format!("/{name}")) {
                field = format!("{field}/{name}");
            }
            let expected = rest.split_once("expected ").map(|x| x.1.replace('`', "")).unwrap_or_else(|| "a known field".into());
            return ApiError::field(&field, format!("unknown field {name}"), expected, None);
        }
        let expected = msg.split_once("expected ").map(|x| x.1.to_owned()).unwrap_or_else(|| "a value of the documented type".into());
        let (message, value) = match msg.split_once(", expected") {
            Some((m, _)) => (m.to_owned(), None),
            None => (msg.clone(), None),
        };
        ApiError::field(if field.is_empty() { "/" } else { &field }, message, expected, value)
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !ct.starts_with("application/json") {
            return Err(ApiError::new(ErrorCode::UnsupportedMediaType, format!("expected Content-Type: application/json, got {ct:?}")));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "request body is larger than the limit (limits.max_body_bytes)")
            } else {
                ApiError::new(ErrorCode::BadRequest, format!("could not read the request body: {e}"))
            }
        })?;
        let t = std::time::Instant::now();
        let r = parse(&bytes).map(ApiJson);
        tracing::debug!(bytes = bytes.len(), parse_ms = t.elapsed().as_millis() as u64, "parsed body");
        r
    }
}
