//! Identity (SPEC §4.7, §10): `whoami`, API tokens, principals and their role bindings.
//!
//! Anyone may see and manage their own tokens; principals, and other principals' tokens, are
//! for admins. A token's secret is returned once, by the POST that made it.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use hodei_core::{Principal, PrincipalId, PrincipalKind, Role, RoleBinding, Scope, Timestamp, Token, TokenId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::audit;
use super::{PageQuery, page_limit, parse_id};
use crate::ApiState;
use crate::auth::{PREFIX_LEN, Who, may_see_token, new_secret, secret_hash};
use crate::dto::{Page, rfc3339};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::json::ApiJson;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingDto {
    /// admin|pi|researcher|viewer
    #[schema(pattern = "^(admin|pi|researcher|viewer)$")]
    pub role: String,
    /// `global` (admin only) or `tenant:<id>`.
    #[schema(pattern = "^(global|tenant:[a-z0-9][a-z0-9-]*)$")]
    pub scope: String,
}

/// `GET /whoami`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    pub principal_id: String,
    pub name: String,
    pub kind: String,
    pub role_bindings: Vec<BindingDto>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PrincipalView {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub role_bindings: Vec<BindingDto>,
    pub created_at: String,
    pub updated_at: String,
    pub version: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrincipalCreate {
    /// Unique; 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// user|service
    #[schema(pattern = "^(user|service)$")]
    pub kind: String,
    #[serde(default)]
    pub role_bindings: Vec<BindingDto>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolesPut {
    pub role_bindings: Vec<BindingDto>,
}

/// A token as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub principal_id: String,
    /// The secret's first characters, to recognise it.
    pub prefix: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
}

/// `POST /tokens`: the token and, this once, its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenCreated {
    #[serde(flatten)]
    pub token: TokenView,
    pub secret: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    /// 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Whose token (admins only; default: the caller).
    #[schema(format = Uuid)]
    pub principal_id: Option<String>,
    /// 1 to 3650; default `auth.token_default_ttl_days` (none: the token does not expire).
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TokenQuery {
    /// Whose tokens (admins only; default: the caller's own).
    #[param(format = Uuid)]
    pub principal_id: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

fn bindings_out(bindings: &[RoleBinding]) -> Vec<BindingDto> {
    bindings.iter().map(|b| BindingDto { role: b.role().to_string(), scope: b.scope().to_string() }).collect()
}

/// Every binding checked; the first bad one is named by its index.
fn bindings_in(input: &[BindingDto], field: &str) -> ApiResult<Vec<RoleBinding>> {
    let mut out = Vec::with_capacity(input.len());
    for (i, b) in input.iter().enumerate() {
        let role: Role = b.role.parse().map_err(|()| ApiError::field(&format!("{field}/{i}/role"), "unknown role", Role::expected(), Some(b.role.clone())))?;
        let scope = Scope::parse(&b.scope)
            .map_err(|e| ApiError::field(&format!("{field}/{i}/scope"), e.to_string(), "global or tenant:<id>", Some(b.scope.clone())))?;
        let binding = RoleBinding::new(role, scope)
            .map_err(|e| ApiError::field(&format!("{field}/{i}"), e.to_string(), "admin on global, other roles on tenant:<id>", None))?;
        if !out.contains(&binding) {
            out.push(binding);
        }
    }
    if out.len() > 100 {
        return Err(ApiError::field(field, "too many role bindings", "at most 100", Some(out.len().to_string())));
    }
    Ok(out)
}

fn name(v: &str, field: &str) -> ApiResult<String> {
    let t = v.trim();
    if t.is_empty() || t.chars().count() > 100 || t.chars().any(char::is_control) {
        return Err(ApiError::field(field, "bad name", "1 to 100 printable characters", Some(v.to_owned())));
    }
    Ok(t.to_owned())
}

impl From<&Principal> for PrincipalView {
    fn from(p: &Principal) -> Self {
        PrincipalView {
            id: p.id.to_string(),
            name: p.name.clone(),
            kind: p.kind.to_string(),
            role_bindings: bindings_out(&p.bindings),
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
            version: p.version,
        }
    }
}

impl From<&Token> for TokenView {
    fn from(t: &Token) -> Self {
        TokenView {
            id: t.id.to_string(),
            name: t.name.clone(),
            principal_id: t.principal.to_string(),
            prefix: t.prefix.clone(),
            created_at: rfc3339(t.created_at),
            expires_at: t.expires_at.map(rfc3339),
            last_used_at: t.last_used_at.map(rfc3339),
        }
    }
}

fn location(path: String) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&path) {
        h.insert(header::LOCATION, v);
    }
    h
}

