//! Autoscaling decisions (SPEC §2.11): how many workers a pool should have, and why.
//!
//! One pure function, [`evaluate`], takes a pool's bounds and size, its policies, the signals
//! observed over the last windows, its pending demand and what it did lately, and returns at
//! most one [`Decision`]. The server applies decisions through the pool's provider; the
//! simulator drives the same function with simulated time.
//!
//! Two modes: `threshold` policies fire on a trigger (`queue_depth > 5`) averaged over their
//! window; `forecast` sizes the pool so every pending job the pool could run starts before its
//! SLA at-risk point, from the expected durations the scheduler learns.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::time::Duration;

use crate::job::string_enum;
use crate::time::Timestamp;

string_enum!(
    /// What a trigger observes (SPEC §2.11).
    Metric {
        CpuUtilization = "cpu_utilization",
        MemoryUtilization = "memory_utilization",
        QueueDepth = "queue_depth",
        QueueWaitSeconds = "queue_wait_seconds",
        IdleWorkers = "idle_workers",
        BusyRatio = "busy_ratio",
    }
);

string_enum!(
    /// How a policy decides.
    Mode { Threshold = "threshold", Forecast = "forecast" }
);

string_enum!(
    /// Which way a policy moves the pool.
    Direction { ScaleUp = "scale_up", ScaleDown = "scale_down" }
);

string_enum!(
    /// What caused a scaling event.
    Source {
        Policy = "policy",
        Manual = "manual",
        MinSize = "min_size",
        Replacement = "replacement",
        IdleReaper = "idle_reaper",
        Lifecycle = "lifecycle",
    }
);

string_enum!(
    /// What became of a decision.
    Outcome { Executed = "executed", SuppressedCooldown = "suppressed_cooldown", Clamped = "clamped", Failed = "failed" }
);

/// A comparison of a trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Op {
    const ALL: [(&'static str, Op); 6] = [(">=", Op::Ge), ("<=", Op::Le), ("==", Op::Eq), ("!=", Op::Ne), (">", Op::Gt), ("<", Op::Lt)];

    pub fn as_str(self) -> &'static str {
        Op::ALL.iter().find(|(_, o)| *o == self).map(|(s, _)| *s).unwrap_or("?")
    }

    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }
}

/// `<metric> <op> <number>`.
#[derive(Clone, Debug, PartialEq)]
pub struct Trigger {
    pub metric: Metric,
    pub op: Op,
    pub threshold: f64,
}

/// Why a trigger does not parse: at which character (0-based) and what was expected there.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: expected {expected}, found {found}")]
pub struct TriggerError {
    pub position: usize,
    pub expected: String,
    pub found: String,
}

impl Trigger {
    pub fn parse(s: &str) -> Result<Trigger, TriggerError> {
        let mut pos = 0;
        let skip_ws = |pos: &mut usize| {
            while s[*pos..].starts_with(char::is_whitespace) {
                *pos += s[*pos..].chars().next().map_or(1, char::len_utf8);
            }
        };
        let found = |pos: usize| match s[pos..].split_whitespace().next() {
            Some(w) => format!("`{w}`"),
            None => "the end".to_owned(),
        };
        skip_ws(&mut pos);
        let word_end = s[pos..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(s.len(), |i| pos + i);
        let metric = s[pos..word_end].parse::<Metric>().map_err(|_| TriggerError {
            position: pos,
            expected: format!("a metric ({})", Metric::expected()),
            found: found(pos),
        })?;
        pos = word_end;
        skip_ws(&mut pos);
        let (text, op) = Op::ALL.iter().find(|(t, _)| s[pos..].starts_with(t)).copied().ok_or_else(|| TriggerError {
            position: pos,
            expected: "a comparison (> >= < <= == !=)".into(),
            found: found(pos),
        })?;
        pos += text.len();
        skip_ws(&mut pos);
        let rest = s[pos..].trim_end();
        let threshold = rest
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && !rest.is_empty() && !rest.contains(char::is_whitespace))
            .ok_or_else(|| TriggerError { position: pos, expected: "a number".into(), found: found(pos) })?;
        Ok(Trigger { metric, op, threshold })
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.metric, self.op.as_str(), self.threshold)
    }
}

