//! The pending queue (SPEC §2.5): per-tenant order by priority class, SLA deadline, submit
//! time and id; across tenants, start-time fair queuing with one tag pair per tenant.
//!
//! Every backlogged tenant `t` has a start tag `S_t`; the scheduler offers the next dispatch
//! to tenants in increasing `S_t` (ties: higher weight, older head, id). Dispatching job `j`
//! of `t` charges it: `F_t ← S_t + ceil(cost(j) / w_t)`, `V ← S_t`, and while `t` stays
//! backlogged its next start tag is `F_t`. A tenant that becomes backlogged starts at
//! `max(V, F_t)`, so idling earns no credit. A tenant at its own limit (quota, concurrency)
//! is *parked*: out of the ready order, and it re-enters at `max(S_t, V)`, so waiting at its
//! own limit earns no credit either.
//!
//! Opt-in decayed usage ([`Queue::set_half_life`], `usage_half_life_s`): each tenant keeps
//! `H_t`, the sum of its tag increments decaying with the half-life, and a tenant that
//! becomes backlogged starts at `max(V, F_t, V + H_t − min_u H_u)` — recent heavy use delays
//! it against tenants that used less, as Slurm's multifactor fair share does.
//!
//! Costs: one decision is O(log T + log n) for T tenants and n queued jobs (a tenant becoming
//! backlogged with decayed usage on: O(T)).

use std::cmp::Reverse;
use std::collections::BTreeSet;

use crate::ids::{IdMap, JobId, TenantId};
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

/// Position of a backlogged tenant in the ready order (the last field is its flow index:
/// tenants are interned, so reordering allocates nothing).
type ReadyKey = (u128, Reverse<u32>, Timestamp, u32);

#[derive(Debug, Clone)]
struct Flow {
    tenant: TenantId,
    jobs: BTreeSet<JobKey>,
    start: u128,
    finish: u128,
    weight: u32,
    parked: bool,
    /// Its key in `ready` while it is there.
    ready: Option<ReadyKey>,
    /// Decayed sum of its tag increments, as of `hist_at`.
    hist: f64,
    hist_at: Timestamp,
}

impl Flow {
    fn new(tenant: TenantId, weight: u32) -> Self {
        Flow { tenant, jobs: BTreeSet::new(), start: 0, finish: 0, weight: weight.max(1), parked: false, ready: None, hist: 0.0, hist_at: Timestamp::default() }
    }
}

/// Fair-share view of one tenant, for `explain` and queue status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowStatus {
    pub start_tag: u128,
    pub finish_tag: u128,
    pub weight: u32,
    pub parked: bool,
    pub queued: usize,
    /// Backlogged, unparked tenants ahead of this one in the ready order.
    pub tenants_ahead: usize,
}

#[derive(Default, Debug, Clone)]
pub struct Queue {
    index: IdMap<TenantId, u32>,
    flows: Vec<Flow>,
    ready: BTreeSet<ReadyKey>,
    virtual_time: u128,
    len: usize,
    /// Half-life of the decayed usage, in ms; `None`: off.
    half_life_ms: Option<f64>,
}

/// `h` decayed from `at` to `now` with the given half-life.
fn decayed(h: f64, at: Timestamp, now: Timestamp, half_life_ms: f64) -> f64 {
    let dt = (now.as_millis() - at.as_millis()).max(0) as f64;
    h * (-dt / half_life_ms).exp2()
}

impl Queue {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The system virtual time `V`.
    pub fn virtual_time(&self) -> u128 {
        self.virtual_time
    }

    fn idx(&mut self, tenant: &TenantId) -> u32 {
        if let Some(&i) = self.index.get(tenant) {
            return i;
        }
        let i = self.flows.len() as u32;
        self.flows.push(Flow::new(tenant.clone(), 1));
        self.index.insert(tenant.clone(), i);
        i
    }

    fn flow(&mut self, tenant: &TenantId) -> &mut Flow {
        let i = self.idx(tenant);
        &mut self.flows[i as usize]
    }

