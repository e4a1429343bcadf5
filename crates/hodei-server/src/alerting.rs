//! `observability.alerting`: the shipped Prometheus rules written where a Prometheus loads them
//! (`prometheus_alerts_dir`), and the alerts the server raises itself (budget thresholds)
//! pushed to an Alertmanager (`alertmanager_url`) through its v2 API, so they reach the same
//! receivers as the rules' alerts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hodei_api::Clock;
use hodei_core::alert::{Alert, AlertState};
use hodei_store::{AlertFilter, Store};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The alert rules of `deploy/prometheus/alerts.yml`, built in.
pub const RULES: &str = include_str!("../../../deploy/prometheus/alerts.yml");

/// The file name the rules get in `prometheus_alerts_dir`.
pub const RULES_FILE: &str = "hodei-alerts.yml";

/// Writes the rules into `dir` (made if missing) through a temporary file and a rename, so a
/// Prometheus reloading meanwhile never reads half a file.
pub fn write_rules(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating observability.alerting.prometheus_alerts_dir {}", dir.display()))?;
    let path = dir.join(RULES_FILE);
    let tmp = dir.join(format!(".{RULES_FILE}.tmp"));
    std::fs::write(&tmp, RULES).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(path)
}

/// How often alerts are sent again: Alertmanager resolves an alert it has not heard of for
/// `resolve_timeout` (5 minutes by default).
const PUSH_EVERY: Duration = Duration::from_secs(30);
/// How often the store is looked at for a new or changed alert, sent at once.
const LOOK_EVERY: Duration = Duration::from_secs(2);
/// Resolved alerts are sent (with their end) for this long after they resolved.
const RESOLVED_FOR: Duration = Duration::from_secs(3600);
/// Newest alerts considered each round.
const NEWEST: u32 = 1000;

/// `budget_threshold` → `HodeiBudgetThreshold`.
fn alert_name(kind: &str) -> String {
    let mut out = String::from("Hodei");
    for part in kind.split(['_', '-']).filter(|p| !p.is_empty()) {
        let mut c = part.chars();
        if let Some(first) = c.next() {
            out.extend(first.to_uppercase());
            out.push_str(c.as_str());
        }
    }
    out
}

/// The Alertmanager v2 body for `alerts`: open ones, and ones resolved in the last hour with
/// their end.
pub fn body(alerts: &[Alert], now: hodei_core::Timestamp) -> Value {
    let items: Vec<Value> = alerts
        .iter()
        .filter(|a| a.state != AlertState::Resolved || a.resolved_at.is_some_and(|r| now.since(r) <= RESOLVED_FOR))
        .map(|a| {
            let mut labels = json!({
                "alertname": alert_name(&a.kind),
                "severity": a.severity,
                "kind": a.kind,
                "scope": a.scope,
                "source": "hodei",
            });
            if let Some(t) = &a.tenant {
                labels["tenant"] = json!(t.to_string());
            }
            let mut item = json!({
                "labels": labels,
                "annotations": {"summary": a.message, "value": a.value.to_string(), "state": a.state.as_str()},
                "startsAt": hodei_api::dto::rfc3339(a.fired_at),
            });
            if let Some(r) = a.resolved_at.filter(|_| a.state == AlertState::Resolved) {
                item["endsAt"] = json!(hodei_api::dto::rfc3339(r));
            }
            item
        })
        .collect();
    Value::Array(items)
}

pub async fn push(store: Arc<dyn Store>, clock: Arc<dyn Clock>, url: String, mut stop: watch::Receiver<bool>) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("an HTTP client with a timeout");
    let endpoint = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
    let mut tick = tokio::time::interval(LOOK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    // What was last sent, and when: unchanged alerts are sent again every PUSH_EVERY.
    let mut sent: Option<(Value, tokio::time::Instant)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let alerts = match store.list_alerts(&AlertFilter { tenant: None, visible: None, state: None, kind: None, before: None, limit: NEWEST }).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read alerts to push to Alertmanager");
                continue;
            }
        };
        let body = body(&alerts, clock.now());
        let fresh = sent.as_ref().is_none_or(|(last, at)| *last != body || at.elapsed() >= PUSH_EVERY);
        if body.as_array().is_some_and(|a| a.is_empty()) || !fresh {
            continue;
        }
        let result = client.post(&endpoint).json(&body).send().await.and_then(|r| r.error_for_status());
        if result.is_ok() {
            sent = Some((body, tokio::time::Instant::now()));
        }
        match result {
            Ok(_) if failing => {
                tracing::info!(url = %endpoint, "alerts reach Alertmanager again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                tracing::warn!(url = %endpoint, error = %e, "cannot push alerts to Alertmanager; trying again");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hodei_core::{AlertId, TenantId, Timestamp};

    #[test]
    fn open_and_recently_resolved_alerts_are_sent_with_their_labels() {
        let alert = |state: AlertState, resolved: Option<i64>| Alert {
            id: AlertId::from_uuid(uuid::Uuid::now_v7()),
            kind: "budget_threshold".into(),
            severity: "warning".into(),
            tenant: Some(TenantId::parse("ml").unwrap()),
            scope: "budget:x".into(),
            dedup_key: "k".into(),
            value: 0.9,
            message: "90 % of the budget spent".into(),
            state,
            fired_at: Timestamp::from_millis(0),
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: resolved.map(Timestamp::from_millis),
        };
        let now = Timestamp::from_millis(7_200_000);
        let b = body(&[alert(AlertState::Firing, None), alert(AlertState::Resolved, Some(7_000_000)), alert(AlertState::Resolved, Some(1))], now);
        let items = b.as_array().unwrap();
        assert_eq!(items.len(), 2, "a resolution older than an hour is not sent again");
        assert_eq!(items[0]["labels"]["alertname"], "HodeiBudgetThreshold");
        assert_eq!(items[0]["labels"]["tenant"], "ml");
        assert!(items[0].get("endsAt").is_none());
        assert_eq!(items[1]["endsAt"], "1970-01-01T01:56:40.000Z");
    }

    #[test]
    fn the_built_in_rules_are_the_shipped_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_rules(&dir.path().join("rules")).unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), RULES);
    }
}
