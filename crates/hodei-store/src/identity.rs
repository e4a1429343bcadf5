//! Principals and API tokens, the same statements for both engines: written with `?`
//! placeholders and numbered for PostgreSQL by [`numbered`].

use hodei_core::auth::{Principal, RoleBinding, Scope, Token};
use hodei_core::{PrincipalId, Role, Timestamp, TokenId};

use crate::rows::{Cols, parse_enum, ts};
use crate::{Result, StoreError};

/// `?` → `$1`, `$2`, … in order (PostgreSQL's placeholders). Only for the constant statements below
/// (no `?` inside their literals), which is what makes them safe to pass as `AssertSqlSafe`.
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

pub(crate) const INSERT_PRINCIPAL: &str =
    "INSERT INTO principals (id, name, kind, role_bindings, created_at, updated_at, version) VALUES (?, ?, ?, ?, ?, ?, ?)";
pub(crate) const GET_PRINCIPAL: &str = "SELECT * FROM principals WHERE id = ?";
pub(crate) const GET_PRINCIPAL_BY_NAME: &str = "SELECT * FROM principals WHERE name = ?";
pub(crate) const LIST_PRINCIPALS: &str = "SELECT * FROM principals WHERE id < ? ORDER BY id DESC LIMIT ?";
pub(crate) const UPDATE_PRINCIPAL: &str = "UPDATE principals SET role_bindings = ?, updated_at = ?, version = ? WHERE id = ? AND version = ?";
pub(crate) const INSERT_TOKEN: &str =
    "INSERT INTO api_tokens (id, principal_id, name, prefix, secret_hash, created_at, expires_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
pub(crate) const TOKENS_BY_PREFIX: &str = "SELECT * FROM api_tokens WHERE prefix = ? LIMIT 16";
pub(crate) const GET_TOKEN: &str = "SELECT * FROM api_tokens WHERE id = ?";
pub(crate) const LIST_ALL_TOKENS: &str = "SELECT * FROM api_tokens WHERE id < ? ORDER BY id DESC LIMIT ?";
pub(crate) const LIST_TOKENS_OF: &str = "SELECT * FROM api_tokens WHERE principal_id = ? AND id < ? ORDER BY id DESC LIMIT ?";
pub(crate) const DELETE_TOKEN: &str = "DELETE FROM api_tokens WHERE id = ?";
pub(crate) const INSERT_AUDIT: &str =
    "INSERT INTO audit_log (id, at, actor, actor_name, action, target, before, after, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
/// Each filter is bound twice: once to test whether it is set.
pub(crate) const LIST_AUDIT: &str = "SELECT * FROM audit_log WHERE id < ? \
     AND (CAST(? AS TEXT) IS NULL OR actor_name = ?) AND (CAST(? AS TEXT) IS NULL OR action = ?) \
     AND (CAST(? AS TEXT) IS NULL OR target = ?) AND (CAST(? AS BIGINT) IS NULL OR at >= ?) ORDER BY id DESC LIMIT ?";
pub(crate) const TOUCH_TOKEN: &str = "UPDATE api_tokens SET last_used_at = ? WHERE id = ?";

/// The cursor of a first page: above every UUID.
pub(crate) const NO_CURSOR: uuid::Uuid = uuid::Uuid::max();

pub(crate) fn bindings_json(bindings: &[RoleBinding]) -> String {
    let v: Vec<serde_json::Value> = bindings.iter().map(|b| serde_json::json!({"role": b.role().as_str(), "scope": b.scope().to_string()})).collect();
    serde_json::Value::Array(v).to_string()
}

fn parse_bindings(doing: &'static str, s: &str) -> Result<Vec<RoleBinding>> {
    let corrupt = |detail: String| StoreError::Corrupt { doing, detail };
    let v: Vec<serde_json::Value> = serde_json::from_str(s).map_err(|e| corrupt(e.to_string()))?;
    v.iter()
        .map(|b| {
            let role: Role = parse_enum(doing, b["role"].as_str().unwrap_or(""))?;
            let scope = Scope::parse(b["scope"].as_str().unwrap_or("")).map_err(|e| corrupt(e.to_string()))?;
            RoleBinding::new(role, scope).map_err(|e| corrupt(e.to_string()))
        })
        .collect()
}

pub(crate) fn principal_from_row(r: &impl Cols) -> Result<Principal> {
    const D: &str = "reading a principal";
    let g = |e: sqlx::Error| StoreError::Db { doing: D, source: e };
    Ok(Principal {
        id: PrincipalId::from_uuid(r.col("id").map_err(g)?),
        name: r.col("name").map_err(g)?,
        kind: parse_enum(D, r.col("kind").map_err(g)?)?,
        bindings: parse_bindings(D, r.col("role_bindings").map_err(g)?)?,
        created_at: Timestamp::from_millis(r.col("created_at").map_err(g)?),
        updated_at: Timestamp::from_millis(r.col("updated_at").map_err(g)?),
        version: r.col("version").map_err(g)?,
    })
}

