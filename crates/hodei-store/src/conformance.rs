//! The store conformance suite: every engine must pass [`run_all`]. Each engine's test
//! builds a fresh store and calls it. Panics (with a message) on the first violation.

use std::collections::BTreeMap;

use hodei_core::burst::{self, BurstRequest, BurstRules};
use hodei_core::sched::{AttemptResult, Outcome, SchedConfig, Scheduler};
use hodei_core::spec::{JobSpecInput, SpecLimits};
use hodei_core::worker::WorkerState;
use hodei_core::{
    AttemptId, BurstId, BurstState, Job, JobId, JobState, PoolId, Resources, SlaLevel, SlaStatus, Tenant, TenantId, TenantStatus, Tier, Timestamp, Worker,
    WorkerId,
};
use uuid::Uuid;

use hodei_core::sla_tally::{SlaCount, wait_bin};

use crate::{BreachFilter, BurstFilter, JobFilter, ScalingEventFilter, Store, StoreError, WorkerFilter};
use hodei_core::autoscale::{Direction, Mode, Policy, Trigger};

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn tenant(id: &str) -> Tenant {
    Tenant {
        id: TenantId::parse(id).unwrap(),
        name: id.to_uppercase(),
        email: Some(format!("{id}@example.org")),
        tier: Tier::Premium,
        weight: None,
        status: TenantStatus::Active,
        quota: hodei_core::Quota::DEFAULT,
        labels: BTreeMap::from([("team".into(), id.into())]),
        created_at: ts(1),
        updated_at: ts(1),
        version: 1,
    }
}

fn job(n: u128, tenant: &str, labels: &[(&str, &str)]) -> Job {
    let spec = JobSpecInput {
        command: vec!["echo".into(), "hi there".into()],
        env: BTreeMap::from([("A".into(), "1".into())]),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        max_retries: Some(2),
        ..Default::default()
    }
    .validate(&SpecLimits::default(), "")
    .unwrap();
    // v7-like: the high bits order ids by "time".
    Job::new(JobId::from_uuid(Uuid::from_u128(n << 80)), TenantId::parse(tenant).unwrap(), spec, ts(n as i64))
}

fn worker(n: u128) -> Worker {
    Worker {
        id: WorkerId::from_uuid(Uuid::from_u128(n)),
        instance_name: format!("w{n}"),
        pool_id: PoolId::parse("local").unwrap(),
        state: WorkerState::Registering,
        capabilities: vec!["process".into()],
        resources: Resources::new(2000, 4096, 0),
        allocated: Resources::ZERO,
        slots: 4,
        slots_used: 0,
        labels: BTreeMap::new(),
        version: "t".into(),
        registered_at: ts(0),
        last_heartbeat_at: ts(0),
        idle_since: None,
        connected: false,
        allowed_tenants: Vec::new(),
        health: hodei_core::worker::Health::Healthy,
        health_reason: String::new(),
    }
}

/// Runs every check against `store`, which must be empty and freshly migrated.
pub async fn run_all(store: &dyn Store) {
    assert!(store.schema_is_current().await.unwrap(), "a migrated store has every migration");
    tenants_round_trip_and_refuse_duplicates(store).await;
    stale_tenant_updates_are_refused(store).await;
    scheduler_changes_round_trip(store).await;
    job_lists_filter_and_paginate_newest_first(store).await;
    lists_of_several_live_states_merge_newest_first(store).await;
    array_jobs_keep_their_array(store).await;
    staged_parts_commit_with_the_next_apply_or_not_at_all(store).await;
    burst_sessions_one_open_per_tenant(store).await;
    pools_workers_and_live_counts_round_trip(store).await;
    a_large_batch_is_stored_whole(store).await;
    idempotency_keys_are_stored_with_their_jobs_and_expire(store).await;
    principals_and_tokens_round_trip(store).await;
    the_audit_log_lists_newest_first_by_filter(store).await;
    jobs_remember_who_submitted_them(store).await;
    retention_deletes_ended_jobs_oldest_first_and_arrays_as_a_unit(store).await;
    sla_counts_add_up_per_hour_and_are_forgotten(store).await;
    metric_history_is_averaged_per_step_downsampled_and_forgotten(store).await;
    setting_overrides_are_replaced_whole(store).await;
    scaling_history_lists_newest_first_by_filter(store).await;
    the_cost_ledger_adds_up_in_its_rollups(store).await;
    rate_versions_list_oldest_first_one_per_instant(store).await;
    budgets_round_trip_and_refuse_stale_updates(store).await;
    alerts_fire_once_per_key_and_resolve(store).await;
    usage_is_kept_per_attempt_and_read_per_job_name(store).await;
    cost_reports_list_newest_first_within_what_the_caller_sees(store).await;
}

