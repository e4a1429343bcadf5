//! A JSON extractor whose failures are problem+json naming the JSON pointer of the bad field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use hodei_core::idempotency::IdempotencyRequest;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

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

/// A job POST's JSON body with its `Idempotency-Key` (SPEC §4.1), if it has one: the key and
/// a digest of the method, path, query and body, so a repeat with another request is told apart.
pub struct KeyedJson<T> {
    pub body: T,
    pub key: Option<IdempotencyRequest>,
}

/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

fn idempotency_key(req: &Request) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get("idempotency-key") else { return Ok(None) };
    let expected = format!("1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters");
    let key = v.to_str().ok().filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY && k.bytes().all(|b| (0x20..0x7f).contains(&b)));
    match key {
        Some(k) => Ok(Some(k.to_owned())),
        None => Err(ApiError::field("Idempotency-Key", "invalid Idempotency-Key header", expected, Some(String::from_utf8_lossy(v.as_bytes()).into_owned()))),
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for KeyedJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let key = idempotency_key(&req)?;
        let what = format!("{} {}", req.method(), req.uri().path_and_query().map_or("", |p| p.as_str()));
        let ApiJson(bytes) = ApiJson::<Bytes>::read(req, state).await?;
        let key = key.map(|key| {
            let mut h = Sha256::new();
            h.update(what.as_bytes());
            h.update(b"\n");
            h.update(&bytes);
            let fingerprint = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            IdempotencyRequest { key, fingerprint }
        });
        let t = std::time::Instant::now();
        let body = parse(&bytes)?;
        tracing::debug!(bytes = bytes.len(), parse_ms = t.elapsed().as_millis() as u64, "parsed body");
        Ok(KeyedJson { body, key })
    }
}

impl ApiJson<Bytes> {
    /// The body of a JSON request, refused unless it says it is JSON, or over the size limit.
    async fn read<S: Send + Sync>(req: Request, state: &S) -> Result<ApiJson<Bytes>, ApiError> {
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
        Ok(ApiJson(bytes))
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ApiJson(bytes) = ApiJson::<Bytes>::read(req, state).await?;
        let t = std::time::Instant::now();
        let r = parse(&bytes).map(ApiJson);
        tracing::debug!(bytes = bytes.len(), parse_ms = t.elapsed().as_millis() as u64, "parsed body");
        r
    }
}