    fn get(&self, tenant: &TenantId) -> Option<&Flow> {
        self.index.get(tenant).map(|&i| &self.flows[i as usize])
    }

    fn get_mut(&mut self, tenant: &TenantId) -> Option<&mut Flow> {
        self.index.get(tenant).map(|&i| &mut self.flows[i as usize])
    }

    /// Turns decayed usage on (`Some(half-life)`) or off.
    pub fn set_half_life(&mut self, half_life: Option<std::time::Duration>) {
        self.half_life_ms = half_life.filter(|d| !d.is_zero()).map(|d| d.as_millis() as f64);
    }

    /// `V + H_t − min_u H_u` (decayed to `now`) for a tenant becoming backlogged.
    fn usage_floor(&self, i: usize, now: Timestamp) -> u128 {
        let Some(hl) = self.half_life_ms else { return 0 };
        let h = |f: &Flow| decayed(f.hist, f.hist_at, now, hl);
        let min = self.flows.iter().map(h).fold(f64::INFINITY, f64::min);
        let extra = (h(&self.flows[i]) - min).max(0.0);
        self.virtual_time.saturating_add(extra as u128)
    }

    /// Sets a tenant's weight (effective weight × budget factor, ≥ 1).
    pub fn set_weight(&mut self, tenant: &TenantId, weight: u32) {
        self.flow(tenant).weight = weight.max(1);
        self.reindex(tenant);
    }

    /// Puts the tenant's entry in the ready order where its tags say, or takes it out.
    fn reindex(&mut self, tenant: &TenantId) {
        let Some(&i) = self.index.get(tenant) else { return };
        let f = &mut self.flows[i as usize];
        if let Some(k) = f.ready.take() {
            self.ready.remove(&k);
        }
        if f.parked {
            return;
        }
        if let Some(head) = f.jobs.first() {
            let k = (f.start, Reverse(f.weight), head.submitted_at, i);
            self.ready.insert(k);
            f.ready = Some(k);
        }
    }

    pub fn push(&mut self, tenant: &TenantId, key: JobKey, now: Timestamp) {
        let v = self.virtual_time;
        let i = self.idx(tenant) as usize;
        let floor = if self.flows[i].jobs.is_empty() { self.usage_floor(i, now) } else { 0 };
        let f = &mut self.flows[i];
        let was_idle = f.jobs.is_empty();
        let new_head = f.jobs.first().is_none_or(|h| key < *h);
        if !f.jobs.insert(key) {
            return;
        }
        if was_idle {
            f.start = v.max(f.finish).max(floor);
        }
        self.len += 1;
        if new_head {
            self.reindex(tenant);
        }
    }

    pub fn remove(&mut self, tenant: &TenantId, key: &JobKey) -> bool {
        let Some(f) = self.get_mut(tenant) else { return false };
        let was_head = f.jobs.first() == Some(key);
        if !f.jobs.remove(key) {
            return false;
        }
        self.len -= 1;
        if was_head {
            self.reindex(tenant);
        }
        true
    }

    /// Backlogged tenants that are not parked, in the order they are offered the next dispatch.
    pub fn tenants_in_turn(&self) -> impl Iterator<Item = &TenantId> {
        self.ready.iter().map(|k| &self.flows[k.3 as usize].tenant)
    }

