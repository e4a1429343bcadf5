//! Placement (SPEC §2.6) as one chain of checks, in the manner of Nomad's feasibility
//! iterators: each check passes or names why not ([`Unfit`]), in a fixed order — selection,
//! capabilities, shape (these never change while a job waits), then the worker accepting work,
//! a free slot, room. The scheduler's choice of a worker, backfill reservations, preemption,
//! `explain` and the submit check (`unschedulable`, per pool: [`pool_misfit`]) all read this
//! chain, so a job is refused, reported or placed for the same reasons.

use std::fmt;

use crate::ids::TenantId;
use crate::spec::JobSpec;
use crate::tenant::Pool;
use crate::units::Resources;
use crate::worker::{Health, Worker};

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
    /// The pool does not run this tenant's jobs (`allowed_tenants`).
    NotAllowed,
    /// Its workers do not carry a label the job selects (`key=value`).
    LacksLabel(String),
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
            Misfit::NotAllowed => write!(f, "it does not run this tenant's jobs"),
            Misfit::LacksLabel(l) => write!(f, "its workers do not carry the label `{l}`"),
            Misfit::NoSlots => write!(f, "its workers have no job slot"),
            Misfit::LacksCapability(c) => write!(f, "its workers lack the capability `{c}`"),
            Misfit::TooSmall { needs, has } => write!(f, "the job needs {needs}, a worker has {has}"),
        }
    }
}

/// Whether `pool`'s workers could ever run `tenant`'s job `spec`: the first check that fails,
/// in the order selection, tenant, labels, slots, capabilities, shape. Pools' workers have the
/// base capabilities and their pool's labels; workers that join by themselves (`external`)
/// may add their own, so only a pool label of another value rules those out.
pub fn pool_misfit(pool: &Pool, tenant: &TenantId, spec: &JobSpec) -> Option<Misfit> {
    if spec.pool_selector.as_ref().is_some_and(|sel| *sel != pool.id) {
        return Some(Misfit::NotSelected);
    }
    if !pool.admits(tenant) {
        return Some(Misfit::NotAllowed);
    }
    let own_labels = pool.provider == "external";
    if let Some((k, v)) = spec.pool_labels.iter().find(|(k, v)| match pool.labels.get(*k) {
        Some(x) => x != *v,
        None => !own_labels,
    }) {
        return Some(Misfit::LacksLabel(format!("{k}={v}")));
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
    /// The worker's pool does not run this tenant's jobs.
    NotAllowed,
    /// The worker lacks a label the job selects.
    LacksLabel,
    /// The worker lacks a capability the job needs.
    LacksCapability(&'static str),
    /// The job needs more than the whole worker (or the worker has no slot at all).
    TooSmall,
    /// The worker takes no work now: registering, draining, offline or not connected.
    NotAccepting,
    /// The worker's machine is unhealthy (cordoned until it is healthy again).
    Unhealthy,
    /// Every slot is in use.
    NoSlot,
    /// Not enough free cpu, memory or gpu now.
    NoRoom,
}

impl Unfit {
    /// Whether the job could run on this worker once what runs there ends.
    pub fn is_temporary(self) -> bool {
        matches!(self, Unfit::NotAccepting | Unfit::Unhealthy | Unfit::NoSlot | Unfit::NoRoom)
    }
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfit::NotSelected => write!(f, "not the pool the job selects"),
            Unfit::NotAllowed => write!(f, "its pool does not run this tenant's jobs"),
            Unfit::LacksLabel => write!(f, "lacks a label the job selects"),
            Unfit::LacksCapability(c) => write!(f, "lacks the capability `{c}`"),
            Unfit::TooSmall => write!(f, "too small for the job"),
            Unfit::NotAccepting => write!(f, "takes no work now"),
            Unfit::Unhealthy => write!(f, "unhealthy"),
            Unfit::NoSlot => write!(f, "every slot in use"),
            Unfit::NoRoom => write!(f, "not enough free resources now"),
        }
    }
}

