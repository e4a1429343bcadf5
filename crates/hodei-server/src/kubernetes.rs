//! The `kubernetes` provider: a pool's workers are pods made from its `pod_template`, one
//! `hodei worker` per pod, told where the server is and how to join through environment
//! variables. Pods carry the labels `app.kubernetes.io/managed-by: hodei` and
//! `hodei.io/pool: <id>`, so a restarted server finds the pods it made (it lists them; nothing
//! about them is kept anywhere else). How many pods there should be is the autoscaler's
//! decision; [`KubePools::resize`] only carries it out.
//!
//! Scale-down drains workers (their agent exits once its jobs end, the pod then `Succeeded`)
//! and deletes pods that never registered; ended pods are deleted and replaced. A pod that has
//! not registered within `autoscaling.provision_timeout_s` is deleted and counted as a failed
//! provision; after `autoscaling.provision_max_retries` failures in a row the pool is in
//! `error` with the reason, and the provider goes on retrying with a backoff (1 s, doubling,
//! at most 5 minutes).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hodei_core::{Pool, WorkerId, WorkerState};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

use crate::local_pool::{JoinToken, WorkerBrief};
use crate::providers::Resized;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const POOL_LABEL: &str = "hodei.io/pool";

/// What the configuration says about one kubernetes pool (`provider_config`).
#[derive(Clone, Debug)]
pub struct KubeSpec {
    /// The Kubernetes API's URL; `None`: in the cluster (service account) or from the kubeconfig.
    pub api_url: Option<String>,
    pub namespace: String,
    /// A Pod (`metadata` and `spec`); its first container runs the worker.
    pub pod_template: Value,
    /// Where the pods reach this server's gRPC port.
    pub server_url: String,
    pub join_token: JoinToken,
}

/// The keys `provider_config` of a kubernetes pool accepts.
pub const CONFIG_KEYS: &[&str] = &["api_url", "namespace", "pod_template", "server_url"];

impl KubeSpec {
    /// Reads and checks a pool's `provider_config`; the error names the key and what it expects.
    pub fn from_config(cfg: &impl serde::Serialize, join_token: JoinToken) -> Result<KubeSpec, (String, String)> {
        let cfg: BTreeMap<String, Value> =
            serde_json::to_value(cfg).and_then(serde_json::from_value).map_err(|e| (String::new(), format!("not a map of keys to values: {e}")))?;
        let cfg = &cfg;
        if let Some(k) = cfg.keys().find(|k| !CONFIG_KEYS.contains(&k.as_str())) {
            return Err((k.clone(), format!("unknown key; expected one of {}", CONFIG_KEYS.join(", "))));
        }
        let text = |k: &str| cfg.get(k).map(|v| v.as_str().map(str::to_owned).ok_or_else(|| (k.to_owned(), "must be a string".to_owned()))).transpose();
        let server_url = text("server_url")?.ok_or_else(|| ("server_url".to_owned(), "required: the gRPC URL pods reach this server at".to_owned()))?;
        let pod_template =
            cfg.get("pod_template").cloned().ok_or_else(|| ("pod_template".to_owned(), "required: a Pod with spec.containers[0].image".to_owned()))?;
        if pod_template.pointer("/spec/containers/0/image").and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(("pod_template".to_owned(), "needs spec.containers[0].image (an image with the hodei binary)".to_owned()));
        }
        Ok(KubeSpec { api_url: text("api_url")?, namespace: text("namespace")?.unwrap_or_else(|| "default".to_owned()), pod_template, server_url, join_token })
    }
}

/// The name of pod `index` of `pool` (also its worker's instance name).
pub fn pod_name(pool: &str, index: u32) -> String {
    format!("hodei-{pool}-{index}")
}

fn index_of(pool: &str, name: &str) -> Option<u32> {
    name.strip_prefix("hodei-")?.strip_prefix(pool)?.strip_prefix('-')?.parse().ok()
}