fn cursor<T: std::str::FromStr>(c: Option<&str>) -> ApiResult<Option<T>> {
    c.map(|c| c.parse().map_err(|_| ApiError::field("cursor", "bad cursor", "a cursor from next_cursor", Some(c.to_owned())))).transpose()
}

/// Who the caller is: its principal and role bindings.
#[utoipa::path(get, path = "/whoami", responses((status = 200, body = WhoAmI), (status = 401, body = crate::error::Problem)), tag = "identity")]
pub async fn whoami(State(s): State<ApiState>, who: Who) -> ApiResult<Json<WhoAmI>> {
    let kind = s.store.get_principal(who.principal).await?.map_or(PrincipalKind::Service, |p| p.kind);
    Ok(Json(WhoAmI { principal_id: who.principal.to_string(), name: who.name.clone(), kind: kind.to_string(), role_bindings: bindings_out(who.bindings()) }))
}

/// Create an API token for the caller (or, as admin, for another principal). The secret is in
/// this answer only.
#[utoipa::path(post, path = "/tokens", request_body = TokenCreate, responses((status = 201, body = TokenCreated), (status = 400, body = crate::error::Problem), (status = 403, body = crate::error::Problem)), tag = "identity")]
pub async fn create_token(State(s): State<ApiState>, who: Who, ApiJson(body): ApiJson<TokenCreate>) -> ApiResult<(StatusCode, HeaderMap, Json<TokenCreated>)> {
    let token_name = name(&body.name, "/name")?;
    let principal = match body.principal_id.as_deref() {
        None => who.principal,
        Some(raw) => {
            let id: PrincipalId =
                raw.parse().map_err(|_| ApiError::field("/principal_id", "not a principal id", "a principal id (UUID)", Some(raw.to_owned())))?;
            if id != who.principal {
                who.must_be_admin("creating tokens for other principals (admins only)")?;
            }
            id
        }
    };
    if s.store.get_principal(principal).await?.is_none() {
        return Err(ApiError::field("/principal_id", "no such principal", "an existing principal's id", Some(principal.to_string())));
    }
    let days = match body.expires_in_days {
        Some(d) if (1..=3650).contains(&d) => Some(d),
        Some(d) => return Err(ApiError::field("/expires_in_days", "out of range", "an integer between 1 and 3650", Some(d.to_string()))),
        None => s.cfg.token_default_ttl_days.map(i64::from),
    };
    let secret = new_secret().map_err(|e| {
        tracing::error!(error = %e, "the OS's random number generator failed");
        ApiError::new(ErrorCode::Internal, "cannot draw a secret now; retry")
    })?;
    let now = s.clock.now();
    let token = Token {
        id: TokenId::from_uuid(Uuid::now_v7()),
        principal,
        name: token_name,
        prefix: secret[..PREFIX_LEN].to_owned(),
        secret_hash: secret_hash(&secret),
        created_at: now,
        expires_at: days.map(|d| Timestamp::from_millis(now.as_millis().saturating_add(d * 86_400_000))),
        last_used_at: None,
    };
    s.store.create_token(&token).await?;
    audit::record(&s, &who, "token.create", format!("token:{}", token.id), None, audit::view(&TokenView::from(&token))).await;
    let h = location(format!("/api/v1/tokens/{}", token.id));
    Ok((StatusCode::CREATED, h, Json(TokenCreated { token: TokenView::from(&token), secret })))
}

/// The caller's tokens, newest first (as admin: anyone's with `principal_id`).
#[utoipa::path(get, path = "/tokens", params(TokenQuery), responses((status = 200, body = Page<TokenView>), (status = 400, body = crate::error::Problem), (status = 403, body = crate::error::Problem)), tag = "identity")]
pub async fn list_tokens(State(s): State<ApiState>, who: Who, Query(q): Query<TokenQuery>) -> ApiResult<Json<Page<TokenView>>> {
    let limit = page_limit(q.limit)?;
    let of = match q.principal_id.as_deref() {
        None => who.principal,
        Some(raw) => {
            let id: PrincipalId =
                raw.parse().map_err(|_| ApiError::field("principal_id", "not a principal id", "a principal id (UUID)", Some(raw.to_owned())))?;
            if id != who.principal {
                who.must_be_admin("listing other principals' tokens (admins only)")?;
            }
            id
        }
    };
    let rows = s.store.list_tokens(Some(of), cursor(q.cursor.as_deref())?, limit).await?;
    let next_cursor = (rows.len() == limit as usize).then(|| rows.last().map(|t| t.id.to_string())).flatten();
    Ok(Json(Page { items: rows.iter().map(TokenView::from).collect(), next_cursor }))
}