pub(crate) fn audit_from_row(r: &impl Cols) -> Result<hodei_core::AuditEntry> {
    const D: &str = "reading the audit log";
    let g = |e: sqlx::Error| StoreError::Db { doing: D, source: e };
    Ok(hodei_core::AuditEntry {
        id: hodei_core::AuditId::from_uuid(r.col("id").map_err(g)?),
        at: Timestamp::from_millis(r.col("at").map_err(g)?),
        actor: PrincipalId::from_uuid(r.col("actor").map_err(g)?),
        actor_name: r.col("actor_name").map_err(g)?,
        action: r.col("action").map_err(g)?,
        target: r.col("target").map_err(g)?,
        before: r.col("before").map_err(g)?,
        after: r.col("after").map_err(g)?,
        request_id: r.col("request_id").map_err(g)?,
    })
}

pub(crate) fn token_from_row(r: &impl Cols) -> Result<Token> {
    const D: &str = "reading an API token";
    let g = |e: sqlx::Error| StoreError::Db { doing: D, source: e };
    Ok(Token {
        id: TokenId::from_uuid(r.col("id").map_err(g)?),
        principal: PrincipalId::from_uuid(r.col("principal_id").map_err(g)?),
        name: r.col("name").map_err(g)?,
        prefix: r.col("prefix").map_err(g)?,
        secret_hash: r.col("secret_hash").map_err(g)?,
        created_at: Timestamp::from_millis(r.col("created_at").map_err(g)?),
        expires_at: ts(r.col("expires_at").map_err(g)?),
        last_used_at: ts(r.col("last_used_at").map_err(g)?),
    })
}

