//! The pending queue: per-tenant order by priority class, SLA deadline, submit time and id;
//! tenants served round-robin.
//!
//! The scheduler talks to it only through [`Queue::push`], [`Queue::remove`] and
//! [`Queue::next_candidates`], so a weighted fair queue can replace the round-robin
//! without touching the scheduler or the server.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::ids::{JobId, TenantId};
use crate::job::Priority;
use crate::time::Timestamp;

/// Orders jobs within a tenant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobKey {
    pub priority: Priority,
    pub deadline: Timestamp,
    pub submitted_at: Timestamp,
    pub id: JobId,
}

#[derive(Default, Debug)]
struct TenantQueue {
    jobs: BTreeSet<JobKey>,
}

#[derive(Default, Debug)]
pub struct Queue {
    tenants: HashMap<TenantId, TenantQueue>,
    /// Backlogged tenants in service order; the front is served next.
    ring: VecDeque<TenantId>,
    len: usize,
}

impl Queue {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, tenant: &TenantId, key: JobKey) {
        let q = self.tenants.entry(tenant.clone()).or_default();
        if q.jobs.is_empty() {
            self.ring.push_back(tenant.clone());
        }
        if q.jobs.insert(key) {
            self.len += 1;
        }
    }

    pub fn remove(&mut self, tenant: &TenantId, key: &JobKey) -> bool {
        let Some(q) = self.tenants.get_mut(tenant) else { return false };
        if !q.jobs.remove(key) {
            return false;
        }
        self.len -= 1;
        if q.jobs.is_empty() {
            self.tenants.remove(tenant);
            self.ring.retain(|t| t != tenant);
        }
        true
    }

    /// Tenants in the order they should be offered the next dispatch.
    pub fn tenants_in_turn(&self) -> impl Iterator<Item = &TenantId> {
        self.ring.iter()
    }

    /// A tenant's first `limit` jobs in dispatch order.
    pub fn next_candidates<'a>(&'a self, tenant: &TenantId, limit: usize) -> impl Iterator<Item = &'a JobKey> + 'a {
        self.tenants.get(tenant).into_iter().flat_map(move |q| q.jobs.iter().take(limit))
    }

    /// Records that `tenant` was just served: it goes to the back of the ring.
    pub fn served(&mut self, tenant: &TenantId) {
        if let Some(pos) = self.ring.iter().position(|t| t == tenant)
            && let Some(t) = self.ring.remove(pos)
        {
            self.ring.push_back(t);
        }
    }

    /// Position of a job in its tenant's queue (0-based) — O(n) in the tenant's backlog.
    pub fn position_in_tenant(&self, tenant: &TenantId, key: &JobKey) -> Option<usize> {
        self.tenants.get(tenant)?.jobs.range(..=key.clone()).count().checked_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn key(p: Priority, t: i64, n: u128) -> JobKey {
        JobKey { priority: p, deadline: Timestamp::from_millis(t), submitted_at: Timestamp::from_millis(t), id: JobId::from_uuid(Uuid::from_u128(n)) }
    }

    #[test]
    fn higher_priority_goes_first_within_a_tenant() {
        let t = TenantId::parse("a").unwrap();
        let mut q = Queue::default();
        q.push(&t, key(Priority::Batch, 1, 1));
        q.push(&t, key(Priority::Critical, 5, 2));
        q.push(&t, key(Priority::Normal, 2, 3));
        let order: Vec<_> = q.next_candidates(&t, 10).map(|k| k.priority).collect();
        assert_eq!(order, [Priority::Critical, Priority::Normal, Priority::Batch]);
    }

    #[test]
    fn served_tenant_moves_to_the_back() {
        let (a, b) = (TenantId::parse("a").unwrap(), TenantId::parse("b").unwrap());
        let mut q = Queue::default();
        q.push(&a, key(Priority::Normal, 1, 1));
        q.push(&b, key(Priority::Normal, 2, 2));
        q.served(&a);
        let turn: Vec<_> = q.tenants_in_turn().cloned().collect();
        assert_eq!(turn, [b, a]);
    }

    #[test]
    fn emptied_tenant_leaves_the_ring() {
        let a = TenantId::parse("a").unwrap();
        let mut q = Queue::default();
        let k = key(Priority::Normal, 1, 1);
        q.push(&a, k.clone());
        assert!(q.remove(&a, &k));
        assert!(q.is_empty());
        assert_eq!(q.tenants_in_turn().count(), 0);
        assert!(!q.remove(&a, &k));
    }
}