/// The checks that never change while `tenant`'s job waits: selection (pool and labels),
/// tenant, capabilities, shape.
pub fn ever_fits(w: &Worker, tenant: &TenantId, spec: &JobSpec, req: &Resources) -> Result<(), Unfit> {
    if spec.pool_selector.as_ref().is_some_and(|p| *p != w.pool_id) {
        return Err(Unfit::NotSelected);
    }
    if !w.allowed_tenants.is_empty() && !w.allowed_tenants.contains(tenant) {
        return Err(Unfit::NotAllowed);
    }
    if !spec.pool_labels.iter().all(|(k, v)| w.labels.get(k) == Some(v)) {
        return Err(Unfit::LacksLabel);
    }
    if let Some(c) = required_capabilities(spec).find(|c| !w.capabilities.iter().any(|x| x == c)) {
        return Err(Unfit::LacksCapability(c));
    }
    if !w.could_ever_take(req) {
        return Err(Unfit::TooSmall);
    }
    Ok(())
}

/// Whether the worker takes work at all now (idle or busy, its job stream open, not unhealthy).
pub fn accepting(w: &Worker) -> bool {
    matches!(w.state, crate::worker::WorkerState::Idle | crate::worker::WorkerState::Busy) && w.connected && w.health != Health::Unhealthy
}

/// The whole chain: whether `w` can take `tenant`'s job of `spec` needing `req` right now.
pub fn fits_now(w: &Worker, tenant: &TenantId, spec: &JobSpec, req: &Resources) -> Result<(), Unfit> {
    ever_fits(w, tenant, spec, req)?;
    if !accepting(w) {
        return Err(if w.health == Health::Unhealthy { Unfit::Unhealthy } else { Unfit::NotAccepting });
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
            allowed_tenants: Vec::new(),
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
        let t = crate::TenantId::parse("team-a").unwrap();
        let small = pool("small", 500, 2);
        assert_eq!(pool_misfit(&small, &t, &spec(JobSpecInput { cpu_m: Some(250), ..Default::default() })), None);
        assert_eq!(pool_misfit(&small, &t, &spec(JobSpecInput { pool: Some("other".into()), ..Default::default() })), Some(Misfit::NotSelected));
        assert_eq!(pool_misfit(&pool("none", 500, 0), &t, &spec(JobSpecInput::default())), Some(Misfit::NoSlots));
        let image = spec(JobSpecInput { image: Some("alpine:3".into()), ..Default::default() });
        assert_eq!(pool_misfit(&small, &t, &image), Some(Misfit::LacksCapability("container")));
        let big = spec(JobSpecInput { cpu_m: Some(2000), ..Default::default() });
        assert!(matches!(pool_misfit(&small, &t, &big), Some(Misfit::TooSmall { .. })));
        assert_eq!(pool_misfit(&small, &t, &big).unwrap().to_string(), format!("the job needs {}, a worker has {}", big.resources, small.worker_resources));
    }

    #[test]
    fn a_pool_runs_only_its_tenants_and_matching_labels() {
        let (a, b) = (crate::TenantId::parse("team-a").unwrap(), crate::TenantId::parse("team-b").unwrap());
        let mut gpu = pool("gpu", 500, 2);
        gpu.allowed_tenants = vec![a.clone()];
        gpu.labels = [("zone".to_owned(), "eu".to_owned())].into();
        let any = spec(JobSpecInput::default());
        assert_eq!(pool_misfit(&gpu, &a, &any), None);
        assert_eq!(pool_misfit(&gpu, &b, &any), Some(Misfit::NotAllowed));
        let eu = spec(JobSpecInput { pool_labels: [("zone".to_owned(), "eu".to_owned())].into(), ..Default::default() });
        let us = spec(JobSpecInput { pool_labels: [("zone".to_owned(), "us".to_owned())].into(), ..Default::default() });
        let ssd = spec(JobSpecInput { pool_labels: [("disk".to_owned(), "ssd".to_owned())].into(), ..Default::default() });
        assert_eq!(pool_misfit(&gpu, &a, &eu), None);
        assert_eq!(pool_misfit(&gpu, &a, &us), Some(Misfit::LacksLabel("zone=us".into())));
        assert_eq!(pool_misfit(&gpu, &a, &ssd), Some(Misfit::LacksLabel("disk=ssd".into())));
        // Workers that join by themselves may carry labels their pool does not name.
        gpu.provider = "external".into();
        assert_eq!(pool_misfit(&gpu, &a, &ssd), None);
        assert_eq!(pool_misfit(&gpu, &a, &us), Some(Misfit::LacksLabel("zone=us".into())));
    }
}
