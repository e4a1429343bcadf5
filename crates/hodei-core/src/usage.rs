//! What a running attempt used (SPEC §8.7): samples from the worker, kept as a series of at
//! most [`MAX_POINTS`] points per attempt, and the summary of a finished attempt.
//!
//! A series keeps every sample until it holds [`MAX_POINTS`]; then its step doubles and
//! neighbouring points merge — cpu and GPU utilisation averaged, memory by its peak (a peak
//! is what an OOM is about), IO by the last cumulative count — so a day-long job still fits in
//! 720 points and no peak is ever averaged away.

use crate::Timestamp;

/// Points kept per attempt, at most.
pub const MAX_POINTS: usize = 720;

/// One measurement of an attempt's processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub at: Timestamp,
    /// Cpu used since the previous sample, in millicores (1000 = one core busy).
    pub cpu_m: u32,
    /// Resident memory of all the job's processes, in MiB.
    pub rss_mb: u32,
    pub gpu_pct: u32,
    pub gpu_memory_mb: u32,
    /// Cumulative bytes read from and written to storage.
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    /// The GPU fields were measured (the worker has the vendor's tool).
    pub gpu_measured: bool,
}

/// A point of a series: the samples of one step, merged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Point {
    /// The first merged sample's instant.
    pub at: Timestamp,
    /// Samples merged into it.
    pub samples: u32,
    /// Average over its samples.
    pub cpu_m: u32,
    /// Peak over its samples.
    pub rss_mb: u32,
    /// Average over its samples that measured the GPUs.
    pub gpu_pct: u32,
    /// Peak over its samples.
    pub gpu_memory_mb: u32,
    /// Its samples that measured the GPUs.
    pub gpu_samples: u32,
    /// The last sample's cumulative counts.
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
}

impl Point {
    fn of(s: &Sample) -> Point {
        Point {
            at: s.at,
            samples: 1,
            cpu_m: s.cpu_m,
            rss_mb: s.rss_mb,
            gpu_pct: s.gpu_pct,
            gpu_memory_mb: s.gpu_memory_mb,
            gpu_samples: u32::from(s.gpu_measured),
            io_read_bytes: s.io_read_bytes,
            io_write_bytes: s.io_write_bytes,
        }
    }

    /// `self` followed by `next` as one point.
    fn merged(self, next: Point) -> Point {
        let n = u64::from(self.samples) + u64::from(next.samples);
        let avg = |a: u32, b: u32| ((u64::from(a) * u64::from(self.samples) + u64::from(b) * u64::from(next.samples)) / n.max(1)) as u32;
        Point {
            at: self.at,
            samples: self.samples.saturating_add(next.samples),
            cpu_m: avg(self.cpu_m, next.cpu_m),
            rss_mb: self.rss_mb.max(next.rss_mb),
            gpu_pct: {
                let g = u64::from(self.gpu_samples) + u64::from(next.gpu_samples);
                ((u64::from(self.gpu_pct) * u64::from(self.gpu_samples) + u64::from(next.gpu_pct) * u64::from(next.gpu_samples)) / g.max(1)) as u32
            },
            gpu_memory_mb: self.gpu_memory_mb.max(next.gpu_memory_mb),
            gpu_samples: self.gpu_samples.saturating_add(next.gpu_samples),
            io_read_bytes: self.io_read_bytes.max(next.io_read_bytes),
            io_write_bytes: self.io_write_bytes.max(next.io_write_bytes),
        }
    }
}

/// An attempt's usage over time, at most [`MAX_POINTS`] points, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Series {
    /// The span of one point in milliseconds; 0 while every sample is a point of its own.
    pub step_ms: u64,
    pub points: Vec<Point>,
}

impl Series {
    /// Adds a sample. One older than the last point's start is dropped (a resent sample).
    pub fn push(&mut self, s: &Sample) {
        let Some(last) = self.points.last().copied() else {
            self.points.push(Point::of(s));
            return;
        };
        if s.at < last.at {
            return;
        }
        if self.step_ms > 0 && self.bucket(s.at) == self.bucket(last.at) {
            let n = self.points.len();
            self.points[n - 1] = last.merged(Point::of(s));
        } else {
            self.points.push(Point::of(s));
        }
        while self.points.len() > MAX_POINTS {
            self.coarsen();
        }
    }

    fn origin(&self) -> u64 {
        self.points.first().map_or(0, |p| ms(p.at))
    }

