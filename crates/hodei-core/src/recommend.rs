//! Right-sizing recommendations from measured usage (SPEC §8.8), never from requests alone.
//!
//! Per (tenant, job name), the latest 20 finished runs within the lookback, and only with at
//! least `min_runs` of them:
//! - average cpu under 30 % of the request → `job_reduce_cpu` to max(100, p95 × 1.2) rounded up
//!   to 100 m;
//! - any OOM, or a memory peak at 95 % of the request or more → `job_increase_memory` to the
//!   request × 1.5 rounded up to 256 MiB;
//! - a GPU job whose GPUs were measured at under 10 % on average → `job_drop_gpu` (only where
//!   the workers measured its GPUs: a run without GPU samples says nothing about them).
//!
//! Each carries its evidence and its monthly saving: runs per 30 days (from how often it ran
//! in the window) × billed seconds per run × the resources it would stop asking for (negative
//! for more memory: what stopping the OOMs costs).

use crate::cost::{Rates, billed_seconds, cost_micros};
use crate::usage::{Summary, p95};
use crate::{Resources, TenantId, Timestamp};

/// Runs of one job name looked at, the latest first.
pub const RUNS: usize = 20;

/// One finished run of a job name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub requested: Resources,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub oom: bool,
    pub summary: Summary,
    /// Whether its GPUs' utilisation was measured.
    pub gpu_measured: bool,
}

crate::job::string_enum!(
    Kind {
        JobReduceCpu = "job_reduce_cpu",
        JobIncreaseMemory = "job_increase_memory",
        JobDropGpu = "job_drop_gpu",
    }
);

/// What a recommendation rests on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    pub runs: u32,
    pub ooms: u32,
    /// Over the runs: the average of their cpu averages, the 95th percentile of their cpu
    /// p95s, and the largest memory peak.
    pub cpu_avg_m: u32,
    pub cpu_p95_m: u32,
    pub memory_peak_mb: u32,
    pub gpu_avg_pct: u32,
    pub first_at: Timestamp,
    pub last_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recommendation {
    pub kind: Kind,
    pub tenant: TenantId,
    pub job_name: String,
    /// In the resource's unit: millicores, MiB or GPUs.
    pub current: u32,
    pub suggested: u32,
    pub rationale: String,
    pub evidence: Evidence,
    /// Micro-units of the currency a month; negative when following it costs more.
    pub monthly_savings_micros: i64,
    /// 0–100: how much of the full 20 runs it rests on.
    pub confidence_pct: u32,
}

const MONTH_MS: u64 = 30 * 86_400_000;