/// Pod `index` of `pool` from its template: the labels, the worker's environment (server,
/// pool, join token, instance name, the shape it offers), resources requested and limited to
/// that shape, `restartPolicy: Never` (a replacement is a new pod), and `hodei worker` as the
/// command unless the template gives one.
pub fn pod(pool: &Pool, spec: &KubeSpec, index: u32, token: &str) -> Value {
    let name = pod_name(pool.id.as_str(), index);
    let mut pod = spec.pod_template.clone();
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    if !pod["metadata"].is_object() {
        pod["metadata"] = json!({});
    }
    let meta = &mut pod["metadata"];
    meta["name"] = json!(name);
    meta["namespace"] = json!(spec.namespace);
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    meta["labels"][MANAGED_BY] = json!("hodei");
    meta["labels"][POOL_LABEL] = json!(pool.id.as_str());
    pod["spec"]["restartPolicy"] = json!("Never");
    let r = pool.worker_resources;
    let c = &mut pod["spec"]["containers"][0];
    if c["name"].as_str().is_none() {
        c["name"] = json!("worker");
    }
    if c["command"].is_null() && c["args"].is_null() {
        c["command"] = json!(["hodei", "worker"]);
    }
    let ours = [
        ("HODEI_WORKER_SERVER", spec.server_url.clone()),
        ("HODEI_WORKER_POOL", pool.id.to_string()),
        ("HODEI_JOIN_TOKEN", token.to_owned()),
        ("HODEI_WORKER_INSTANCE_NAME", name.clone()),
        ("HODEI_WORKER_SLOTS", pool.worker_slots.to_string()),
        ("HODEI_WORKER_CPU_M", r.cpu_m.get().to_string()),
        ("HODEI_WORKER_MEMORY_MB", r.memory_mb.get().to_string()),
        ("HODEI_WORKER_GPU", r.gpu.get().to_string()),
    ];
    let mut env: Vec<Value> = c["env"].as_array().cloned().unwrap_or_default();
    env.retain(|e| !ours.iter().any(|(k, _)| e["name"] == *k));
    env.extend(ours.iter().map(|(k, v)| json!({"name": k, "value": v})));
    c["env"] = Value::Array(env);
    let mut amounts = json!({"cpu": format!("{}m", r.cpu_m.get()), "memory": format!("{}Mi", r.memory_mb.get())});
    if r.gpu.get() > 0 {
        amounts["nvidia.com/gpu"] = json!(r.gpu.get().to_string());
    }
    c["resources"] = json!({"requests": amounts, "limits": amounts});
    pod
}

/// A pod of a pool as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodState {
    pub name: String,
    pub index: u32,
    /// `Succeeded` or `Failed`: its worker is gone.
    pub ended: bool,
    /// When the API server created it (for the provision timeout); `None` when it does not say.
    pub created: Option<jiff::Timestamp>,
}

/// The pools of one Kubernetes API.
pub struct KubePools {
    pools: HashMap<String, (KubeSpec, Api<Pod>)>,
    failures: HashMap<String, Failures>,
    provision_timeout: Duration,
    max_retries: u32,
}

#[derive(Default)]
struct Failures {
    count: u32,
    next_try: Option<Instant>,
    last: String,
}

impl KubePools {
    pub fn new(provision_timeout: Duration, max_retries: u32) -> KubePools {
        KubePools { pools: HashMap::new(), failures: HashMap::new(), provision_timeout, max_retries }
    }

    /// Keeps `pool`'s pods through `spec`'s API.
    pub async fn add(&mut self, pool: &str, spec: KubeSpec) -> anyhow::Result<()> {
        let client = match &spec.api_url {
            Some(url) => kube::Client::try_from(kube::Config::new(url.parse()?))?,
            None => kube::Client::try_default().await?,
        };
        let api = Api::namespaced(client, &spec.namespace);
        self.pools.insert(pool.to_owned(), (spec, api));
        Ok(())
    }

    pub fn has(&self, pool: &str) -> bool {
        self.pools.contains_key(pool)
    }

    /// The failure `pool`'s provider is retrying after, if any, and whether it reached
    /// `provision_max_retries`.
    pub fn failing(&self, pool: &str) -> Option<(String, bool)> {
        self.failures.get(pool).filter(|f| f.count > 0).map(|f| (f.last.clone(), f.count >= self.max_retries))
    }

    async fn list(api: &Api<Pod>, pool: &str) -> Result<Vec<PodState>, kube::Error> {
        let lp = ListParams::default().labels(&format!("{MANAGED_BY}=hodei,{POOL_LABEL}={pool}"));
        Ok(api
            .list(&lp)
            .await?
            .items
            .into_iter()
            .filter_map(|p| {
                let name = p.metadata.name?;
                let index = index_of(pool, &name)?;
                let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
                let created = p.metadata.creation_timestamp.map(|t| t.0);
                Some(PodState { name, index, ended: phase == "Succeeded" || phase == "Failed", created })
            })
            .collect())
    }

