//! Placement (SPEC §2.6) as one chain of checks, in the manner of Nomad's feasibility
//! iterators: each check passes or names why not ([`Unfit`]), in a fixed order — selection,
//! capabilities, shape (these never change while a job waits), then the worker accepting work,
//! a free slot, room. The scheduler's choice of a worker, backfill reservations, preemption,
//! `explain` and the submit check (`unschedulable`, per pool: [`pool_misfit`]) all read this
//! chain, so a job is refused, reported or placed for the same reasons.

use std::fmt;

use crate::spec::JobSpec;
use crate::tenant::Pool;
use crate::units::Resources;
use crate::worker::Worker;

/// The capabilities every worker of this version has: it runs processes (`--backend process`).
pub const BASE_CAPABILITIES: &[&str] = &["process"];

/// What a job needs of a worker besides resources: `container` to run an `image`.
pub fn required_capabilities(spec: &JobSpec) -> impl Iterator<Item = &'static str> {
    spec.image.is_some().then_some("container").into_iter()
}

/// Why a pool's workers can never run a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Misfit {
    /// The job names another pool.
    NotSelected,
    /// Its workers have no slot.
    NoSlots,
    /// Its workers lack a capability the job needs.
    LacksCapability(&'static str),
    /// The job needs more than one of its workers has.
    TooSmall { needs: Resources, has: Resources },
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misfit::NotSelected => write!(f, "not the pool the job selects"),
            Misfit::NoSlots => write!(f, "its workers have no job slot"),
            Misfit::LacksCapability(c) => write!(f, "its workers lack the capability `{c}`"),
            Misfit::TooSmall { needs, has } => write!(f, "the job needs {needs}, a worker has {has}"),
        }
    }
}

/// Whether `pool`'s workers could ever run `spec`: the first check that fails, in the order
/// selection, slots, capabilities, shape. Pools' workers have the base capabilities.
pub fn pool_misfit(pool: &Pool, spec: &JobSpec) -> Option<Misfit> {
    if spec.pool_selector.as_ref().is_some_and(|sel| *sel != pool.id) {
        return Some(Misfit::NotSelected);
    }
    if pool.worker_slots == 0 {
        return Some(Misfit::NoSlots);
    }
    if let Some(c) = required_capabilities(spec).find(|c| !BASE_CAPABILITIES.contains(c)) {
        return Some(Misfit::LacksCapability(c));
    }
    if !spec.resources.fits_in(&pool.worker_resources) {
        return Some(Misfit::TooSmall { needs: spec.resources, has: pool.worker_resources });
    }
    None
}

/// Why one worker cannot take a job, in the order the chain checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unfit {
    /// The job selects another pool.
    NotSelected,
    /// The worker lacks a capability the job needs.
    LacksCapability(&'static str),
    /// The job needs more than the whole worker (or the worker has no slot at all).
    TooSmall,
    /// The worker takes no work now: registering, draining, offline or not connected.
    NotAccepting,
    /// Every slot is in use.
    NoSlot,
    /// Not enough free cpu, memory or gpu now.
    NoRoom,
}

impl Unfit {
    /// Whether the job could run on this worker once what runs there ends.
    pub fn is_temporary(self) -> bool {
        matches!(self, Unfit::NotAccepting | Unfit::NoSlot | Unfit::NoRoom)
    }
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfit::NotSelected => write!(f, "not the pool the job selects"),
            Unfit::LacksCapability(c) => write!(f, "lacks the capability `{c}`"),
            Unfit::TooSmall => write!(f, "too small for the job"),
            Unfit::NotAccepting => write!(f, "takes no work now"),
            Unfit::NoSlot => write!(f, "every slot in use"),
            Unfit::NoRoom => write!(f, "not enough free resources now"),
        }
    }
}

