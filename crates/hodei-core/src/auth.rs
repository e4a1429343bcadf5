//! Identity and the permission table (SPEC §2.13, §8.2): principals, role bindings, tokens, and
//! the one decision every endpoint asks — may this caller do this action in this tenant?
//!
//! A caller sees a tenant when it is an admin or holds any role bound to it; everything of a
//! tenant it does not see is answered as if it did not exist ([`Access::Invisible`]).

use std::fmt;

use crate::ids::{PrincipalId, TenantId, TokenId};
use crate::job::string_enum;
use crate::time::Timestamp;

string_enum!(
    /// A person or a program (a CI system, a workflow runner).
    PrincipalKind { User = "user", Service = "service" }
);

string_enum!(
    /// Roles, most powerful first. `admin` is global; the others bind to a tenant.
    Role { Admin = "admin", Pi = "pi", Researcher = "researcher", Viewer = "viewer" }
);

/// Where a role applies.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Global,
    Tenant(TenantId),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Tenant(t) => write!(f, "tenant:{t}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    #[error("{0:?} is not a scope (expected global or tenant:<id>)")]
    BadScope(String),
    #[error("projects do not exist yet; bind to global or tenant:<id>")]
    ProjectScope,
    #[error("{role} binds to a tenant (tenant:<id>), not to {scope}")]
    RoleNeedsTenant { role: Role, scope: Scope },
    #[error("admin is a global role; bind it to global, not to {scope}")]
    AdminIsGlobal { scope: Scope },
}

impl Scope {
    pub fn parse(s: &str) -> Result<Scope, BindingError> {
        if s == "global" {
            return Ok(Scope::Global);
        }
        if s.starts_with("project:") {
            return Err(BindingError::ProjectScope);
        }
        match s.strip_prefix("tenant:").map(TenantId::parse) {
            Some(Ok(t)) => Ok(Scope::Tenant(t)),
            _ => Err(BindingError::BadScope(s.to_owned())),
        }
    }
}

/// A role where it applies. Only `admin` is global (validated by [`RoleBinding::new`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleBinding {
    role: Role,
    scope: Scope,
}

impl RoleBinding {
    pub fn new(role: Role, scope: Scope) -> Result<RoleBinding, BindingError> {
        match (role, &scope) {
            (Role::Admin, Scope::Global) => Ok(RoleBinding { role, scope }),
            (Role::Admin, _) => Err(BindingError::AdminIsGlobal { scope }),
            (_, Scope::Global) => Err(BindingError::RoleNeedsTenant { role, scope }),
            (_, Scope::Tenant(_)) => Ok(RoleBinding { role, scope }),
        }
    }

    pub fn admin() -> RoleBinding {
        RoleBinding { role: Role::Admin, scope: Scope::Global }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Principal {
    pub id: PrincipalId,
    pub name: String,
    pub kind: PrincipalKind,
    pub bindings: Vec<RoleBinding>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: i64,
}

/// An API token as stored: the secret itself is never kept, only its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub id: TokenId,
    pub principal: PrincipalId,
    pub name: String,
    /// The secret's first characters (`hodei_` and six more), for lookup and listing.
    pub prefix: String,
    /// Hex SHA-256 of the secret.
    pub secret_hash: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
}

impl Token {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// One admin or pi write (SPEC §2.13): who did what to what, with the target before and after
/// as the API rendered them (JSON text, secrets left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: crate::ids::AuditId,
    pub at: Timestamp,
    pub actor: PrincipalId,
    pub actor_name: String,
    /// `tenant.create`, `principal.roles`, `token.revoke`, …
    pub action: String,
    /// `tenant:team-a`, `principal:<id>`, `token:<id>`, …
    pub target: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub request_id: String,
}

/// What a request wants to do, one row of the permission table (SPEC §8.2) each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read jobs, logs, queue, SLA, quota, burst sessions of the tenant.
    Read,
    /// Submit jobs; cancel, retry, hold and release one's own.
    Submit,
    /// Cancel, retry, hold and release other principals' jobs.
    ControlOthersJobs,
    /// The tenant's own quota (up to its limit), burst requests and their end.
    ManageTenant,
    /// Everything global: tenants, pools, workers, principals, audit, burst approval.
    Administer,
}