/// A scaling policy of a pool.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// The slug of its name, unique within the pool.
    pub id: String,
    pub name: String,
    pub mode: Mode,
    /// Threshold policies fire on it; forecast policies have none.
    pub trigger: Option<Trigger>,
    pub direction: Direction,
    pub step: u32,
    pub cooldown: Duration,
    pub window: Duration,
    pub hysteresis_pct: u32,
    pub enabled: bool,
}

/// A policy's id: the slug of its name (lowercase letters and digits, other runs as one `-`);
/// `None` when nothing is left.
pub fn policy_id(name: &str) -> Option<String> {
    let mut id = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            id.push(c.to_ascii_lowercase());
        } else if !id.is_empty() && !id.ends_with('-') {
            id.push('-');
        }
    }
    let id = id.trim_end_matches('-').to_owned();
    (!id.is_empty() && id.len() <= 63).then_some(id)
}

/// What a pool looks like now, as its trigger metrics (SPEC §2.11).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Signals {
    /// Allocated / total cpu of its idle and busy workers, in percent.
    pub cpu_utilization: f64,
    pub memory_utilization: f64,
    /// Pending jobs that have this pool as a candidate.
    pub queue_depth: u32,
    /// The longest wait among them.
    pub queue_wait_seconds: f64,
    pub idle_workers: u32,
    /// busy / (idle + busy), 0 without workers.
    pub busy_ratio: f64,
}

impl Signals {
    pub fn get(&self, m: Metric) -> f64 {
        match m {
            Metric::CpuUtilization => self.cpu_utilization,
            Metric::MemoryUtilization => self.memory_utilization,
            Metric::QueueDepth => f64::from(self.queue_depth),
            Metric::QueueWaitSeconds => self.queue_wait_seconds,
            Metric::IdleWorkers => f64::from(self.idle_workers),
            Metric::BusyRatio => self.busy_ratio,
        }
    }
}

/// The signals observed at each evaluation, kept as long as the longest window needs.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    samples: VecDeque<(Timestamp, Signals)>,
}

impl Samples {
    /// Records `signals` at `now`, forgetting samples older than `keep`.
    pub fn push(&mut self, now: Timestamp, signals: Signals, keep: Duration) {
        self.samples.push_back((now, signals));
        while self.samples.front().is_some_and(|(at, _)| now.since(*at) > keep) {
            self.samples.pop_front();
        }
    }

    /// The average of `metric` over the samples of the last `window` (the latest sample alone
    /// when the window is shorter than the evaluation interval); `None` before any sample.
    pub fn average(&self, metric: Metric, window: Duration, now: Timestamp) -> Option<f64> {
        let (_, last) = self.samples.back()?;
        let (sum, n) = self.samples.iter().filter(|(at, _)| now.since(*at) <= window).fold((0.0, 0u32), |(sum, n), (_, s)| (sum + s.get(metric), n + 1));
        Some(if n == 0 { last.get(metric) } else { sum / f64::from(n) })
    }

    pub fn latest(&self) -> Option<&Signals> {
        self.samples.back().map(|(_, s)| s)
    }
}

/// A pending job the pool could run, as forecast mode sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PendingJob {
    /// When it turns SLA at-risk.
    pub at_risk_at: Timestamp,
    /// How long it is expected to run.
    pub expected: Duration,
}

/// The pool's pending work and the work on its workers, for forecast mode.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Demand {
    /// Pending jobs with this pool as a candidate, in any order.
    pub pending: Vec<PendingJob>,
    /// When each occupied lane of its live workers is expected to be free.
    pub busy_until: Vec<Timestamp>,
    /// Jobs one worker runs at once (its slots, or fewer when the largest pending job's shape
    /// leaves less room).
    pub lanes_per_worker: u32,
    /// How long a new worker takes to take work.
    pub provision_delay: Duration,
}

/// A pool as the autoscaler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSize {
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    /// Live workers now.
    pub current: u32,
    /// Whether policies act at all (manual scaling and `min_size` do regardless).
    pub auto_scaling: bool,
}

/// What the pool did lately: when it last scaled up, when anything last changed its size,
/// and the last skipped decision (so a skip is recorded once, not at every evaluation).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Memory {
    pub last_up: Option<Timestamp>,
    pub last_change: Option<Timestamp>,
    pub last_skip: Option<(String, Outcome)>,
    /// Since when forecast has wanted fewer workers than the pool has, below hysteresis.
    pub forecast_low_since: Option<Timestamp>,
}