/// Scaling events come back as recorded, newest first, filtered by time and decision, paged
/// by id, and are forgotten by age.
async fn scaling_history_lists_newest_first_by_filter(store: &dyn Store) {
    use hodei_core::autoscale::{Decision, Event, Outcome, Source};
    let pool = PoolId::parse("hist").unwrap();
    let ev = |at: i64, outcome: Outcome, actor: Option<&str>| Event {
        id: 0,
        pool_id: pool.clone(),
        at: ts(at),
        decision: Decision {
            source: if actor.is_some() { Source::Manual } else { Source::Policy },
            policy_id: actor.is_none().then(|| "grow".to_owned()),
            trigger: actor.is_none().then(|| "queue_depth > 0".to_owned()),
            observed: actor.is_none().then_some(2.5),
            from: 1,
            to: if outcome == Outcome::Executed { 2 } else { 1 },
            outcome,
            reason: format!("at {at}"),
        },
        actor: actor.map(str::to_owned),
    };
    let mut ids = Vec::new();
    for (at, o, actor) in
        [(10, Outcome::Executed, None), (20, Outcome::SuppressedCooldown, None), (30, Outcome::Executed, Some("admin")), (40, Outcome::Clamped, None)]
    {
        ids.push(store.record_scaling_event(&ev(at, o, actor)).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let other = Event { pool_id: PoolId::parse("other-hist").unwrap(), ..ev(25, Outcome::Executed, None) };
    store.record_scaling_event(&other).await.unwrap();
    let f = ScalingEventFilter { pool: pool.clone(), since: None, until: None, outcome: None, before: None, limit: 10 };
    let all = store.list_scaling_events(&f).await.unwrap();
    assert_eq!(all.iter().map(|e| e.at.as_millis()).collect::<Vec<_>>(), [40, 30, 20, 10]);
    assert_eq!(all[1], Event { id: ids[2], ..ev(30, Outcome::Executed, Some("admin")) });
    assert_eq!(all[3], Event { id: ids[0], ..ev(10, Outcome::Executed, None) });
    let executed = store.list_scaling_events(&ScalingEventFilter { outcome: Some(Outcome::Executed), ..f.clone() }).await.unwrap();
    assert_eq!(executed.iter().map(|e| e.at.as_millis()).collect::<Vec<_>>(), [30, 10]);
    let window = store.list_scaling_events(&ScalingEventFilter { since: Some(ts(20)), until: Some(ts(40)), ..f.clone() }).await.unwrap();
    assert_eq!(window.iter().map(|e| e.at.as_millis()).collect::<Vec<_>>(), [30, 20]);
    let page = store.list_scaling_events(&ScalingEventFilter { before: Some(ids[2]), limit: 1, ..f.clone() }).await.unwrap();
    assert_eq!(page.iter().map(|e| e.at.as_millis()).collect::<Vec<_>>(), [20]);
    assert_eq!(store.delete_scaling_events_before(ts(26)).await.unwrap(), 3, "two of this pool and one of the other");
    assert_eq!(store.list_scaling_events(&f).await.unwrap().len(), 2);
}

/// Settings overrides: none at first, then the last body written.
async fn setting_overrides_are_replaced_whole(store: &dyn Store) {
    assert_eq!(store.setting_overrides().await.unwrap(), None);
    store.put_setting_overrides(r#"{"observability.grafana.folder":"A"}"#, ts(1)).await.unwrap();
    store.put_setting_overrides(r#"{"observability.grafana.folder":"B"}"#, ts(2)).await.unwrap();
    assert_eq!(store.setting_overrides().await.unwrap().as_deref(), Some(r#"{"observability.grafana.folder":"B"}"#));
}

/// Metric samples come back averaged per step, per metric; downsampling averages raw samples
/// into aligned buckets (again: replacing them); retention deletes one resolution by age.
async fn metric_history_is_averaged_per_step_downsampled_and_forgotten(store: &dyn Store) {
    use crate::{HistoryQuery, HistorySeries, MetricSample};
    const M: i64 = 60_000;
    let sample = |scope: &str, id: &str, metric: &str, at: i64, value: f64| MetricSample {
        scope: scope.into(),
        scope_id: id.into(),
        metric: metric.into(),
        resolution_s: 0,
        at: ts(at),
        value,
    };
    // Ten minutes of one sample a minute: the pool's size 0..9, the tenant's cpu 100.
    let mut samples: Vec<MetricSample> = (0..10).map(|i| sample("pool", "hist-p", "size", i * M, i as f64)).collect();
    samples.extend((0..10).map(|i| sample("tenant", "hist-t", "cpu_m", i * M, 100.0)));
    samples.push(sample("pool", "hist-p", "size", 0, 99.0));
    store.put_metric_samples(&samples).await.unwrap();
    // Stored again: replaced, not added.
    store.put_metric_samples(&[sample("pool", "hist-p", "size", 0, 0.0)]).await.unwrap();
    let q = |scope: &str, id: &str, metrics: &[&str], resolution_s: u32, step_ms: i64| HistoryQuery {
        scope: scope.into(),
        scope_id: id.into(),
        metrics: metrics.iter().map(|m| m.to_string()).collect(),
        resolution_s,
        start: ts(0),
        end: ts(10 * M),
        step_ms,
    };
    let pts = |v: &[(i64, f64)]| v.iter().map(|(t, x)| (ts(*t), *x)).collect::<Vec<_>>();
    let raw = store.metric_history(&q("pool", "hist-p", &[], 0, 2 * M)).await.unwrap();
    assert_eq!(raw, vec![HistorySeries { metric: "size".into(), points: pts(&[(0, 0.5), (2 * M, 2.5), (4 * M, 4.5), (6 * M, 6.5), (8 * M, 8.5)]) }]);
    assert!(store.metric_history(&q("tenant", "hist-t", &["other"], 0, M)).await.unwrap().is_empty());
    assert_eq!(store.metric_history(&q("tenant", "hist-t", &["cpu_m"], 0, 10 * M)).await.unwrap()[0].points, pts(&[(0, 100.0)]));
    assert_eq!(store.last_metric_sample(0).await.unwrap(), Some(ts(9 * M)));

    assert!(store.downsample_metric_samples(300, ts(0), ts(10 * M)).await.unwrap() >= 4);
    // Again over the same time, with a sample changed meanwhile: the bucket follows.
    store.put_metric_samples(&[sample("pool", "hist-p", "size", 9 * M, 14.0)]).await.unwrap();
    store.downsample_metric_samples(300, ts(5 * M), ts(10 * M)).await.unwrap();
    let five = store.metric_history(&q("pool", "hist-p", &[], 300, 5 * M)).await.unwrap();
    assert_eq!(five[0].points, pts(&[(0, 2.0), (5 * M, 8.0)]));
    assert_eq!(store.last_metric_sample(300).await.unwrap(), Some(ts(5 * M)));

    assert!(store.forget_metric_samples(0, ts(5 * M)).await.unwrap() >= 10);
    let raw = store.metric_history(&q("pool", "hist-p", &[], 0, 5 * M)).await.unwrap();
    assert_eq!(raw[0].points, pts(&[(5 * M, 8.0)]), "raw samples before 5 min are gone");
    assert_eq!(store.metric_history(&q("pool", "hist-p", &[], 300, 5 * M)).await.unwrap(), five, "the buckets stay");
}

/// Outcomes add to the count of their hour, tenant, level, met and wait bin, across batches and
/// within one; a window sums its hours; old hours are forgotten.
async fn sla_counts_add_up_per_hour_and_are_forgotten(store: &dyn Store) {
    use hodei_core::sla_tally::SlaOutcome;
    const H: i64 = 3_600_000;
    let (a, b) = (TenantId::parse("sla-a").unwrap(), TenantId::parse("sla-b").unwrap());
    let o = |t: &TenantId, met: bool, wait_ms: u64, at: i64| SlaOutcome { tenant: t.clone(), level: SlaLevel::High, met, wait_ms, at: ts(at) };
    let batches = [
        vec![o(&a, true, 100, 100 * H), o(&a, true, 101, 100 * H + 5), o(&a, false, 90_000, 101 * H - 1)],
        vec![o(&a, true, 100, 101 * H), o(&b, true, 100, 102 * H), o(&a, false, 90_000, 102 * H + 1)],
    ];
    for batch in batches {
        store.apply(std::sync::Arc::new(hodei_core::sched::Changes { sla_outcomes: batch, ..Default::default() })).await.unwrap();
    }
    let sorted = |mut v: Vec<SlaCount>| {
        v.sort_by_key(|c| (c.tenant.clone(), c.met, c.bin));
        v.into_iter().map(|c| (c.tenant.to_string(), c.met, c.bin, c.n)).collect::<Vec<_>>()
    };
    let (near, far) = (wait_bin(100), wait_bin(90_000));
    assert_eq!(wait_bin(101), near, "100 and 101 ms share a bin");
    let all = sorted(store.sla_counts(ts(100 * H), None).await.unwrap());
    assert_eq!(all, [("sla-a".into(), false, far, 2), ("sla-a".into(), true, near, 3), ("sla-b".into(), true, near, 1)]);
    let a_from_101 = sorted(store.sla_counts(ts(101 * H), Some(&a)).await.unwrap());
    assert_eq!(a_from_101, [("sla-a".into(), false, far, 1), ("sla-a".into(), true, near, 1)], "hours before the window's first are left out");
    assert!(store.forget_sla_counts(ts(101 * H)).await.unwrap() >= 2, "hour 100's rows go (and older ones)");
    let left = sorted(store.sla_counts(ts(0), None).await.unwrap());
    assert_eq!(left, [("sla-a".into(), false, far, 1), ("sla-a".into(), true, near, 1), ("sla-b".into(), true, near, 1)]);
}

/// Retention takes jobs that ended before the horizon, oldest first, with their attempts and
/// events; never a live job, one waiting for a retry or one that ended after it; an array only
/// once all its members ended before it, in parts of the limit.
async fn retention_deletes_ended_jobs_oldest_first_and_arrays_as_a_unit(store: &dyn Store) {
    use hodei_core::job::Actor;
    // What earlier tests left that has ended goes first (they all ended before t = 900 000).
    while store.delete_ended_jobs(ts(900_000), 1_000).await.unwrap().jobs > 0 {}
    let t = |n: i64| ts(1_000_000 + n);
    let id = |n: u128| JobId::from_uuid(Uuid::from_u128(n << 80));
    let mut s = Scheduler::new(SchedConfig::default());
    let w = worker(700);
    store.register_worker(&w, "hash-700").await.unwrap();
    s.register_worker(w.clone(), t(0));
    s.connect_worker(w.id, &[], vec![], t(0)).unwrap();
    // 701 runs and succeeds, 702 fails with retries left: each gets an attempt.
    for n in [701, 702] {
        s.submit(job(n, "retain", &[]), t(1)).unwrap();
    }
    let mut next = 7_000u128;
    s.schedule(t(2), &mut || {
        next += 1;
        AttemptId::from_uuid(Uuid::from_u128(next))
    });
    store.apply(std::sync::Arc::new(s.take_changes())).await.unwrap();
    for (n, outcome) in [(701, Outcome::Succeeded), (702, Outcome::Failed)] {
        let aid = store.get_job(id(n)).await.unwrap().unwrap().current_attempt.unwrap();
        s.accepted(aid, w.id, t(3), t(3)).unwrap();
        let r = AttemptResult {
            outcome,
            exit_code: Some(if outcome == Outcome::Succeeded { 0 } else { 1 }),
            signal: None,
            failure_reason: None,
            started_at: t(3),
            finished_at: t(100),
            cpu_time_ms: 1,
            max_rss_mb: 1,
            log_bytes: 0,
            log_truncated: false,
        };
        s.finish(aid, w.id, r, t(100)).unwrap();
    }
    // 703 is cancelled before the horizon, 704 after it, 705 stays pending.
    for n in [703, 704, 705] {
        s.submit(job(n, "retain", &[]), t(1)).unwrap();
    }
    s.cancel(id(703), Actor::Api, t(200)).unwrap();
    s.cancel(id(704), Actor::Api, t(900)).unwrap();
    // Array 710 ends entirely before the horizon; array 720 has a member still pending.
    let mut spec = (*job(0, "retain", &[]).spec).clone();
    spec.array = Some(hodei_core::spec::ArraySpec { start: 0, end: 1, step: 1, max_parallel: None });
    let spec = std::sync::Arc::new(spec);
    for (array, members) in [(710u128, [711u128, 712]), (720, [721, 722])] {
        for (index, n) in members.into_iter().enumerate() {
            let mut j = Job::new(id(n), TenantId::parse("retain").unwrap(), spec.clone(), t(1));
            j.array = Some((hodei_core::ArrayId::from_uuid(Uuid::from_u128(array << 80)), index as u32));
            s.submit(j, t(1)).unwrap();
        }
    }
    for n in [711, 712, 721] {
        s.cancel(id(n), Actor::Api, t(300)).unwrap();
    }
    store.apply(std::sync::Arc::new(s.take_changes())).await.unwrap();
    let failed = store.get_job(id(702)).await.unwrap().unwrap();
    assert!(failed.state == JobState::Failed && failed.next_retry_at.is_some(), "702 waits for its retry: {failed:?}");
    let ran = store.list_attempts(id(701)).await.unwrap();
    assert_eq!(ran.len(), 1);

    let horizon = t(500);
    let first = store.delete_ended_jobs(horizon, 2).await.unwrap();
    assert_eq!(first, crate::Purged { jobs: 2, attempts: vec![ran[0].id] }, "701 and 703, oldest first, with 701's attempt");
    assert_eq!(store.get_job(id(701)).await.unwrap(), None);
    assert_eq!(store.list_attempts(id(701)).await.unwrap(), []);
    assert_eq!(store.list_events(id(701)).await.unwrap(), []);
    assert_eq!(store.get_job(id(703)).await.unwrap(), None);
    // Array 710 goes in parts of the limit; then nothing is left to take.
    assert_eq!(store.delete_ended_jobs(horizon, 1).await.unwrap().jobs, 1);
    assert_eq!(store.delete_ended_jobs(horizon, 1).await.unwrap().jobs, 1);
    assert_eq!(store.delete_ended_jobs(horizon, 100).await.unwrap(), crate::Purged::default());
    let array = |n: u128| JobFilter { array: Some(hodei_core::ArrayId::from_uuid(Uuid::from_u128(n << 80))), limit: 10, ..Default::default() };
    assert_eq!(store.list_jobs(&array(710)).await.unwrap(), []);
    assert_eq!(store.list_jobs(&array(720)).await.unwrap().len(), 2, "an array with a live member stays whole");
    for n in [702, 704, 705] {
        assert!(store.get_job(id(n)).await.unwrap().is_some(), "job {n} stays");
    }
}

/// Principals keep their bindings, names are unique, stale updates are refused; tokens are
/// found by prefix, listed per principal newest first, touched and revoked.
async fn principals_and_tokens_round_trip(store: &dyn Store) {
    use hodei_core::{Principal, PrincipalId, PrincipalKind, Role, RoleBinding, Scope, Token, TokenId};
    let pid = |n: u128| PrincipalId::from_uuid(Uuid::from_u128(n << 80));
    let ada = Principal {
        id: pid(1),
        name: "ada".into(),
        kind: PrincipalKind::User,
        bindings: vec![
            RoleBinding::new(Role::Pi, Scope::Tenant(TenantId::parse("lab").unwrap())).unwrap(),
            RoleBinding::new(Role::Viewer, Scope::Tenant(TenantId::parse("other").unwrap())).unwrap(),
        ],
        created_at: ts(1),
        updated_at: ts(1),
        version: 1,
    };
    store.create_principal(&ada).await.unwrap();
    let ci = Principal { id: pid(2), name: "ci".into(), kind: PrincipalKind::Service, bindings: vec![RoleBinding::admin()], ..ada.clone() };
    store.create_principal(&ci).await.unwrap();
    assert!(matches!(store.create_principal(&Principal { id: pid(3), ..ada.clone() }).await, Err(StoreError::AlreadyExists { .. })), "names are unique");
    assert_eq!(store.get_principal(ada.id).await.unwrap().as_ref(), Some(&ada));
    assert_eq!(store.get_principal_by_name("ci").await.unwrap().as_ref(), Some(&ci));
    assert_eq!(store.get_principal(pid(9)).await.unwrap(), None);
    let page = store.list_principals(None, 1).await.unwrap();
    assert_eq!(page.iter().map(|p| p.id).collect::<Vec<_>>(), [ci.id], "newest first");
    assert_eq!(store.list_principals(Some(ci.id), 10).await.unwrap().iter().map(|p| p.id).collect::<Vec<_>>(), [ada.id]);
    let moved = Principal { bindings: vec![RoleBinding::admin()], updated_at: ts(5), version: 2, ..ada.clone() };
    store.update_principal(&moved).await.unwrap();
    assert!(matches!(store.update_principal(&moved).await, Err(StoreError::VersionMismatch { .. })), "a stale version is refused");
    assert_eq!(store.get_principal(ada.id).await.unwrap().unwrap().bindings, [RoleBinding::admin()]);

    let token = |n: u128, principal: PrincipalId, prefix: &str| Token {
        id: TokenId::from_uuid(Uuid::from_u128(n << 80)),
        principal,
        name: format!("t{n}"),
        prefix: prefix.into(),
        secret_hash: format!("{n:064x}"),
        created_at: ts(n as i64),
        expires_at: n.is_multiple_of(2).then(|| ts(1_000)),
        last_used_at: None,
    };
    let (a, b, c) = (token(10, ada.id, "hodei_abcdef"), token(11, ada.id, "hodei_abcdef"), token(12, ci.id, "hodei_zzzzzz"));
    for t in [&a, &b, &c] {
        store.create_token(t).await.unwrap();
    }
    let mut found = store.tokens_by_prefix("hodei_abcdef").await.unwrap();
    found.sort_by_key(|t| t.id);
    assert_eq!(found, [a.clone(), b.clone()]);
    assert!(store.tokens_by_prefix("hodei_nonono").await.unwrap().is_empty());
    let of_ada = store.list_tokens(Some(ada.id), None, 10).await.unwrap();
    assert_eq!(of_ada.iter().map(|t| t.id).collect::<Vec<_>>(), [b.id, a.id], "one principal's, newest first");
    let all = store.list_tokens(None, Some(c.id), 1).await.unwrap();
    assert_eq!(all.iter().map(|t| t.id).collect::<Vec<_>>(), [b.id], "everyone's, after the cursor");
    store.touch_token(a.id, ts(77)).await.unwrap();
    assert_eq!(store.get_token(a.id).await.unwrap().unwrap().last_used_at, Some(ts(77)));
    assert!(store.delete_token(a.id).await.unwrap());
    assert!(!store.delete_token(a.id).await.unwrap(), "revoked once");
    assert_eq!(store.get_token(a.id).await.unwrap(), None);
    assert_eq!(store.tokens_by_prefix("hodei_abcdef").await.unwrap(), [b]);
}

async fn the_audit_log_lists_newest_first_by_filter(store: &dyn Store) {
    use hodei_core::{AuditEntry, AuditId, PrincipalId};
    let entry = |n: u128, actor: &str, action: &str| AuditEntry {
        id: AuditId::from_uuid(Uuid::from_u128(n << 80)),
        at: ts(n as i64 * 10),
        actor: PrincipalId::from_uuid(Uuid::from_u128(7)),
        actor_name: actor.into(),
        action: action.into(),
        target: format!("tenant:t{n}"),
        before: (n % 2 == 1).then(|| "{\"weight\":1}".into()),
        after: Some("{\"weight\":2}".into()),
        request_id: format!("req-{n}"),
    };
    let all = [entry(1, "ada", "tenant.create"), entry(2, "ada", "tenant.update"), entry(3, "bob", "tenant.update")];
    for e in &all {
        store.append_audit(e).await.unwrap();
    }
    let f = |f: crate::AuditFilter| async move { store.list_audit(&crate::AuditFilter { limit: 50, ..f }).await.unwrap() };
    assert_eq!(f(Default::default()).await, [all[2].clone(), all[1].clone(), all[0].clone()], "everything, newest first");
    assert_eq!(f(crate::AuditFilter { actor: Some("ada".into()), ..Default::default() }).await, [all[1].clone(), all[0].clone()]);
    assert_eq!(f(crate::AuditFilter { action: Some("tenant.update".into()), since: Some(ts(25)), ..Default::default() }).await, [all[2].clone()]);
    assert_eq!(f(crate::AuditFilter { target: Some("tenant:t1".into()), ..Default::default() }).await, [all[0].clone()]);
    assert_eq!(f(crate::AuditFilter { before: Some(all[1].id), ..Default::default() }).await, [all[0].clone()], "after the cursor");
}

/// The submitter of a job is stored with its spec, for plain jobs and array members alike.
async fn jobs_remember_who_submitted_them(store: &dyn Store) {
    let who = Some(hodei_core::PrincipalId::from_uuid(Uuid::from_u128(5 << 80)));
    let mut s = Scheduler::new(SchedConfig::default());
    let mut plain = job(260, "owners", &[]);
    let mut spec = (*plain.spec).clone();
    spec.submitted_by = who;
    plain.spec = std::sync::Arc::new(spec.clone());
    s.submit(plain.clone(), ts(260)).unwrap();
    spec.array = Some(hodei_core::spec::ArraySpec { start: 0, end: 0, step: 1, max_parallel: None });
    let mut member = Job::new(JobId::from_uuid(Uuid::from_u128(261 << 80)), TenantId::parse("owners").unwrap(), std::sync::Arc::new(spec), ts(61));
    member.array = Some((hodei_core::ArrayId::from_uuid(Uuid::from_u128(262 << 80)), 0));
    s.submit(member.clone(), ts(61)).unwrap();
    s.submit(job(263, "owners", &[]), ts(263)).unwrap();
    store.apply(std::sync::Arc::new(s.take_changes())).await.unwrap();
    for (id, want) in [(plain.id, who), (member.id, who), (JobId::from_uuid(Uuid::from_u128(263 << 80)), None)] {
        assert_eq!(store.get_job(id).await.unwrap().unwrap().spec.submitted_by, want);
    }
}

/// Idempotency records round-trip through `load_live` (job lists with refused entries, and an
/// array's range), expire by their creation time, and a key used again replaces its record.
async fn idempotency_keys_are_stored_with_their_jobs_and_expire(store: &dyn Store) {
    use hodei_core::idempotency::{IdempotencyRecord, Submitted};
    let acme = TenantId::parse("idem").unwrap();
    let record = |key: &str, submitted: Submitted, at: i64| IdempotencyRecord {
        tenant: acme.clone(),
        key: key.into(),
        fingerprint: format!("fp-{key}-{at}"),
        submitted,
        created_at: ts(at),
    };
    let mut s = Scheduler::new(SchedConfig::default());
    let j = job(90, "idem", &[]);
    let id = j.id;
    s.submit(j, ts(90)).unwrap();
    let jobs = record("batch", Submitted::Jobs(vec![Some(id), None, Some(JobId::from_uuid(Uuid::from_u128(91 << 80)))]), 100);
    let array = record(
        "array",
        Submitted::Array {
            array: hodei_core::ArrayId::from_uuid(Uuid::from_u128(92 << 80)),
            first: JobId::from_uuid(Uuid::from_u128(93 << 80)),
            last: JobId::from_uuid(Uuid::from_u128(94 << 80)),
            count: 2,
        },
        200,
    );
    s.remember_idempotency(jobs.clone());
    s.remember_idempotency(array.clone());
    store.apply(std::sync::Arc::new(s.take_changes())).await.unwrap();
    let mut got = store.load_live().await.unwrap().idempotency;
    got.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(got, [array.clone(), jobs.clone()]);
    assert!(store.get_job(id).await.unwrap().is_some(), "the record's job was stored in the same commit");
    // "batch" used again (its old record expired) and everything created before 150 deleted:
    // the new record survives the delete of the same commit, "array" (200) is kept.
    let again = record("batch", Submitted::Jobs(vec![None]), 300);
    let changes = hodei_core::sched::Changes { idempotency: vec![again.clone()], idempotency_expired_before: Some(ts(150)), ..Default::default() };
    store.apply(std::sync::Arc::new(changes)).await.unwrap();
    let mut got = store.load_live().await.unwrap().idempotency;
    got.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(got, [array.clone(), again]);
    let changes = hodei_core::sched::Changes { idempotency_expired_before: Some(ts(1_000)), ..Default::default() };
    store.apply(std::sync::Arc::new(changes)).await.unwrap();
    assert_eq!(store.load_live().await.unwrap().idempotency, []);
}

/// The jobs of an array job come back with their array id, index and range (the scheduler
/// needs `max_parallel` after a restart), and are listed by array.
async fn array_jobs_keep_their_array(store: &dyn Store) {
    let mut s = Scheduler::new(SchedConfig::default());
    let array = hodei_core::ArrayId::from_uuid(Uuid::from_u128(77 << 80));
    let mut spec = (*job(0, "arrays", &[]).spec).clone();
    spec.array = Some(hodei_core::spec::ArraySpec { start: 0, end: 2, step: 2, max_parallel: Some(1) });
    let spec = std::sync::Arc::new(spec);
    for (n, index) in [(30u128, 0u32), (31, 2)] {
        let mut j = Job::new(JobId::from_uuid(Uuid::from_u128(n << 80)), TenantId::parse("arrays").unwrap(), spec.clone(), ts(n as i64));
        j.array = Some((array, index));
        s.submit(j, ts(n as i64)).unwrap();
    }
    // A job with every optional field set, each column read back by type.
    let mut full = job(32, "arrays", &[("k", "v")]);
    let mut all = (*full.spec).clone();
    all.name = "full".into();
    all.working_dir = Some("/tmp".into());
    all.image = Some("alpine:3".into());
    all.expected_duration = Some(std::time::Duration::from_millis(1500));
    all.retry_backoff = Some(std::time::Duration::from_millis(250));
    all.pool_selector = Some(PoolId::parse("local").unwrap());
    all.pool_labels = [("zone".to_owned(), "eu-1".to_owned()), ("example.com/disk".to_owned(), "ssd".to_owned())].into();
    all.submitted_by = Some(hodei_core::PrincipalId::from_uuid(Uuid::from_u128(5)));
    all.preemptible = true;
    all.depends_on = vec![
        hodei_core::spec::Dependency { job: JobId::from_uuid(Uuid::from_u128(30 << 80)), condition: hodei_core::Condition::AfterOk },
        hodei_core::spec::Dependency { job: JobId::from_uuid(Uuid::from_u128(31 << 80)), condition: hodei_core::Condition::AfterNotOk },
    ];
    full.spec = std::sync::Arc::new(all.clone());
    s.submit(full, ts(32)).unwrap();
    store.apply(std::sync::Arc::new(s.take_changes())).await.unwrap();
    let listed = store.list_jobs(&JobFilter { array: Some(array), limit: 50, ..Default::default() }).await.unwrap();
    let got: Vec<_> = listed.iter().map(|j| (j.id.as_uuid().as_u128() >> 80, j.array, j.spec.array)).collect();
    assert_eq!(got, [(31, Some((array, 2)), spec.array), (30, Some((array, 0)), spec.array)]);
    let plain = store.get_job(JobId::from_uuid(Uuid::from_u128(32 << 80))).await.unwrap().unwrap();
    assert_eq!((plain.array, plain.spec.array), (None, None));
    assert_eq!(*plain.spec, all, "every spec field round-trips");
    // Start-up reads them as every other read does, the members sharing one spec.
    let live: Vec<Job> = store.load_live().await.unwrap().jobs.into_iter().filter(|j| j.tenant.as_str() == "arrays").collect();
    assert_eq!(live.len(), 3);
    for j in &live {
        assert_eq!(Some(j), store.get_job(j.id).await.unwrap().as_ref());
    }
    let members: Vec<&Job> = live.iter().filter(|j| j.array.is_some()).collect();
    assert!(std::sync::Arc::ptr_eq(&members[0].spec, &members[1].spec), "one spec per array in memory");
}

async fn staged_parts_commit_with_the_next_apply_or_not_at_all(store: &dyn Store) {
    let mut s = Scheduler::new(SchedConfig::default());
    let jobs: Vec<Job> = (40..43).map(|n| job(n, "staged", &[])).collect();
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    let mut parts = 0;
    let admitted = s.submit_all_in_parts(jobs, true, ts(40), 1, |part| {
        parts += 1;
        store.stage(std::sync::Arc::new(part));
    });
    assert!(admitted.iter().all(Result::is_ok));
    assert_eq!(parts, 2, "parts after the first and second job; the third is the apply's");
    assert_eq!(store.get_job(ids[0]).await.unwrap(), None, "a staged part is not committed");
    store.apply(std::sync::Arc::new(s.take_changes())).await.unwrap();
    for id in &ids {
        assert!(store.get_job(*id).await.unwrap().is_some(), "staged and applied jobs are committed together");
    }

    // A failing part (a job id already stored) fails the next apply, which then stores nothing.
    let mut s = Scheduler::new(SchedConfig::default());
    s.submit(job(40, "staged", &[]), ts(44)).unwrap();
    s.submit(job(44, "staged", &[]), ts(44)).unwrap();
    store.stage(std::sync::Arc::new(s.take_changes()));
    s.submit(job(45, "staged", &[]), ts(45)).unwrap();
    assert!(store.apply(std::sync::Arc::new(s.take_changes())).await.is_err(), "the staged duplicate fails the apply");
    for n in [44, 45] {
        assert_eq!(store.get_job(JobId::from_uuid(Uuid::from_u128(n << 80))).await.unwrap(), None, "nothing of a failed batch is stored");
    }
    // The writer is usable again.
    s.submit(job(46, "staged", &[]), ts(46)).unwrap();
    store.apply(std::sync::Arc::new(s.take_changes())).await.unwrap();
    assert!(store.get_job(JobId::from_uuid(Uuid::from_u128(46 << 80))).await.unwrap().is_some());
}

async fn burst_sessions_one_open_per_tenant(store: &dyn Store) {
    let t = tenant("bursty");
    store.create_tenant(&t).await.unwrap();
    let rules = BurstRules::default();
    let req = || BurstRequest {
        resources: Resources::new(1000, 0, 0),
        concurrent_jobs: 2,
        duration_minutes: Some(5),
        reason: "end of quarter".into(),
        requested_by: "alice".into(),
    };
    let id = |n: u128| BurstId::from_uuid(Uuid::from_u128(n << 80));
    let mut a = burst::open(&rules, &t.id, &t.quota, &[], req(), id(1), ts(10)).unwrap();
    store.create_burst(&a).await.expect("create burst");
    assert_eq!(store.get_burst(a.id).await.unwrap().as_ref(), Some(&a));
    // A second open session of the same tenant is refused by the store itself.
    let b = burst::open(&rules, &t.id, &t.quota, &[], req(), id(2), ts(11)).unwrap();
    assert!(matches!(store.create_burst(&b).await, Err(StoreError::AlreadyExists { .. })));
    let stale = a.clone();
    a.end("alice", &rules, ts(20)).unwrap();
    store.update_burst(&a).await.expect("end");
    assert!(matches!(store.update_burst(&stale).await, Err(StoreError::VersionMismatch { .. })));
    assert_eq!(store.get_burst(a.id).await.unwrap().as_ref(), Some(&a), "every field round-trips");
    store.create_burst(&b).await.expect("the tenant's slot is free once the first ended");
    let open = BurstFilter { states: vec![BurstState::Active], limit: 10, ..BurstFilter::default() };
    assert_eq!(store.list_bursts(&open).await.unwrap(), vec![b.clone()]);
    let mine = BurstFilter { tenant: Some(t.id.clone()), limit: 1, ..BurstFilter::default() };
    assert_eq!(store.list_bursts(&mine).await.unwrap(), vec![b.clone()], "newest first");
    let older = BurstFilter { before: Some(b.id), ..mine };
    assert_eq!(store.list_bursts(&older).await.unwrap(), vec![a]);
    assert!(store.delete_tenant(&t.id).await.unwrap());
    assert_eq!(store.get_burst(b.id).await.unwrap(), None, "sessions go with their tenant");
}

async fn tenants_round_trip_and_refuse_duplicates(store: &dyn Store) {
    let t = tenant("acme");
    store.create_tenant(&t).await.expect("create tenant");
    assert_eq!(store.get_tenant(&t.id).await.unwrap().as_ref(), Some(&t));
    assert!(matches!(store.create_tenant(&t).await, Err(StoreError::AlreadyExists { .. })));
    assert_eq!(store.list_tenants().await.unwrap(), vec![t.clone()]);
    assert!(store.delete_tenant(&t.id).await.unwrap());
    assert!(!store.delete_tenant(&t.id).await.unwrap());
    assert_eq!(store.get_tenant(&t.id).await.unwrap(), None);
}

async fn stale_tenant_updates_are_refused(store: &dyn Store) {
    let mut t = tenant("beta");
    store.create_tenant(&t).await.unwrap();
    t.weight = Some(7);
    t.quota.max_concurrent_jobs = 3;
    t.quota.resources.gpu = hodei_core::Gpus(2);
    t.version = 2;
    store.update_tenant(&t).await.expect("update at the right version");
    assert_eq!(store.get_tenant(&t.id).await.unwrap().as_ref(), Some(&t), "weight and quota round-trip");
    assert!(matches!(store.update_tenant(&t).await, Err(StoreError::VersionMismatch { .. })), "same version twice");
}

async fn scheduler_changes_round_trip(store: &dyn Store) {
    let mut s = Scheduler::new(SchedConfig::default());
    let w = worker(1);
    store.register_worker(&w, "hash-1").await.unwrap();
    assert_eq!(store.worker_session_hash(w.id).await.unwrap().as_deref(), Some("hash-1"));
    s.register_worker(w.clone(), ts(0));
    s.connect_worker(w.id, &[], vec![], ts(0)).unwrap();
    let (a, mut b) = (job(1, "acme", &[]), job(2, "acme", &[]));
    b.warnings = vec!["quota_exceeded".into()];
    let (ja, jb) = (a.id, b.id);
    s.submit(a.clone(), ts(1)).unwrap();
    s.submit(b, ts(1)).unwrap();
    let mut n = 100u128;
    let mut mint = || {
        n += 1;
        AttemptId::from_uuid(Uuid::from_u128(n))
    };
    s.schedule(ts(2), &mut mint);
    store.apply(std::sync::Arc::new(s.take_changes())).await.expect("apply submit + schedule in one batch");

    let stored = store.get_job(ja).await.unwrap().expect("job stored");
    assert_eq!(stored.state, JobState::Scheduled);
    assert_eq!(stored.spec, a.spec, "the spec round-trips unchanged");
    let aid = stored.current_attempt.expect("current attempt");

    s.accepted(aid, w.id, ts(3), ts(3)).unwrap();
    let r = AttemptResult {
        outcome: Outcome::Succeeded,
        exit_code: Some(0),
        signal: None,
        failure_reason: None,
        started_at: ts(3),
        finished_at: ts(4),
        cpu_time_ms: 5,
        max_rss_mb: 6,
        log_bytes: 7,
        log_truncated: false,
    };
    s.finish(aid, w.id, r, ts(4)).unwrap();
    store.apply(std::sync::Arc::new(s.take_changes())).await.unwrap();

    let done = store.get_job(ja).await.unwrap().unwrap();
    assert_eq!((done.state, done.exit_code, done.started_at, done.finished_at), (JobState::Succeeded, Some(0), Some(ts(3)), Some(ts(4))));
    let attempts = store.list_attempts(ja).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!((attempts[0].cpu_time_ms, attempts[0].max_rss_mb, attempts[0].log_bytes), (5, 6, 7));
    let events: Vec<_> = store.list_events(ja).await.unwrap().iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(
        events,
        [
            (None, JobState::Pending),
            (Some(JobState::Pending), JobState::Scheduled),
            (Some(JobState::Scheduled), JobState::Running),
            (Some(JobState::Running), JobState::Succeeded)
        ]
    );

    assert_eq!((done.sla.status, done.sla.wait_ms, done.sla.decided_at), (SlaStatus::Met, Some(2), Some(ts(3))), "queue wait 1 → 3 ms");
    let counts = store.sla_counts(ts(0), None).await.unwrap();
    let acme = TenantId::parse("acme").unwrap();
    assert_eq!(counts, [SlaCount { tenant: acme, level: SlaLevel::Medium, met: true, bin: wait_bin(2), n: 1 }], "counted with the job's start");
    assert!(store.sla_counts(ts(3_600_000), None).await.unwrap().is_empty(), "decided before the window");

    let live = store.load_live().await.unwrap();
    assert_eq!(live.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [jb], "only the unfinished job is live");
    assert_eq!((live.jobs[0].sla.waited_ms, live.jobs[0].sla.since), (0, Some(ts(1))), "the running clock round-trips");
    assert_eq!(live.jobs[0].warnings, ["quota_exceeded"], "admission warnings round-trip");
    assert_eq!(live.attempts.len(), 1);
    assert_eq!(live.workers.len(), 1);
    assert_eq!(live.workers[0].state, WorkerState::Busy);

    // The waiting job breaches (after 1 h), is stored so, and is listed.
    s.heartbeat(w.id, &[], None, ts(3_600_002)).unwrap();
    s.tick(ts(3_600_002));
    store.apply(std::sync::Arc::new(s.take_changes())).await.unwrap();
    let breached = store.sla_breaches(&BreachFilter { limit: 10, ..BreachFilter::default() }).await.unwrap();
    assert_eq!(breached.iter().map(|j| (j.id, j.sla.status, j.sla.breached_at)).collect::<Vec<_>>(), [(jb, SlaStatus::Breached, Some(ts(3_600_001)))]);
    let of_other = BreachFilter { tenant: Some(TenantId::parse("other").unwrap()), limit: 10, ..BreachFilter::default() };
    assert!(store.sla_breaches(&of_other).await.unwrap().is_empty());
}

async fn job_lists_filter_and_paginate_newest_first(store: &dyn Store) {
    let mut s = Scheduler::new(SchedConfig::default());
    for n in 10..20u128 {
        let t = if n % 2 == 0 { "even" } else { "odd" };
        s.submit(job(n, t, &[("n", &n.to_string())]), ts(n as i64)).unwrap();
    }
    store.apply(std::sync::Arc::new(s.take_changes())).await.unwrap();
    let even = TenantId::parse("even").unwrap();
    let page1 = store.list_jobs(&JobFilter { tenant: Some(even.clone()), limit: 3, ..Default::default() }).await.unwrap();
    let ids: Vec<u128> = page1.iter().map(|j| j.id.as_uuid().as_u128() >> 80).collect();
    assert_eq!(ids, [18, 16, 14]);
    let page2 = store.list_jobs(&JobFilter { tenant: Some(even), limit: 3, before: Some(page1[2].id), ..Default::default() }).await.unwrap();
    let ids: Vec<u128> = page2.iter().map(|j| j.id.as_uuid().as_u128() >> 80).collect();
    assert_eq!(ids, [12, 10]);
    let labelled = store.list_jobs(&JobFilter { labels: vec![crate::LabelTerm::Eq("n".into(), "13".into())], limit: 50, ..Default::default() }).await.unwrap();
    assert_eq!(labelled.len(), 1);
    let selected = |selector: &str| {
        let f = JobFilter {
            tenant: Some(TenantId::parse("even").unwrap()),
            labels: crate::LabelTerm::parse_selector(selector).unwrap(),
            limit: 50,
            ..Default::default()
        };
        async move { store.list_jobs(&f).await.unwrap().iter().map(|j| j.id.as_uuid().as_u128() >> 80).collect::<Vec<_>>() }
    };
    assert_eq!(selected("n!=12").await, [18, 16, 14, 10], "k!=v");
    assert_eq!(selected("n, n!=12 ,n!=14").await, [18, 16, 10], "every term holds");
    assert_eq!(selected("n=16,n!=12").await, [16]);
    assert!(selected("!n").await.is_empty(), "!k");
    assert_eq!(selected("team!=ml").await.len(), 5, "k!=v holds for jobs without k");
    assert!(selected("team").await.is_empty(), "k");
    assert!(crate::LabelTerm::parse_selector("=x").is_err() && crate::LabelTerm::parse_selector("a!b").is_err());
    let by_state = store.list_jobs(&JobFilter { states: vec![JobState::Succeeded], limit: 50, ..Default::default() }).await.unwrap();
    assert!(by_state.iter().all(|j| j.state == JobState::Succeeded) && !by_state.is_empty());
    let seen = |visible: Vec<TenantId>| JobFilter { visible: Some(visible), limit: 500, ..Default::default() };
    let odd = TenantId::parse("odd").unwrap();
    let only_odd = store.list_jobs(&seen(vec![odd.clone(), TenantId::parse("nobody").unwrap()])).await.unwrap();
    assert_eq!(only_odd.len(), 5, "visible tenants only");
    assert!(only_odd.iter().all(|j| j.tenant == odd));
    assert!(store.list_jobs(&seen(vec![])).await.unwrap().is_empty(), "no visible tenant, no rows");
    assert!(store.list_bursts(&BurstFilter { visible: Some(vec![]), limit: 50, ..Default::default() }).await.unwrap().is_empty());
}

/// `state=pending,held` is read one state at a time and merged: the same pages, newest first,
/// as one query over both would give.
async fn lists_of_several_live_states_merge_newest_first(store: &dyn Store) {
    let mut s = Scheduler::new(SchedConfig::default());
    for n in 500..510u128 {
        let j = job(n, "merge", &[("k", if n % 3 == 0 { "x" } else { "y" })]);
        let mut spec = (*j.spec).clone();
        spec.hold = n % 2 == 1;
        s.submit(Job::new(j.id, j.tenant, spec, ts(n as i64)), ts(n as i64)).unwrap();
    }
    store.apply(std::sync::Arc::new(s.take_changes())).await.unwrap();
    let tenant = TenantId::parse("merge").unwrap();
    let page = |states: Vec<JobState>, label: Option<(&str, &str)>, before: Option<JobId>, limit: u32| {
        let f = JobFilter {
            tenant: Some(tenant.clone()),
            states,
            labels: label.map(|(k, v): (&str, &str)| crate::LabelTerm::Eq(k.into(), v.into())).into_iter().collect(),
            before,
            limit,
            ..Default::default()
        };
        async move { store.list_jobs(&f).await.unwrap() }
    };
    let both = vec![JobState::Pending, JobState::Held];
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let p = page(both.clone(), None, before, 4).await;
        assert!(p.iter().all(|j| both.contains(&j.state)), "{p:?}");
        let Some(last) = p.last() else { break };
        before = Some(last.id);
        seen.extend(p.iter().map(|j| (j.id.as_uuid().as_u128() >> 80, j.state)));
    }
    let expected: Vec<(u128, JobState)> = (500..510u128).rev().map(|n| (n, if n % 2 == 1 { JobState::Held } else { JobState::Pending })).collect();
    assert_eq!(seen, expected, "pages of 4 across both states, newest first");
    let labelled = page(vec![JobState::Held, JobState::Running, JobState::Pending], Some(("k", "x")), None, 50).await;
    let ids: Vec<u128> = labelled.iter().map(|j| j.id.as_uuid().as_u128() >> 80).collect();
    assert_eq!(ids, [507, 504, 501]);
    assert!(page(vec![JobState::Running, JobState::Scheduled], None, None, 50).await.is_empty());
}

async fn pools_workers_and_live_counts_round_trip(store: &dyn Store) {
    let mut p = hodei_core::Pool {
        id: PoolId::parse("gpu-a").unwrap(),
        name: "GPU A".into(),
        pool_type: hodei_core::PoolType::Static,
        provider: "local".into(),
        worker_resources: Resources::new(8000, 32768, 2),
        worker_slots: 8,
        min_size: 1,
        max_size: 4,
        desired_size: 1,
        auto_scaling_enabled: true,
        idle_timeout: std::time::Duration::from_secs(90),
        allowed_tenants: vec![TenantId::parse("ml").unwrap(), TenantId::parse("bio").unwrap()],
        scaling_policies: vec![
            Policy {
                id: "grow".into(),
                name: "Grow".into(),
                mode: Mode::Threshold,
                trigger: Some(Trigger::parse("queue_depth >= 2.5").unwrap()),
                direction: Direction::ScaleUp,
                step: 2,
                cooldown: std::time::Duration::from_secs(60),
                window: std::time::Duration::from_secs(30),
                hysteresis_pct: 20,
                enabled: true,
            },
            Policy {
                id: "fc".into(),
                name: "fc".into(),
                mode: Mode::Forecast,
                trigger: None,
                direction: Direction::ScaleDown,
                step: 1,
                cooldown: std::time::Duration::from_secs(120),
                window: std::time::Duration::from_secs(60),
                hysteresis_pct: 10,
                enabled: false,
            },
        ],
        labels: BTreeMap::from([("zone".into(), "a".into())]),
        managed_by: "config".into(),
        state: hodei_core::PoolState::Active,
        state_reason: String::new(),
        created_at: ts(5),
        updated_at: ts(5),
        version: 1,
    };
    store.upsert_pool(&p, Some("token-hash")).await.unwrap();
    assert_eq!(store.get_pool(&p.id).await.unwrap(), Some((p.clone(), "token-hash".to_owned())));
    // Replacing it without a new hash keeps the join token and bumps the version.
    p.max_size = 6;
    p.updated_at = ts(6);
    store.upsert_pool(&p, None).await.unwrap();
    let (stored, hash) = store.get_pool(&p.id).await.unwrap().unwrap();
    assert_eq!((stored.max_size, stored.version, hash.as_str()), (6, 2, "token-hash"));
    assert!(store.list_pools().await.unwrap().iter().any(|x| x.id == p.id));
    assert_eq!(store.get_pool(&PoolId::parse("nope").unwrap()).await.unwrap(), None);
    // A rotation replaces the hash and nothing else.
    assert!(store.set_pool_join_token(&p.id, "rotated-hash").await.unwrap());
    let (after, hash) = store.get_pool(&p.id).await.unwrap().unwrap();
    assert_eq!((after, hash.as_str()), (stored.clone(), "rotated-hash"));
    assert!(!store.set_pool_join_token(&PoolId::parse("nope").unwrap(), "x").await.unwrap());
    // Resizing sets size, state and reason alone; replacing the spec from the config keeps the size.
    assert!(store.set_pool_size(&p.id, 3, hodei_core::PoolState::Scaling, "policy grow").await.unwrap());
    let (resized, _) = store.get_pool(&p.id).await.unwrap().unwrap();
    assert_eq!((resized.desired_size, resized.state, resized.state_reason.as_str(), resized.version), (3, hodei_core::PoolState::Scaling, "policy grow", 2));
    store.upsert_pool(&hodei_core::Pool { state: hodei_core::PoolState::Active, state_reason: String::new(), ..stored.clone() }, None).await.unwrap();
    let (kept, _) = store.get_pool(&p.id).await.unwrap().unwrap();
    assert_eq!((kept.desired_size, kept.state), (3, hodei_core::PoolState::Active));
    store.set_pool_size(&p.id, stored.desired_size, stored.state, "").await.unwrap();
    assert_eq!(store.get_pool(&p.id).await.unwrap().unwrap().0, hodei_core::Pool { version: 3, ..stored });
    assert!(!store.set_pool_size(&PoolId::parse("nope").unwrap(), 1, hodei_core::PoolState::Active, "").await.unwrap());
    // A pool on its way out is not revived by a decision taken before it was deleted.
    let leaving = hodei_core::Pool { id: PoolId::parse("leaving").unwrap(), state: hodei_core::PoolState::Draining, ..p.clone() };
    store.upsert_pool(&leaving, Some("h")).await.unwrap();
    assert!(!store.set_pool_size(&leaving.id, 2, hodei_core::PoolState::Active, "late decision").await.unwrap());
    assert!(store.set_pool_size(&leaving.id, 0, hodei_core::PoolState::Destroyed, "gone").await.unwrap());
    assert!(!store.set_pool_size(&leaving.id, 1, hodei_core::PoolState::Scaling, "late decision").await.unwrap());
    let (gone, _) = store.get_pool(&leaving.id).await.unwrap().unwrap();
    assert_eq!((gone.desired_size, gone.state, gone.state_reason.as_str()), (0, hodei_core::PoolState::Destroyed, "gone"));
    // Creating refuses an id in use, and changes nothing then.
    let fresh = hodei_core::Pool { id: PoolId::parse("made-by-api").unwrap(), managed_by: "api".into(), ..p.clone() };
    store.create_pool(&fresh, "fresh-hash").await.unwrap();
    assert_eq!(store.get_pool(&fresh.id).await.unwrap(), Some((fresh.clone(), "fresh-hash".to_owned())));
    let again = store.create_pool(&hodei_core::Pool { max_size: 9, ..fresh.clone() }, "other").await;
    assert!(matches!(again, Err(StoreError::AlreadyExists { .. })), "{again:?}");
    assert_eq!(store.get_pool(&fresh.id).await.unwrap(), Some((fresh, "fresh-hash".to_owned())));

    let w = Worker { labels: BTreeMap::from([("disk".into(), "ssd".into())]), ..worker(9) };
    store.register_worker(&w, "hash-9").await.unwrap();
    let all = WorkerFilter { limit: 500, ..WorkerFilter::default() };
    let listed = store.list_workers(&all).await.unwrap();
    let got = listed.iter().find(|x| x.id == w.id).expect("the registered worker is listed");
    assert_eq!((&got.instance_name, &got.labels, got.resources, got.slots), (&w.instance_name, &w.labels, w.resources, w.slots));
    assert_eq!(store.get_worker(w.id).await.unwrap().as_ref(), Some(got));
    assert_eq!(store.get_worker(WorkerId::from_uuid(Uuid::from_u128(12345))).await.unwrap(), None);
    // Pages, newest first, and filters.
    for n in 20..25u128 {
        let other = Worker { pool_id: PoolId::parse(if n % 2 == 0 { "even" } else { "odd" }).unwrap(), ..worker(n << 80) };
        store.register_worker(&other, "h").await.unwrap();
    }
    let page = |before: Option<WorkerId>, pool: &str| {
        let f = WorkerFilter { pool: Some(PoolId::parse(pool).unwrap()), before, limit: 2, ..WorkerFilter::default() };
        async move { store.list_workers(&f).await.unwrap().iter().map(|w| w.id.as_uuid().as_u128() >> 80).collect::<Vec<_>>() }
    };
    assert_eq!(page(None, "even").await, [24, 22]);
    assert_eq!(page(Some(WorkerId::from_uuid(Uuid::from_u128(22 << 80))), "even").await, [20]);
    assert_eq!(page(None, "odd").await, [23, 21]);
    let registering = WorkerFilter { states: vec![WorkerState::Registering], limit: 500, ..WorkerFilter::default() };
    assert!(store.list_workers(&registering).await.unwrap().len() >= 5);
    let busy = WorkerFilter { states: vec![WorkerState::Busy], pool: Some(PoolId::parse("even").unwrap()), limit: 500, ..WorkerFilter::default() };
    assert!(store.list_workers(&busy).await.unwrap().is_empty());
    let either = WorkerFilter {
        states: vec![WorkerState::Busy, WorkerState::Registering],
        pool: Some(PoolId::parse("even").unwrap()),
        limit: 500,
        ..WorkerFilter::default()
    };
    assert_eq!(store.list_workers(&either).await.unwrap().len(), 3, "any of several states");
    // Label selectors, as for jobs: the ssd worker, and every other one.
    let with = |labels: &str| {
        let f = WorkerFilter { labels: crate::LabelTerm::parse_selector(labels).unwrap(), limit: 500, ..WorkerFilter::default() };
        async move { store.list_workers(&f).await.unwrap().iter().map(|x| x.id).collect::<Vec<_>>() }
    };
    assert_eq!(with("disk=ssd").await, [w.id]);
    assert_eq!(with("disk").await, [w.id]);
    assert!(with("disk=hdd").await.is_empty());
    let others = with("disk!=ssd").await;
    assert_eq!((others.len(), others.contains(&w.id)), (with("!disk").await.len(), false), "k!=v holds where k is missing");
    assert!(others.len() >= 5);
    assert_eq!(store.worker_session_hash(WorkerId::from_uuid(Uuid::from_u128(12345))).await.unwrap(), None);

    // Live jobs are pending, held, scheduled or running; ended ones do not count.
    let counted = TenantId::parse("counted").unwrap();
    let mut s = Scheduler::new(SchedConfig::default());
    for n in 60..63 {
        s.submit(job(n, "counted", &[]), ts(n as i64)).unwrap();
    }
    let ended = JobId::from_uuid(Uuid::from_u128(60 << 80));
    s.cancel(ended, hodei_core::job::Actor::Api, ts(63)).unwrap();
    store.apply(std::sync::Arc::new(s.take_changes())).await.unwrap();
    assert_eq!(store.count_live_jobs(&counted).await.unwrap(), 2);
    let pending = JobFilter { tenant: Some(counted.clone()), states: vec![JobState::Pending], limit: 10, ..Default::default() };
    assert_eq!(store.list_jobs(&pending).await.unwrap().len(), 2, "a filter on live states lists them");
    let both = JobFilter { states: vec![JobState::Pending, JobState::Cancelled], ..pending };
    assert_eq!(store.list_jobs(&both).await.unwrap().len(), 3, "live and ended states mixed");
    assert_eq!(store.get_job(ended).await.unwrap().map(|j| j.state), Some(JobState::Cancelled));
}

/// 20 000 jobs in one batch are stored, each with its own spec and creation event.
async fn a_large_batch_is_stored_whole(store: &dyn Store) {
    let mut s = Scheduler::new(SchedConfig::default());
    let roomy = hodei_core::Quota { max_queued_jobs: 100_000, ..hodei_core::Quota::DEFAULT };
    s.set_tenant(&TenantId::parse("bulk").unwrap(), hodei_core::TenantPolicy { weight: 1, quota: roomy, version: 1, ..Default::default() }, ts(0));
    let jobs: Vec<Job> = (1_000..21_000).map(|n| job(n, "bulk", &[("n", &n.to_string())])).collect();
    assert!(s.submit_all(jobs, true, ts(1_000)).iter().all(Result::is_ok));
    store.apply(std::sync::Arc::new(s.take_changes())).await.unwrap();
    assert_eq!(store.count_live_jobs(&TenantId::parse("bulk").unwrap()).await.unwrap(), 20_000);
    let last = store.get_job(JobId::from_uuid(Uuid::from_u128(20_999 << 80))).await.unwrap().expect("the last job");
    assert_eq!(last.spec.labels.get("n").map(String::as_str), Some("20999"));
    let events = store.list_events(last.id).await.unwrap();
    assert_eq!(events.iter().map(|e| (e.from, e.to)).collect::<Vec<_>>(), [(None, JobState::Pending)]);
}

/// Priced attempts are stored as records and added to the daily rollups; a breakdown by any
/// grouping adds up to the records, to the micro-dollar, within the caller's tenants.
async fn the_cost_ledger_adds_up_in_its_rollups(store: &dyn Store) {
    use crate::{CostGroup, CostQuery};
    use hodei_core::cost::{RateVersion, Rates, price};
    use hodei_core::sched::{AttemptCost, Changes};
    const DAY: i64 = 86_400_000;
    let doubled = RateVersion { effective_from: ts(20_000 * DAY + 3_600_000), rates: Rates { cpu_core_hour: 100_000, ..Rates::DEFAULT } };
    let cost = |n: u128, tenant: &str, pool: &str, start: i64, end: i64, cpu_m: u32| {
        let res = Resources::new(cpu_m, 512, 0);
        AttemptCost {
            attempt_id: AttemptId::from_uuid(Uuid::from_u128(9_000 + n)),
            job_id: JobId::from_uuid(Uuid::from_u128(8_000 + n)),
            tenant: Some(TenantId::parse(tenant).unwrap()),
            job_name: Some("render".into()),
            pool_id: PoolId::parse(pool).unwrap(),
            resources: res,
            segments: price(ts(start), ts(end), &res, &[doubled]),
            keep_record: true,
            by_pool: true,
        }
    };
    // Across midnight (two days), across the rate change, and another tenant's.
    let costs = vec![
        cost(1, "ledger-a", "local", 20_000 * DAY - 1_800_000, 20_000 * DAY + 1_800_000, 2000),
        cost(2, "ledger-a", "gpu", 20_000 * DAY + 3_000_000, 20_000 * DAY + 4_200_000, 1000),
        cost(3, "ledger-b", "local", 20_000 * DAY + 10_000, 20_000 * DAY + 11_001, 500),
    ];
    assert_eq!(costs[0].segments.len(), 2);
    assert_eq!(costs[1].segments.len(), 2);
    let total: i64 = costs.iter().map(AttemptCost::cost_micros).sum();
    store.apply(std::sync::Arc::new(Changes { costs: costs.clone(), ..Changes::default() })).await.unwrap();
    let q = |group_by, visible: Option<Vec<TenantId>>| CostQuery { from_day: 19_999, to_day: 20_000, tenant: None, pool: None, visible, group_by };
    for g in [CostGroup::Tenant, CostGroup::Pool, CostGroup::Day] {
        let rows = store.cost_breakdown(&q(g, None)).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.cost_micros).sum::<i64>(), total, "{g:?}: {rows:?}");
        assert_eq!(rows.iter().map(|r| r.attempts).sum::<i64>(), 3, "{g:?}: each attempt counted once, on the day it ended");
    }
    let by_name = store.cost_breakdown(&q(CostGroup::JobName, None)).await.unwrap();
    assert_eq!(
        by_name.iter().map(|r| (r.key.as_str(), r.cost_micros, r.attempts)).collect::<Vec<_>>(),
        [("render", total, 3)],
        "by job name, from the records"
    );
    let top = store.top_cost_jobs(&q(CostGroup::Tenant, None), 2).await.unwrap();
    let mut want: Vec<(JobId, i64)> = costs.iter().map(|c| (c.job_id, c.cost_micros())).collect();
    want.sort_by_key(|w| std::cmp::Reverse(w.1));
    assert_eq!(top.iter().map(|j| (j.job_id, j.cost_micros)).collect::<Vec<_>>(), want[..2], "the most costly first, at most the limit");
    assert_eq!((top[0].job_name.as_str(), top[0].tenant.as_str()), ("render", "ledger-a"));
    let b_top = store.top_cost_jobs(&q(CostGroup::Tenant, Some(vec![TenantId::parse("ledger-b").unwrap()])), 10).await.unwrap();
    assert_eq!(b_top.iter().map(|j| j.job_id).collect::<Vec<_>>(), [costs[2].job_id]);
    let by_day = store.cost_breakdown(&q(CostGroup::Day, None)).await.unwrap();
    let day0: i64 = costs[0].segments[0].cost_micros;
    assert_eq!(by_day.iter().find(|r| r.key == "19999").map(|r| r.cost_micros), Some(day0), "{by_day:?}");
    let by_tenant = store.cost_breakdown(&q(CostGroup::Tenant, None)).await.unwrap();
    assert_eq!(by_tenant[0].key, "ledger-a", "most costly first: {by_tenant:?}");
    let b_only = store.cost_breakdown(&q(CostGroup::Tenant, Some(vec![TenantId::parse("ledger-b").unwrap()]))).await.unwrap();
    assert_eq!(b_only.iter().map(|r| (r.key.as_str(), r.cost_micros, r.cpu_m_seconds)).collect::<Vec<_>>(), [("ledger-b", costs[2].cost_micros(), 500 * 2)]);
    let gpu = store.cost_breakdown(&CostQuery { pool: Some(PoolId::parse("gpu").unwrap()), ..q(CostGroup::Pool, None) }).await.unwrap();
    assert_eq!(gpu.iter().map(|r| r.cost_micros).sum::<i64>(), costs[1].cost_micros());
    // The same batch again adds again: rollups accumulate.
    let costs_len: u64 = costs.iter().map(|c| c.segments.len() as u64).sum();
    store.apply(std::sync::Arc::new(Changes { costs, ..Changes::default() })).await.unwrap();
    let rows = store.cost_breakdown(&q(CostGroup::Pool, None)).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.cost_micros).sum::<i64>(), 2 * total);
    assert!(store.cost_breakdown(&q(CostGroup::Tenant, Some(vec![]))).await.unwrap().is_empty(), "no visible tenant, nothing");
    // Records past their retention go; the rollups they were added to stay.
    let records: u64 = 2 * costs_len;
    // (Earlier checks' attempts ended in 1970: their records go first.)
    store.forget_cost_records(ts(19_000 * DAY)).await.unwrap();
    // Per batch: both stretches of the first, the first of the second (ends at 01:00), the third.
    assert_eq!(store.forget_cost_records(ts(20_000 * DAY + 3_600_001)).await.unwrap(), 2 * 4, "the stretches ended by 01:00");
    assert_eq!(store.forget_cost_records(ts(21_000 * DAY)).await.unwrap(), records - 8);
    let rows = store.cost_breakdown(&q(CostGroup::Pool, None)).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.cost_micros).sum::<i64>(), 2 * total);
    // Without its record (`track_by_job: false`) an attempt still adds to the rollups, exactly;
    // nothing of it is left by job.
    let quiet = AttemptCost { keep_record: false, ..cost(4, "ledger-c", "local", 20_000 * DAY + 20_000, 20_000 * DAY + 25_000, 1000) };
    store.apply(std::sync::Arc::new(Changes { costs: vec![quiet.clone()], ..Changes::default() })).await.unwrap();
    let c_only = |g| q(g, Some(vec![TenantId::parse("ledger-c").unwrap()]));
    let by_tenant = store.cost_breakdown(&c_only(CostGroup::Tenant)).await.unwrap();
    assert_eq!(by_tenant.iter().map(|r| (r.key.as_str(), r.cost_micros, r.attempts)).collect::<Vec<_>>(), [("ledger-c", quiet.cost_micros(), 1)]);
    assert!(store.cost_breakdown(&c_only(CostGroup::JobName)).await.unwrap().is_empty());
    assert!(store.top_cost_jobs(&c_only(CostGroup::Tenant), 10).await.unwrap().is_empty());
    assert_eq!(store.forget_cost_records(ts(22_000 * DAY)).await.unwrap(), 0, "it left no record");
    // Without its pool (`track_by_pool: false`): kept under no pool, still exactly.
    let poolless = AttemptCost { by_pool: false, ..cost(5, "ledger-d", "gpu", 20_000 * DAY + 30_000, 20_000 * DAY + 31_000, 1000) };
    store.apply(std::sync::Arc::new(Changes { costs: vec![poolless.clone()], ..Changes::default() })).await.unwrap();
    let d_only = |g| q(g, Some(vec![TenantId::parse("ledger-d").unwrap()]));
    let by_pool = store.cost_breakdown(&d_only(CostGroup::Pool)).await.unwrap();
    assert_eq!(by_pool.iter().map(|r| (r.key.as_str(), r.cost_micros)).collect::<Vec<_>>(), [("", poolless.cost_micros())]);
    let gpu = store.cost_breakdown(&CostQuery { pool: Some(PoolId::parse("gpu").unwrap()), ..d_only(CostGroup::Tenant) }).await.unwrap();
    assert!(gpu.is_empty(), "nothing of it is under its pool: {gpu:?}");
}

