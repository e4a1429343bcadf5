//! Burst sessions (SPEC §2.2): a tenant asks for more than its quota for a while.
//!
//! A session is `pending_approval` (when approval is required) or `active` at once; an active
//! session's [`Grant`] adds to the quota until `expires_at`, then the session is `expired`
//! and dispatch falls back to the quota (running jobs continue). After a session ends or
//! expires the tenant waits `cooldown` before asking again. Everything here is a pure function
//! of the session, the rules and `now`; the server persists what comes out.

use std::time::Duration;

use crate::ids::{BurstId, TenantId};
use crate::job::string_enum;
use crate::quota::{Grant, Quota};
use crate::time::Timestamp;
use crate::units::Resources;

string_enum!(
    /// `pending_approval → active|rejected`, `active → expired|ended|revoked`.
    BurstState {
        PendingApproval = "pending_approval",
        Active = "active",
        Rejected = "rejected",
        Expired = "expired",
        Ended = "ended",
        Revoked = "revoked",
    }
);

impl BurstState {
    /// The session still holds the tenant's one slot for a session.
    pub fn is_open(self) -> bool {
        matches!(self, BurstState::PendingApproval | BurstState::Active)
    }
}

/// Installation-wide burst rules (`burst_capacity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BurstRules {
    pub enabled: bool,
    /// quota + requested ≤ floor(quota × max_overage_pct / 100), per dimension.
    pub max_overage_pct: u32,
    pub max_duration_minutes: u32,
    pub require_approval: bool,
    pub cooldown: Duration,
    pub approval_timeout: Duration,
}

impl Default for BurstRules {
    fn default() -> Self {
        BurstRules {
            enabled: true,
            max_overage_pct: 150,
            max_duration_minutes: 60,
            require_approval: false,
            cooldown: Duration::from_secs(30 * 60),
            approval_timeout: Duration::from_secs(24 * 3600),
        }
    }
}

