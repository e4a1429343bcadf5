//! Keeps budgets in force (SPEC §2.3): every round — a second apart, and at once when a budget
//! changes — each budget's spend in its current period is read from the cost rollups; a tenant
//! that has spent one has its new and pending jobs held by the scheduler (running ones finish),
//! and with `on_exhausted: reject` its submits are refused with 402. A new period, a larger
//! amount or a deleted budget lifts that in the next round. Each threshold reached raises one
//! `budget_threshold` alert per period (resolved when the spend is below it again: a new period,
//! a larger amount). `hodei_budget_utilization_ratio` shows each tenant's most spent budget,
//! `hodei_alerts_firing` the unresolved alerts.
//!
//! Budget-aware fair share (`budgets.fair_share_demotion`): a tenant spending ahead of its
//! period's pace has its fair-share weight multiplied by the core's `demotion_permille` (the
//! lowest over its budgets), shown by `explain` and `hodei_budget_fair_share_factor`.

use std::collections::{BTreeMap, BTreeSet};

use hodei_core::budget::FULL_WEIGHT;
use std::time::Duration;

use hodei_api::ApiState;
use hodei_core::TenantId;
use hodei_core::budget::Budget;
use tokio::sync::watch;

use crate::engine::EngineHandle;

pub async fn watch(state: ApiState, engine: EngineHandle, every: Duration, demotion: bool, mut stop: watch::Receiver<bool>) {
    // What the scheduler was last told of each tenant not in good standing: spent, and the
    // factor on its weight.
    let mut told: BTreeMap<TenantId, (bool, u32)> = BTreeMap::new();
    // Alert series exported so far, set to 0 once nothing is open in them.
    let mut firing_series: BTreeSet<(String, String)> = ["warning", "critical"].iter().map(|s| ("budget_threshold".to_owned(), (*s).to_owned())).collect();
    for (kind, severity) in &firing_series {
        metrics::gauge!("hodei_alerts_firing", "kind" => kind.clone(), "severity" => severity.clone()).increment(0.0);
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = state.budgets_changed.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let budgets = match state.store.list_budgets(None, None).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read budgets; trying again next round");
                continue;
            }
        };
        let now = state.clock.now();
        let mut by_tenant: BTreeMap<TenantId, Vec<(&Budget, i64)>> = BTreeMap::new();
        let mut failed = false;
        for b in &budgets {
            match hodei_api::budget_spent(state.store.as_ref(), b, now).await {
                Ok((spent, first_day, _)) => {
                    if let Err(e) = alerts(&state, b, spent, first_day, now).await {
                        tracing::warn!(error = %e, budget = %b.id, "cannot raise or resolve a budget's alerts; trying again next round");
                    }
                    by_tenant.entry(b.tenant.clone()).or_default().push((b, spent));
                }
                Err(e) => {
                    tracing::warn!(error = %e, budget = %b.id, "cannot read a budget's spend; trying again next round");
                    failed = true;
                }
            }
        }
        if failed {
            continue;
        }
        let mut refusals = std::collections::HashMap::new();
        let mut now_told: BTreeMap<TenantId, (bool, u32)> = BTreeMap::new();
        for (tenant, list) in &by_tenant {
            let most = list.iter().map(|(b, s)| *s as f64 / b.amount_micros as f64).fold(0.0, f64::max);
            metrics::gauge!("hodei_budget_utilization_ratio", "tenant" => tenant.to_string(), "project" => "").set(most);
            let mut exhausted = false;
            if let Some((reject, why)) = hodei_api::budget_verdict(list) {
                exhausted = true;
                if reject {
                    refusals.insert(tenant.clone(), why);
                }
            }
            // The most demoting of its budgets.
            let factor = match demotion {
                true => list.iter().map(|(b, s)| hodei_core::budget::demotion_permille(b, *s, now)).min().unwrap_or(FULL_WEIGHT),
                false => FULL_WEIGHT,
            };
            metrics::gauge!("hodei_budget_fair_share_factor", "tenant" => tenant.to_string()).set(f64::from(factor) / 1000.0);
            if exhausted || factor != FULL_WEIGHT {
                now_told.insert(tenant.clone(), (exhausted, factor));
            }
        }
        if let Ok(mut r) = state.budget_refusals.write() {
            *r = refusals;
        }
        // Every tenant not in good standing each round (a rebuilt scheduler hears it again;
        // telling it twice changes nothing), and those back in good standing once.
        let back: Vec<TenantId> = told.keys().filter(|t| !now_told.contains_key(*t)).cloned().collect();
        for t in &back {
            metrics::gauge!("hodei_budget_fair_share_factor", "tenant" => t.to_string()).set(1.0);
        }
        for (tenant, (exhausted, factor)) in now_told.iter().map(|(t, v)| (t, *v)).chain(back.iter().map(|t| (t, (false, FULL_WEIGHT)))) {
            if engine.budget(tenant.clone(), exhausted, factor).await.is_err() {
                return;
            }
            if told.get(tenant).copied().unwrap_or((false, FULL_WEIGHT)) != (exhausted, factor) {
                tracing::info!(tenant = %tenant, exhausted, fair_share_factor = f64::from(factor) / 1000.0, "budget");
            }
        }
        told = now_told;
        match state.store.count_open_alerts().await {
            Ok(counts) => {
                for (kind, severity) in firing_series.iter() {
                    if !counts.iter().any(|(k, s, _)| k == kind && s == severity) {
                        metrics::gauge!("hodei_alerts_firing", "kind" => kind.clone(), "severity" => severity.clone()).set(0.0);
                    }
                }
                for (kind, severity, n) in counts {
                    metrics::gauge!("hodei_alerts_firing", "kind" => kind.clone(), "severity" => severity.clone()).set(n as f64);
                    firing_series.insert((kind, severity));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot count alerts"),
        }
    }
}

/// Raises an alert for each threshold `b` has reached in the period starting `first_day` (once:
/// the key names the period), and resolves its alerts for thresholds it is below now.
async fn alerts(state: &ApiState, b: &Budget, spent: i64, first_day: i64, now: hodei_core::Timestamp) -> Result<(), hodei_store::StoreError> {
    let scope = format!("budget:{}", b.id);
    let mut still = Vec::new();
    for (pct, severity) in hodei_core::budget::reached(b, spent) {
        let key = format!("{scope}:{first_day}:{pct}");
        let alert = hodei_core::alert::Alert {
            id: hodei_core::AlertId::from_uuid(uuid::Uuid::now_v7()),
            kind: "budget_threshold".into(),
            severity: severity.into(),
            tenant: Some(b.tenant.clone()),
            scope: scope.clone(),
            dedup_key: key.clone(),
            value: spent as f64 * 100.0 / b.amount_micros as f64,
            message: format!("tenant {} has spent {pct} % of its {} budget ({spent} of {} micro-units)", b.tenant, b.period, b.amount_micros),
            state: hodei_core::alert::AlertState::Firing,
            fired_at: now,
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
        };
        if state.store.raise_alert(&alert).await? {
            tracing::warn!(tenant = %b.tenant, budget = %b.id, threshold = pct, "{}", alert.message);
        }
        still.push(key);
    }
    state.store.resolve_alerts(&scope, &still, now).await?;
    Ok(())
}
