//! The provider port's conformance suite (`hodei_server::providers::conformance`) on each
//! adapter: local agents (the real binary, on this machine) and Kubernetes pods (through the
//! fake API of `common::kube_fake`, which runs each pod's worker as a local process).

mod common;

use std::time::Duration;

use common::BIN;
use common::kube_fake::fake_api;
use hodei_core::{Pool, PoolId, PoolState, PoolType, Resources, Timestamp};
use hodei_server::kubernetes::{KubePools, KubeSpec};
use hodei_server::local_pool::{AgentTemplate, JoinToken, LocalPools};
use hodei_server::providers::conformance;
use serde_json::json;

fn pool(provider: &str) -> Pool {
    Pool {
        id: PoolId::parse("conf").unwrap(),
        name: "conf".into(),
        pool_type: PoolType::Dynamic,
        provider: provider.into(),
        worker_resources: Resources::new(500, 256, 0),
        worker_slots: 1,
        min_size: 0,
        max_size: 5,
        desired_size: 0,
        auto_scaling_enabled: true,
        idle_timeout: Duration::from_secs(300),
        scaling_policies: vec![],
        allowed_tenants: vec![],
        labels: Default::default(),
        managed_by: "api".into(),
        state: PoolState::Active,
        state_reason: String::new(),
        created_at: Timestamp::from_millis(0),
        updated_at: Timestamp::from_millis(0),
        version: 1,
    }
}

/// No server listens here: the agents keep retrying, holding their spool directories.
const NOWHERE: &str = "http://127.0.0.1:1";

#[tokio::test]
async fn local_agents_conform() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pool-conf.token"), "hodei_conformanceconformanceconform\n").unwrap();
    let template = AgentTemplate { exe: BIN.into(), data_dir: dir.path().to_owned(), run_as: None, cgroups: true, give_up_after: Duration::from_secs(120) };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    conformance::run_all(&pool("local"), || async { LocalPools::start(Some(template.clone()), vec![], NOWHERE, stopped.clone()) }).await;
    let _ = stop.send(true);
}

#[tokio::test]
async fn kubernetes_pods_conform() {
    let (api, _fake) = fake_api().await;
    let config = json!({"api_url": api, "server_url": NOWHERE, "pod_template": {"spec": {"containers": [{"image": "registry.example/hodei:test"}]}}});
    conformance::run_all(&pool("kubernetes"), || async {
        let mut k = KubePools::new(Duration::from_secs(300), 3);
        k.add("conf", KubeSpec::from_config(&config, JoinToken::Fixed("hodei_conformanceconformanceconform".into())).unwrap()).await.unwrap();
        k
    })
    .await;
}
