//! Moves burst sessions along with time: an active session expires at `expires_at`, an
//! unanswered request is rejected after `approval_timeout_hours` (rules in the core's
//! [`BurstSession::advance`]). The scheduler's ceiling already stops counting a grant at its
//! expiry instant; this makes the stored session say so and releases the tenant's slot.

use std::sync::Arc;
use std::time::Duration;

use hodei_api::Clock;
use hodei_core::{BurstRules, BurstState};
use hodei_store::{BurstFilter, Store, StoreError};
use tokio::sync::watch;

use crate::engine::EngineHandle;

pub async fn sweep(store: Arc<dyn Store>, engine: EngineHandle, clock: Arc<dyn Clock>, rules: BurstRules, every: Duration, mut stop: watch::Receiver<bool>) {
    let open = BurstFilter { states: vec![BurstState::PendingApproval, BurstState::Active], limit: u32::MAX, ..BurstFilter::default() };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let sessions = match store.list_bursts(&open).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read burst sessions");
                continue;
            }
        };
        let now = clock.now();
        for mut b in sessions {
            if !b.advance(&rules, now) {
                continue;
            }
            match store.update_burst(&b).await {
                // Someone (an admin, the tenant) changed it meanwhile; the next round sees theirs.
                Err(StoreError::VersionMismatch { .. }) => continue,
                Err(e) => tracing::warn!(error = %e, session = %b.id, "cannot update a burst session"),
                Ok(()) => {
                    tracing::info!(session = %b.id, tenant = %b.tenant_id, state = %b.state, "burst session moved on");
                    if engine.burst_changed(b).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
