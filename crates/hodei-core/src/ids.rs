//! Identifiers. UUIDs are minted by the caller (v7 at the edge); slugs are validated here.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $name(Uuid);

        impl $name {
            pub const fn from_uuid(u: Uuid) -> Self {
                $name(u)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }
    };
}

uuid_id!(
    /// A job. UUIDv7, so ids sort by submission time.
    JobId
);
uuid_id!(
    /// One execution of a job on one worker; fences every message about it.
    AttemptId
);
uuid_id!(
    /// A registered worker agent.
    WorkerId
);
uuid_id!(
    /// An array job: the jobs one `POST /jobs` with `array` created. UUIDv7.
    ArrayId
);
uuid_id!(
    /// A principal (a user or a service) that API tokens authenticate. UUIDv7.
    PrincipalId
);
uuid_id!(
    /// An API token (its record; the secret is never stored). UUIDv7.
    TokenId
);
uuid_id!(
    /// An audit log entry. UUIDv7, so entries sort by time.
    AuditId
);
uuid_id!(
    /// A burst session. UUIDv7, so a tenant's later session sorts after its earlier ones.
    BurstId
);
uuid_id!(
    /// A budget.
    BudgetId
);
uuid_id!(
    /// An alert. UUIDv7, so alerts sort by when they fired.
    AlertId
);

/// A validated slug: `^[a-z0-9][a-z0-9-]{0,62}$`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Slug(Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a slug (lowercase letters, digits and '-', starting with a letter or digit, at most 63 characters)")]
pub struct SlugError {
    pub value: String,
}

impl Slug {
    pub fn parse(s: &str) -> Result<Slug, SlugError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
        if ok { Ok(Slug(Arc::from(s))) } else { Err(SlugError { value: s.to_owned() }) }
    }

    /// Turns a display name into a slug candidate ("Team Alpha" → "team-alpha").
    pub fn from_name(name: &str) -> Result<Slug, SlugError> {
        let mut out = String::new();
        for c in name.trim().chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_lowercase());
            } else if !out.ends_with('-') && !out.is_empty() {
                out.push('-');
            }
        }
        let out = out.trim_end_matches('-');
        Slug::parse(&out[..out.len().min(63)])
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $name(Slug);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, SlugError> {
                Slug::parse(s).map($name)
            }

            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl From<Slug> for $name {
            fn from(s: Slug) -> Self {
                $name(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

slug_id!(
    /// A tenant's slug.
    TenantId
);
slug_id!(
    /// A pool's slug.
    PoolId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_accept_lowercase_digits_and_dashes() {
        assert!(Slug::parse("default").is_ok());
        assert!(Slug::parse("a").is_ok());
        assert!(Slug::parse("0-team-9").is_ok());
        assert!(Slug::parse(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn slugs_reject_everything_else() {
        for bad in ["", "-a", "A", "a_b", "a b", "é", &"a".repeat(64)] {
            assert!(Slug::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_become_slugs() {
        assert_eq!(Slug::from_name("Team Alpha!").unwrap().as_str(), "team-alpha");
        assert_eq!(Slug::from_name("  ML  research  ").unwrap().as_str(), "ml-research");
        assert!(Slug::from_name("!!!").is_err());
    }

    #[test]
    fn id_hasher_reads_a_short_tail_as_a_zero_padded_little_endian_word() {
        use std::hash::{Hash, Hasher};
        let bytes: Vec<u8> = (1..=20).collect();
        for len in 0..=bytes.len() {
            let mut fast = IdHasher::default();
            fast.write(&bytes[..len]);
            let mut padded = IdHasher::default();
            for chunk in bytes[..len].chunks(8) {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                padded.mix(u64::from_le_bytes(word));
            }
            assert_eq!(fast.finish(), padded.finish(), "{len} bytes");
        }
        let hash = |s: &str| {
            let mut h = IdHasher::default();
            s.hash(&mut h);
            h.finish()
        };
        assert_ne!(hash("t1"), hash("t2"));
        assert_ne!(hash("tenant-a"), hash("tenant-ab"));
    }
}

/// A fast hasher for the core's maps keyed by ids: UUIDs the server mints and tenant slugs
/// an admin creates, never keys a client picks at will, so a keyed hash (SipHash, the
/// default) buys nothing here and costs a seventh of a scheduling decision.
#[derive(Clone, Copy, Default)]
pub struct IdHasher(u64);

impl IdHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(23) ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // MurmurHash3's finalizer: every input bit reaches the low bits the table indexes by.
        let mut z = self.0;
        z = (z ^ (z >> 33)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        z = (z ^ (z >> 33)).wrapping_mul(0xC4CE_B9FE_1A85_EC53);
        z ^ (z >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes(w.try_into().expect("8-byte chunk")));
        }
        // The tail byte by byte: a variable-length copy would be a call to memcpy on every
        // hash of a short tenant name.
        let tail = words.remainder();
        if !tail.is_empty() {
            self.mix(tail.iter().rev().fold(0, |acc, &b| (acc << 8) | u64::from(b)));
        }
    }

    fn write_usize(&mut self, _: usize) {
        // The length prefix of the 16 id bytes carries nothing.
    }
}

/// A map keyed by ids, hashed with [`IdHasher`].
pub type IdMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;
/// A set of ids, hashed with [`IdHasher`].
pub type IdSet<K> = std::collections::HashSet<K, std::hash::BuildHasherDefault<IdHasher>>;