/// The checks that never change while the job waits: selection, capabilities, shape.
pub fn ever_fits(w: &Worker, spec: &JobSpec, req: &Resources) -> Result<(), Unfit> {
    if spec.pool_selector.as_ref().is_some_and(|p| *p != w.pool_id) {
        return Err(Unfit::NotSelected);
    }
    if let Some(c) = required_capabilities(spec).find(|c| !w.capabilities.iter().any(|x| x == c)) {
        return Err(Unfit::LacksCapability(c));
    }
    if !w.could_ever_take(req) {
        return Err(Unfit::TooSmall);
    }
    Ok(())
}

/// Whether the worker takes work at all now (idle or busy, its job stream open).
pub fn accepting(w: &Worker) -> bool {
    matches!(w.state, crate::worker::WorkerState::Idle | crate::worker::WorkerState::Busy) && w.connected
}

/// The whole chain: whether `w` can take a job of `spec` needing `req` right now.
pub fn fits_now(w: &Worker, spec: &JobSpec, req: &Resources) -> Result<(), Unfit> {
    ever_fits(w, spec, req)?;
    if !accepting(w) {
        return Err(Unfit::NotAccepting);
    }
    if w.slots_used >= w.slots {
        return Err(Unfit::NoSlot);
    }
    if !req.fits_in(&w.room()) {
        return Err(Unfit::NoRoom);
    }
    Ok(())
}

/// Rank among the workers that pass the chain (SPEC §2.6): best fit — least leftover cpu, then
/// memory — then the longest idle, then id. Lower is better.
pub fn rank(w: &Worker, req: &Resources) -> (u32, u32, i64, crate::ids::WorkerId) {
    let left = w.room().saturating_sub(req);
    (left.cpu_m.0, left.memory_mb.0, w.idle_since.map_or(i64::MAX, crate::time::Timestamp::as_millis), w.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{JobSpecInput, SpecLimits};
    use crate::tenant::{PoolState, PoolType};
    use crate::{PoolId, Timestamp};

    fn pool(id: &str, cpu_m: u32, slots: u32) -> Pool {
        Pool {
            id: PoolId::parse(id).unwrap(),
            name: id.into(),
            pool_type: PoolType::Static,
            provider: "local".into(),
            worker_resources: Resources::new(cpu_m, 1024, 0),
            worker_slots: slots,
            min_size: 1,
            max_size: 1,
            desired_size: 1,
            auto_scaling_enabled: false,
            idle_timeout: std::time::Duration::from_secs(300),
            scaling_policies: Vec::new(),
            labels: Default::default(),
            managed_by: "config".into(),
            state: PoolState::Active,
            state_reason: String::new(),
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
            version: 1,
        }
    }

    fn spec(input: JobSpecInput) -> JobSpec {
        JobSpecInput { command: vec!["true".into()], ..input }.validate(&SpecLimits::default(), "").unwrap()
    }

    #[test]
    fn each_check_names_what_the_pool_lacks() {
        let small = pool("small", 500, 2);
        assert_eq!(pool_misfit(&small, &spec(JobSpecInput { cpu_m: Some(250), ..Default::default() })), None);
        assert_eq!(pool_misfit(&small, &spec(JobSpecInput { pool: Some("other".into()), ..Default::default() })), Some(Misfit::NotSelected));
        assert_eq!(pool_misfit(&pool("none", 500, 0), &spec(JobSpecInput::default())), Some(Misfit::NoSlots));
        let image = spec(JobSpecInput { image: Some("alpine:3".into()), ..Default::default() });
        assert_eq!(pool_misfit(&small, &image), Some(Misfit::LacksCapability("container")));
        let big = spec(JobSpecInput { cpu_m: Some(2000), ..Default::default() });
        assert!(matches!(pool_misfit(&small, &big), Some(Misfit::TooSmall { .. })));
        assert_eq!(pool_misfit(&small, &big).unwrap().to_string(), format!("the job needs {}, a worker has {}", big.resources, small.worker_resources));
    }
}