impl Action {
    /// The least role that may do it within a tenant (`None`: admins only).
    fn least_role(self) -> Option<Role> {
        match self {
            Action::Read => Some(Role::Viewer),
            Action::Submit => Some(Role::Researcher),
            Action::ControlOthersJobs | Action::ManageTenant => Some(Role::Pi),
            Action::Administer => None,
        }
    }
}

/// The answer of the permission table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// The caller sees the resource but its role does not allow the action (403).
    Forbidden,
    /// The caller does not see the resource: answer exactly as for a missing one (404).
    Invisible,
}

/// Which tenants' rows a caller may list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Visibility {
    All,
    /// Sorted, without repeats; possibly empty.
    Tenants(Vec<TenantId>),
}

impl Visibility {
    /// As a store filter: `None` for all, else the tenants.
    pub fn into_filter(self) -> Option<Vec<TenantId>> {
        match self {
            Visibility::All => None,
            Visibility::Tenants(ts) => Some(ts),
        }
    }

    pub fn sees(&self, t: &TenantId) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Tenants(ts) => ts.binary_search(t).is_ok(),
        }
    }
}

/// The authenticated principal of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub principal: PrincipalId,
    pub name: String,
    bindings: Vec<RoleBinding>,
}

impl Caller {
    pub fn new(principal: PrincipalId, name: String, bindings: Vec<RoleBinding>) -> Caller {
        Caller { principal, name, bindings }
    }

    pub fn bindings(&self) -> &[RoleBinding] {
        &self.bindings
    }

    pub fn is_admin(&self) -> bool {
        self.bindings.iter().any(|b| b.role == Role::Admin)
    }

    /// The caller's strongest role in `tenant` (`Admin` for admins), `None` if it sees nothing there.
    pub fn role_in(&self, tenant: &TenantId) -> Option<Role> {
        if self.is_admin() {
            return Some(Role::Admin);
        }
        // Roles are declared most powerful first, so the least in `Ord` is the strongest.
        self.bindings.iter().filter(|b| b.scope == Scope::Tenant(tenant.clone())).map(|b| b.role).min()
    }

    /// May the caller do `action` in `tenant`?
    pub fn access(&self, action: Action, tenant: &TenantId) -> Access {
        match (self.role_in(tenant), action.least_role()) {
            (None, _) => Access::Invisible,
            (Some(Role::Admin), _) => Access::Allowed,
            (Some(_), None) => Access::Forbidden,
            (Some(have), Some(least)) if have <= least => Access::Allowed,
            (Some(_), Some(_)) => Access::Forbidden,
        }
    }

    /// An action that exists only globally (no tenant to see it in): admins only, 403 otherwise.
    pub fn access_global(&self) -> Access {
        if self.is_admin() { Access::Allowed } else { Access::Forbidden }
    }

    /// Cancel, retry, hold or release a job of `tenant` submitted by `owner`.
    pub fn access_job_control(&self, tenant: &TenantId, owner: Option<PrincipalId>) -> Access {
        let action = if owner == Some(self.principal) { Action::Submit } else { Action::ControlOthersJobs };
        self.access(action, tenant)
    }

    pub fn visibility(&self) -> Visibility {
        if self.is_admin() {
            return Visibility::All;
        }
        let mut ts: Vec<TenantId> = self
            .bindings
            .iter()
            .filter_map(|b| match &b.scope {
                Scope::Tenant(t) => Some(t.clone()),
                Scope::Global => None,
            })
            .collect();
        ts.sort();
        ts.dedup();
        Visibility::Tenants(ts)
    }

