//! The workload file (YAML): pools, tenant groups with their arrival process and job shape,
//! and optionally a recorded trace (CSV).
//!
//! ```yaml
//! seed: 7
//! horizon_s: 600        # arrivals stop and measurement ends here
//! warmup_s: 30          # shares are measured over [warmup_s, horizon_s]
//! pools:
//!   - {id: sim, workers: 25, slots: 4, cpu_m: 4000, memory_mb: 16384}
//! tenants:
//!   - name: t           # count > 1: t0000, t0001, …
//!     count: 100
//!     weights: [1, 2, 3, 5]          # cycled over the group
//!     arrival: {kind: saturate, queued: 4}
//!     job: {cpu_m: 1000, memory_mb: 512, duration: {kind: uniform, min_ms: 500, max_ms: 1500}}
//! scheduler: {backfill: true, reservation_after_ms: 30000, usage_half_life_s: 0}
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("reading {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Parse(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> WorkloadError {
    WorkloadError::Invalid { field: field.into(), message: message.into() }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    #[serde(default)]
    pub seed: u64,
    pub horizon_s: u64,
    #[serde(default)]
    pub warmup_s: u64,
    pub pools: Vec<PoolSpec>,
    #[serde(default)]
    pub tenants: Vec<TenantGroup>,
    /// A recorded trace (CSV `at_ms,tenant,cpu_m,memory_mb,duration_ms[,priority]`), relative
    /// to the workload file. Its tenants take the weight of a group of the same name, else 2.
    #[serde(default)]
    pub trace: Option<PathBuf>,
    /// `scheduler.default_expected_duration_ms` for jobs without a hint or history.
    #[serde(default = "default_expected")]
    pub default_expected_duration_ms: u64,
    /// The scheduler's policy knobs, as in the server's `scheduler` section.
    #[serde(default)]
    pub scheduler: SchedulerKnobs,
}

/// `scheduler.*` options the simulator passes to the core (defaults as the server's).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerKnobs {
    #[serde(default)]
    pub usage_half_life_s: u64,
    #[serde(default = "yes")]
    pub sla_escalation: bool,
    #[serde(default = "yes")]
    pub backfill: bool,
    #[serde(default = "default_reservation_after")]
    pub reservation_after_ms: u64,
    #[serde(default = "default_max_reservations")]
    pub max_reservations: usize,
    #[serde(default)]
    pub preemption: bool,
}