/// What a tenant asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BurstRequest {
    pub resources: Resources,
    pub concurrent_jobs: u32,
    /// `None`: the longest allowed.
    pub duration_minutes: Option<u32>,
    pub reason: String,
    pub requested_by: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BurstSession {
    pub id: BurstId,
    pub tenant_id: TenantId,
    pub state: BurstState,
    pub requested: Resources,
    pub requested_concurrent_jobs: u32,
    pub duration_minutes: u32,
    pub reason: String,
    pub requested_by: String,
    pub decided_by: Option<String>,
    pub created_at: Timestamp,
    pub activated_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub cooldown_until: Option<Timestamp>,
    pub version: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BurstError {
    #[error("burst capacity is disabled (burst_capacity.enabled: false)")]
    Disabled,
    /// 400 naming the field.
    #[error("{field}: expected {expected}")]
    Invalid { field: &'static str, expected: String },
    /// 409 `burst_unavailable`.
    #[error("{reason}")]
    Unavailable { reason: String, retry_after: Option<Duration> },
    /// 409 `invalid_state`.
    #[error("burst session is {state}; {action} is not allowed")]
    InvalidState { state: BurstState, action: &'static str },
}

/// Opens a session for `tenant` with quota `quota`, whose earlier sessions are `history`.
pub fn open(
    rules: &BurstRules,
    tenant: &TenantId,
    quota: &Quota,
    history: &[BurstSession],
    req: BurstRequest,
    id: BurstId,
    now: Timestamp,
) -> Result<BurstSession, BurstError> {
    if !rules.enabled {
        return Err(BurstError::Disabled);
    }
    let duration_minutes = req.duration_minutes.unwrap_or(rules.max_duration_minutes);
    if duration_minutes == 0 || duration_minutes > rules.max_duration_minutes {
        return Err(BurstError::Invalid {
            field: "duration_minutes",
            expected: format!("1–{} (burst_capacity.burst_duration_minutes)", rules.max_duration_minutes),
        });
    }
    let r = &req.resources;
    if r.cpu_m.0 == 0 && r.memory_mb.0 == 0 && r.gpu.0 == 0 && req.concurrent_jobs == 0 {
        return Err(BurstError::Invalid { field: "requested_cpu_m", expected: "at least one requested amount > 0".into() });
    }
    let dims = [
        ("requested_cpu_m", quota.resources.cpu_m.0, r.cpu_m.0),
        ("requested_memory_mb", quota.resources.memory_mb.0, r.memory_mb.0),
        ("requested_gpu", quota.resources.gpu.0, r.gpu.0),
        ("requested_concurrent_jobs", quota.max_concurrent_jobs, req.concurrent_jobs),
    ];
    for (field, q, asked) in dims {
        let most = max_extra(q, rules.max_overage_pct);
        if asked > most {
            return Err(BurstError::Invalid {
                field,
                expected: format!("≤ {most} (quota {q} may grow to {}% of itself, burst_capacity.max_overage_percentage)", rules.max_overage_pct),
            });
        }
    }
    if let Some(s) = history.iter().find(|s| s.state.is_open()) {
        return Err(BurstError::Unavailable { reason: format!("tenant already has a {} burst session {}", s.state, s.id), retry_after: None });
    }
    if let Some(until) = history.iter().filter_map(|s| s.cooldown_until).max().filter(|u| *u > now) {
        return Err(BurstError::Unavailable { reason: format!("burst cooldown until {until}"), retry_after: Some(until.since(now)) });
    }
    let mut s = BurstSession {
        id,
        tenant_id: tenant.clone(),
        state: BurstState::PendingApproval,
        requested: req.resources,
        requested_concurrent_jobs: req.concurrent_jobs,
        duration_minutes,
        reason: req.reason,
        requested_by: req.requested_by,
        decided_by: None,
        created_at: now,
        activated_at: None,
        expires_at: None,
        ended_at: None,
        cooldown_until: None,
        version: 1,
    };
    if !rules.require_approval {
        s.activate(now);
    }
    Ok(s)
}

/// The most a dimension with quota `q` may be raised: floor(q × pct / 100) − q.
pub fn max_extra(q: u32, pct: u32) -> u32 {
    let top = u64::from(q) * u64::from(pct) / 100;
    u32::try_from(top.saturating_sub(u64::from(q))).unwrap_or(u32::MAX)
}

impl BurstSession {
    fn activate(&mut self, now: Timestamp) {
        self.state = BurstState::Active;
        self.activated_at = Some(now);
        self.expires_at = Some(now.saturating_add(Duration::from_secs(u64::from(self.duration_minutes) * 60)));
    }

    fn close(&mut self, state: BurstState, at: Timestamp, rules: &BurstRules) {
        self.state = state;
        self.ended_at = Some(at);
        self.cooldown_until = Some(at.saturating_add(rules.cooldown));
    }

    fn bump(&mut self) {
        self.version += 1;
    }

    /// An admin approves a pending request; the duration counts from now.
    pub fn approve(&mut self, by: &str, now: Timestamp) -> Result<(), BurstError> {
        self.expect(BurstState::PendingApproval, "approve")?;
        self.activate(now);
        self.decided_by = Some(by.to_owned());
        self.bump();
        Ok(())
    }

    /// An admin rejects a pending request (no cooldown).
    pub fn reject(&mut self, by: &str, now: Timestamp) -> Result<(), BurstError> {
        self.expect(BurstState::PendingApproval, "reject")?;
        self.state = BurstState::Rejected;
        self.decided_by = Some(by.to_owned());
        self.ended_at = Some(now);
        self.bump();
        Ok(())
    }

    /// The tenant ends its session early: an active one goes into cooldown, a pending
    /// request is withdrawn (rejected, no cooldown).
    pub fn end(&mut self, by: &str, rules: &BurstRules, now: Timestamp) -> Result<(), BurstError> {
        match self.state {
            BurstState::Active => self.close(BurstState::Ended, now, rules),
            BurstState::PendingApproval => {
                self.state = BurstState::Rejected;
                self.ended_at = Some(now);
                self.decided_by = Some(by.to_owned());
            }
            state => return Err(BurstError::InvalidState { state, action: "end" }),
        }
        self.bump();
        Ok(())
    }

    /// Applies what time alone decides: an active session past `expires_at` expires (its
    /// cooldown counts from the expiry instant); a request unanswered for `approval_timeout`
    /// is rejected. Returns whether the session changed.
    pub fn advance(&mut self, rules: &BurstRules, now: Timestamp) -> bool {
        match self.state {
            BurstState::Active => match self.expires_at {
                Some(at) if at <= now => self.close(BurstState::Expired, at, rules),
                _ => return false,
            },
            BurstState::PendingApproval if self.created_at.saturating_add(rules.approval_timeout) <= now => {
                self.state = BurstState::Rejected;
                self.decided_by = Some("system: approval timeout".into());
                self.ended_at = Some(now);
            }
            _ => return false,
        }
        self.bump();
        true
    }

    /// When [`advance`](Self::advance) will next change this session.
    pub fn next_deadline(&self, rules: &BurstRules) -> Option<Timestamp> {
        match self.state {
            BurstState::Active => self.expires_at,
            BurstState::PendingApproval => Some(self.created_at.saturating_add(rules.approval_timeout)),
            _ => None,
        }
    }

    fn expect(&self, state: BurstState, action: &'static str) -> Result<(), BurstError> {
        if self.state == state { Ok(()) } else { Err(BurstError::InvalidState { state: self.state, action }) }
    }

    /// What the session adds to the quota while it is active.
    pub fn grant(&self) -> Option<Grant> {
        match (self.state, self.expires_at) {
            (BurstState::Active, Some(expires_at)) => {
                Some(Grant { resources: self.requested, concurrent_jobs: self.requested_concurrent_jobs, expires_at, session: self.id })
            }
            _ => None,
        }
    }

    /// Orders updates of a tenant's sessions: a later session, then a later version, wins.
    pub fn stamp(&self) -> (BurstId, i64) {
        (self.id, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn req(cpu: u32) -> BurstRequest {
        BurstRequest {
            resources: Resources::new(cpu, 0, 0),
            concurrent_jobs: 0,
            duration_minutes: Some(10),
            reason: "deadline".into(),
            requested_by: "alice".into(),
        }
    }

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn id(n: u128) -> BurstId {
        BurstId::from_uuid(Uuid::from_u128(n))
    }

    fn open_one(rules: &BurstRules, history: &[BurstSession], cpu: u32, now: Timestamp) -> Result<BurstSession, BurstError> {
        open(rules, &tenant(), &Quota::DEFAULT, history, req(cpu), id(now.as_millis() as u128 + 1), now)
    }

    #[test]
    fn grant_is_bounded_by_max_overage() {
        let rules = BurstRules::default();
        // quota 4000 × 150 % = 6000 → at most 2000 more.
        let s = open_one(&rules, &[], 2000, t(0)).unwrap();
        assert_eq!(s.state, BurstState::Active);
        assert_eq!(s.expires_at, Some(t(600_000)));
        assert_eq!(s.grant().unwrap().resources.cpu_m.0, 2000);
        let e = open_one(&rules, &[], 2001, t(0)).unwrap_err();
        assert!(matches!(e, BurstError::Invalid { field: "requested_cpu_m", .. }), "{e}");
        // gpu quota 0 → nothing more.
        let mut r = req(0);
        r.resources = Resources::new(0, 0, 1);
        let e = open(&rules, &tenant(), &Quota::DEFAULT, &[], r, id(1), t(0)).unwrap_err();
        assert!(matches!(e, BurstError::Invalid { field: "requested_gpu", .. }), "{e}");
        assert!(matches!(open_one(&rules, &[], 0, t(0)), Err(BurstError::Invalid { .. })));
        let mut r = req(1);
        r.duration_minutes = Some(61);
        assert!(matches!(open(&rules, &tenant(), &Quota::DEFAULT, &[], r, id(1), t(0)), Err(BurstError::Invalid { field: "duration_minutes", .. })));
    }

    #[test]
    fn one_open_session_then_cooldown_after_expiry() {
        let rules = BurstRules::default();
        let mut s = open_one(&rules, &[], 100, t(0)).unwrap();
        let e = open_one(&rules, std::slice::from_ref(&s), 100, t(1)).unwrap_err();
        assert!(matches!(e, BurstError::Unavailable { retry_after: None, .. }));
        assert!(!s.advance(&rules, t(599_999)));
        assert!(s.advance(&rules, t(700_000)));
        assert_eq!(s.state, BurstState::Expired);
        assert_eq!(s.grant(), None);
        // Cooldown counts from the expiry instant, not from when it was noticed.
        assert_eq!(s.cooldown_until, Some(t(600_000 + 1_800_000)));
        match open_one(&rules, std::slice::from_ref(&s), 100, t(700_000)) {
            Err(BurstError::Unavailable { retry_after: Some(d), .. }) => assert_eq!(d, Duration::from_millis(1_700_000)),
            other => panic!("{other:?}"),
        }
        assert!(open_one(&rules, &[s], 100, t(2_400_000)).is_ok());
    }

    #[test]
    fn approval_flow() {
        let rules = BurstRules { require_approval: true, ..BurstRules::default() };
        let mut s = open_one(&rules, &[], 100, t(0)).unwrap();
        assert_eq!((s.state, s.grant()), (BurstState::PendingApproval, None));
        assert!(matches!(s.end("x", &rules, t(1)).map(|_| s.state), Ok(BurstState::Rejected)));
        assert_eq!(s.cooldown_until, None, "a withdrawn request has no cooldown");

        let mut s = open_one(&rules, &[], 100, t(0)).unwrap();
        s.approve("admin", t(5_000)).unwrap();
        assert_eq!(s.expires_at, Some(t(605_000)), "expiry counts from approval");
        assert!(matches!(s.approve("admin", t(6_000)), Err(BurstError::InvalidState { .. })));
        s.end("alice", &rules, t(10_000)).unwrap();
        assert_eq!((s.state, s.cooldown_until), (BurstState::Ended, Some(t(1_810_000))));

        let mut s = open_one(&rules, &[], 100, t(0)).unwrap();
        assert!(!s.advance(&rules, t(3_600_000)));
        assert!(s.advance(&rules, t(24 * 3_600_000)));
        assert_eq!((s.state, s.cooldown_until), (BurstState::Rejected, None));
        let v = s.version;
        assert!(!s.advance(&rules, t(48 * 3_600_000)));
        assert_eq!(s.version, v);
    }

    #[test]
    fn disabled_refuses() {
        let rules = BurstRules { enabled: false, ..BurstRules::default() };
        assert_eq!(open_one(&rules, &[], 1, t(0)), Err(BurstError::Disabled));
    }
}