/// One scaling decision, executed or not.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub source: Source,
    pub policy_id: Option<String>,
    pub trigger: Option<String>,
    pub observed: Option<f64>,
    pub from: u32,
    pub to: u32,
    pub outcome: Outcome,
    pub reason: String,
}

/// A decision as recorded in a pool's scaling history.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Assigned by the store, increasing.
    pub id: i64,
    pub pool_id: crate::ids::PoolId,
    pub at: Timestamp,
    pub decision: Decision,
    /// Who asked (manual scaling); `None` for the autoscaler.
    pub actor: Option<String>,
}

impl Memory {
    /// What the pool did lately, from its recorded events (any order).
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Memory {
        let mut m = Memory::default();
        for e in events.into_iter().filter(|e| e.decision.outcome == Outcome::Executed) {
            if e.decision.to > e.decision.from {
                m.last_up = m.last_up.max(Some(e.at));
            }
            if e.decision.to != e.decision.from {
                m.last_change = m.last_change.max(Some(e.at));
            }
        }
        m
    }

    /// Updates what the pool did after `d` was applied at `now`. Returns whether `d` is worth
    /// recording: every executed decision, and a skip only when it differs from the last one.
    pub fn note(&mut self, d: &Decision, now: Timestamp) -> bool {
        match d.outcome {
            Outcome::Executed => {
                if d.to > d.from {
                    self.last_up = Some(now);
                }
                if d.to != d.from {
                    self.last_change = Some(now);
                }
                self.last_skip = None;
                true
            }
            outcome => {
                let key = (d.policy_id.clone().unwrap_or_default(), outcome);
                let new = self.last_skip.as_ref() != Some(&key);
                self.last_skip = Some(key);
                new
            }
        }
    }
}

fn decision(source: Source, from: u32, to: u32, outcome: Outcome, reason: String) -> Decision {
    Decision { source, policy_id: None, trigger: None, observed: None, from, to, outcome, reason }
}

/// Workers idle longer than a dynamic pool's `idle_timeout_s`: how many may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleExpired(pub u32);

/// The next decision for a pool, if any. Order: bounds first (`min_size`, `max_size`), then
/// scale-up policies (the largest firing step), then scale-down ones, then forecast, then the
/// idle reaper of dynamic pools.
pub fn evaluate(
    size: PoolSize,
    policies: &[Policy],
    samples: &Samples,
    demand: Option<&Demand>,
    idle: IdleExpired,
    mem: &mut Memory,
    now: Timestamp,
) -> Option<Decision> {
    let PoolSize { min, max, desired, .. } = size;
    if desired < min {
        return Some(decision(Source::MinSize, desired, min, Outcome::Executed, format!("desired size {desired} is below min_size {min}")));
    }
    if desired > max {
        return Some(decision(Source::Lifecycle, desired, max, Outcome::Executed, format!("desired size {desired} is above max_size {max}")));
    }
    // What a forecast policy wants: the idle reaper does not go below it either.
    let mut floor = min;
    if size.auto_scaling {
        for direction in [Direction::ScaleUp, Direction::ScaleDown] {
            if let Some(d) = threshold(size, policies, direction, samples, mem, now) {
                return Some(d);
            }
        }
        if let (Some(p), Some(demand)) = (policies.iter().find(|p| p.enabled && p.mode == Mode::Forecast), demand) {
            let needed = forecast_size(size, demand, now);
            if let Some(d) = forecast(size, p, needed, demand, mem, now) {
                return Some(d);
            }
            floor = floor.max(needed);
        }
    }
    if idle.0 > 0 && desired > floor {
        let to = desired.saturating_sub(idle.0).max(floor);
        let n = desired - to;
        return Some(decision(Source::IdleReaper, desired, to, Outcome::Executed, format!("{n} worker(s) idle longer than idle_timeout_s")));
    }
    None
}