/// The recommendations for one job name from its `runs` (latest first, at most [`RUNS`] are
/// used), each priced at `rates`, as of `now`.
pub fn for_job(tenant: &TenantId, job_name: &str, runs: &[Run], min_runs: u32, rates: &Rates, now: Timestamp) -> Vec<Recommendation> {
    let runs = &runs[..runs.len().min(RUNS)];
    let n = runs.len() as u32;
    if n == 0 || n < min_runs.max(1) {
        return Vec::new();
    }
    let latest = &runs[0].requested;
    let first_at = runs.iter().map(|r| r.finished_at).min().unwrap_or(now);
    let last_at = runs.iter().map(|r| r.finished_at).max().unwrap_or(now);
    let evidence = Evidence {
        runs: n,
        ooms: runs.iter().filter(|r| r.oom).count() as u32,
        cpu_avg_m: (runs.iter().map(|r| u64::from(r.summary.cpu_avg_m)).sum::<u64>() / u64::from(n)) as u32,
        cpu_p95_m: p95(runs.iter().map(|r| r.summary.cpu_p95_m)),
        memory_peak_mb: runs.iter().map(|r| r.summary.memory_peak_mb).max().unwrap_or(0),
        gpu_avg_pct: {
            let g: Vec<u32> = runs.iter().filter(|r| r.gpu_measured).map(|r| r.summary.gpu_avg_pct).collect();
            (g.iter().map(|v| u64::from(*v)).sum::<u64>() / (g.len() as u64).max(1)) as u32
        },
        first_at,
        last_at,
    };
    // Billed seconds a month at the pace seen (over at least a day).
    let span_ms = (now.as_millis() - first_at.as_millis()).max(86_400_000) as u64;
    let billed: u64 = runs.iter().map(|r| billed_seconds((r.finished_at.as_millis() - r.started_at.as_millis()).max(0) as u64)).sum();
    let month_seconds = (u128::from(billed) * u128::from(MONTH_MS) / u128::from(span_ms)) as u64;
    let confidence_pct = n * 100 / RUNS as u32;
    let mut out = Vec::new();
    // What `delta` costs over a month of runs; `more` when following the advice adds it.
    let rec = |kind, current, suggested, rationale: String, delta: Resources, more: bool| Recommendation {
        kind,
        tenant: tenant.clone(),
        job_name: job_name.to_owned(),
        current,
        suggested,
        rationale,
        evidence: evidence.clone(),
        monthly_savings_micros: if more { -cost_micros(month_seconds, &delta, rates) } else { cost_micros(month_seconds, &delta, rates) },
        confidence_pct,
    };
    let cpu = latest.cpu_m.0;
    if u64::from(evidence.cpu_avg_m) * 100 < u64::from(cpu) * 30 {
        let suggested = (evidence.cpu_p95_m.saturating_mul(12) / 10).max(100).div_ceil(100) * 100;
        if suggested < cpu {
            let delta = Resources::new(cpu - suggested, 0, 0);
            let why = format!(
                "{n} runs used {} m of cpu on average ({} % of the {cpu} m asked for); their p95 was {} m",
                evidence.cpu_avg_m,
                u64::from(evidence.cpu_avg_m) * 100 / u64::from(cpu.max(1)),
                evidence.cpu_p95_m
            );
            out.push(rec(Kind::JobReduceCpu, cpu, suggested, why, delta, false));
        }
    }
    let mem = latest.memory_mb.0;
    if evidence.ooms > 0 || u64::from(evidence.memory_peak_mb) * 100 >= u64::from(mem) * 95 {
        let suggested = (mem.saturating_mul(3) / 2).max(1).div_ceil(256) * 256;
        let delta = Resources::new(0, suggested - mem.min(suggested), 0);
        let why = match evidence.ooms {
            0 => format!("its memory peaked at {} MiB of the {mem} MiB asked for", evidence.memory_peak_mb),
            k => format!("{k} of its last {n} runs ran out of memory ({mem} MiB asked for, peak {} MiB)", evidence.memory_peak_mb),
        };
        out.push(rec(Kind::JobIncreaseMemory, mem, suggested, why, delta, true));
    }
    let gpu = latest.gpu.0;
    if gpu >= 1 && runs.iter().any(|r| r.gpu_measured) && evidence.gpu_avg_pct < 10 {
        let why = format!("its {gpu} GPUs were {} % busy on average over {n} runs", evidence.gpu_avg_pct);
        out.push(rec(Kind::JobDropGpu, gpu, 0, why, Resources::new(0, 0, gpu), false));
    }
    out
}

/// Pools are judged over this much history (SPEC: 7 days).
pub const POOL_WINDOW_MS: i64 = 7 * 86_400_000;
/// And only with at least a day of it: an hour of quiet says nothing about a pool.
pub const POOL_MIN_EVIDENCE_S: u64 = 86_400;

crate::job::string_enum!(
    PoolKind {
        PoolReduceMinSize = "pool_reduce_min_size",
        PoolSwitchToDynamic = "pool_switch_to_dynamic",
        PoolRaiseMaxSize = "pool_raise_max_size",
    }
);

/// One step of a pool's metric history: the seconds it covers, its live workers, the share of
/// their slots busy and of their cpu allocated (both 0–1), the pending jobs it could run and
/// the longest wait among them (seconds), averaged over the step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PoolSample {
    pub secs: u64,
    pub size: f64,
    pub busy_ratio: f64,
    pub cpu_utilization: f64,
    pub queue_depth: f64,
    pub queue_wait_s: f64,
}

/// What a pool recommendation rests on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolEvidence {
    /// Hours of history looked at.
    pub hours: u32,
    /// Cpu allocated on average (time-weighted), and the share of its worker time idle, percent.
    pub cpu_allocated_pct: u32,
    pub idle_pct: u32,
    /// The 95th percentile of its busy workers (busy slots' share × workers, rounded up).
    pub busy_workers_p95: u32,
    /// Percent of the time the pool sat at its `min_size` (or below, while workers started).
    pub at_min_pct: u32,
    /// Percent of the time it was at its `max_size`, and the 95th percentile of the longest
    /// queue wait then (seconds).
    pub at_max_pct: u32,
    pub wait_at_max_p95_s: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolRecommendation {
    pub kind: PoolKind,
    pub pool: crate::PoolId,
    /// `min_size` now and suggested (reduce), or the idle workers on average and 0 (switch).
    pub current: u32,
    pub suggested: u32,
    pub rationale: String,
    pub evidence: PoolEvidence,
    /// Micro-units a month: the worker time it would stop paying for at the pace seen.
    pub monthly_savings_micros: i64,
    /// 0–100: how much of the 7-day window it rests on.
    pub confidence_pct: u32,
}

