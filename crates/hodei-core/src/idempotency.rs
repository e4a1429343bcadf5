//! Idempotency keys of job submits (SPEC §4.1). A job POST may carry an `Idempotency-Key`; a
//! repeat with the same key and the same request within [`TTL`] gets the first call's jobs
//! instead of new ones, and a repeat with another request is a conflict. The scheduler keeps
//! the records it has stored (they are written in the same transaction as the jobs they
//! name), so the check and the submit are one step: two racing repeats cannot both submit.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::{ArrayId, JobId, TenantId, Timestamp};

/// How long a key is remembered.
pub const TTL: Duration = Duration::from_secs(24 * 3600);

/// What the first call with a key stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// One entry per job handed to the scheduler, in order: its id, or None when quota refused it.
    Jobs(Vec<Option<JobId>>),
    /// The members of an array job.
    Array { array: ArrayId, first: JobId, last: JobId, count: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub tenant: TenantId,
    pub key: String,
    /// Digest of the request (method, path and body), made by the API.
    pub fingerprint: String,
    pub submitted: Submitted,
    pub created_at: Timestamp,
}

impl IdempotencyRecord {
    fn expired(&self, now: Timestamp) -> bool {
        now.since(self.created_at) >= TTL
    }
}

/// The key and request of a submit that carries one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRequest {
    pub key: String,
    pub fingerprint: String,
}

/// A submit's key against what is remembered.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not seen (or expired): submit, then remember.
    New,
    /// Seen with the same request: answer with what it stored.
    Replay(Arc<IdempotencyRecord>),
    /// Seen with another request.
    Conflict(Arc<IdempotencyRecord>),
}

/// The records younger than [`TTL`], by tenant and key.
#[derive(Clone, Debug, Default)]
pub struct IdempotencyIndex {
    records: HashMap<(TenantId, String), Arc<IdempotencyRecord>>,
    by_age: BTreeSet<(Timestamp, TenantId, String)>,
}

impl IdempotencyIndex {
    pub fn lookup(&self, tenant: &TenantId, req: &IdempotencyRequest, now: Timestamp) -> Lookup {
        match self.records.get(&(tenant.clone(), req.key.clone())) {
            Some(r) if r.expired(now) => Lookup::New,
            Some(r) if r.fingerprint == req.fingerprint => Lookup::Replay(r.clone()),
            Some(r) => Lookup::Conflict(r.clone()),
            None => Lookup::New,
        }
    }

    /// Remembers `r`, replacing an expired record of the same key.
    pub fn insert(&mut self, r: IdempotencyRecord) {
        let id = (r.tenant.clone(), r.key.clone());
        if let Some(old) = self.records.insert(id, Arc::new(r.clone())) {
            self.by_age.remove(&(old.created_at, old.tenant.clone(), old.key.clone()));
        }
        self.by_age.insert((r.created_at, r.tenant, r.key));
    }

    /// Forgets the records older than [`TTL`]. Returns the cutoff (records created before it
    /// are gone) when any was forgotten.
    pub fn expire(&mut self, now: Timestamp) -> Option<Timestamp> {
        let cutoff = Timestamp::from_millis(now.as_millis().saturating_sub(TTL.as_millis() as i64));
        let mut any = false;
        while let Some((at, _, _)) = self.by_age.first()
            && *at <= cutoff
        {
            let Some((_, tenant, key)) = self.by_age.pop_first() else { break };
            self.records.remove(&(tenant, key));
            any = true;
        }
        // A record created at the cutoff is expired too (`expired` is `>= TTL`).
        any.then(|| Timestamp::from_millis(cutoff.as_millis() + 1))
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn record(key: &str, fingerprint: &str, at: i64) -> IdempotencyRecord {
        IdempotencyRecord {
            tenant: TenantId::parse("acme").unwrap(),
            key: key.into(),
            fingerprint: fingerprint.into(),
            submitted: Submitted::Jobs(vec![Some(JobId::from_uuid(uuid::Uuid::from_u128(7)))]),
            created_at: t(at),
        }
    }

    fn req(key: &str, fingerprint: &str) -> IdempotencyRequest {
        IdempotencyRequest { key: key.into(), fingerprint: fingerprint.into() }
    }

    #[test]
    fn same_request_replays_another_conflicts_until_it_expires() {
        let acme = TenantId::parse("acme").unwrap();
        let other = TenantId::parse("other").unwrap();
        let mut ix = IdempotencyIndex::default();
        ix.insert(record("k", "body-1", 1_000));
        assert!(matches!(ix.lookup(&acme, &req("k", "body-1"), t(2_000)), Lookup::Replay(r) if r.fingerprint == "body-1"));
        assert!(matches!(ix.lookup(&acme, &req("k", "body-2"), t(2_000)), Lookup::Conflict(_)));
        assert_eq!(ix.lookup(&other, &req("k", "body-1"), t(2_000)), Lookup::New, "keys are per tenant");
        assert_eq!(ix.lookup(&acme, &req("j", "body-1"), t(2_000)), Lookup::New);
        let ttl = TTL.as_millis() as i64;
        assert!(matches!(ix.lookup(&acme, &req("k", "body-2"), t(1_000 + ttl - 1)), Lookup::Conflict(_)));
        assert_eq!(ix.lookup(&acme, &req("k", "body-2"), t(1_000 + ttl)), Lookup::New, "expired at exactly 24 h");
    }

    #[test]
    fn expire_forgets_old_records_in_age_order_and_reports_the_cutoff() {
        let acme = TenantId::parse("acme").unwrap();
        let ttl = TTL.as_millis() as i64;
        let mut ix = IdempotencyIndex::default();
        ix.insert(record("a", "x", 0));
        ix.insert(record("b", "x", 10));
        assert_eq!(ix.expire(t(ttl - 1)), None);
        assert_eq!(ix.len(), 2);
        let cutoff = ix.expire(t(ttl + 5)).unwrap();
        assert_eq!(ix.len(), 1);
        // The store deletes rows created before the cutoff: "a" (0) goes, "b" (10) stays.
        assert!(t(0) < cutoff && cutoff <= t(10));
        assert_eq!(ix.lookup(&acme, &req("a", "x"), t(ttl + 5)), Lookup::New);
        assert!(matches!(ix.lookup(&acme, &req("b", "y"), t(ttl + 5)), Lookup::Conflict(_)));
        // A key used again after expiry replaces the old record, in the age order too.
        ix.insert(record("b", "y", ttl + 20));
        assert_eq!(ix.expire(t(2 * ttl)), None, "the old entry of b is not expired again");
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn the_scheduler_stores_new_records_and_deletes_expired_ones_at_a_tick() {
        use crate::sched::{SchedConfig, Scheduler};
        let acme = TenantId::parse("acme").unwrap();
        let mut s = Scheduler::new(SchedConfig::default());
        s.remember_idempotency(record("k", "x", 1_000));
        let c = s.take_changes();
        assert_eq!((c.idempotency.len(), c.idempotency_expired_before), (1, None));
        s.tick(t(2_000));
        assert!(s.take_changes().is_empty(), "nothing expired, nothing to write");
        let at = 1_000 + TTL.as_millis() as i64;
        s.tick(t(at));
        let c = s.take_changes();
        assert!(c.idempotency_expired_before.is_some_and(|cut| cut > t(1_000)), "the store deletes the record");
        assert_eq!(s.idempotency_lookup(&acme, &req("k", "y"), t(at)), Lookup::New);
    }
}