async fn rate_versions_list_oldest_first_one_per_instant(store: &dyn Store) {
    use crate::StoredRates;
    use hodei_core::cost::{RateVersion, Rates};
    let v = |at: i64, cpu: i64, source: &str| StoredRates {
        version: RateVersion { effective_from: ts(at), rates: Rates { cpu_core_hour: cpu, ..Rates::DEFAULT } },
        source: source.into(),
        created_by: "admin".into(),
    };
    assert!(store.list_rate_versions().await.unwrap().is_empty());
    store.add_rate_version(&v(5_000, 70_000, "api")).await.unwrap();
    store.add_rate_version(&v(0, 50_000, "config")).await.unwrap();
    assert!(matches!(store.add_rate_version(&v(5_000, 1, "api")).await, Err(StoreError::AlreadyExists { .. })));
    assert_eq!(store.list_rate_versions().await.unwrap(), [v(0, 50_000, "config"), v(5_000, 70_000, "api")]);
}

async fn budgets_round_trip_and_refuse_stale_updates(store: &dyn Store) {
    use hodei_core::budget::{Budget, OnExhausted, Period};
    let b = |n: u128, tenant: &str| Budget {
        id: hodei_core::BudgetId::from_uuid(Uuid::from_u128(n)),
        tenant: TenantId::parse(tenant).unwrap(),
        amount_micros: 5_000_000,
        period: Period::Weekly,
        thresholds_pct: vec![50, 75, 100],
        on_exhausted: OnExhausted::Reject,
        created_at: ts(n as i64),
        updated_at: ts(n as i64),
        version: 1,
    };
    let (one, two) = (b(1, "budget-a"), b(2, "budget-b"));
    store.create_budget(&one).await.unwrap();
    store.create_budget(&two).await.unwrap();
    assert_eq!(store.get_budget(one.id).await.unwrap(), Some(one.clone()));
    let bigger = Budget { amount_micros: 9_000_000, period: Period::Total, version: 2, updated_at: ts(9), ..one.clone() };
    store.update_budget(&bigger).await.unwrap();
    assert!(matches!(store.update_budget(&bigger).await, Err(StoreError::VersionMismatch { .. })), "a stale write is refused");
    assert_eq!(store.list_budgets(None, None).await.unwrap(), [bigger.clone(), two.clone()]);
    assert_eq!(store.list_budgets(Some(&two.tenant), None).await.unwrap(), std::slice::from_ref(&two));
    assert_eq!(store.list_budgets(None, Some(std::slice::from_ref(&one.tenant))).await.unwrap(), [bigger]);
    assert!(store.list_budgets(None, Some(&[])).await.unwrap().is_empty());
    assert!(store.delete_budget(two.id).await.unwrap());
    assert!(!store.delete_budget(two.id).await.unwrap());
    assert_eq!(store.get_budget(two.id).await.unwrap(), None);
}

