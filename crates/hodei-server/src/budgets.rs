//! Keeps budgets in force (SPEC §2.3): every round — a second apart, and at once when a budget
//! changes — each budget's spend in its current period is read from the cost rollups; a tenant
//! that has spent one has its new and pending jobs held by the scheduler (running ones finish),
//! and with `on_exhausted: reject` its submits are refused with 402. A new period, a larger
//! amount or a deleted budget lifts that in the next round. `hodei_budget_utilization_ratio`
//! shows each tenant's most spent budget.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hodei_api::ApiState;
use hodei_core::TenantId;
use hodei_core::budget::Budget;
use tokio::sync::watch;

use crate::engine::EngineHandle;

pub async fn watch(state: ApiState, engine: EngineHandle, every: Duration, mut stop: watch::Receiver<bool>) {
    // Tenants the scheduler was last told have spent a budget.
    let mut spent_before: BTreeSet<TenantId> = BTreeSet::new();
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
                Ok((spent, _, _)) => by_tenant.entry(b.tenant.clone()).or_default().push((b, spent)),
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
        let mut spent_now = BTreeSet::new();
        for (tenant, list) in &by_tenant {
            let most = list.iter().map(|(b, s)| *s as f64 / b.amount_micros as f64).fold(0.0, f64::max);
            metrics::gauge!("hodei_budget_utilization_ratio", "tenant" => tenant.to_string(), "project" => "").set(most);
            if let Some((reject, why)) = hodei_api::budget_verdict(list) {
                spent_now.insert(tenant.clone());
                if reject {
                    refusals.insert(tenant.clone(), why);
                }
            }
        }
        if let Ok(mut r) = state.budget_refusals.write() {
            *r = refusals;
        }
        // Every spent tenant each round (a rebuilt scheduler hears it again; telling it twice
        // changes nothing), and those no longer spent once.
        for tenant in spent_now.iter().chain(spent_before.difference(&spent_now)) {
            let exhausted = spent_now.contains(tenant);
            if engine.budget_exhausted(tenant.clone(), exhausted).await.is_err() {
                return;
            }
            if exhausted != spent_before.contains(tenant) {
                tracing::info!(tenant = %tenant, exhausted, "budget");
            }
        }
        spent_before = spent_now;
    }
}