    fn bucket(&self, at: Timestamp) -> u64 {
        ms(at).saturating_sub(self.origin()) / self.step_ms.max(1)
    }

    /// Doubles the step (the first time: twice the average spacing) and merges the points
    /// that now share a step.
    fn coarsen(&mut self) {
        let (first, last) = match (self.points.first(), self.points.last()) {
            (Some(f), Some(l)) => (ms(f.at), ms(l.at)),
            _ => return,
        };
        self.step_ms = match self.step_ms {
            0 => ((last - first) / (self.points.len() as u64 - 1).max(1)).max(1) * 2,
            s => s * 2,
        };
        let mut merged: Vec<Point> = Vec::with_capacity(self.points.len() / 2 + 1);
        for p in std::mem::take(&mut self.points) {
            let b = (ms(p.at) - first) / self.step_ms;
            match merged.last_mut() {
                Some(m) if (ms(m.at) - first) / self.step_ms == b => *m = m.merged(p),
                _ => merged.push(p),
            }
        }
        self.points = merged;
    }
}

fn ms(at: Timestamp) -> u64 {
    at.as_millis().max(0) as u64
}

/// What a finished attempt used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Samples taken while it ran (a job shorter than the sampling interval has none: its
    /// averages and peaks then come from the process accounting alone).
    pub samples: u32,
    /// Cpu time over run time, exact (from the process accounting).
    pub cpu_avg_m: u32,
    /// 95th percentile of the points' cpu; the average when there are no points.
    pub cpu_p95_m: u32,
    pub cpu_peak_m: u32,
    /// Average of the points' resident memory (the peak when there are no points).
    pub memory_avg_mb: u32,
    pub memory_p95_mb: u32,
    /// The largest resident memory seen, sampled or accounted.
    pub memory_peak_mb: u32,
    /// Over the samples that measured the GPUs.
    pub gpu_avg_pct: u32,
    /// Samples that measured the GPUs (0: GPU use unknown).
    pub gpu_samples: u32,
    pub cpu_time_ms: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
}

/// The summary of an attempt that ran `run_ms` and used `cpu_time_ms` of cpu, with
/// `max_rss_mb` its process accounting's peak, from its series.
pub fn summarize(series: &Series, run_ms: u64, cpu_time_ms: u64, max_rss_mb: u32) -> Summary {
    let pts = &series.points;
    let cpu_avg_m = (u128::from(cpu_time_ms) * 1000 / u128::from(run_ms.max(1))).min(u128::from(u32::MAX)) as u32;
    let samples: u32 = pts.iter().map(|p| p.samples).fold(0, u32::saturating_add);
    let weighted = |f: fn(&Point) -> u32| -> u32 {
        let n: u64 = pts.iter().map(|p| u64::from(p.samples)).sum();
        (pts.iter().map(|p| u64::from(f(p)) * u64::from(p.samples)).sum::<u64>() / n.max(1)) as u32
    };
    let memory_peak_mb = pts.iter().map(|p| p.rss_mb).max().unwrap_or(0).max(max_rss_mb);
    let last = pts.last();
    Summary {
        samples,
        cpu_avg_m,
        cpu_p95_m: if pts.is_empty() { cpu_avg_m } else { p95(pts.iter().map(|p| p.cpu_m)) },
        cpu_peak_m: pts.iter().map(|p| p.cpu_m).max().unwrap_or(cpu_avg_m),
        memory_avg_mb: if pts.is_empty() { memory_peak_mb } else { weighted(|p| p.rss_mb) },
        memory_p95_mb: if pts.is_empty() { memory_peak_mb } else { p95(pts.iter().map(|p| p.rss_mb)) },
        memory_peak_mb,
        gpu_avg_pct: {
            let n: u64 = pts.iter().map(|p| u64::from(p.gpu_samples)).sum();
            (pts.iter().map(|p| u64::from(p.gpu_pct) * u64::from(p.gpu_samples)).sum::<u64>() / n.max(1)) as u32
        },
        gpu_samples: pts.iter().map(|p| p.gpu_samples).fold(0, u32::saturating_add),
        cpu_time_ms,
        io_read_bytes: last.map_or(0, |p| p.io_read_bytes),
        io_write_bytes: last.map_or(0, |p| p.io_write_bytes),
    }
}