/// The identity half of [`crate::Store`] for one engine: `$q` turns a statement into the
/// engine's placeholders, `$read`/`$write` name the pools of `self`.
macro_rules! identity_methods {
    ($ty:ty, $q:path, $read:ident, $write:ident) => {
        #[async_trait::async_trait]
        impl $crate::Identity for $ty {
            async fn create_principal(&self, p: &hodei_core::Principal) -> $crate::Result<()> {
                let sql = $q($crate::identity::INSERT_PRINCIPAL);
                let r = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(p.id.as_uuid())
                    .bind(&p.name)
                    .bind(p.kind.as_str())
                    .bind($crate::identity::bindings_json(&p.bindings))
                    .bind($crate::rows::ms(p.created_at))
                    .bind($crate::rows::ms(p.updated_at))
                    .bind(p.version)
                    .execute(&self.$write)
                    .await;
                match r {
                    Err(e) if $crate::identity::is_unique_violation(&e) => Err($crate::StoreError::AlreadyExists { what: format!("principal {:?}", p.name) }),
                    r => r.map(|_| ()).map_err($crate::StoreError::db("creating a principal")),
                }
            }

            async fn get_principal(&self, id: hodei_core::PrincipalId) -> $crate::Result<Option<hodei_core::Principal>> {
                let sql = $q($crate::identity::GET_PRINCIPAL);
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id.as_uuid())
                    .fetch_optional(&self.$read)
                    .await
                    .map_err($crate::StoreError::db("reading a principal"))?;
                row.as_ref().map($crate::identity::principal_from_row).transpose()
            }

            async fn get_principal_by_name(&self, name: &str) -> $crate::Result<Option<hodei_core::Principal>> {
                let sql = $q($crate::identity::GET_PRINCIPAL_BY_NAME);
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(name)
                    .fetch_optional(&self.$read)
                    .await
                    .map_err($crate::StoreError::db("reading a principal"))?;
                row.as_ref().map($crate::identity::principal_from_row).transpose()
            }

            async fn list_principals(&self, before: Option<hodei_core::PrincipalId>, limit: u32) -> $crate::Result<Vec<hodei_core::Principal>> {
                let sql = $q($crate::identity::LIST_PRINCIPALS);
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(before.map_or($crate::identity::NO_CURSOR, |b| b.as_uuid()))
                    .bind(i64::from(limit.max(1)))
                    .fetch_all(&self.$read)
                    .await
                    .map_err($crate::StoreError::db("listing principals"))?;
                rows.iter().map($crate::identity::principal_from_row).collect()
            }

            async fn update_principal(&self, p: &hodei_core::Principal) -> $crate::Result<()> {
                let sql = $q($crate::identity::UPDATE_PRINCIPAL);
                let r = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind($crate::identity::bindings_json(&p.bindings))
                    .bind($crate::rows::ms(p.updated_at))
                    .bind(p.version)
                    .bind(p.id.as_uuid())
                    .bind(p.version - 1)
                    .execute(&self.$write)
                    .await
                    .map_err($crate::StoreError::db("updating a principal"))?;
                if r.rows_affected() == 1 { Ok(()) } else { Err($crate::StoreError::VersionMismatch { what: format!("principal {}", p.id) }) }
            }

            async fn create_token(&self, t: &hodei_core::Token) -> $crate::Result<()> {
                let sql = $q($crate::identity::INSERT_TOKEN);
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(t.id.as_uuid())
                    .bind(t.principal.as_uuid())
                    .bind(&t.name)
                    .bind(&t.prefix)
                    .bind(&t.secret_hash)
                    .bind($crate::rows::ms(t.created_at))
                    .bind(t.expires_at.map($crate::rows::ms))
                    .bind(t.last_used_at.map($crate::rows::ms))
                    .execute(&self.$write)
                    .await
                    .map(|_| ())
                    .map_err($crate::StoreError::db("creating an API token"))
            }

            async fn tokens_by_prefix(&self, prefix: &str) -> $crate::Result<Vec<hodei_core::Token>> {
                let sql = $q($crate::identity::TOKENS_BY_PREFIX);
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(prefix)
                    .fetch_all(&self.$read)
                    .await
                    .map_err($crate::StoreError::db("looking up an API token"))?;
                rows.iter().map($crate::identity::token_from_row).collect()
            }

            async fn get_token(&self, id: hodei_core::TokenId) -> $crate::Result<Option<hodei_core::Token>> {
                let sql = $q($crate::identity::GET_TOKEN);
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id.as_uuid())
                    .fetch_optional(&self.$read)
                    .await
                    .map_err($crate::StoreError::db("reading an API token"))?;
                row.as_ref().map($crate::identity::token_from_row).transpose()
            }

            async fn list_tokens(
                &self,
                principal: Option<hodei_core::PrincipalId>,
                before: Option<hodei_core::TokenId>,
                limit: u32,
            ) -> $crate::Result<Vec<hodei_core::Token>> {
                let before = before.map_or($crate::identity::NO_CURSOR, |b| b.as_uuid());
                let (all, of) = ($q($crate::identity::LIST_ALL_TOKENS), $q($crate::identity::LIST_TOKENS_OF));
                let q = match principal {
                    Some(p) => sqlx::query(sqlx::AssertSqlSafe(of)).bind(p.as_uuid()),
                    None => sqlx::query(sqlx::AssertSqlSafe(all)),
                };
                let rows = q.bind(before).bind(i64::from(limit.max(1))).fetch_all(&self.$read).await.map_err($crate::StoreError::db("listing API tokens"))?;
                rows.iter().map($crate::identity::token_from_row).collect()
            }

            async fn delete_token(&self, id: hodei_core::TokenId) -> $crate::Result<bool> {
                let sql = $q($crate::identity::DELETE_TOKEN);
                let r = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id.as_uuid())
                    .execute(&self.$write)
                    .await
                    .map_err($crate::StoreError::db("revoking an API token"))?;
                Ok(r.rows_affected() == 1)
            }

            async fn append_audit(&self, e: &hodei_core::AuditEntry) -> $crate::Result<()> {
                let sql = $q($crate::identity::INSERT_AUDIT);
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(e.id.as_uuid())
                    .bind($crate::rows::ms(e.at))
                    .bind(e.actor.as_uuid())
                    .bind(&e.actor_name)
                    .bind(&e.action)
                    .bind(&e.target)
                    .bind(&e.before)
                    .bind(&e.after)
                    .bind(&e.request_id)
                    .execute(&self.$write)
                    .await
                    .map(|_| ())
                    .map_err($crate::StoreError::db("writing the audit log"))
            }

            async fn list_audit(&self, f: &$crate::AuditFilter) -> $crate::Result<Vec<hodei_core::AuditEntry>> {
                let sql = $q($crate::identity::LIST_AUDIT);
                let since = f.since.map($crate::rows::ms);
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(f.before.map_or($crate::identity::NO_CURSOR, |b| b.as_uuid()))
                    .bind(&f.actor)
                    .bind(&f.actor)
                    .bind(&f.action)
                    .bind(&f.action)
                    .bind(&f.target)
                    .bind(&f.target)
                    .bind(since)
                    .bind(since)
                    .bind(i64::from(f.limit.max(1)))
                    .fetch_all(&self.$read)
                    .await
                    .map_err($crate::StoreError::db("reading the audit log"))?;
                rows.iter().map($crate::identity::audit_from_row).collect()
            }

            async fn touch_token(&self, id: hodei_core::TokenId, at: hodei_core::Timestamp) -> $crate::Result<()> {
                let sql = $q($crate::identity::TOUCH_TOKEN);
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind($crate::rows::ms(at))
                    .bind(id.as_uuid())
                    .execute(&self.$write)
                    .await
                    .map(|_| ())
                    .map_err($crate::StoreError::db("recording an API token's use"))
            }
        }
    };
}
pub(crate) use identity_methods;

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// SQLite's placeholders are already `?`.
pub(crate) fn as_is(sql: &str) -> String {
    sql.to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(super::numbered("UPDATE t SET a = ?, b = ? WHERE id = ?"), "UPDATE t SET a = $1, b = $2 WHERE id = $3");
    }
}