    /// A tenant's first `limit` jobs in dispatch order.
    pub fn next_candidates<'a>(&'a self, tenant: &TenantId, limit: usize) -> impl Iterator<Item = &'a JobKey> + 'a {
        self.get(tenant).into_iter().flat_map(move |f| f.jobs.iter().take(limit))
    }

    /// A tenant's queued jobs in dispatch order.
    pub fn jobs_of<'a>(&'a self, tenant: &TenantId) -> impl Iterator<Item = &'a JobKey> + 'a {
        self.get(tenant).into_iter().flat_map(|f| f.jobs.iter())
    }

    /// Takes a job out of its tenant's queue for dispatch and charges the tenant for it
    /// ([`Queue::remove`] then [`Queue::charge`], reordering the tenant once).
    pub fn dispatch(&mut self, tenant: &TenantId, key: &JobKey, cost: u128, now: Timestamp) -> bool {
        let Some(&i) = self.index.get(tenant) else { return false };
        if !self.flows[i as usize].jobs.remove(key) {
            return false;
        }
        self.len -= 1;
        self.account(i as usize, cost, now);
        self.reindex(tenant);
        true
    }

    /// `F ← S + ceil(cost / w)`, `S ← F`, `V ← max(V, S)`, and the decayed usage.
    fn account(&mut self, i: usize, cost: u128, now: Timestamp) {
        let v = self.virtual_time;
        let hl = self.half_life_ms;
        let f = &mut self.flows[i];
        let s = f.start;
        let inc = cost.div_ceil(u128::from(f.weight));
        if let Some(hl) = hl {
            f.hist = decayed(f.hist, f.hist_at, now, hl) + inc as f64;
            f.hist_at = now;
        }
        f.finish = s + inc;
        f.start = f.finish;
        self.virtual_time = v.max(s);
    }

    /// Charges the tenant for a job just dispatched from its queue; `cost` is in
    /// dominant-share × milliseconds.
    pub fn charge(&mut self, tenant: &TenantId, cost: u128, now: Timestamp) {
        let i = self.idx(tenant) as usize;
        self.account(i, cost, now);
        self.reindex(tenant);
    }

    /// Takes a tenant out of the ready order until [`Queue::unpark`]: it is at its own limit.
    pub fn park(&mut self, tenant: &TenantId) {
        let f = self.flow(tenant);
        if !f.parked {
            f.parked = true;
            self.reindex(tenant);
        }
    }

    /// Puts a parked tenant back, starting no earlier than the virtual time now.
    pub fn unpark(&mut self, tenant: &TenantId) {
        let v = self.virtual_time;
        let Some(f) = self.get_mut(tenant) else { return };
        if f.parked {
            f.parked = false;
            f.start = f.start.max(v);
            self.reindex(tenant);
        }
    }

    pub fn is_parked(&self, tenant: &TenantId) -> bool {
        self.get(tenant).is_some_and(|f| f.parked)
    }

    /// Position of a job in its tenant's queue (0-based) — O(n) in the tenant's backlog.
    pub fn position_in_tenant(&self, tenant: &TenantId, key: &JobKey) -> Option<usize> {
        let f = self.get(tenant)?;
        f.jobs.contains(key).then(|| f.jobs.range(..key.clone()).count())
    }

    /// The jobs of its tenant queued ahead of `key`: (of a higher priority, of the same
    /// priority submitted earlier or nearer their SLA deadline).
    pub fn ahead_in_tenant(&self, tenant: &TenantId, key: &JobKey) -> Option<(usize, usize)> {
        let f = self.get(tenant)?;
        if !f.jobs.contains(key) {
            return None;
        }
        let (mut higher, mut same) = (0, 0);
        for k in f.jobs.range(..key.clone()) {
            if k.priority == key.priority { same += 1 } else { higher += 1 }
        }
        Some((higher, same))
    }

    pub fn status(&self, tenant: &TenantId) -> Option<FlowStatus> {
        let f = self.get(tenant)?;
        let tenants_ahead = match f.ready {
            Some(k) => self.ready.range(..k).count(),
            None => self.ready.iter().filter(|k| k.0 <= f.start).count(),
        };
        Some(FlowStatus { start_tag: f.start, finish_tag: f.finish, weight: f.weight, parked: f.parked, queued: f.jobs.len(), tenants_ahead })
    }

    /// Tenants with queued jobs.
    pub fn backlogged(&self) -> impl Iterator<Item = (&TenantId, usize)> {
        self.flows.iter().filter(|f| !f.jobs.is_empty()).map(|f| (&f.tenant, f.jobs.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn key(p: Priority, t: i64, n: u128) -> JobKey {
        JobKey { priority: p, deadline: Timestamp::from_millis(t), submitted_at: Timestamp::from_millis(t), id: JobId::from_uuid(Uuid::from_u128(n)) }
    }

    fn tid(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[test]
    fn higher_priority_goes_first_within_a_tenant() {
        let t = tid("a");
        let mut q = Queue::default();
        q.push(&t, key(Priority::Batch, 1, 1), Timestamp::default());
        q.push(&t, key(Priority::Critical, 5, 2), Timestamp::default());
        q.push(&t, key(Priority::Normal, 2, 3), Timestamp::default());
        let order: Vec<_> = q.next_candidates(&t, 10).map(|k| k.priority).collect();
        assert_eq!(order, [Priority::Critical, Priority::Normal, Priority::Batch]);
    }

    /// Serves `n` unit-cost jobs and counts them per tenant.
    fn serve(q: &mut Queue, n: usize) -> std::collections::HashMap<TenantId, usize> {
        let mut got = std::collections::HashMap::new();
        for _ in 0..n {
            let t = q.tenants_in_turn().next().unwrap().clone();
            let k = q.next_candidates(&t, 1).next().unwrap().clone();
            q.remove(&t, &k);
            q.charge(&t, 1000, Timestamp::default());
            *got.entry(t).or_insert(0) += 1;
        }
        got
    }

    #[test]
    fn backlogged_tenants_are_served_in_proportion_to_weight() {
        let (a, b) = (tid("a"), tid("b"));
        let mut q = Queue::default();
        q.set_weight(&a, 1);
        q.set_weight(&b, 3);
        for i in 0..1000 {
            q.push(&a, key(Priority::Normal, i, i as u128), Timestamp::default());
            q.push(&b, key(Priority::Normal, i, 10_000 + i as u128), Timestamp::default());
        }
        let got = serve(&mut q, 400);
        assert_eq!((got[&a], got[&b]), (100, 300));
    }

    #[test]
    fn idling_earns_no_credit() {
        let (a, b) = (tid("a"), tid("b"));
        let mut q = Queue::default();
        for i in 0..100 {
            q.push(&a, key(Priority::Normal, i, i as u128), Timestamp::default());
        }
        serve(&mut q, 50);
        // b arrives late: it starts at the current virtual time, not at zero, so it does not
        // get 50 dispatches in a row.
        for i in 0..100 {
            q.push(&b, key(Priority::Normal, i, 1000 + i as u128), Timestamp::default());
        }
        let got = serve(&mut q, 20);
        assert!(got[&a] >= 9 && got[&b] <= 11, "{got:?}");
    }

    #[test]
    fn parked_tenants_are_skipped_and_come_back_without_credit() {
        let (a, b) = (tid("a"), tid("b"));
        let mut q = Queue::default();
        for i in 0..100 {
            q.push(&a, key(Priority::Normal, i, i as u128), Timestamp::default());
            q.push(&b, key(Priority::Normal, i, 1000 + i as u128), Timestamp::default());
        }
        q.park(&a);
        assert_eq!(q.tenants_in_turn().collect::<Vec<_>>(), [&b]);
        serve(&mut q, 30);
        q.unpark(&a);
        let got = serve(&mut q, 20);
        assert!(got[&a] <= 11, "{got:?}");
        assert_eq!(q.status(&a).unwrap().queued, 100 - got[&a]);
    }

    #[test]
    fn emptied_tenant_leaves_the_ready_order() {
        let a = tid("a");
        let mut q = Queue::default();
        let k = key(Priority::Normal, 1, 1);
        q.push(&a, k.clone(), Timestamp::default());
        assert!(q.remove(&a, &k));
        assert!(q.is_empty());
        assert_eq!(q.tenants_in_turn().count(), 0);
        assert!(!q.remove(&a, &k));
    }

    #[test]
    fn ties_go_to_the_heavier_tenant() {
        let (a, b) = (tid("a"), tid("b"));
        let mut q = Queue::default();
        q.set_weight(&a, 1);
        q.set_weight(&b, 5);
        q.push(&a, key(Priority::Normal, 1, 1), Timestamp::default());
        q.push(&b, key(Priority::Normal, 2, 2), Timestamp::default());
        assert_eq!(q.tenants_in_turn().next(), Some(&b));
    }
}
