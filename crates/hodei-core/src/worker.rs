//! Workers as the scheduler sees them (SPEC §2.10, §3.2).

use std::collections::BTreeMap;

use crate::ids::{PoolId, WorkerId};
use crate::job::string_enum;
use crate::time::Timestamp;
use crate::units::Resources;

string_enum!(
    /// Worker state.
    WorkerState {
        Registering = "registering",
        Idle = "idle",
        Busy = "busy",
        Draining = "draining",
        Offline = "offline",
        Terminated = "terminated",
    }
);

impl WorkerState {
    pub fn can_become(self, to: WorkerState) -> bool {
        use WorkerState::*;
        matches!(
            (self, to),
            (Registering, Idle | Offline | Terminated)
                | (Idle, Busy | Draining | Offline | Terminated)
                | (Busy, Idle | Draining | Offline | Terminated)
                | (Draining, Terminated | Offline)
                | (Offline, Idle | Busy | Terminated)
        )
    }

    /// Live workers hold a lease; offline and terminated ones do not.
    pub fn is_live(self) -> bool {
        matches!(self, WorkerState::Registering | WorkerState::Idle | WorkerState::Busy | WorkerState::Draining)
    }
}

string_enum!(
    /// How a worker's machine is (SPEC §8.7): unhealthy workers take no new jobs (cordoned
    /// without a change of state) until they are healthy again.
    Health {
        Healthy = "healthy",
        Degraded = "degraded",
        Unhealthy = "unhealthy",
    }
);

/// What a worker measures of its machine at each heartbeat (0: not measured).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeReport {
    /// Of the file system its jobs write to.
    pub disk_free_mb: u64,
    pub disk_total_mb: u64,
    pub memory_available_mb: u64,
    pub memory_total_mb: u64,
    /// Its wall clock when it sent the report.
    pub clock: Option<Timestamp>,
}

/// Most clock skew a healthy worker has.
pub const MAX_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(5);

/// A worker's health from its report received at `now`, with the reasons when not healthy:
/// disk free < 1 % unhealthy, < 5 % degraded; memory available < 2 % unhealthy, < 5 %
/// degraded; clock more than [`MAX_CLOCK_SKEW`] away from the server's degraded.
pub fn assess(r: &NodeReport, now: Timestamp) -> (Health, String) {
    let mut worst = Health::Healthy;
    let mut reasons: Vec<String> = Vec::new();
    let mut check = |what: &str, free: u64, total: u64, unhealthy_pct: u64| {
        if total == 0 {
            return;
        }
        let h = if free * 100 < total * unhealthy_pct {
            Health::Unhealthy
        } else if free * 100 < total * 5 {
            Health::Degraded
        } else {
            return;
        };
        worst = worst.max(h);
        reasons.push(format!("{what} {}.{}% free ({free} of {total} MiB)", free * 100 / total, free * 1000 / total % 10));
    };
    check("disk", r.disk_free_mb, r.disk_total_mb, 1);
    check("memory", r.memory_available_mb, r.memory_total_mb, 2);
    if let Some(clock) = r.clock {
        let skew = clock.as_millis().abs_diff(now.as_millis());
        if skew > MAX_CLOCK_SKEW.as_millis() as u64 {
            worst = worst.max(Health::Degraded);
            reasons.push(format!("clock {skew} ms away from the server's"));
        }
    }
    (worst, reasons.join("; "))
}

/// A registered worker agent.
#[derive(Clone, Debug, PartialEq)]
pub struct Worker {
    pub id: WorkerId,
    pub instance_name: String,
    pub pool_id: PoolId,
    pub state: WorkerState,
    pub capabilities: Vec<String>,
    pub resources: Resources,
    pub allocated: Resources,
    pub slots: u32,
    pub slots_used: u32,
    pub labels: BTreeMap<String, String>,
    pub version: String,
    pub registered_at: Timestamp,
    pub last_heartbeat_at: Timestamp,
    pub idle_since: Option<Timestamp>,
    /// The job stream is open, so assignments can be delivered.
    pub connected: bool,
    pub health: Health,
    /// Why it is not healthy (empty when it is).
    pub health_reason: String,
    /// The tenants whose jobs it runs: its pool's `allowed_tenants` (empty: every tenant). Set
    /// by the scheduler from what it was told of the pool, not stored with the worker.
    pub allowed_tenants: Vec<crate::ids::TenantId>,
}

impl Worker {
    /// Free room now.
    pub fn room(&self) -> Resources {
        self.resources.saturating_sub(&self.allocated)
    }

    /// Can take `req` right now: accepting work, connected, a free slot and enough room.
    pub fn can_take(&self, req: &Resources) -> bool {
        matches!(self.state, WorkerState::Idle | WorkerState::Busy)
            && self.connected
            && self.health != Health::Unhealthy
            && self.slots_used < self.slots
            && req.fits_in(&self.room())
    }

    /// Could ever take `req` (shape large enough), whatever is running now.
    pub fn could_ever_take(&self, req: &Resources) -> bool {
        self.slots > 0 && req.fits_in(&self.resources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_names_each_reason_and_takes_the_worst() {
        let now = Timestamp::from_millis(1_000_000);
        let ok = NodeReport { disk_free_mb: 500, disk_total_mb: 1000, memory_available_mb: 800, memory_total_mb: 1000, clock: Some(now) };
        assert_eq!(assess(&ok, now), (Health::Healthy, String::new()));
        assert_eq!(assess(&NodeReport::default(), now).0, Health::Healthy, "nothing measured, nothing known against it");
        let low_disk = NodeReport { disk_free_mb: 40, ..ok };
        assert_eq!(assess(&low_disk, now), (Health::Degraded, "disk 4.0% free (40 of 1000 MiB)".to_owned()));
        let full = NodeReport { disk_free_mb: 9, memory_available_mb: 30, clock: Some(Timestamp::from_millis(1_006_000)), ..ok };
        assert_eq!(
            assess(&full, now),
            (Health::Unhealthy, "disk 0.9% free (9 of 1000 MiB); memory 3.0% free (30 of 1000 MiB); clock 6000 ms away from the server's".to_owned())
        );
        let skewed = NodeReport { clock: Some(Timestamp::from_millis(994_000)), ..ok };
        assert_eq!(assess(&skewed, now).0, Health::Degraded);
    }
}