    /// The tenant a request acts in when it names none: the caller's only one, if it has one.
    pub fn only_tenant(&self) -> Option<TenantId> {
        match self.visibility() {
            Visibility::Tenants(ts) if ts.len() == 1 => ts.into_iter().next(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    fn caller(bindings: &[(Role, &str)]) -> Caller {
        let bindings = bindings.iter().map(|(r, s)| RoleBinding::new(*r, Scope::parse(s).unwrap()).unwrap()).collect();
        Caller::new(PrincipalId::from_uuid(uuid::Uuid::from_u128(7)), "someone".into(), bindings)
    }

    #[test]
    fn the_permission_table_reads_like_the_spec() {
        use Access::*;
        use Action::*;
        let actions = [Read, Submit, ControlOthersJobs, ManageTenant, Administer];
        let table = [
            (Role::Viewer, [Allowed, Forbidden, Forbidden, Forbidden, Forbidden]),
            (Role::Researcher, [Allowed, Allowed, Forbidden, Forbidden, Forbidden]),
            (Role::Pi, [Allowed, Allowed, Allowed, Allowed, Forbidden]),
        ];
        for (role, want) in table {
            let c = caller(&[(role, "tenant:a")]);
            for (action, want) in actions.iter().zip(want) {
                assert_eq!(c.access(*action, &t("a")), want, "{role} {action:?} in own tenant");
                assert_eq!(c.access(*action, &t("b")), Invisible, "{role} {action:?} in another tenant");
            }
            assert_eq!(c.access_global(), Forbidden);
        }
        let admin = caller(&[(Role::Admin, "global")]);
        for action in actions {
            assert_eq!(admin.access(action, &t("anything")), Allowed);
        }
        assert_eq!(admin.access_global(), Allowed);
        assert_eq!(admin.visibility(), Visibility::All);
    }

    #[test]
    fn researchers_control_their_own_jobs_only() {
        let c = caller(&[(Role::Researcher, "tenant:a")]);
        let other = PrincipalId::from_uuid(uuid::Uuid::from_u128(8));
        assert_eq!(c.access_job_control(&t("a"), Some(c.principal)), Access::Allowed);
        assert_eq!(c.access_job_control(&t("a"), Some(other)), Access::Forbidden);
        assert_eq!(c.access_job_control(&t("a"), None), Access::Forbidden);
        assert_eq!(c.access_job_control(&t("b"), Some(c.principal)), Access::Invisible);
        let pi = caller(&[(Role::Pi, "tenant:a")]);
        assert_eq!(pi.access_job_control(&t("a"), Some(other)), Access::Allowed);
    }

    #[test]
    fn the_strongest_binding_in_a_tenant_counts() {
        let c = caller(&[(Role::Viewer, "tenant:a"), (Role::Pi, "tenant:a"), (Role::Researcher, "tenant:b")]);
        assert_eq!(c.role_in(&t("a")), Some(Role::Pi));
        assert_eq!(c.role_in(&t("b")), Some(Role::Researcher));
        assert_eq!(c.visibility(), Visibility::Tenants(vec![t("a"), t("b")]));
        assert_eq!(c.only_tenant(), None);
        assert_eq!(caller(&[(Role::Viewer, "tenant:a"), (Role::Pi, "tenant:a")]).only_tenant(), Some(t("a")));
    }

    #[test]
    fn bindings_are_validated() {
        assert_eq!(RoleBinding::new(Role::Admin, Scope::Tenant(t("a"))), Err(BindingError::AdminIsGlobal { scope: Scope::Tenant(t("a")) }));
        assert_eq!(RoleBinding::new(Role::Viewer, Scope::Global), Err(BindingError::RoleNeedsTenant { role: Role::Viewer, scope: Scope::Global }));
        assert_eq!(Scope::parse("project:x"), Err(BindingError::ProjectScope));
        assert_eq!(Scope::parse("tenant:Bad"), Err(BindingError::BadScope("tenant:Bad".into())));
        assert_eq!(Scope::parse("tenant:a").unwrap().to_string(), "tenant:a");
    }
}