/// SPEC's pool rules over a pool's history (`samples`, the last [`POOL_WINDOW_MS`]), each
/// priced per worker of `per_worker` at `rates`:
/// - cpu allocated under 30 % on average with `min_size` > 0 → `pool_reduce_min_size` to the
///   p95 of its busy workers (when that is lower);
/// - a static pool idle more than half its worker time → `pool_switch_to_dynamic` (a dynamic pool
///   lets idle workers above `min_size` go); its saving counts only what the first rule does
///   not already save, so the two add up;
/// - while at its `max_size`, a p95 queue wait over half of `medium_max_wait` (the medium SLA's)
///   → `pool_raise_max_size` by the workers the p95 queue then needs (at least one); what those
///   workers would cost over the time at the maximum is a negative saving.
pub fn for_pool(pool: &crate::Pool, samples: &[PoolSample], rates: &Rates, medium_max_wait: std::time::Duration) -> Vec<PoolRecommendation> {
    let covered: u64 = samples.iter().map(|s| s.secs).sum();
    if covered < POOL_MIN_EVIDENCE_S {
        return Vec::new();
    }
    let weighted = |f: &dyn Fn(&PoolSample) -> f64| samples.iter().map(|s| s.secs as f64 * f(s)).sum::<f64>() / covered as f64;
    let busy_workers = |s: &PoolSample| (s.size.max(0.0) * s.busy_ratio.clamp(0.0, 1.0) - 1e-9).ceil().max(0.0);
    let cpu = weighted(&|s| s.cpu_utilization.clamp(0.0, 1.0));
    // Idle worker time over all worker time.
    let worker_time = weighted(&|s| s.size.max(0.0));
    let idle = if worker_time > 0.0 { weighted(&|s| s.size.max(0.0) * (1.0 - s.busy_ratio.clamp(0.0, 1.0))) / worker_time } else { 0.0 };
    let min = f64::from(pool.min_size);
    let at_min = |s: &PoolSample| s.size <= min + 0.5;
    let at_max = |s: &PoolSample| pool.max_size > 0 && s.size >= f64::from(pool.max_size) - 0.5;
    let when_at_max: Vec<&PoolSample> = samples.iter().filter(|s| at_max(s)).collect();
    let evidence = PoolEvidence {
        hours: (covered / 3600) as u32,
        cpu_allocated_pct: (cpu * 100.0).round() as u32,
        idle_pct: (idle * 100.0).round() as u32,
        busy_workers_p95: p95(samples.iter().map(|s| busy_workers(s) as u32)),
        at_min_pct: (weighted(&|s| if at_min(s) { 1.0 } else { 0.0 }) * 100.0).round() as u32,
        at_max_pct: (weighted(&|s| if at_max(s) { 1.0 } else { 0.0 }) * 100.0).round() as u32,
        wait_at_max_p95_s: p95(when_at_max.iter().map(|s| s.queue_wait_s.max(0.0).round() as u32)),
    };
    let month = |worker_seconds: f64| {
        let per_month = worker_seconds * (MONTH_MS / 1000) as f64 / covered as f64;
        cost_micros(per_month.round() as u64, &pool.worker_resources, rates)
    };
    let confidence_pct = ((covered * 100) / (POOL_WINDOW_MS as u64 / 1000)).min(100) as u32;
    let mut out = Vec::new();
    let mut new_min = pool.min_size;
    if pool.min_size > 0 && cpu < 0.30 && evidence.busy_workers_p95 < pool.min_size {
        new_min = evidence.busy_workers_p95;
        let cut = f64::from(pool.min_size - new_min);
        let saved: f64 = samples.iter().filter(|s| at_min(s)).map(|s| s.secs as f64 * cut).sum();
        out.push(PoolRecommendation {
            kind: PoolKind::PoolReduceMinSize,
            pool: pool.id.clone(),
            current: pool.min_size,
            suggested: new_min,
            rationale: format!(
                "over {} h its cpu was {} % allocated on average and at most {} workers were busy 95 % of the time; it keeps {} ({} % of the time at its minimum)",
                evidence.hours, evidence.cpu_allocated_pct, evidence.busy_workers_p95, pool.min_size, evidence.at_min_pct
            ),
            evidence: evidence.clone(),
            monthly_savings_micros: month(saved),
            confidence_pct,
        });
    }
    if pool.pool_type == crate::PoolType::Static && idle > 0.5 {
        let reduce = f64::from(pool.min_size - new_min);
        let saved: f64 = samples
            .iter()
            .map(|s| {
                let dynamic = (s.size - f64::from(new_min).max(busy_workers(s))).max(0.0);
                let by_min = if at_min(s) { reduce } else { 0.0 };
                s.secs as f64 * (dynamic - by_min).max(0.0)
            })
            .sum();
        let idle_workers = weighted(&|s| s.size.max(0.0) * (1.0 - s.busy_ratio.clamp(0.0, 1.0)));
        // Nothing to gain beyond the smaller minimum: not worth a change of type.
        let saving = month(saved);
        if saving > 0 {
            out.push(PoolRecommendation {
                kind: PoolKind::PoolSwitchToDynamic,
                pool: pool.id.clone(),
                current: idle_workers.round() as u32,
                suggested: 0,
                rationale: format!(
                    "over {} h its workers were idle {} % of their time ({:.1} idle on average); a dynamic pool lets idle workers above its minimum go after idle_timeout_s",
                    evidence.hours, evidence.idle_pct, idle_workers
                ),
                evidence: evidence.clone(),
                monthly_savings_micros: saving,
                confidence_pct,
            });
        }
    }
    let half_sla = medium_max_wait.as_secs() / 2;
    if !when_at_max.is_empty() && u64::from(evidence.wait_at_max_p95_s) > half_sla {
        let depth = p95(when_at_max.iter().map(|s| s.queue_depth.max(0.0).ceil() as u32));
        let more = depth.div_ceil(pool.worker_slots.max(1)).max(1);
        let at_max_secs: u64 = when_at_max.iter().map(|s| s.secs).sum();
        out.push(PoolRecommendation {
            kind: PoolKind::PoolRaiseMaxSize,
            pool: pool.id.clone(),
            current: pool.max_size,
            suggested: pool.max_size.saturating_add(more),
            rationale: format!(
                "at its maximum of {} workers ({} % of {} h) the longest queue wait was {} s or more 5 % of the time, over half the medium SLA's {} s; {} jobs were waiting (p95)",
                pool.max_size,
                evidence.at_max_pct,
                evidence.hours,
                evidence.wait_at_max_p95_s,
                medium_max_wait.as_secs(),
                depth
            ),
            evidence: evidence.clone(),
            monthly_savings_micros: -month(at_max_secs as f64 * f64::from(more)),
            confidence_pct,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(i: i64, cpu_avg: u32, cpu_p95: u32, peak: u32, oom: bool) -> Run {
        Run {
            requested: Resources::new(2000, 1024, 0),
            started_at: Timestamp::from_millis(i * 3_600_000),
            finished_at: Timestamp::from_millis(i * 3_600_000 + 600_000),
            oom,
            summary: Summary { samples: 60, cpu_avg_m: cpu_avg, cpu_p95_m: cpu_p95, memory_peak_mb: peak, ..Summary::default() },
            gpu_measured: false,
        }
    }

    fn t() -> TenantId {
        TenantId::parse("t").unwrap()
    }

    #[test]
    fn an_idle_cpu_request_is_cut_to_its_p95_with_room() {
        let runs: Vec<Run> = (0..6).rev().map(|i| run(i, 300, 450 + i as u32, 200, false)).collect();
        let now = Timestamp::from_millis(86_400_000);
        let recs = for_job(&t(), "etl", &runs, 5, &Rates::DEFAULT, now);
        assert_eq!(recs.len(), 1, "{recs:?}");
        let r = &recs[0];
        // p95 of 450..=455 is 455 → × 1.2 = 546 → 600.
        assert_eq!((r.kind, r.current, r.suggested, r.evidence.runs, r.evidence.cpu_avg_m), (Kind::JobReduceCpu, 2000, 600, 6, 300));
        // 6 runs of 600 s in a day → 180 a month; 1.4 cores × 0.05 an hour × 600 s each.
        let per_run = cost_micros(600, &Resources::new(1400, 0, 0), &Rates::DEFAULT);
        assert_eq!(r.monthly_savings_micros, cost_micros(600 * 180, &Resources::new(1400, 0, 0), &Rates::DEFAULT));
        assert!((r.monthly_savings_micros - per_run * 180).abs() <= 180, "{} vs {}", r.monthly_savings_micros, per_run * 180);
        assert_eq!(r.confidence_pct, 30);
        assert!(for_job(&t(), "etl", &runs[..4], 5, &Rates::DEFAULT, now).is_empty(), "fewer than min_runs: nothing");
    }

    #[test]
    fn an_oom_or_a_peak_near_the_request_asks_for_half_as_much_again() {
        let mut runs: Vec<Run> = (0..5).map(|i| run(i, 1900, 2000, 500, false)).collect();
        let now = Timestamp::from_millis(86_400_000);
        assert!(for_job(&t(), "sim", &runs, 5, &Rates::DEFAULT, now).is_empty(), "busy cpu, memory far from its limit");
        runs[2].oom = true;
        let recs = for_job(&t(), "sim", &runs, 5, &Rates::DEFAULT, now);
        assert_eq!(recs.iter().map(|r| (r.kind, r.current, r.suggested)).collect::<Vec<_>>(), [(Kind::JobIncreaseMemory, 1024, 1536)]);
        assert!(recs[0].monthly_savings_micros < 0, "more memory costs more");
        assert!(recs[0].rationale.contains("1 of its last 5 runs ran out of memory"), "{}", recs[0].rationale);
        runs[2].oom = false;
        runs[3].summary.memory_peak_mb = 980;
        assert_eq!(for_job(&t(), "sim", &runs, 5, &Rates::DEFAULT, now)[0].kind, Kind::JobIncreaseMemory, "a peak at 95 %");
    }

    #[test]
    fn gpus_are_judged_only_where_they_were_measured() {
        let mut runs: Vec<Run> = (0..5).map(|i| run(i, 1900, 2000, 100, false)).collect();
        for r in &mut runs {
            r.requested = Resources::new(2000, 1024, 1);
        }
        let now = Timestamp::from_millis(86_400_000);
        assert!(for_job(&t(), "train", &runs, 5, &Rates::DEFAULT, now).is_empty(), "unmeasured GPUs say nothing");
        for r in &mut runs {
            r.gpu_measured = true;
            r.summary.gpu_avg_pct = 4;
        }
        let recs = for_job(&t(), "train", &runs, 5, &Rates::DEFAULT, now);
        assert_eq!(recs.iter().map(|r| (r.kind, r.suggested)).collect::<Vec<_>>(), [(Kind::JobDropGpu, 0)]);
        assert!(recs[0].monthly_savings_micros > 0);
    }

    const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

    fn pool(kind: crate::PoolType, min: u32) -> crate::Pool {
        crate::Pool {
            id: crate::PoolId::parse("p").unwrap(),
            name: "p".into(),
            pool_type: kind,
            provider: "local".into(),
            worker_resources: Resources::new(1000, 1024, 0),
            worker_slots: 4,
            min_size: min,
            max_size: min.max(8),
            desired_size: min,
            auto_scaling_enabled: false,
            idle_timeout: std::time::Duration::from_secs(300),
            scaling_policies: Vec::new(),
            allowed_tenants: Vec::new(),
            labels: Default::default(),
            managed_by: "config".into(),
            state: crate::PoolState::Active,
            state_reason: String::new(),
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
            version: 1,
        }
    }

    /// `hours` of hourly samples of `size` workers with `busy` of them busy.
    fn history(hours: usize, size: f64, busy: impl Fn(usize) -> f64) -> Vec<PoolSample> {
        (0..hours).map(|h| PoolSample { secs: 3600, size, busy_ratio: busy(h) / size, cpu_utilization: busy(h) / size, ..PoolSample::default() }).collect()
    }

    #[test]
    fn a_static_pool_mostly_idle_at_its_minimum_is_told_to_shrink_it() {
        let p = pool(crate::PoolType::Static, 4);
        // A week at 4 workers; one busy, two at the busiest hour of each day.
        let samples = history(168, 4.0, |h| if h % 24 == 12 { 2.0 } else { 1.0 });
        let recs = for_pool(&p, &samples, &Rates::DEFAULT, HOUR);
        // Dynamic at a minimum of 1 would save nothing more (its busy hour needs the second
        // worker): one piece of advice, not two.
        assert_eq!(recs.iter().map(|r| (r.kind, r.current, r.suggested)).collect::<Vec<_>>(), [(PoolKind::PoolReduceMinSize, 4, 1)]);
        let e = &recs[0].evidence;
        assert_eq!((e.hours, e.cpu_allocated_pct, e.busy_workers_p95, e.at_min_pct), (168, 26, 1, 100));
        // 3 workers a month (1 core, 1 GiB each): 3 × 720 h × (0.05 + 0.01).
        assert_eq!(recs[0].monthly_savings_micros, cost_micros(3 * 30 * 86_400, &Resources::new(1000, 1024, 0), &Rates::DEFAULT));
        assert_eq!(recs[0].confidence_pct, 100);
    }

    #[test]
    fn busy_pools_short_histories_and_dynamic_pools_get_no_advice_they_do_not_need() {
        let busy = history(48, 4.0, |_| 3.0);
        assert!(for_pool(&pool(crate::PoolType::Static, 4), &busy, &Rates::DEFAULT, HOUR).is_empty(), "75 % busy");
        let idle = history(23, 4.0, |_| 0.0);
        assert!(for_pool(&pool(crate::PoolType::Static, 4), &idle, &Rates::DEFAULT, HOUR).is_empty(), "less than a day says nothing");
        let idle = history(48, 2.0, |_| 0.0);
        let recs = for_pool(&pool(crate::PoolType::Dynamic, 2), &idle, &Rates::DEFAULT, HOUR);
        assert_eq!(recs.iter().map(|r| (r.kind, r.suggested)).collect::<Vec<_>>(), [(PoolKind::PoolReduceMinSize, 0)], "already dynamic");
        assert_eq!(recs[0].confidence_pct, 28);
        assert!(for_pool(&pool(crate::PoolType::Static, 0), &history(48, 0.0, |_| 0.0), &Rates::DEFAULT, HOUR).is_empty(), "nothing to cut");
    }

    #[test]
    fn going_dynamic_saves_the_idle_workers_above_the_minimum() {
        // Autoscaled to 6 workers half the time with 1 busy; min 1 already right.
        let p = pool(crate::PoolType::Static, 1);
        let samples: Vec<PoolSample> = (0..48)
            .map(|h| {
                let size = if h % 2 == 0 { 6.0 } else { 1.0 };
                PoolSample { secs: 3600, size, busy_ratio: 1.0 / size, cpu_utilization: 1.0 / size, ..PoolSample::default() }
            })
            .collect();
        let recs = for_pool(&p, &samples, &Rates::DEFAULT, HOUR);
        assert_eq!(recs.iter().map(|r| r.kind).collect::<Vec<_>>(), [PoolKind::PoolSwitchToDynamic]);
        // 5 idle workers half the time, over a month.
        assert_eq!(recs[0].monthly_savings_micros, cost_micros(5 * 15 * 86_400, &Resources::new(1000, 1024, 0), &Rates::DEFAULT));
    }

    #[test]
    fn a_pool_at_its_maximum_with_jobs_waiting_past_half_the_medium_sla_is_told_to_grow() {
        let mut p = pool(crate::PoolType::Dynamic, 0);
        p.max_size = 4;
        // Two days: at 4 workers, all busy, 10 jobs waiting up to 40 min, a third of the time.
        let samples: Vec<PoolSample> = (0..48)
            .map(|h| {
                let full = h % 3 == 0;
                let size = if full { 4.0 } else { 1.0 };
                let (queue_depth, queue_wait_s) = if full { (10.0, 2400.0) } else { (0.0, 0.0) };
                PoolSample { secs: 3600, size, busy_ratio: 1.0, cpu_utilization: 0.9, queue_depth, queue_wait_s }
            })
            .collect();
        let recs = for_pool(&p, &samples, &Rates::DEFAULT, HOUR);
        assert_eq!(
            recs.iter().map(|r| (r.kind, r.current, r.suggested)).collect::<Vec<_>>(),
            [(PoolKind::PoolRaiseMaxSize, 4, 7)],
            "10 jobs, 4 slots a worker: 3 more"
        );
        assert_eq!((recs[0].evidence.at_max_pct, recs[0].evidence.wait_at_max_p95_s), (33, 2400));
        // 3 workers over the 16 h of 48 at the maximum, for a month: what growing costs.
        assert_eq!(recs[0].monthly_savings_micros, -cost_micros(3 * 10 * 86_400, &Resources::new(1000, 1024, 0), &Rates::DEFAULT));
        // Waits within half the medium SLA (2 h here): nothing.
        assert!(for_pool(&p, &samples, &Rates::DEFAULT, 2 * HOUR).is_empty());
    }
}