impl Default for SchedulerKnobs {
    fn default() -> Self {
        SchedulerKnobs {
            usage_half_life_s: 0,
            sla_escalation: true,
            backfill: true,
            reservation_after_ms: default_reservation_after(),
            max_reservations: default_max_reservations(),
            preemption: false,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_reservation_after() -> u64 {
    30_000
}

fn default_max_reservations() -> usize {
    16
}

fn default_expected() -> u64 {
    60_000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    #[serde(default = "default_pool")]
    pub id: String,
    pub workers: u32,
    pub slots: u32,
    pub cpu_m: u32,
    pub memory_mb: u32,
    #[serde(default)]
    pub gpu: u32,
    /// Scale the pool with the core's autoscaler (`workers` is its size at the start).
    #[serde(default)]
    pub autoscaling: Option<AutoscalingSpec>,
}

/// A pool's autoscaling, as in the server's configuration (policies' durations in seconds).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscalingSpec {
    #[serde(default)]
    pub min: u32,
    pub max: u32,
    #[serde(default = "default_evaluation")]
    pub evaluation_interval_s: u64,
    /// From a scale-up to the new worker taking jobs.
    #[serde(default = "default_provision")]
    pub provision_delay_ms: u64,
    /// Dynamic pools: idle workers above `min` are dropped after this long.
    pub idle_timeout_s: Option<u64>,
    pub policies: Vec<PolicySpec>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub name: String,
    #[serde(default = "default_mode")]
    pub mode: String,
    pub trigger: Option<String>,
    pub action: String,
    #[serde(default = "one")]
    pub step: u32,
    pub cooldown_s: Option<u64>,
    /// Threshold policies only (default 60).
    pub window_s: Option<u64>,
    /// Forecast policies only (default 20).
    pub hysteresis_pct: Option<u32>,
}

fn default_evaluation() -> u64 {
    15
}
fn default_provision() -> u64 {
    1000
}
fn default_mode() -> String {
    "threshold".into()
}

impl AutoscalingSpec {
    /// The core's policies, or what is wrong with one.
    pub fn policies(&self) -> Result<Vec<hodei_core::autoscale::Policy>, String> {
        use hodei_core::autoscale::{Direction, Mode, Policy, Trigger, policy_id};
        self.policies
            .iter()
            .map(|p| {
                let mode: Mode = p.mode.parse().map_err(|_| format!("{}: mode is {}", p.name, Mode::expected()))?;
                let direction: Direction = p.action.parse().map_err(|_| format!("{}: action is {}", p.name, Direction::expected()))?;
                let trigger = match (&p.trigger, mode) {
                    (Some(t), Mode::Threshold) => Some(Trigger::parse(t).map_err(|e| format!("{}: trigger {t:?}: {e}", p.name))?),
                    (None, Mode::Threshold) => return Err(format!("{}: a threshold policy needs a trigger", p.name)),
                    (Some(_), Mode::Forecast) => return Err(format!("{}: a forecast policy takes no trigger", p.name)),
                    (None, Mode::Forecast) => None,
                };
                // Refused where it would mean nothing, as the server refuses it.
                match mode {
                    Mode::Threshold if p.hysteresis_pct.is_some() => return Err(format!("{}: hysteresis_pct is for forecast policies", p.name)),
                    Mode::Forecast if p.window_s.is_some() => return Err(format!("{}: window_s is for threshold policies", p.name)),
                    _ => {}
                }
                let cooldown = p.cooldown_s.unwrap_or(if direction == Direction::ScaleUp { 60 } else { 120 });
                Ok(Policy {
                    id: policy_id(&p.name).ok_or_else(|| format!("{}: a name with a letter or digit", p.name))?,
                    name: p.name.clone(),
                    mode,
                    trigger,
                    direction,
                    step: p.step.max(1),
                    cooldown: std::time::Duration::from_secs(cooldown),
                    window: std::time::Duration::from_secs(p.window_s.unwrap_or(60)),
                    hysteresis_pct: p.hysteresis_pct.unwrap_or(20).min(100),
                    enabled: true,
                })
            })
            .collect()
    }
}

fn default_pool() -> String {
    "sim".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantGroup {
    pub name: String,
    #[serde(default = "one")]
    pub count: u32,
    /// Weights cycled over the group's tenants; empty: `weight`.
    #[serde(default)]
    pub weights: Vec<u32>,
    #[serde(default = "two")]
    pub weight: u32,
    /// Default: unlimited.
    #[serde(default)]
    pub quota: Option<QuotaSpec>,
    #[serde(default)]
    pub arrival: Arrival,
    #[serde(default)]
    pub job: JobShape,
}

fn one() -> u32 {
    1
}

fn two() -> u32 {
    2
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    #[serde(default = "max")]
    pub cpu_m: u32,
    #[serde(default = "max")]
    pub memory_mb: u32,
    #[serde(default)]
    pub gpu: u32,
    #[serde(default = "max")]
    pub max_concurrent_jobs: u32,
    #[serde(default = "max")]
    pub max_queued_jobs: u32,
}

fn max() -> u32 {
    u32::MAX
}

/// How a tenant's jobs arrive.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Arrival {
    /// `jobs` jobs at `at_s` (default 0).
    Backlog {
        jobs: u64,
        #[serde(default)]
        at_s: f64,
    },
    /// Always `queued` jobs waiting: one arrives each time one is dispatched (saturation).
    Saturate { queued: u32 },
    /// A Poisson process of `per_s` jobs per second from `start_s` (until `until_s`, else the
    /// horizon).
    Poisson {
        per_s: f64,
        #[serde(default)]
        start_s: f64,
        until_s: Option<f64>,
    },
    /// One job at each instant (seconds).
    At { s: Vec<f64> },
    /// Only the trace's jobs.
    #[default]
    None,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobShape {
    #[serde(default = "default_cpu")]
    pub cpu_m: u32,
    #[serde(default = "default_memory")]
    pub memory_mb: u32,
    #[serde(default)]
    pub gpu: u32,
    #[serde(default)]
    pub duration: Dist,
    /// critical|high|normal|low|batch
    #[serde(default = "default_priority")]
    pub priority: String,
    /// The SLA level (critical|high|medium|low|best_effort); the priority's by default.
    #[serde(default)]
    pub sla: Option<String>,
    /// What the job tells the scheduler of its duration: `exact` (its true duration),
    /// `mean` (the distribution's mean) or `none` (history, else the default).
    #[serde(default)]
    pub hint: Hint,
}

impl Default for JobShape {
    fn default() -> Self {
        JobShape {
            cpu_m: default_cpu(),
            memory_mb: default_memory(),
            gpu: 0,
            duration: Dist::default(),
            priority: default_priority(),
            sla: None,
            hint: Hint::default(),
        }
    }
}

fn default_cpu() -> u32 {
    1000
}

fn default_memory() -> u32 {
    256
}

fn default_priority() -> String {
    "normal".into()
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Hint {
    #[default]
    Exact,
    Mean,
    None,
}

/// A duration distribution, in milliseconds.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Dist {
    Fixed { ms: u64 },
    Uniform { min_ms: u64, max_ms: u64 },
    Exponential { mean_ms: u64 },
}

impl Default for Dist {
    fn default() -> Self {
        Dist::Fixed { ms: 1000 }
    }
}

impl Dist {
    pub fn mean_ms(&self) -> u64 {
        match *self {
            Dist::Fixed { ms } => ms,
            Dist::Uniform { min_ms, max_ms } => (min_ms + max_ms) / 2,
            Dist::Exponential { mean_ms } => mean_ms,
        }
    }

    pub fn sample(&self, rng: &mut crate::rng::Rng) -> u64 {
        match *self {
            Dist::Fixed { ms } => ms.max(1),
            Dist::Uniform { min_ms, max_ms } => rng.between(min_ms, max_ms).max(1),
            Dist::Exponential { mean_ms } => rng.exponential(mean_ms as f64),
        }
    }
}

/// One job of a recorded trace.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceJob {
    pub at_ms: u64,
    pub tenant: String,
    pub cpu_m: u32,
    pub memory_mb: u32,
    pub duration_ms: u64,
    pub priority: String,
}

impl Workload {
    pub fn parse(text: &str) -> Result<Workload, WorkloadError> {
        // serde_yaml_ng's message names the key, line and column.
        let w: Workload = serde_yaml_ng::from_str(text).map_err(|e| WorkloadError::Parse(e.to_string()))?;
        w.validate()?;
        Ok(w)
    }

    /// Reads a workload file; a trace it names is read relative to it.
    pub fn load(path: &Path) -> Result<(Workload, Vec<TraceJob>), WorkloadError> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Read { path: path.to_owned(), source })?;
        let w = Workload::parse(&text)?;
        let trace = match &w.trace {
            Some(t) => {
                let p = path.parent().unwrap_or(Path::new(".")).join(t);
                let text = std::fs::read_to_string(&p).map_err(|source| WorkloadError::Read { path: p.clone(), source })?;
                parse_trace(&text)?
            }
            None => vec![],
        };
        Ok((w, trace))
    }

