//! Authentication (bearer tokens → [`Caller`]) and the checks every handler makes with the
//! core's permission table (SPEC §8.2).
//!
//! Tokens are looked up by their prefix and compared by hash in constant time, then cached by
//! hash in memory, so a request costs no store read. The cache is exact rather than timed:
//! every write that changes what a token may do (revoking it, rebinding its principal) goes
//! through this process and drops the entries it affects before it answers, and expiry is
//! checked on every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hodei_core::{Access, Action, Caller, PrincipalId, TenantId, Timestamp, Token, TokenId};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ApiState;
use crate::error::{ApiError, ApiResult, ErrorCode};

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SECRET_LEN: usize = 32;
/// `hodei_` and the secret's first six characters: stored in clear, for lookup and listing.
pub const PREFIX_LEN: usize = 12;
/// `last_used_at` is written at most this often per token.
const TOUCH_EVERY_MS: i64 = 60_000;

/// A fresh secret: `hodei_` + 32 base62 characters from the OS's CSPRNG (unbiased: bytes
/// ≥ 248 are drawn again).
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut out = String::with_capacity(6 + SECRET_LEN);
    out.push_str("hodei_");
    let mut buf = [0u8; 64];
    while out.len() < 6 + SECRET_LEN {
        getrandom::fill(&mut buf)?;
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() == 6 + SECRET_LEN {
                break;
            }
            out.push(BASE62[usize::from(*b % 62)] as char);
        }
    }
    Ok(out)
}

/// Hex SHA-256 of a secret: what the store keeps.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Does `secret` hash to `expected` (hex SHA-256)? In constant time.
pub fn matches_hash(secret: &str, expected: &str) -> bool {
    bool::from(secret_hash(secret).as_bytes().ct_eq(expected.as_bytes()))
}

/// Has the shape of a secret this server mints (anything else is refused without a lookup).
fn is_secret_shaped(s: &str) -> bool {
    s.len() == 6 + SECRET_LEN && s.starts_with("hodei_") && s.as_bytes()[6..].iter().all(u8::is_ascii_alphanumeric)
}

#[derive(Clone)]
struct Cached {
    token: TokenId,
    principal: PrincipalId,
    expires_at: Option<Timestamp>,
    caller: Arc<Caller>,
    touched_at: Timestamp,
}

/// Tokens seen recently, by the hash of their secret.
#[derive(Default)]
pub struct TokenCache {
    by_hash: Mutex<HashMap<String, Cached>>,
    /// Bumped by every invalidation, so that a lookup that read the store before one does not
    /// put back what it dropped.
    generation: std::sync::atomic::AtomicU64,
}

impl TokenCache {
    /// Forgets a revoked token.
    pub fn revoke(&self, id: TokenId) {
        self.forget(|c| c.token == id);
    }

    /// Forgets every token of a principal whose bindings changed.
    pub fn principal_changed(&self, id: PrincipalId) {
        self.forget(|c| c.principal == id);
    }

    fn forget(&self, dropped: impl Fn(&Cached) -> bool) {
        if let Ok(mut m) = self.by_hash.lock() {
            self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            m.retain(|_, c| !dropped(c));
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn get(&self, hash: &str) -> Option<Cached> {
        self.by_hash.lock().ok()?.get(hash).cloned()
    }

    /// Caches what was read from the store when no invalidation happened since `read_at`.
    fn put(&self, hash: String, c: Cached, read_at: u64) {
        if let Ok(mut m) = self.by_hash.lock() {
            if self.generation() != read_at {
                return;
            }
            // Bounded: the cache only saves store reads, so starting over is always correct.
            if m.len() >= 100_000 {
                m.clear();
            }
            m.insert(hash, c);
        }
    }

    fn touched(&self, hash: &str, at: Timestamp) {
        if let Ok(mut m) = self.by_hash.lock()
            && let Some(c) = m.get_mut(hash)
        {
            c.touched_at = at;
        }
    }
}

/// The bearer token of a request; the scheme is case-insensitive (RFC 9110).
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized() -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, "send a valid API token as Authorization: Bearer <token>")
}

