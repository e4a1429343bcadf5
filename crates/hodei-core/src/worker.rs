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
}

impl Worker {
    /// Free room now.
    pub fn room(&self) -> Resources {
        self.resources.saturating_sub(&self.allocated)
    }

    /// Can take `req` right now: accepting work, connected, a free slot and enough room.
    pub fn can_take(&self, req: &Resources) -> bool {
        matches!(self.state, WorkerState::Idle | WorkerState::Busy) && self.connected && self.slots_used < self.slots && req.fits_in(&self.room())
    }

    /// Could ever take `req` (shape large enough), whatever is running now.
    pub fn could_ever_take(&self, req: &Resources) -> bool {
        self.slots > 0 && req.fits_in(&self.resources)
    }
}