    fn validate(&self) -> Result<(), WorkloadError> {
        if self.horizon_s == 0 {
            return Err(invalid("horizon_s", "must be > 0"));
        }
        if self.warmup_s >= self.horizon_s {
            return Err(invalid("warmup_s", "must be < horizon_s"));
        }
        if self.pools.is_empty() {
            return Err(invalid("pools", "at least one pool"));
        }
        for (i, p) in self.pools.iter().enumerate() {
            if p.slots == 0 || (p.workers == 0 && p.autoscaling.is_none()) {
                return Err(invalid(format!("pools[{i}]"), "slots must be > 0, and workers too unless the pool autoscales"));
            }
            if let Some(a) = &p.autoscaling {
                if a.min > a.max || p.workers < a.min || p.workers > a.max || a.evaluation_interval_s == 0 {
                    return Err(invalid(format!("pools[{i}].autoscaling"), "need min ≤ workers ≤ max and evaluation_interval_s > 0"));
                }
                a.policies().map_err(|e| invalid(format!("pools[{i}].autoscaling.policies"), e))?;
            }
        }
        for (i, g) in self.tenants.iter().enumerate() {
            if g.count == 0 {
                return Err(invalid(format!("tenants[{i}].count"), "must be > 0"));
            }
            if g.weight == 0 || g.weights.contains(&0) {
                return Err(invalid(format!("tenants[{i}].weights"), "weights are ≥ 1"));
            }
            if g.job.priority.parse::<hodei_core::Priority>().is_err() {
                return Err(invalid(format!("tenants[{i}].job.priority"), format!("expected {}", hodei_core::Priority::expected())));
            }
            if let Arrival::Poisson { per_s, .. } = g.arrival
                && !(per_s > 0.0 && per_s.is_finite())
            {
                return Err(invalid(format!("tenants[{i}].arrival.per_s"), "must be > 0"));
            }
        }
        Ok(())
    }
}

/// `at_ms,tenant,cpu_m,memory_mb,duration_ms[,priority]`, with a header line.
pub fn parse_trace(text: &str) -> Result<Vec<TraceJob>, WorkloadError> {
    let mut out = vec![];
    for (n, line) in text.lines().enumerate().skip(1) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = |what: &str| invalid(format!("trace line {}", n + 1), format!("{what} in {line:?}"));
        if f.len() < 5 {
            return Err(bad("expected at_ms,tenant,cpu_m,memory_mb,duration_ms[,priority]"));
        }
        out.push(TraceJob {
            at_ms: f[0].parse().map_err(|_| bad("bad at_ms"))?,
            tenant: f[1].to_owned(),
            cpu_m: f[2].parse().map_err(|_| bad("bad cpu_m"))?,
            memory_mb: f[3].parse().map_err(|_| bad("bad memory_mb"))?,
            duration_ms: f[4].parse().map_err(|_| bad("bad duration_ms"))?,
            priority: f.get(5).map_or("normal", |p| p).to_owned(),
        });
    }
    Ok(out)
}
