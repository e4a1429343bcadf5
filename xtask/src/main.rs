//! Project chores. `cargo run -p xtask -- openapi` writes `docs/openapi.json` from the code;
//! a test fails when the committed file is stale.

use std::path::PathBuf;

fn openapi() -> String {
    let cfg = hodei_api::ApiConfig {
        limits: hodei_core::spec::SpecLimits::default(),
        max_body_bytes: 16 << 20,
        max_batch_body_bytes: 256 << 20,
        max_batch_size: 100_000,
        default_tenant: hodei_core::TenantId::parse("default").expect("a valid slug"),
        default_quota: hodei_core::Quota::DEFAULT,
        eta_horizon: std::time::Duration::from_secs(86_400),
        burst: hodei_core::BurstRules::default(),
        tier_weights: hodei_core::TierWeights::default(),
        sla: hodei_core::sched::SlaRules::default(),
        sla_window_hours: 24,
        rates: hodei_core::cost::Rates::DEFAULT,
        currency: "USD".into(),
        cost_records: true,
        cost_by_pool: true,
        budgets_enabled: true,
        budget_on_exhausted: hodei_core::budget::OnExhausted::Hold,
        budget_thresholds_pct: vec![80, 90, 100],
        optimization_lookback_days: 30,
        optimization_min_runs: 5,
        admin_token: None,
        token_default_ttl_days: None,
        request_timeout: std::time::Duration::from_secs(30),
        metrics_bearer_token: None,
        history: None,
        grafana: None,
        observability: Default::default(),
        grpc_addr: None,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    hodei_api::openapi_json(&cfg) + "\n"
}

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("openapi") => {
            std::fs::write(doc_path(), openapi()).expect("writing docs/openapi.json");
            println!("wrote {}", doc_path().display());
        }
        _ => {
            eprintln!("usage: cargo run -p xtask -- openapi");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_openapi_document_is_current() {
        let committed = std::fs::read_to_string(super::doc_path()).unwrap_or_default();
        assert!(committed == super::openapi(), "docs/openapi.json is stale: run `cargo run -p xtask -- openapi`");
    }
}
