//! Tenants and pools as records (SPEC §2.1, §2.10).

use std::collections::BTreeMap;

use crate::ids::{PoolId, TenantId};
use crate::job::string_enum;
use crate::quota::Quota;
use crate::time::Timestamp;
use crate::units::Resources;

string_enum!(
    /// Billing tier; gives the default fair-share weight.
    Tier { Free = "free", Standard = "standard", Premium = "premium", Enterprise = "enterprise" }
);

impl Tier {
    /// Default weights (`multi_tenancy.tier_weights`).
    pub fn default_weight(self) -> u32 {
        match self {
            Tier::Free => 1,
            Tier::Standard => 2,
            Tier::Premium => 3,
            Tier::Enterprise => 5,
        }
    }
}

string_enum!(
    TenantStatus { Active = "active", Suspended = "suspended" }
);

#[derive(Clone, Debug, PartialEq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub email: Option<String>,
    pub tier: Tier,
    /// Explicit weight 1–1000; `None` uses the tier's.
    pub weight: Option<u32>,
    pub status: TenantStatus,
    pub quota: Quota,
    pub labels: BTreeMap<String, String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: i64,
}

impl Tenant {
    pub fn effective_weight(&self) -> u32 {
        self.weight.unwrap_or_else(|| self.tier.default_weight())
    }
}

string_enum!(
    PoolType { Static = "static", Dynamic = "dynamic" }
);

string_enum!(
    PoolState {
        Creating = "creating",
        Initializing = "initializing",
        Active = "active",
        Scaling = "scaling",
        Error = "error",
        Draining = "draining",
        Destroying = "destroying",
        Destroyed = "destroyed",
    }
);

#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub id: PoolId,
    pub name: String,
    pub pool_type: PoolType,
    pub provider: String,
    /// Shape of one worker.
    pub worker_resources: Resources,
    pub worker_slots: u32,
    pub min_size: u32,
    pub max_size: u32,
    pub labels: BTreeMap<String, String>,
    pub managed_by: String,
    pub state: PoolState,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: i64,
}

impl Tenant {
    /// What the scheduler needs to know of this tenant (burst grants are added by the caller).
    pub fn policy(&self) -> crate::quota::TenantPolicy {
        crate::quota::TenantPolicy {
            weight: self.effective_weight(),
            quota: self.quota,
            suspended: self.status == TenantStatus::Suspended,
            grant: None,
            version: self.version,
        }
    }
}