    /// Brings `pool` to `desired` live pods (see the module's documentation). Between failed
    /// attempts it waits its backoff and answers with the failure it is waiting on.
    async fn resize_pods(&mut self, pool: &Pool, desired: u32, workers: &[WorkerBrief], now: jiff::Timestamp) -> Resized {
        let id = pool.id.to_string();
        let f = self.failures.entry(id.clone()).or_default();
        if f.next_try.is_some_and(|t| Instant::now() < t) {
            return Resized { failures: f.count, error: Some(f.last.clone()), gave_up: f.count >= self.max_retries, ..Resized::default() };
        }
        let Some((spec, api)) = self.pools.get(&id) else { return Resized::default() };
        let result = Self::converge(pool, spec, api, desired, workers, now, self.provision_timeout).await;
        let f = self.failures.entry(id).or_default();
        match result {
            Ok((drain, 0)) => {
                *f = Failures::default();
                Resized { drain, attempted: true, ..Resized::default() }
            }
            Ok((drain, timed_out)) => {
                f.count += 1;
                f.last = format!("{timed_out} pod(s) did not register a worker within provision_timeout_s ({} s)", self.provision_timeout.as_secs());
                Resized { drain, failures: f.count, error: Some(f.last.clone()), gave_up: f.count >= self.max_retries, attempted: true }
            }
            Err(e) => {
                f.count += 1;
                f.last = format!("kubernetes: {e}");
                let wait = Duration::from_secs(1u64 << f.count.min(9)).min(Duration::from_secs(300));
                f.next_try = Some(Instant::now() + wait);
                tracing::warn!(pool = %pool.id, error = %f.last, retry_in_s = wait.as_secs(), "kubernetes provider failed");
                Resized { failures: f.count, error: Some(f.last.clone()), gave_up: f.count >= self.max_retries, attempted: true, ..Resized::default() }
            }
        }
    }

    /// One pass; returns the workers to drain and how many pods timed out unregistered.
    async fn converge(
        pool: &Pool,
        spec: &KubeSpec,
        api: &Api<Pod>,
        desired: u32,
        workers: &[WorkerBrief],
        now: jiff::Timestamp,
        provision_timeout: Duration,
    ) -> Result<(Vec<WorkerId>, u32), kube::Error> {
        let id = pool.id.as_str();
        let pods = Self::list(api, id).await?;
        let worker_of = |name: &str| workers.iter().find(|w| w.instance_name == name);
        let mut timed_out = 0;
        let mut alive: Vec<&PodState> = Vec::new();
        for p in &pods {
            let registered = worker_of(&p.name);
            let stale = registered.is_none()
                && p.created.is_some_and(|c| now.duration_since(c) > jiff::SignedDuration::try_from(provision_timeout).unwrap_or(jiff::SignedDuration::MAX));
            if p.ended || stale {
                if stale {
                    timed_out += 1;
                }
                delete(api, &p.name).await?;
            } else if registered.is_none_or(|w| w.state != WorkerState::Draining) {
                alive.push(p);
            }
        }
        let mut drain = Vec::new();
        if (alive.len() as u32) < desired {
            let token = match &spec.join_token {
                JoinToken::Fixed(t) => t.clone(),
                JoinToken::File(f) => std::fs::read_to_string(f).map(|t| t.trim().to_owned()).unwrap_or_default(),
            };
            let used: std::collections::HashSet<u32> = pods.iter().map(|p| p.index).collect();
            let free = (0u32..).filter(|i| !used.contains(i)).take((desired as usize) - alive.len());
            for i in free {
                let p: Pod = serde_json::from_value(pod(pool, spec, i, &token)).map_err(kube::Error::SerdeError)?;
                match api.create(&PostParams::default(), &p).await {
                    Ok(_) => tracing::info!(pool = %pool.id, pod = %pod_name(id, i), "created a worker pod"),
                    Err(e) => return Err(e),
                }
            }
        } else if alive.len() as u32 > desired {
            // Unregistered pods first, then idle workers (longest idle), then the least busy.
            let mut order: Vec<(u8, i64, &PodState, Option<&WorkerBrief>)> = alive
                .iter()
                .map(|p| match worker_of(&p.name) {
                    None => (0, 0, *p, None),
                    Some(w) if w.state == WorkerState::Idle => (1, w.idle_since.map_or(i64::MAX, |t| t.as_millis()), *p, Some(w)),
                    Some(w) => (2, i64::from(w.slots_used), *p, Some(w)),
                })
                .collect();
            order.sort_by_key(|(class, key, p, _)| (*class, *key, std::cmp::Reverse(p.index)));
            for (_, _, p, w) in order.into_iter().take(alive.len() - desired as usize) {
                match w {
                    Some(w) if matches!(w.state, WorkerState::Idle | WorkerState::Busy) => drain.push(w.id),
                    _ => delete(api, &p.name).await?,
                }
            }
        }
        Ok((drain, timed_out))
    }
}

#[async_trait::async_trait]
impl crate::providers::Provider for KubePools {
    fn runs(&self, pool: &str) -> bool {
        self.has(pool)
    }

    fn cheap(&self) -> bool {
        false
    }

    async fn resize(&mut self, pool: &Pool, desired: u32, workers: &[WorkerBrief], now: jiff::Timestamp) -> Resized {
        self.resize_pods(pool, desired, workers, now).await
    }

