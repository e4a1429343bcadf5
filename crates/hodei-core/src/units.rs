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
    fn subtraction_saturates_at_zero() {
        let r = Resources::new(10, 10, 0).saturating_sub(&Resources::new(20, 5, 1));
        assert_eq!(r, Resources::new(0, 5, 0));
    }
}
