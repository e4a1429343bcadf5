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

/// Fair-share weight of each tier (`multi_tenancy.tier_weights`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierWeights {
    pub free: u32,
    pub standard: u32,
    pub premium: u32,
    pub enterprise: u32,
}

impl Default for TierWeights {
    fn default() -> Self {
        TierWeights { free: 1, standard: 2, premium: 3, enterprise: 5 }
    }
}

impl TierWeights {
    pub fn of(&self, tier: Tier) -> u32 {
        match tier {
            Tier::Free => self.free,
            Tier::Standard => self.standard,
            Tier::Premium => self.premium,
            Tier::Enterprise => self.enterprise,
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
    /// The explicit weight, else the tier's.
    pub fn effective_weight(&self, tiers: &TierWeights) -> u32 {
        self.weight.unwrap_or_else(|| tiers.of(self.tier)).max(1)
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
    /// How many workers the pool should have now (the autoscaler's and manual scaling's target).
    pub desired_size: u32,
    /// Whether its scaling policies act (bounds and manual scaling act regardless).
    pub auto_scaling_enabled: bool,
    /// Dynamic pools drop workers idle longer than this, down to `min_size`.
    pub idle_timeout: std::time::Duration,
    pub scaling_policies: Vec<crate::autoscale::Policy>,
    /// The tenants whose jobs it runs; empty: every tenant.
    pub allowed_tenants: Vec<TenantId>,
    pub labels: BTreeMap<String, String>,
    pub managed_by: String,
    pub state: PoolState,
    /// Why it is in its state (empty when nothing needs saying).
    pub state_reason: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: i64,
}

impl Pool {
    /// Whether it runs `tenant`'s jobs.
    pub fn admits(&self, tenant: &TenantId) -> bool {
        self.allowed_tenants.is_empty() || self.allowed_tenants.contains(tenant)
    }
}

impl Tenant {
    /// What the scheduler needs to know of this tenant (burst grants are added by the caller).
    pub fn policy(&self, tiers: &TierWeights) -> crate::quota::TenantPolicy {
        crate::quota::TenantPolicy {
            weight: self.effective_weight(tiers),
            quota: self.quota,
            suspended: self.status == TenantStatus::Suspended,
            grant: None,
            version: self.version,
        }
    }
}