fn threshold(size: PoolSize, policies: &[Policy], direction: Direction, samples: &Samples, mem: &Memory, now: Timestamp) -> Option<Decision> {
    let firing = policies
        .iter()
        .filter(|p| p.enabled && p.mode == Mode::Threshold && p.direction == direction)
        .filter_map(|p| {
            let t = p.trigger.as_ref()?;
            let value = samples.average(t.metric, p.window, now)?;
            t.op.holds(value, t.threshold).then_some((p, t, value))
        })
        .max_by(|a, b| a.0.step.cmp(&b.0.step).then_with(|| b.0.id.cmp(&a.0.id)))?;
    let (p, t, value) = firing;
    let from = size.desired;
    let to = match direction {
        Direction::ScaleUp => from.saturating_add(p.step).min(size.max),
        Direction::ScaleDown => from.saturating_sub(p.step).max(size.min),
    };
    let reason_base = format!("{t}: {} = {} over {} s", t.metric, fmt_value(value), p.window.as_secs());
    // Scale-up waits its cooldown after the last scale-up; scale-down after any change.
    let remaining = cooldown_remaining(p, mem, now);
    let (outcome, reason) = if to == from {
        let bound = if direction == Direction::ScaleUp { "max_size" } else { "min_size" };
        (Outcome::Clamped, format!("{reason_base}; already at {bound} {from}"))
    } else if !remaining.is_zero() {
        (Outcome::SuppressedCooldown, format!("{reason_base}; cooldown {} s remaining", remaining.as_secs_f64().ceil() as u64))
    } else {
        (Outcome::Executed, reason_base)
    };
    let to = if outcome == Outcome::Executed { to } else { from };
    Some(Decision { source: Source::Policy, policy_id: Some(p.id.clone()), trigger: Some(t.to_string()), observed: Some(value), from, to, outcome, reason })
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") }
}

/// Cooldown left before `p` may act again, as of `now`.
pub fn cooldown_remaining(p: &Policy, mem: &Memory, now: Timestamp) -> Duration {
    let since = match p.direction {
        Direction::ScaleUp => mem.last_up,
        Direction::ScaleDown => mem.last_change,
    };
    since.map(|at| p.cooldown.saturating_sub(now.since(at))).unwrap_or_default()
}

fn forecast(size: PoolSize, p: &Policy, needed: u32, demand: &Demand, mem: &mut Memory, now: Timestamp) -> Option<Decision> {
    let from = size.desired;
    let observed = Some(f64::from(needed));
    let base = |to: u32, outcome: Outcome, reason: String| Decision {
        source: Source::Policy,
        policy_id: Some(p.id.clone()),
        trigger: None,
        observed,
        from,
        to,
        outcome,
        reason,
    };
    if needed > from {
        mem.forecast_low_since = None;
        let to = from.saturating_add(p.step.max(1)).min(needed);
        // Unlike a threshold policy's, a forecast's growth also waits out its cooldown after a
        // shrink: the jobs it grows for have the slack between at-risk and breach.
        let remaining = mem.last_change.map(|at| p.cooldown.saturating_sub(now.since(at))).unwrap_or_default();
        let why = format!("forecast: {} pending job(s) need {needed} worker(s) to start before their SLA at-risk point", demand.pending.len());
        if !remaining.is_zero() {
            return Some(base(from, Outcome::SuppressedCooldown, format!("{why}; cooldown {} s remaining", remaining.as_secs_f64().ceil() as u64)));
        }
        return Some(base(to, Outcome::Executed, why));
    }
    // Shrink only when below current − hysteresis for a full scale-down cooldown.
    let floor = u64::from(from) * u64::from(100u32.saturating_sub(p.hysteresis_pct.min(100))) / 100;
    if u64::from(needed) >= floor || needed >= from {
        mem.forecast_low_since = None;
        return None;
    }
    let low_since = *mem.forecast_low_since.get_or_insert(now);
    if now.since(low_since) < p.cooldown || mem.last_change.is_some_and(|at| now.since(at) < p.cooldown) {
        return None;
    }
    mem.forecast_low_since = None;
    let to = from.saturating_sub(p.step.max(1)).max(needed).max(size.min);
    Some(base(
        to,
        Outcome::Executed,
        format!("forecast: {needed} worker(s) suffice for {} pending job(s) for {} s", demand.pending.len(), p.cooldown.as_secs()),
    ))
}

