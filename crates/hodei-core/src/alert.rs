//! Alerts (SPEC §2.13): what the server raises for an operator, once per kind, scope and
//! period (`dedup_key`), moving `firing → [acknowledged →] resolved`.

use crate::ids::{AlertId, TenantId};
use crate::job::string_enum;
use crate::time::Timestamp;

string_enum!(
    AlertState {
        Firing = "firing",
        Acknowledged = "acknowledged",
        Resolved = "resolved",
    }
);

#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub id: AlertId,
    /// `budget_threshold`, …
    pub kind: String,
    /// `info|warning|critical`.
    pub severity: String,
    pub tenant: Option<TenantId>,
    /// What it is about, e.g. `budget:<id>`.
    pub scope: String,
    /// One alert per key: a second raise with it is a no-op.
    pub dedup_key: String,
    pub value: f64,
    pub message: String,
    pub state: AlertState,
    pub fired_at: Timestamp,
    pub acknowledged_at: Option<Timestamp>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<Timestamp>,
}