/// Resolves `secret` to its caller: from the cache, else from the store.
async fn caller_of(s: &ApiState, secret: &str, now: Timestamp) -> ApiResult<Arc<Caller>> {
    if !is_secret_shaped(secret) {
        return Err(unauthorized());
    }
    let hash = secret_hash(secret);
    let cached = match s.token_cache.get(&hash) {
        Some(c) => c,
        None => {
            let generation = s.token_cache.generation();
            let found = s.store.tokens_by_prefix(&secret[..PREFIX_LEN]).await?;
            let Some(t) = found.into_iter().find(|t| bool::from(t.secret_hash.as_bytes().ct_eq(hash.as_bytes()))) else {
                return Err(unauthorized());
            };
            let Some(p) = s.store.get_principal(t.principal).await? else { return Err(unauthorized()) };
            let c = Cached {
                token: t.id,
                principal: p.id,
                expires_at: t.expires_at,
                caller: Arc::new(Caller::new(p.id, p.name, p.bindings)),
                touched_at: t.last_used_at.unwrap_or(Timestamp::from_millis(i64::MIN)),
            };
            s.token_cache.put(hash.clone(), c.clone(), generation);
            c
        }
    };
    if cached.expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::new(ErrorCode::Unauthorized, "this API token has expired; create a new one"));
    }
    if now.as_millis().saturating_sub(cached.touched_at.as_millis()) >= TOUCH_EVERY_MS {
        s.token_cache.touched(&hash, now);
        let (store, id) = (s.store.clone(), cached.token);
        tokio::spawn(async move {
            if let Err(e) = store.touch_token(id, now).await {
                tracing::warn!(error = %e, token = %id, "recording an API token's last use");
            }
        });
    }
    Ok(cached.caller)
}

/// Middleware on `/api/v1`: puts the request's [`Caller`] into its extensions, or answers 401.
pub async fn authenticate(State(s): State<ApiState>, mut req: Request, next: Next) -> Response {
    let caller = match &s.cfg.admin_token {
        // auth.mode: none (loopback only): everyone is the admin.
        None => s.admin.clone(),
        Some(admin) => {
            let Some(given) = bearer(req.headers()) else { return unauthorized().into_response() };
            if bool::from(given.as_bytes().ct_eq(admin.as_bytes())) {
                s.admin.clone()
            } else {
                match caller_of(&s, given, s.clock.now()).await {
                    Ok(c) => c,
                    Err(e) => return e.into_response(),
                }
            }
        }
    };
    crate::ctx::record("principal", &caller.name);
    req.extensions_mut().insert(Who(caller));
    next.run(req).await
}

/// The caller of a request, as the middleware found it.
#[derive(Clone, Debug)]
pub struct Who(pub Arc<Caller>);

impl std::ops::Deref for Who {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Who {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Who>().cloned().ok_or_else(unauthorized)
    }
}

/// Turns the permission table's answer into the API's: 404 naming `what` as if it did not
/// exist, or 403 saying what the caller lacks.
pub fn check(access: Access, what: impl std::fmt::Display, doing: &str) -> ApiResult<()> {
    match access {
        Access::Allowed => Ok(()),
        Access::Invisible => Err(ApiError::not_found(what)),
        Access::Forbidden => Err(ApiError::new(ErrorCode::Forbidden, format!("your role does not allow {doing}"))),
    }
}

impl Who {
    /// `action` in `tenant`, or the 404/403 for it.
    pub fn may(&self, action: Action, tenant: &TenantId, doing: &str) -> ApiResult<()> {
        check(self.access(action, tenant), format!("tenant {tenant}"), doing)
    }

    /// Admin-only operations.
    pub fn must_be_admin(&self, doing: &str) -> ApiResult<()> {
        check(self.access_global(), "", doing)
    }
}

/// The tokens of a principal are its own business: others see them only as admins.
pub fn may_see_token(who: &Caller, t: &Token) -> bool {
    who.is_admin() || t.principal == who.principal
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_have_the_documented_shape_and_differ() {
        let (a, b) = (super::new_secret().unwrap(), super::new_secret().unwrap());
        assert!(super::is_secret_shaped(&a), "{a}");
        assert_ne!(a, b);
        assert_eq!(super::secret_hash(&a).len(), 64);
        assert_ne!(super::secret_hash(&a), super::secret_hash(&b));
        assert!(!super::is_secret_shaped("hodei_short"));
    }
}