    fn failing(&self, pool: &str) -> Option<(String, bool)> {
        KubePools::failing(self, pool)
    }

    async fn instances(&self, pool: &str) -> Result<Vec<String>, String> {
        let Some((_, api)) = self.pools.get(pool) else { return Ok(Vec::new()) };
        let mut pods = Self::list(api, pool).await.map_err(|e| e.to_string())?;
        pods.retain(|p| !p.ended);
        pods.sort_by_key(|p| p.index);
        Ok(pods.into_iter().map(|p| p.name).collect())
    }
}

async fn delete(api: &Api<Pod>, name: &str) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Pool {
        Pool {
            id: hodei_core::PoolId::parse("gpu").unwrap(),
            name: "gpu".into(),
            pool_type: hodei_core::PoolType::Dynamic,
            provider: "kubernetes".into(),
            worker_resources: hodei_core::Resources::new(2000, 4096, 1),
            worker_slots: 2,
            min_size: 0,
            max_size: 4,
            desired_size: 0,
            auto_scaling_enabled: true,
            idle_timeout: Duration::from_secs(300),
            scaling_policies: vec![],
            allowed_tenants: vec![],
            labels: Default::default(),
            managed_by: "config".into(),
            state: hodei_core::PoolState::Active,
            state_reason: String::new(),
            created_at: hodei_core::Timestamp::from_millis(0),
            updated_at: hodei_core::Timestamp::from_millis(0),
            version: 1,
        }
    }

    #[test]
    fn a_pod_carries_the_worker_its_pool_needs() {
        let cfg: BTreeMap<String, Value> = serde_json::from_value(json!({
            "server_url": "http://hodei:9090",
            "namespace": "jobs",
            "pod_template": {"metadata": {"labels": {"team": "ml"}}, "spec": {"containers": [{"image": "ghcr.io/x/hodei:1", "env": [{"name": "HODEI_WORKER_POOL", "value": "wrong"}, {"name": "RUST_LOG", "value": "info"}]}]}},
        }))
        .unwrap();
        let spec = KubeSpec::from_config(&cfg, JoinToken::Fixed("hodei_secret".into())).unwrap();
        let p = pod(&pool(), &spec, 3, "hodei_secret");
        assert_eq!(p["metadata"]["name"], "hodei-gpu-3");
        assert_eq!(p["metadata"]["namespace"], "jobs");
        assert_eq!(p["metadata"]["labels"], json!({"team": "ml", MANAGED_BY: "hodei", POOL_LABEL: "gpu"}));
        assert_eq!(p["spec"]["restartPolicy"], "Never");
        let c = &p["spec"]["containers"][0];
        assert_eq!((c["name"].as_str(), c["command"].clone()), (Some("worker"), json!(["hodei", "worker"])));
        let env: BTreeMap<&str, &str> = c["env"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap())).collect();
        assert_eq!(env["HODEI_WORKER_POOL"], "gpu", "the template cannot point the worker elsewhere");
        assert_eq!(
            (env["HODEI_WORKER_SERVER"], env["HODEI_JOIN_TOKEN"], env["HODEI_WORKER_INSTANCE_NAME"]),
            ("http://hodei:9090", "hodei_secret", "hodei-gpu-3")
        );
        assert_eq!((env["HODEI_WORKER_CPU_M"], env["HODEI_WORKER_MEMORY_MB"], env["HODEI_WORKER_SLOTS"], env["RUST_LOG"]), ("2000", "4096", "2", "info"));
        assert_eq!(c["resources"]["limits"], json!({"cpu": "2000m", "memory": "4096Mi", "nvidia.com/gpu": "1"}));
        assert_eq!(index_of("gpu", "hodei-gpu-3"), Some(3));
        assert_eq!(index_of("gpu", "hodei-gpu-a-3"), None);
    }

    #[test]
    fn provider_config_is_checked() {
        let check = |v: Value| KubeSpec::from_config(&v, JoinToken::Fixed("t".into())).map(|_| ()).map_err(|e| e.0);
        assert_eq!(check(json!({"pod_template": {"spec": {"containers": [{"image": "x"}]}}})), Err("server_url".into()));
        assert_eq!(check(json!({"server_url": "http://h:9090", "pod_template": {"spec": {}}})), Err("pod_template".into()));
        assert_eq!(
            check(json!({"server_url": "http://h:9090", "pod_template": {"spec": {"containers": [{"image": "x"}]}}, "replicas": 3})),
            Err("replicas".into())
        );
        assert_eq!(check(json!({"server_url": "http://h:9090", "pod_template": {"spec": {"containers": [{"image": "x"}]}}})), Ok(()));
    }
}