/// The 95th percentile (nearest rank) of `values`; 0 when there are none.
pub fn p95(values: impl Iterator<Item = u32>) -> u32 {
    let mut v: Vec<u32> = values.collect();
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let rank = (v.len() * 95).div_ceil(100).max(1);
    v[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(at_ms: u64, cpu_m: u32, rss_mb: u32) -> Sample {
        Sample { at: Timestamp::from_millis(at_ms as i64), cpu_m, rss_mb, io_read_bytes: at_ms, ..Sample::default() }
    }

    #[test]
    fn every_sample_is_a_point_until_the_series_is_full() {
        let mut s = Series::default();
        for i in 0..MAX_POINTS as u64 {
            s.push(&sample(i * 1000, 500, 100));
        }
        assert_eq!((s.points.len(), s.step_ms), (MAX_POINTS, 0));
        s.push(&sample(MAX_POINTS as u64 * 1000, 1500, 900));
        assert_eq!((s.points.len(), s.step_ms), (MAX_POINTS / 2 + 1, 2000), "pairs merged, step doubled");
        let last = s.points.last().unwrap();
        assert_eq!((last.cpu_m, last.rss_mb, last.samples), (1500, 900, 1));
        // The next sample joins the last point's step.
        s.push(&sample(MAX_POINTS as u64 * 1000 + 1000, 500, 100));
        let last = s.points.last().unwrap();
        assert_eq!((last.cpu_m, last.rss_mb, last.samples), (1000, 900, 2), "cpu averaged, memory's peak kept");
        s.push(&sample(10, 1, 1));
        assert_eq!(s.points.last().unwrap().samples, 2, "an old sample is dropped");
    }

    #[test]
    fn gpu_use_is_averaged_over_the_samples_that_measured_it() {
        let mut s = Series::default();
        for (i, (pct, measured)) in [(0, false), (80, true), (40, true), (0, false)].into_iter().enumerate() {
            s.push(&Sample { at: Timestamp::from_millis(i as i64 * 1000), gpu_pct: pct, gpu_measured: measured, ..Sample::default() });
        }
        let sum = summarize(&s, 4000, 0, 0);
        assert_eq!((sum.gpu_avg_pct, sum.gpu_samples), (60, 2));
        assert_eq!(summarize(&Series::default(), 10, 0, 0).gpu_samples, 0, "no sample: GPU use unknown");
    }

    #[test]
    fn a_summary_takes_averages_from_accounting_and_peaks_from_both() {
        let mut s = Series::default();
        for (i, cpu) in [1000, 1000, 1000, 200].into_iter().enumerate() {
            s.push(&sample(i as u64 * 1000, cpu, 100 + i as u32 * 50));
        }
        let sum = summarize(&s, 4000, 3200, 300);
        assert_eq!(
            (sum.samples, sum.cpu_avg_m, sum.cpu_p95_m, sum.cpu_peak_m, sum.memory_avg_mb, sum.memory_peak_mb, sum.io_read_bytes),
            (4, 800, 1000, 1000, 175, 300, 3000)
        );
        let short = summarize(&Series::default(), 50, 25, 12);
        assert_eq!((short.samples, short.cpu_avg_m, short.cpu_p95_m, short.memory_avg_mb, short.memory_peak_mb), (0, 500, 500, 12, 12));
        assert_eq!(p95([5, 1, 9, 3].into_iter()), 9);
        assert_eq!(p95(1..=100), 95);
    }

    proptest! {
        /// However many samples and however spaced, a series stays within its bound, in
        /// order, counts every sample once and never loses the memory peak.
        #[test]
        fn a_series_is_bounded_and_keeps_its_peak(gaps in proptest::collection::vec((1u64..5000, 0u32..8000, 0u32..100_000), 1..3000)) {
            let mut s = Series::default();
            let mut at = 0;
            for (gap, cpu, rss) in &gaps {
                at += gap;
                s.push(&sample(at, *cpu, *rss));
            }
            prop_assert!(s.points.len() <= MAX_POINTS);
            prop_assert!(s.points.windows(2).all(|w| w[0].at < w[1].at));
            prop_assert_eq!(s.points.iter().map(|p| p.samples as usize).sum::<usize>(), gaps.len());
            prop_assert_eq!(s.points.iter().map(|p| p.rss_mb).max(), gaps.iter().map(|g| g.2).max());
            prop_assert_eq!(s.points.last().unwrap().io_read_bytes, at);
        }
    }
}
