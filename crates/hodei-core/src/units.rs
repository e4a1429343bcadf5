//! Resource units. cpu in millicores, memory in MiB, gpus as a count; never floats.

use std::fmt;

macro_rules! unit {
    ($(#[$doc:meta])* $name:ident, $suffix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u32);

        impl $name {
            pub const ZERO: $name = $name(0);

            pub const fn get(self) -> u32 {
                self.0
            }

            pub fn checked_add(self, other: $name) -> Option<$name> {
                self.0.checked_add(other.0).map($name)
            }

            pub fn saturating_sub(self, other: $name) -> $name {
                $name(self.0.saturating_sub(other.0))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", self.0, $suffix)
            }
        }
    };
}

unit!(
    /// CPU in millicores (1000 = one core).
    CpuMillis, "m"
);
unit!(
    /// Memory in MiB.
    MemoryMb, "MiB"
);
unit!(
    /// Number of GPUs.
    Gpus, " gpu"
);

/// A bundle of the three schedulable resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Resources {
    pub cpu_m: CpuMillis,
    pub memory_mb: MemoryMb,
    pub gpu: Gpus,
}

impl Resources {
    pub const ZERO: Resources = Resources { cpu_m: CpuMillis::ZERO, memory_mb: MemoryMb::ZERO, gpu: Gpus::ZERO };

    pub const fn new(cpu_m: u32, memory_mb: u32, gpu: u32) -> Self {
        Resources { cpu_m: CpuMillis(cpu_m), memory_mb: MemoryMb(memory_mb), gpu: Gpus(gpu) }
    }

    /// True when every dimension of `self` is at most that of `room`.
    pub fn fits_in(&self, room: &Resources) -> bool {
        self.cpu_m <= room.cpu_m && self.memory_mb <= room.memory_mb && self.gpu <= room.gpu
    }

    pub fn checked_add(&self, o: &Resources) -> Option<Resources> {
        Some(Resources { cpu_m: self.cpu_m.checked_add(o.cpu_m)?, memory_mb: self.memory_mb.checked_add(o.memory_mb)?, gpu: self.gpu.checked_add(o.gpu)? })
    }

    pub fn saturating_sub(&self, o: &Resources) -> Resources {
        Resources { cpu_m: self.cpu_m.saturating_sub(o.cpu_m), memory_mb: self.memory_mb.saturating_sub(o.memory_mb), gpu: self.gpu.saturating_sub(o.gpu) }
    }
}

/// Sums of many jobs' resources (a tenant's usage books): 64 bits a dimension, so no number of
/// `u32` requests can overflow them and a sum never reads low.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Totals {
    pub cpu_m: u64,
    pub memory_mb: u64,
    pub gpu: u64,
}

impl Totals {
    pub const ZERO: Totals = Totals { cpu_m: 0, memory_mb: 0, gpu: 0 };

    pub fn add(&mut self, r: &Resources) {
        self.cpu_m += u64::from(r.cpu_m.0);
        self.memory_mb += u64::from(r.memory_mb.0);
        self.gpu += u64::from(r.gpu.0);
    }

    /// Takes back what [`Totals::add`] added; books that balance never go below zero (a
    /// debug build says so if they would).
    pub fn sub(&mut self, r: &Resources) {
        let take = |t: &mut u64, v: u32| {
            debug_assert!(*t >= u64::from(v), "usage books went below zero");
            *t = t.saturating_sub(u64::from(v));
        };
        take(&mut self.cpu_m, r.cpu_m.0);
        take(&mut self.memory_mb, r.memory_mb.0);
        take(&mut self.gpu, r.gpu.0);
    }

    /// True when every dimension is at most that of `room`.
    pub fn fits_in(&self, room: &Resources) -> bool {
        self.cpu_m <= u64::from(room.cpu_m.0) && self.memory_mb <= u64::from(room.memory_mb.0) && self.gpu <= u64::from(room.gpu.0)
    }

    /// The largest share of `cap` in parts per million (0 for a dimension `cap` lacks).
    pub fn dominant_ppm(&self, cap: &Resources) -> u64 {
        let share = |a: u64, c: u32| if c == 0 { 0 } else { a.saturating_mul(1_000_000) / u64::from(c) };
        share(self.cpu_m, cap.cpu_m.0).max(share(self.memory_mb, cap.memory_mb.0)).max(share(self.gpu, cap.gpu.0))
    }

    pub fn plus(&self, o: &Totals) -> Totals {
        Totals { cpu_m: self.cpu_m + o.cpu_m, memory_mb: self.memory_mb + o.memory_mb, gpu: self.gpu + o.gpu }
    }
}

impl From<Resources> for Totals {
    fn from(r: Resources) -> Totals {
        let mut t = Totals::ZERO;
        t.add(&r);
        t
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpu {} memory {} gpu {}", self.cpu_m, self.memory_mb, self.gpu.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_needs_every_dimension() {
        let room = Resources::new(1000, 512, 0);
        assert!(Resources::new(1000, 512, 0).fits_in(&room));
        assert!(!Resources::new(1001, 1, 0).fits_in(&room));
        assert!(!Resources::new(1, 513, 0).fits_in(&room));
        assert!(!Resources::new(1, 1, 1).fits_in(&room));
    }

    #[test]
    fn totals_hold_sums_past_u32() {
        let big = Resources::new(u32::MAX, u32::MAX, 1);
        let mut t = Totals::ZERO;
        t.add(&big);
        t.add(&big);
        assert_eq!(t, Totals { cpu_m: 2 * u64::from(u32::MAX), memory_mb: 2 * u64::from(u32::MAX), gpu: 2 });
        t.sub(&big);
        assert_eq!(t, Totals::from(big));
    }

    #[test]
    fn subtraction_saturates_at_zero() {
        let r = Resources::new(10, 10, 0).saturating_sub(&Resources::new(20, 5, 1));
        assert_eq!(r, Resources::new(0, 5, 0));
    }
}