async fn alerts_fire_once_per_key_and_resolve(store: &dyn Store) {
    use crate::AlertFilter;
    use hodei_core::alert::{Alert, AlertState};
    let a = |n: u128, key: &str, tenant: &str| Alert {
        id: hodei_core::AlertId::from_uuid(Uuid::from_u128(n)),
        kind: "budget_threshold".into(),
        severity: "warning".into(),
        tenant: Some(TenantId::parse(tenant).unwrap()),
        scope: "budget:x".into(),
        dedup_key: key.into(),
        value: 80.0,
        message: "80 % spent".into(),
        state: AlertState::Firing,
        fired_at: ts(n as i64),
        acknowledged_at: None,
        acknowledged_by: None,
        resolved_at: None,
    };
    assert!(store.raise_alert(&a(1, "k80", "alerts-a")).await.unwrap());
    assert!(!store.raise_alert(&a(2, "k80", "alerts-a")).await.unwrap(), "once per key");
    assert!(store.raise_alert(&a(3, "k90", "alerts-a")).await.unwrap());
    assert!(store.raise_alert(&a(4, "k100", "alerts-b")).await.unwrap());
    let all = |f: AlertFilter| async move {
        store
            .list_alerts(&AlertFilter { limit: if f.limit == 0 { 50 } else { f.limit }, ..f })
            .await
            .unwrap()
            .iter()
            .map(|a| a.dedup_key.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(all(AlertFilter::default()).await, ["k100", "k90", "k80"], "newest first");
    assert_eq!(all(AlertFilter { visible: Some(vec![TenantId::parse("alerts-a").unwrap()]), ..Default::default() }).await, ["k90", "k80"]);
    assert!(store.ack_alert(hodei_core::AlertId::from_uuid(Uuid::from_u128(1)), "admin", ts(10)).await.unwrap());
    assert!(!store.ack_alert(hodei_core::AlertId::from_uuid(Uuid::from_u128(1)), "admin", ts(11)).await.unwrap(), "only a firing alert");
    let acked = store.get_alert(hodei_core::AlertId::from_uuid(Uuid::from_u128(1))).await.unwrap().unwrap();
    assert_eq!((acked.state, acked.acknowledged_by.as_deref(), acked.acknowledged_at), (AlertState::Acknowledged, Some("admin"), Some(ts(10))));
    assert_eq!(store.count_open_alerts().await.unwrap(), [("budget_threshold".to_owned(), "warning".to_owned(), 3)]);
    assert_eq!(store.resolve_alerts("budget:x", &["k100".to_owned()], ts(20)).await.unwrap(), 2);
    assert_eq!(all(AlertFilter { state: Some(AlertState::Resolved), ..Default::default() }).await, ["k90", "k80"]);
    assert_eq!(all(AlertFilter { before: Some(hodei_core::AlertId::from_uuid(Uuid::from_u128(4))), limit: 1, ..Default::default() }).await, ["k90"]);
}

/// Usage round-trips per attempt (a write replaces), expires by age, and the analyzer reads
/// the latest finished runs of each (tenant, job name) with what they asked for.
async fn usage_is_kept_per_attempt_and_read_per_job_name(store: &dyn Store) {
    use crate::AttemptUsage;
    use hodei_core::usage::{Sample, Series, summarize};
    let mut s = Scheduler::new(SchedConfig::default());
    let w = Worker { slots: 8, resources: Resources::new(16_000, 65_536, 0), ..worker(70) };
    store.register_worker(&w, "hash-70").await.unwrap();
    s.register_worker(w.clone(), ts(0));
    s.connect_worker(w.id, &[], vec![], ts(0)).unwrap();
    let jobs = [job(90_700, "usage-a", &[]), job(90_701, "usage-a", &[]), job(90_702, "usage-a", &[]), job(90_703, "usage-b", &[])];
    for j in &jobs {
        s.submit(j.clone(), ts(1)).unwrap();
    }
    let mut n = 97_000_000u128;
    let mut mint = || {
        n += 1;
        AttemptId::from_uuid(Uuid::from_u128(n))
    };
    s.schedule(ts(2), &mut mint);
    store.apply(std::sync::Arc::new(s.take_changes())).await.unwrap();
    let mut usage = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        let aid = s.job(&j.id).unwrap().current_attempt.unwrap();
        let end = 10_000 + i as i64 * 1000;
        s.accepted(aid, w.id, ts(3), ts(3)).unwrap();
        let oom = i == 1;
        let r = AttemptResult {
            outcome: if oom { Outcome::Failed } else { Outcome::Succeeded },
            exit_code: (!oom).then_some(0),
            signal: None,
            failure_reason: oom.then_some(hodei_core::FailureReason::Oom),
            started_at: ts(3),
            finished_at: ts(end),
            cpu_time_ms: 5_000,
            max_rss_mb: 100,
            log_bytes: 0,
            log_truncated: false,
        };
        s.finish(aid, w.id, r, ts(end)).unwrap();
        let mut series = Series::default();
        for k in 0..3 {
            series.push(&Sample { at: ts(3 + k * 1000), cpu_m: 500 + k as u32, rss_mb: 90 + k as u32, ..Sample::default() });
        }
        let summary = summarize(&series, (end - 3) as u64, 5_000, 100);
        usage.push(AttemptUsage { attempt: aid, series, summary: Some(summary), updated_at: ts(end) });
    }
    store.apply(std::sync::Arc::new(s.take_changes())).await.unwrap();
    // A running attempt's series first, replaced by its final one.
    let early = AttemptUsage { summary: None, series: Series { step_ms: 0, points: usage[0].series.points[..1].to_vec() }, ..usage[0].clone() };
    store.put_usage(std::slice::from_ref(&early)).await.unwrap();
    assert_eq!(store.attempt_usage(&[early.attempt]).await.unwrap(), [early]);
    store.put_usage(&usage).await.unwrap();
    let ids: Vec<AttemptId> = usage.iter().map(|u| u.attempt).collect();
    let mut back = store.attempt_usage(&ids).await.unwrap();
    back.sort_by_key(|u| u.updated_at);
    assert_eq!(back, usage);

    let runs = store.usage_runs(ts(0), None, 2, 100).await.unwrap();
    let seen: Vec<(&str, i64, bool)> = runs.iter().map(|r| (r.tenant.as_str(), r.finished_at.as_millis(), r.oom)).collect();
    assert_eq!(seen, [("usage-a", 12_000, false), ("usage-a", 11_000, true), ("usage-b", 13_000, false)], "the latest two per name");
    assert_eq!((runs[0].job_name.as_str(), runs[0].requested, runs[0].summary), ("echo", jobs[2].spec.resources, usage[2].summary.unwrap()));
    let b = store.usage_runs(ts(0), Some(&TenantId::parse("usage-b").unwrap()), 20, 100).await.unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(store.usage_runs(ts(11_500), None, 20, 100).await.unwrap().len(), 2, "ended since");
    assert_eq!(store.usage_runs(ts(0), None, 20, 1).await.unwrap().len(), 1, "at most the limit");
    assert_eq!(store.forget_usage(ts(11_500)).await.unwrap(), 2);
    assert_eq!(store.attempt_usage(&ids).await.unwrap().len(), 2);
}

async fn cost_reports_list_newest_first_within_what_the_caller_sees(store: &dyn Store) {
    use crate::StoredReport;
    let report = |n: u128, tenant: Option<&str>| StoredReport {
        id: Uuid::from_u128(n << 80),
        tenant: tenant.map(|t| TenantId::parse(t).unwrap()),
        created_by: "admin".into(),
        created_at: ts(n as i64),
        body: format!("{{\"n\":{n}}}"),
    };
    let all = [report(1, Some("rep-a")), report(2, None), report(3, Some("rep-b")), report(4, Some("rep-a"))];
    for r in &all {
        store.put_cost_report(r).await.unwrap();
    }
    assert_eq!(store.get_cost_report(all[1].id).await.unwrap(), Some(all[1].clone()));
    assert_eq!(store.get_cost_report(Uuid::from_u128(99)).await.unwrap(), None);
    let ids = |v: Vec<StoredReport>| v.into_iter().map(|r| r.created_at.as_millis()).collect::<Vec<_>>();
    assert_eq!(ids(store.list_cost_reports(None, None, None, 10).await.unwrap()), [4, 3, 2, 1]);
    assert_eq!(ids(store.list_cost_reports(None, None, Some(all[3].id), 2).await.unwrap()), [3, 2], "paged by id");
    let a = [TenantId::parse("rep-a").unwrap()];
    assert_eq!(ids(store.list_cost_reports(None, Some(&a), None, 10).await.unwrap()), [4, 1], "a tenant's reader sees its reports, not everyone's");
    assert_eq!(ids(store.list_cost_reports(Some(&a[0]), None, None, 10).await.unwrap()), [4, 1]);
    assert!(store.list_cost_reports(None, Some(&[]), None, 10).await.unwrap().is_empty());
}