/// Revoke a token: the next request that presents it is 401.
#[utoipa::path(delete, path = "/tokens/{id}", responses((status = 204), (status = 404, body = crate::error::Problem)), tag = "identity")]
pub async fn revoke_token(State(s): State<ApiState>, who: Who, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let tid: TokenId = parse_id("token", &id)?;
    match s.store.get_token(tid).await? {
        Some(t) if may_see_token(&who, &t) => {
            s.store.delete_token(t.id).await?;
            s.token_cache.revoke(t.id);
            audit::record(&s, &who, "token.revoke", format!("token:{}", t.id), audit::view(&TokenView::from(&t)), None).await;
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(ApiError::not_found(format!("token {id}"))),
    }
}

/// Create a principal (admin).
#[utoipa::path(post, path = "/principals", request_body = PrincipalCreate, responses((status = 201, body = PrincipalView), (status = 400, body = crate::error::Problem), (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem)), tag = "identity")]
pub async fn create_principal(
    State(s): State<ApiState>,
    who: Who,
    ApiJson(body): ApiJson<PrincipalCreate>,
) -> ApiResult<(StatusCode, HeaderMap, Json<PrincipalView>)> {
    who.must_be_admin("creating principals (admins only)")?;
    let name = name(&body.name, "/name")?;
    let kind: PrincipalKind = body.kind.parse().map_err(|()| ApiError::field("/kind", "unknown kind", PrincipalKind::expected(), Some(body.kind.clone())))?;
    let bindings = bindings_in(&body.role_bindings, "/role_bindings")?;
    let now = s.clock.now();
    let p = Principal { id: PrincipalId::from_uuid(Uuid::now_v7()), name, kind, bindings, created_at: now, updated_at: now, version: 1 };
    s.store.create_principal(&p).await?;
    audit::record(&s, &who, "principal.create", format!("principal:{}", p.id), None, audit::view(&PrincipalView::from(&p))).await;
    Ok((StatusCode::CREATED, location(format!("/api/v1/principals/{}", p.id)), Json(PrincipalView::from(&p))))
}

/// Principals, newest first (admin).
#[utoipa::path(get, path = "/principals", params(PageQuery), responses((status = 200, body = Page<PrincipalView>), (status = 400, body = crate::error::Problem), (status = 403, body = crate::error::Problem)), tag = "identity")]
pub async fn list_principals(State(s): State<ApiState>, who: Who, Query(q): Query<PageQuery>) -> ApiResult<Json<Page<PrincipalView>>> {
    who.must_be_admin("listing principals (admins only)")?;
    let limit = page_limit(q.limit)?;
    let rows = s.store.list_principals(cursor(q.cursor.as_deref())?, limit).await?;
    let next_cursor = (rows.len() == limit as usize).then(|| rows.last().map(|p| p.id.to_string())).flatten();
    Ok(Json(Page { items: rows.iter().map(PrincipalView::from).collect(), next_cursor }))
}

async fn load_principal(s: &ApiState, who: &Who, id: &str, doing: &str) -> ApiResult<Principal> {
    who.must_be_admin(doing)?;
    let pid: PrincipalId = parse_id("principal", id)?;
    s.store.get_principal(pid).await?.ok_or_else(|| ApiError::not_found(format!("principal {id}")))
}

/// One principal (admin).
#[utoipa::path(get, path = "/principals/{id}", responses((status = 200, body = PrincipalView), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)), tag = "identity")]
pub async fn get_principal(State(s): State<ApiState>, who: Who, Path(id): Path<String>) -> ApiResult<Json<PrincipalView>> {
    Ok(Json(PrincipalView::from(&load_principal(&s, &who, &id, "reading principals (admins only)").await?)))
}

/// Replace a principal's role bindings (admin); its tokens carry the new roles from the next
/// request on.
#[utoipa::path(put, path = "/principals/{id}/roles", request_body = RolesPut, responses((status = 200, body = PrincipalView), (status = 400, body = crate::error::Problem), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)), tag = "identity")]
pub async fn put_roles(State(s): State<ApiState>, who: Who, Path(id): Path<String>, ApiJson(body): ApiJson<RolesPut>) -> ApiResult<Json<PrincipalView>> {
    let mut p = load_principal(&s, &who, &id, "changing role bindings (admins only)").await?;
    let bindings = bindings_in(&body.role_bindings, "/role_bindings")?;
    let before = audit::view(&PrincipalView::from(&p));
    if p.id == s.admin.principal && !bindings.contains(&RoleBinding::admin()) {
        return Err(ApiError::new(ErrorCode::Conflict, "the bootstrap admin (the admin token's principal) keeps its admin role"));
    }
    p.bindings = bindings;
    p.updated_at = s.clock.now();
    p.version += 1;
    s.store.update_principal(&p).await?;
    s.token_cache.principal_changed(p.id);
    audit::record(&s, &who, "principal.roles", format!("principal:{}", p.id), before, audit::view(&PrincipalView::from(&p))).await;
    Ok(Json(PrincipalView::from(&p)))
}
