//! Placement checks (SPEC §2.6) that do not depend on what runs now: whether a pool's workers
//! could ever run a job. The submit check (`unschedulable`) and the scheduler's choice of a
//! worker both ask these, so a job is refused at submit for exactly the reasons no worker would
//! take it.

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

/// Whether `worker` has every capability `spec` needs.
pub fn has_capabilities(worker: &Worker, spec: &JobSpec) -> bool {
    required_capabilities(spec).all(|c| worker.capabilities.iter().any(|w| w == c))
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