/// The fewest workers in `[min, max]` with which every pending job starts before its at-risk
/// point (or as few breaches as `max` workers allow), by list-scheduling the jobs earliest
/// deadline first on the lanes of `n` workers.
pub fn forecast_size(size: PoolSize, demand: &Demand, now: Timestamp) -> u32 {
    let mut jobs = demand.pending.clone();
    jobs.sort_by_key(|j| (j.at_risk_at, j.expected));
    let lanes = demand.lanes_per_worker.max(1);
    let breaches = |n: u32| -> usize {
        let mut free: BinaryHeap<Reverse<Timestamp>> = BinaryHeap::new();
        // Existing workers' busy lanes first; their other lanes are free now; new ones after the delay.
        let mut busy = demand.busy_until.clone();
        busy.sort();
        let existing = n.min(size.current);
        let keep = (existing as usize * lanes as usize).min(busy.len());
        for t in &busy[..keep] {
            free.push(Reverse((*t).max(now)));
        }
        for _ in keep..existing as usize * lanes as usize {
            free.push(Reverse(now));
        }
        for _ in 0..(n - existing) as usize * lanes as usize {
            free.push(Reverse(now.saturating_add(demand.provision_delay)));
        }
        let mut late = 0;
        for j in &jobs {
            let Some(Reverse(t)) = free.pop() else { return jobs.len() };
            let start = t.max(now);
            if start > j.at_risk_at.max(now) {
                late += 1;
            }
            free.push(Reverse(start.saturating_add(j.expected)));
        }
        late
    };
    if jobs.is_empty() {
        return size.min;
    }
    let best = breaches(size.max);
    let (mut lo, mut hi) = (size.min, size.max);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if breaches(mid) <= best {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn policy(id: &str, trigger: &str, direction: Direction, step: u32, cooldown_s: u64) -> Policy {
        Policy {
            id: id.into(),
            name: id.into(),
            mode: Mode::Threshold,
            trigger: Some(Trigger::parse(trigger).unwrap()),
            direction,
            step,
            cooldown: Duration::from_secs(cooldown_s),
            window: Duration::from_secs(60),
            hysteresis_pct: 20,
            enabled: true,
        }
    }

    fn size(min: u32, max: u32, desired: u32) -> PoolSize {
        PoolSize { min, max, desired, current: desired, auto_scaling: true }
    }

    fn samples(at: Timestamp, s: Signals) -> Samples {
        let mut x = Samples::default();
        x.push(at, s, Duration::from_secs(600));
        x
    }

    #[test]
    fn policy_ids_are_slugs_of_names() {
        assert_eq!(policy_id("Scale up on queue!").as_deref(), Some("scale-up-on-queue"));
        assert_eq!(policy_id("  ++ "), None);
    }

    #[test]
    fn triggers_parse_and_errors_name_the_position() {
        let tr = Trigger::parse("queue_depth > 5").unwrap();
        assert_eq!((tr.metric, tr.op, tr.threshold), (Metric::QueueDepth, Op::Gt, 5.0));
        assert_eq!(Trigger::parse(" cpu_utilization>=80.5 ").unwrap().op, Op::Ge);
        assert_eq!(Trigger::parse("busy_ratio != 1").unwrap().to_string(), "busy_ratio != 1");
        let e = Trigger::parse("queue_dept > 5").unwrap_err();
        assert_eq!((e.position, e.found.as_str()), (0, "`queue_dept`"));
        assert!(e.expected.contains("queue_depth"), "{e}");
        let e = Trigger::parse("queue_depth => 5").unwrap_err();
        assert_eq!(e.position, 12);
        assert!(e.expected.contains("comparison"));
        let e = Trigger::parse("queue_depth > five").unwrap_err();
        assert_eq!((e.position, e.expected.as_str(), e.found.as_str()), (14, "a number", "`five`"));
        assert_eq!(Trigger::parse("queue_depth >").unwrap_err().found, "the end");
        assert!(Trigger::parse("queue_depth > 5 6").is_err());
        assert!(Trigger::parse("queue_depth > NaN").is_err());
    }

    #[test]
    fn a_firing_scale_up_waits_its_cooldown_and_stops_at_max() {
        let up = policy("up", "queue_depth > 0", Direction::ScaleUp, 2, 60);
        let s = samples(t(1_000), Signals { queue_depth: 7, ..Default::default() });
        let mut mem = Memory::default();
        let d = evaluate(size(0, 3, 0), std::slice::from_ref(&up), &s, None, IdleExpired(0), &mut mem, t(1_000)).unwrap();
        assert_eq!((d.from, d.to, d.outcome), (0, 2, Outcome::Executed));
        assert_eq!(d.reason, "queue_depth > 0: queue_depth = 7 over 60 s");
        assert!(mem.note(&d, t(1_000)));
        let d = evaluate(size(0, 3, 2), std::slice::from_ref(&up), &s, None, IdleExpired(0), &mut mem, t(31_000)).unwrap();
        assert_eq!((d.to, d.outcome), (2, Outcome::SuppressedCooldown));
        assert!(d.reason.ends_with("cooldown 30 s remaining"), "{}", d.reason);
        assert!(mem.note(&d, t(31_000)));
        // The same skip again is not worth another record.
        let d = evaluate(size(0, 3, 2), std::slice::from_ref(&up), &s, None, IdleExpired(0), &mut mem, t(32_000)).unwrap();
        assert!(!mem.note(&d, t(32_000)));
        let d = evaluate(size(0, 3, 2), std::slice::from_ref(&up), &s, None, IdleExpired(0), &mut mem, t(61_000)).unwrap();
        assert_eq!((d.from, d.to, d.outcome), (2, 3, Outcome::Executed));
        mem.note(&d, t(61_000));
        let d = evaluate(size(0, 3, 3), std::slice::from_ref(&up), &s, None, IdleExpired(0), &mut mem, t(200_000)).unwrap();
        assert_eq!((d.to, d.outcome), (3, Outcome::Clamped));
    }

    #[test]
    fn scale_down_waits_after_any_change_and_up_wins_over_down() {
        let up = policy("up", "queue_depth > 0", Direction::ScaleUp, 1, 60);
        let down = policy("down", "busy_ratio < 0.5", Direction::ScaleDown, 1, 120);
        let ps = [up, down];
        let mut mem = Memory { last_up: Some(t(0)), last_change: Some(t(0)), ..Default::default() };
        let idle = samples(t(100_000), Signals { busy_ratio: 0.0, ..Default::default() });
        let d = evaluate(size(1, 5, 3), &ps, &idle, None, IdleExpired(0), &mut mem, t(100_000)).unwrap();
        assert_eq!((d.policy_id.as_deref(), d.outcome), (Some("down"), Outcome::SuppressedCooldown));
        let d = evaluate(size(1, 5, 3), &ps, &idle, None, IdleExpired(0), &mut mem, t(120_000)).unwrap();
        assert_eq!((d.from, d.to, d.outcome), (3, 2, Outcome::Executed));
        let both = samples(t(120_000), Signals { busy_ratio: 0.0, queue_depth: 3, ..Default::default() });
        let d = evaluate(size(1, 5, 3), &ps, &both, None, IdleExpired(0), &mut mem, t(120_000)).unwrap();
        assert_eq!(d.policy_id.as_deref(), Some("up"));
    }

    #[test]
    fn bounds_come_first_and_policies_need_auto_scaling() {
        let up = policy("up", "queue_depth > 0", Direction::ScaleUp, 1, 0);
        let s = samples(t(0), Signals { queue_depth: 3, ..Default::default() });
        let mut mem = Memory::default();
        let d = evaluate(size(2, 4, 0), std::slice::from_ref(&up), &s, None, IdleExpired(0), &mut mem, t(0)).unwrap();
        assert_eq!((d.source, d.to), (Source::MinSize, 2));
        let d = evaluate(size(0, 1, 3), std::slice::from_ref(&up), &s, None, IdleExpired(0), &mut mem, t(0)).unwrap();
        assert_eq!(d.to, 1);
        let off = PoolSize { auto_scaling: false, ..size(0, 4, 1) };
        assert_eq!(evaluate(off, std::slice::from_ref(&up), &s, None, IdleExpired(0), &mut mem, t(0)), None);
        let d = evaluate(off, &[], &s, None, IdleExpired(3), &mut mem, t(0)).unwrap();
        assert_eq!((d.source, d.from, d.to), (Source::IdleReaper, 1, 0));
    }

    #[test]
    fn window_averages_and_forgets() {
        let mut s = Samples::default();
        let keep = Duration::from_secs(60);
        s.push(t(0), Signals { queue_depth: 10, ..Default::default() }, keep);
        s.push(t(30_000), Signals { queue_depth: 0, ..Default::default() }, keep);
        assert_eq!(s.average(Metric::QueueDepth, Duration::from_secs(60), t(30_000)), Some(5.0));
        assert_eq!(s.average(Metric::QueueDepth, Duration::from_secs(10), t(30_000)), Some(0.0));
        s.push(t(90_000), Signals { queue_depth: 4, ..Default::default() }, keep);
        assert_eq!(s.average(Metric::QueueDepth, Duration::from_secs(600), t(90_000)), Some(2.0));
    }

    fn job(at_risk_s: i64, expected_s: u64) -> PendingJob {
        PendingJob { at_risk_at: t(at_risk_s * 1000), expected: Duration::from_secs(expected_s) }
    }

    #[test]
    fn forecast_sizes_for_deadlines_and_grows_by_step() {
        // Four 100 s jobs due in 50 s on one lane per worker: four workers; one due in an hour: min.
        let demand = Demand { pending: vec![job(50, 100); 4], busy_until: vec![], lanes_per_worker: 1, provision_delay: Duration::from_secs(1) };
        assert_eq!(forecast_size(size(0, 10, 0), &demand, t(0)), 4);
        let relaxed = Demand { pending: vec![job(3600, 100); 4], ..demand.clone() };
        assert_eq!(forecast_size(size(0, 10, 0), &relaxed, t(0)), 1);
        assert_eq!(forecast_size(size(0, 2, 0), &demand, t(0)), 2, "never above max");
        let mut p = policy("fc", "queue_depth > 0", Direction::ScaleUp, 2, 60);
        p.mode = Mode::Forecast;
        p.trigger = None;
        let mut mem = Memory::default();
        let d = evaluate(size(0, 10, 0), std::slice::from_ref(&p), &Samples::default(), Some(&demand), IdleExpired(0), &mut mem, t(0)).unwrap();
        assert_eq!((d.from, d.to, d.observed), (0, 2, Some(4.0)));
    }

    #[test]
    fn forecast_shrinks_only_after_a_full_cooldown_below_hysteresis() {
        let mut p = policy("fc", "queue_depth > 0", Direction::ScaleDown, 1, 120);
        p.mode = Mode::Forecast;
        let empty = Demand { lanes_per_worker: 1, ..Default::default() };
        let mut mem = Memory::default();
        let s = Samples::default();
        let eval = |mem: &mut Memory, at: i64| evaluate(size(0, 10, 5), std::slice::from_ref(&p), &s, Some(&empty), IdleExpired(0), mem, t(at));
        assert_eq!(eval(&mut mem, 0), None);
        assert_eq!(eval(&mut mem, 119_000), None);
        let d = eval(&mut mem, 120_000).unwrap();
        assert_eq!((d.from, d.to), (5, 4));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the signals, the pool's size stays within [min, max], scale-ups are never
        /// closer than their cooldown, and a scale-down never follows any change sooner than its own.
        #[test]
        fn decisions_respect_bounds_and_cooldowns(
            min in 0u32..4, extra in 0u32..6, steps in proptest::collection::vec((0u32..20, 0u32..3, 0.0f64..1.0), 1..80),
        ) {
            let max = min + extra;
            let up = Policy { id: "up".into(), name: "up".into(), mode: Mode::Threshold, trigger: Some(Trigger::parse("queue_depth > 3").unwrap()),
                direction: Direction::ScaleUp, step: 2, cooldown: Duration::from_secs(60), window: Duration::from_secs(30), hysteresis_pct: 20, enabled: true };
            let down = Policy { id: "down".into(), trigger: Some(Trigger::parse("busy_ratio < 0.3").unwrap()), direction: Direction::ScaleDown,
                step: 1, cooldown: Duration::from_secs(120), ..up.clone() };
            let policies = [up, down];
            let (mut desired, mut mem, mut samples) = (0u32, Memory::default(), Samples::default());
            let mut ups: Vec<i64> = Vec::new();
            let mut changes: Vec<i64> = Vec::new();
            for (i, (depth, idle, busy)) in steps.into_iter().enumerate() {
                let now = Timestamp::from_millis(i as i64 * 15_000);
                samples.push(now, Signals { queue_depth: depth, idle_workers: idle, busy_ratio: busy, ..Default::default() }, Duration::from_secs(120));
                let size = PoolSize { min, max, desired, current: desired, auto_scaling: true };
                if let Some(d) = evaluate(size, &policies, &samples, None, IdleExpired(idle), &mut mem, now) {
                    prop_assert_eq!(d.from, desired);
                    if d.source == Source::Policy && d.to > d.from {
                        prop_assert!(ups.last().is_none_or(|&at| now.as_millis() - at >= 60_000));
                        ups.push(now.as_millis());
                    }
                    if d.source == Source::Policy && d.to < d.from {
                        prop_assert!(changes.last().is_none_or(|&at| now.as_millis() - at >= 120_000));
                    }
                    if d.to != d.from {
                        changes.push(now.as_millis());
                    }
                    mem.note(&d, now);
                    desired = d.to;
                }
                prop_assert!(desired >= min && desired <= max);
            }
        }
    }
}
