//! Wiring of the Hodei server: config, store, engine, REST, gRPC, metrics, built-in pool.
//! With the worker, the only crates that spawn tasks or read wall time.

mod alerting;
mod autoscaler;
mod budgets;
mod burst;
pub mod config;
pub mod config_reference;
pub mod engine;
mod gauges;
pub mod grpc;
mod history;
pub mod kubernetes;
pub mod local_pool;
pub mod providers;
mod retention;
mod serve;
mod tls;
pub mod tokens;
mod usage;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hodei_api::exposition::Exporter;
use hodei_api::{ApiConfig, ApiState, Clock, Inner};
use hodei_core::sched::SchedConfig;
use hodei_core::spec::SpecLimits;
use hodei_core::{
    Pool, PoolId, PoolState, PoolType, Priority, Quota, QuotaRules, Resources, Tenant, TenantId, TenantPolicy, TenantStatus, Tier, Timestamp, ViolationPolicy,
};
use hodei_proto::v1::worker_service_server::WorkerServiceServer;
use hodei_store::logs::Logs;
use hodei_store::postgres::{PgOptions, PgStore};
use hodei_store::sqlite::SqliteStore;
use hodei_store::{Schema, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{AuthMode, Config, PoolTypeName, PriorityName};
use crate::engine::{ControlPlane, Engine, EngineConfig, EngineHandle};
use crate::grpc::{WorkerSvc, WorkerTimeouts};
use crate::local_pool::LocalWorkerSpec;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Wall-clock time.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        Timestamp::from_millis(ms)
    }
}

pub struct ServerOptions {
    pub config: Config,
    /// The `hodei` binary, to start the built-in pool's workers; `None` starts none.
    pub worker_exe: Option<PathBuf>,
    /// Overrides the metrics listener (`--metrics-addr`).
    pub metrics_addr: Option<String>,
    /// Use this store instead of opening `database.url` (in-process tests).
    pub store: Option<Arc<dyn Store>>,
}

pub struct RunningServer {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// `None` when metrics are served on the HTTP listener only.
    pub metrics_addr: Option<SocketAddr>,
    pub engine: EngineHandle,
    pub store: Arc<dyn Store>,
    /// The HTTP router, for tests that call it without a socket.
    pub router: axum::Router,
    shutdown: watch::Sender<bool>,
    /// The HTTP listener: drains in-flight requests (up to `server.shutdown_grace_ms`) before
    /// the engine they may be waiting on stops.
    http: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting requests and lets those in flight finish (for at most
    /// `server.shutdown_grace_ms`), stops the built-in pool's workers, then everything else.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.http.await;
        for w in self.workers {
            let _ = w.await;
        }
        for t in self.tasks {
            t.abort();
        }
    }
}

/// The process-wide metrics recorder, installed once (several servers may share a process in tests).
fn metrics_handle() -> anyhow::Result<Exporter> {
    static HANDLE: OnceLock<Result<Exporter, String>> = OnceLock::new();
    let h = HANDLE.get_or_init(|| {
        let exporter = Exporter::default();
        metrics::set_global_recorder(exporter.clone()).map_err(|_| "a metrics recorder is already installed".to_owned())?;
        metrics::gauge!("hodei_build_info", "version" => VERSION).set(1.0);
        let _registered = metrics::histogram!("hodei_scheduling_latency_seconds");
        metrics::counter!("hodei_db_errors_total", "op" => "apply").increment(0);
        metrics::counter!("hodei_audit_write_failures_total").increment(0);
        // Set by the engine from the scheduler lock it checks every tick.
        metrics::gauge!("hodei_scheduler_leader").set(0.0);
        Ok(exporter)
    });
    h.clone().map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))
}

/// Reads a secret file, or creates it (mode 0600) with a fresh token.
fn secret_file(path: &Path) -> anyhow::Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim().to_owned();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let token = tokens::random_token().context("drawing a secret from the OS's random number generator")?;
    tokens::write_secret(path, &token).with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

fn priority(p: PriorityName) -> Priority {
    match p {
        PriorityName::Critical => Priority::Critical,
        PriorityName::High => Priority::High,
        PriorityName::Normal => Priority::Normal,
        PriorityName::Low => Priority::Low,
        PriorityName::Batch => Priority::Batch,
    }
}

/// What a server does with the schema on start (`database.auto_migrate`).
fn schema_policy(cfg: &Config) -> Schema {
    if cfg.database.auto_migrate { Schema::Migrate } else { Schema::RequireCurrent }
}

/// Opens the configured store. `schedule`: this process will run the scheduler, so on
/// PostgreSQL it takes the scheduler lock.
async fn open_store(cfg: &Config, schema: Schema, schedule: bool) -> anyhow::Result<Arc<dyn Store>> {
    let url = cfg.database.url.clone().unwrap_or_else(|| format!("sqlite://{}", cfg.data_dir().join("hodei.db").display()));
    if let Some(path) = url.strip_prefix("sqlite://") {
        let fsync = cfg.database.sqlite_synchronous == config::SqliteSync::Full;
        let store = SqliteStore::open_with(Path::new(path), fsync, schema).await.with_context(|| format!("opening the SQLite database {path}"))?;
        return Ok(Arc::new(store));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let opts = PgOptions {
            url: url.clone(),
            max_connections: cfg.database.max_connections,
            statement_timeout: Duration::from_millis(cfg.database.statement_timeout_ms),
            schema,
        };
        let shown = redact_password(&url);
        let store = PgStore::open(&opts).await.with_context(|| format!("opening the PostgreSQL database {shown}"))?;
        // One server runs the scheduler of a database; a second one would run its jobs again.
        if schedule && !store.lock_scheduler().await.with_context(|| format!("taking the scheduler lock on {shown}"))? {
            bail!("another hodei server is running the scheduler on {shown} (it holds the scheduler's advisory lock); stop it first");
        }
        return Ok(Arc::new(store));
    }
    bail!("database.url: {url:?} is not a sqlite:// or postgres:// URL")
}

/// Creates the data dir, readable by this user only (0700): it holds the admin and join tokens,
/// the database (with every tenant's job specs) and the job logs.
fn private_data_dir(cfg: &Config) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = cfg.data_dir();
    std::fs::create_dir_all(dir).with_context(|| format!("creating the data dir {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| format!("making the data dir {} private (0700)", dir.display()))
}

/// `hodei migrate`: brings the configured database's schema up to date (what a server does at
/// start unless `database.auto_migrate: false`), without starting anything.
pub async fn migrate(cfg: &Config) -> anyhow::Result<()> {
    private_data_dir(cfg)?;
    open_store(cfg, Schema::Migrate, false).await?;
    Ok(())
}

/// A database URL fit for messages: the password, if any, replaced by `***`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (auth, host) = match rest.split_once('@') {
        Some(parts) => parts,
        None => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

struct PoolSetup {
    pools: Vec<Pool>,
    /// Pools whose workers this server starts (provider `local`, `min_size` of them).
    local: Vec<LocalWorkerSpec>,
    /// Pools whose workers are pods (provider `kubernetes`).
    kube: Vec<(String, kubernetes::KubeSpec)>,
}

/// What this server's local agents share; `None` when it starts none (no worker executable).
fn agent_template(cfg: &Config, worker_exe: Option<&PathBuf>) -> Option<local_pool::AgentTemplate> {
    worker_exe.map(|exe| local_pool::AgentTemplate {
        exe: exe.clone(),
        data_dir: cfg.data_dir().to_owned(),
        run_as: cfg.workers.run_as.clone(),
        cgroups: cfg.workers.cgroups,
        give_up_after: Duration::from_millis(cfg.workers.gc_after_ms),
    })
}

/// Creates the default tenant and the pools (built-in or configured) with their join tokens.
async fn seed(cfg: &Config, store: &dyn Store, now: Timestamp, worker_exe: Option<&PathBuf>) -> anyhow::Result<PoolSetup> {
    let mut pools = Vec::new();
    let mut local = Vec::new();
    let mut kube = Vec::new();
    let rp = &cfg.resource_pools;
    let template = agent_template(cfg, worker_exe);
    let local_spec = |pool: &Pool, join_token: local_pool::JoinToken| template.as_ref().map(|t| t.spec(pool, join_token, pool.desired_size));
    if rp.enabled && rp.pools.is_empty() && rp.builtin_local.enabled {
        let b = &rp.builtin_local;
        let (cores, mem_mb) = local_pool::machine_shape();
        let n = b.workers.max(1);
        let slots = b.slots.unwrap_or(cores * 4).max(n);
        let shape = Resources::new(cores * 1000 / n, (mem_mb as u64 * 8 / 10 / n as u64) as u32, 0);
        let id = PoolId::parse(&b.id).context("resource_pools.builtin_local.id")?;
        let token_file = tokens::join_token_path(cfg.data_dir(), &id);
        let token = secret_file(&token_file)?;
        let pool = Pool {
            id: id.clone(),
            name: id.to_string(),
            pool_type: PoolType::Static,
            provider: "local".into(),
            worker_resources: shape,
            worker_slots: slots.div_ceil(n),
            min_size: n,
            max_size: n,
            desired_size: n,
            auto_scaling_enabled: false,
            idle_timeout: Duration::from_secs(300),
            scaling_policies: Vec::new(),
            allowed_tenants: Vec::new(),
            labels: Default::default(),
            managed_by: "config".into(),
            // Until its warm workers are live (the autoscaler moves it on, with a reason).
            state: PoolState::Initializing,
            state_reason: "starting its workers".into(),
            created_at: now,
            updated_at: now,
            version: 1,
        };
        store.upsert_pool(&pool, Some(&tokens::hash(&token))).await?;
        local.extend(local_spec(&pool, local_pool::JoinToken::File(token_file)));
        pools.push(pool);
    }
    for (i, p) in rp.pools.iter().enumerate() {
        let id = PoolId::parse(&p.id)?;
        let (token, source) = match &p.join_token {
            Some(t) => (t.0.clone(), local_pool::JoinToken::Fixed(t.0.clone())),
            None => {
                let file = tokens::join_token_path(cfg.data_dir(), &id);
                (secret_file(&file)?, local_pool::JoinToken::File(file))
            }
        };
        let t = &p.worker_template;
        let pool = Pool {
            id: id.clone(),
            name: p.name.clone().unwrap_or_else(|| id.to_string()),
            pool_type: if p.pool_type == PoolTypeName::Dynamic { PoolType::Dynamic } else { PoolType::Static },
            provider: p.provider.clone(),
            worker_resources: Resources::new(t.cpu_m, t.memory_mb, t.gpu),
            worker_slots: t.slots,
            min_size: p.min_size,
            max_size: p.max_size,
            desired_size: p.min_size,
            auto_scaling_enabled: p.auto_scaling_enabled,
            idle_timeout: Duration::from_secs(p.idle_timeout_s),
            scaling_policies: cfg.scaling_policies(i)?,
            allowed_tenants: p
                .allowed_tenants
                .iter()
                .enumerate()
                .map(|(j, t)| TenantId::parse(t).with_context(|| format!("resource_pools.pools[{i}].allowed_tenants[{j}]")))
                .collect::<anyhow::Result<_>>()?,
            labels: p.labels.clone(),
            managed_by: "config".into(),
            // Until its warm workers are live (the autoscaler moves it on, with a reason).
            state: PoolState::Initializing,
            state_reason: "starting its workers".into(),
            created_at: now,
            updated_at: now,
            version: 1,
        };
        store.upsert_pool(&pool, Some(&tokens::hash(&token))).await?;
        // The size it had (a restart keeps what the autoscaler decided), within its bounds now.
        let stored = store.get_pool(&id).await?.map_or(pool.min_size, |(s, _)| s.desired_size);
        let pool = Pool { desired_size: stored.clamp(pool.min_size, pool.max_size), ..pool };
        if pool.provider == "local" {
            local.extend(local_spec(&pool, source));
        } else if pool.provider == "kubernetes" {
            let spec = kubernetes::KubeSpec::from_config(&p.provider_config, source)
                .map_err(|(key, msg)| anyhow::anyhow!("resource_pools.pools[{i}].provider_config.{key}: {msg}"))?;
            kube.push((pool.id.to_string(), spec));
        }
        pools.push(pool);
    }
    // Pools created through the API: jobs may select them, and local ones get their agents.
    for pool in store.list_pools().await? {
        if pool.managed_by == "api" && pool.state != PoolState::Destroyed {
            if pool.provider == "local" {
                local.extend(local_spec(&pool, local_pool::JoinToken::File(tokens::join_token_path(cfg.data_dir(), &pool.id))));
            }
            pools.push(pool);
        }
    }
    let default = TenantId::parse(&cfg.multi_tenancy.default_tenant_id).context("multi_tenancy.default_tenant_id")?;
    if store.get_tenant(&default).await?.is_none() {
        let t = Tenant {
            id: default.clone(),
            name: default.to_string(),
            email: None,
            tier: Tier::Standard,
            weight: None,
            status: TenantStatus::Active,
            quota: default_tenant_quota(cfg, &pools),
            labels: Default::default(),
            created_at: now,
            updated_at: now,
            version: 1,
        };
        store.create_tenant(&t).await.context("creating the default tenant")?;
    }
    Ok(PoolSetup { pools, local, kube })
}

/// `multi_tenancy.default_tenant_quota` as a core quota.
fn default_quota(cfg: &Config) -> Quota {
    let q = &cfg.multi_tenancy.default_tenant_quota;
    let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    Quota {
        resources: Resources::new(clamp(q.cpu_m), clamp(q.memory_mb), q.gpu),
        max_concurrent_jobs: q.max_concurrent_jobs,
        max_queued_jobs: q.max_queued_jobs,
    }
}

/// The tenant that exists from the first start is there so one machine works at once: its quota
/// covers the pools it starts with (every worker busy) and a million queued jobs, never less
/// than the default quota. An admin can lower it like any other.
fn default_tenant_quota(cfg: &Config, pools: &[Pool]) -> Quota {
    let q = default_quota(cfg);
    let (mut cap, mut slots) = (Resources::ZERO, 0u32);
    for p in pools {
        for _ in 0..p.min_size {
            cap = cap.checked_add(&p.worker_resources).unwrap_or(cap);
            slots = slots.saturating_add(p.worker_slots);
        }
    }
    let r = &q.resources;
    Quota {
        resources: Resources::new(r.cpu_m.get().max(cap.cpu_m.get()), r.memory_mb.get().max(cap.memory_mb.get()), r.gpu.get().max(cap.gpu.get())),
        max_concurrent_jobs: q.max_concurrent_jobs.max(slots),
        max_queued_jobs: q.max_queued_jobs.max(1_000_000),
    }
}

/// The rate versions attempts are priced at. The configuration file's rates are a version of
/// their own, recorded when they differ from the file's last recorded ones: from the epoch the
/// first time, from now after an edit — never retroactively, and never over a version an admin
/// added through the API since (that one stays in force until the file changes again).
async fn rate_versions(cfg: &Config, store: &dyn Store, now: hodei_core::Timestamp) -> anyhow::Result<Vec<hodei_core::cost::RateVersion>> {
    let stored = store.list_rate_versions().await.context("reading cost rate versions")?;
    let file = rates(cfg);
    if stored.iter().rev().find(|v| v.source == "config").is_none_or(|v| v.version.rates != file) {
        let from = if stored.is_empty() { hodei_core::Timestamp::from_millis(0) } else { now };
        let v = hodei_store::StoredRates {
            version: hodei_core::cost::RateVersion { effective_from: from, rates: file },
            source: "config".into(),
            created_by: "config".into(),
        };
        store.add_rate_version(&v).await.context("recording the configured cost rates")?;
        tracing::info!(effective_from = %from, "cost rates of the configuration file recorded as a new rate version");
        return Ok(store.list_rate_versions().await.context("reading cost rate versions")?.into_iter().map(|v| v.version).collect());
    }
    Ok(stored.into_iter().map(|v| v.version).collect())
}

/// `cost_tracking.hourly_rate_*`, in micro-dollars.
fn rates(cfg: &Config) -> hodei_core::cost::Rates {
    hodei_core::cost::Rates {
        cpu_core_hour: cfg.cost_tracking.hourly_rate_cpu.0,
        memory_gib_hour: cfg.cost_tracking.hourly_rate_memory_gb.0,
        gpu_hour: cfg.cost_tracking.hourly_rate_gpu.0,
    }
}

fn quota_rules(cfg: &Config) -> QuotaRules {
    let m = &cfg.multi_tenancy;
    QuotaRules {
        enabled: m.enabled,
        strict: m.quota_enforcement.strict_mode,
        violation: match m.quota_enforcement.violation_policy {
            config::ViolationPolicy::Reject => ViolationPolicy::Reject,
            config::ViolationPolicy::Queue => ViolationPolicy::Queue,
            config::ViolationPolicy::Warn => ViolationPolicy::Warn,
        },
        max_overage_pct: cfg.burst_capacity.max_overage_percentage,
    }
}

pub fn sla_rules(cfg: &Config) -> hodei_core::sched::SlaRules {
    let m = &cfg.sla.max_wait_s;
    let s = Duration::from_secs;
    hodei_core::sched::SlaRules {
        max_wait: [s(m.critical), s(m.high), s(m.medium), s(m.low), s(m.best_effort)],
        at_risk_pct: cfg.sla.at_risk_pct,
        critical_pct: cfg.sla.critical_pct,
        escalation: cfg.scheduler.sla_escalation,
    }
}

fn tier_weights(cfg: &Config) -> hodei_core::TierWeights {
    let w = &cfg.multi_tenancy.tier_weights;
    hodei_core::TierWeights { free: w.free, standard: w.standard, premium: w.premium, enterprise: w.enterprise }
}

fn burst_rules(cfg: &Config) -> hodei_core::BurstRules {
    let b = &cfg.burst_capacity;
    hodei_core::BurstRules {
        enabled: b.enabled && cfg.multi_tenancy.enabled,
        max_overage_pct: b.max_overage_percentage,
        max_duration_minutes: b.burst_duration_minutes,
        require_approval: b.require_approval,
        cooldown: Duration::from_secs(u64::from(b.cooldown_minutes) * 60),
        approval_timeout: Duration::from_secs(u64::from(b.approval_timeout_hours) * 3600),
    }
}

/// The principal of the admin token (`admin`, created at first start): what the admin token's
/// requests act as, and the owner of the jobs it submits.
async fn bootstrap_admin(store: &dyn Store, now: Timestamp) -> anyhow::Result<Arc<hodei_core::Caller>> {
    use hodei_core::{Principal, PrincipalId, PrincipalKind, RoleBinding};
    let p = match store.get_principal_by_name(BOOTSTRAP_ADMIN).await.context("reading the admin principal")? {
        Some(p) => p,
        None => {
            let p = Principal {
                id: PrincipalId::from_uuid(uuid::Uuid::now_v7()),
                name: BOOTSTRAP_ADMIN.into(),
                kind: PrincipalKind::Service,
                bindings: vec![RoleBinding::admin()],
                created_at: now,
                updated_at: now,
                version: 1,
            };
            store.create_principal(&p).await.context("creating the admin principal")?;
            p
        }
    };
    Ok(Arc::new(hodei_core::Caller::new(p.id, p.name, vec![RoleBinding::admin()])))
}

/// Name of the admin token's principal.
pub const BOOTSTRAP_ADMIN: &str = "admin";

/// What the API runs on besides its configuration.
struct ApiParts {
    grpc_addr: SocketAddr,
    /// Who the admin token is.
    admin: Arc<hodei_core::Caller>,
    store: Arc<dyn Store>,
    engine: EngineHandle,
    logs: Arc<Logs>,
    clock: Arc<dyn Clock>,
    metrics: Option<Exporter>,
    pools: Vec<Pool>,
    admin_token: Option<String>,
    pools_changed: Arc<tokio::sync::Notify>,
    rates: Vec<hodei_core::cost::RateVersion>,
}

/// Builds the API state from the configuration's limits and the running parts.
fn api_state(cfg: &Config, p: ApiParts, stopping: watch::Receiver<bool>) -> anyhow::Result<ApiState> {
    let ApiParts { grpc_addr, admin, store, engine, logs, clock, metrics, pools, admin_token, pools_changed, rates: versions } = p;
    let j = &cfg.jobs;
    let limits = SpecLimits {
        default_resources: Resources::new(j.default_resources.cpu_m, j.default_resources.memory_mb, j.default_resources.gpu),
        default_timeout: Duration::from_millis(j.default_timeout_ms),
        max_timeout: Duration::from_millis(j.max_timeout_ms),
        default_priority: priority(j.default_priority),
        max_retries: j.max_retries_limit,
        max_argv_env_bytes: cfg.limits.max_argv_env_bytes as usize,
        max_labels: cfg.limits.max_labels as usize,
        max_array_size: j.max_array_size,
    };
    let api_cfg = ApiConfig {
        limits,
        max_body_bytes: cfg.limits.max_body_bytes as usize,
        max_batch_body_bytes: cfg.limits.max_batch_body_bytes as usize,
        max_batch_size: j.max_batch_size as usize,
        default_tenant: TenantId::parse(&cfg.multi_tenancy.default_tenant_id)?,
        default_quota: default_quota(cfg),
        eta_horizon: Duration::from_millis(cfg.scheduler.eta_horizon_ms),
        burst: burst_rules(cfg),
        tier_weights: tier_weights(cfg),
        sla: sla_rules(cfg),
        sla_window_hours: cfg.sla.compliance_window_hours,
        rates: rates(cfg),
        currency: cfg.cost_tracking.currency.clone(),
        cost_records: cfg.cost_tracking.track_by_job,
        cost_by_pool: cfg.cost_tracking.track_by_pool,
        budgets_enabled: cfg.budgets.enabled,
        budget_on_exhausted: match cfg.budgets.default_on_exhausted {
            config::OnExhausted::Hold => hodei_core::budget::OnExhausted::Hold,
            config::OnExhausted::Reject => hodei_core::budget::OnExhausted::Reject,
        },
        budget_thresholds_pct: cfg.budgets.alert_thresholds_pct.clone(),
        optimization_lookback_days: cfg.optimization.lookback_days,
        optimization_min_runs: cfg.optimization.min_runs,
        admin_token,
        token_default_ttl_days: cfg.auth.token_default_ttl_days,
        metrics_bearer_token: cfg.metrics.prometheus.bearer_token.as_ref().map(|t| t.0.trim().to_owned()),
        history: history_settings(cfg),
        grafana: grafana_settings(cfg),
        observability: observability_view(cfg),
        request_timeout: Duration::from_millis(cfg.server.request_timeout_ms),
        grpc_addr: Some(grpc_addr),
        version: VERSION.to_owned(),
    };
    let control = Arc::new(ControlPlane { engine, store: store.clone(), tier_weights: tier_weights(cfg) });
    let join_tokens = Arc::new(tokens::PoolTokens {
        store: store.clone(),
        data_dir: cfg.data_dir().to_owned(),
        configured: cfg.resource_pools.pools.iter().filter(|p| p.join_token.is_some()).filter_map(|p| PoolId::parse(&p.id).ok()).collect(),
    });
    Ok(ApiState(Arc::new(Inner {
        rates: RwLock::new(versions),
        store,
        control,
        logs,
        clock,
        metrics,
        pools: RwLock::new(pools),
        pools_changed: pools_changed.clone(),
        budgets_changed: Arc::new(tokio::sync::Notify::new()),
        budget_refusals: RwLock::new(Default::default()),
        tenants: Default::default(),
        tenant_gate: Default::default(),
        admin,
        join_tokens,
        stopping,
        large_bodies: tokio::sync::Semaphore::new(hodei_api::LARGE_BODIES_AT_ONCE),
        token_cache: Default::default(),
        snapshots: Default::default(),
        submit_rate: hodei_api::rate::SubmitRate::new(hodei_core::rate::RateLimit::new(cfg.limits.submit_rate_per_tenant, cfg.limits.submit_burst_per_tenant)),
        cfg: api_cfg,
        started: Instant::now(),
    })))
}

/// Applies the settings stored through `PUT /observability/config` over the file and the
/// environment. One that no longer fits (the file changed under it) is left out and said so;
/// `GET /observability/config` keeps listing it under `restart_required`.
async fn apply_overrides(cfg: &mut Config, store: &dyn Store) -> anyhow::Result<()> {
    let Some(body) = store.setting_overrides().await.context("reading the settings stored through PUT /observability/config")? else {
        return Ok(());
    };
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&body).context("the settings stored through PUT /observability/config")?;
    for (key, value) in &map {
        let mut next = cfg.clone();
        match next.apply_override(key, value) {
            Ok(()) => {
                *cfg = next;
                tracing::info!(key = %key, value = %value, "a setting from PUT /observability/config");
            }
            Err(e) => tracing::error!(key = %key, error = %e, "a setting stored through PUT /observability/config does not apply; left out"),
        }
    }
    Ok(())
}

/// `observability.grafana`, when enabled.
fn grafana_settings(cfg: &Config) -> Option<hodei_api::GrafanaSettings> {
    let g = &cfg.observability.grafana;
    g.enabled.then(|| hodei_api::GrafanaSettings {
        url: g.url.clone().unwrap_or_default(),
        api_key: g.api_key.as_ref().map(|k| k.0.clone()),
        dashboards_dir: g.dashboards_dir.clone(),
        folder: g.folder.clone(),
    })
}

/// What `GET /observability/config` answers: the effective settings, secrets as `*_set`.
fn observability_view(cfg: &Config) -> hodei_api::ObservabilityView {
    let (p, g, a) = (&cfg.metrics.prometheus, &cfg.observability.grafana, &cfg.observability.alerting);
    hodei_api::ObservabilityView {
        metrics: serde_json::json!({
            "prometheus": {"enabled": p.enabled, "port": p.port, "path": p.path, "bearer_token_set": p.bearer_token.is_some()},
            "history": cfg.metrics.history,
        }),
        observability: serde_json::json!({
            "grafana": {"enabled": g.enabled, "url": g.url, "api_key_set": g.api_key.is_some(), "dashboards_dir": g.dashboards_dir, "folder": g.folder},
            "alerting": a,
            "tracing": cfg.observability.tracing,
        }),
        overrides: Default::default(),
        overridden_keys: Vec::new(),
        restart_required: Vec::new(),
    }
}

/// `metrics.history`, when on.
fn history_settings(cfg: &Config) -> Option<hodei_api::history::HistorySettings> {
    let h = &cfg.metrics.history;
    h.enabled.then(|| hodei_api::history::HistorySettings { interval: Duration::from_secs(h.interval_s), retention_days: h.retention_days })
}

pub fn engine_config(cfg: &Config) -> EngineConfig {
    let s = &cfg.scheduler;
    let w = &cfg.workers;
    EngineConfig {
        sched: SchedConfig {
            assign_ack_timeout: Duration::from_millis(s.assign_ack_timeout_ms),
            heartbeat_timeout: Duration::from_millis(w.heartbeat_timeout_ms),
            max_lost_requeues: s.max_lost_requeues,
            retry_backoff: Duration::from_millis(s.retry_backoff_ms),
            retry_backoff_max: Duration::from_millis(s.retry_backoff_max_ms),
            kill_grace: Duration::from_millis(w.kill_grace_ms),
            gc_after: Duration::from_millis(w.gc_after_ms),
            default_expected_duration: Duration::from_millis(s.default_expected_duration_ms),
            quota_rules: quota_rules(cfg),
            default_policy: TenantPolicy { quota: default_quota(cfg), ..TenantPolicy::default() },
            sla: sla_rules(cfg),
            backfill: hodei_core::sched::BackfillRules {
                enabled: s.backfill,
                reservation_after: Duration::from_millis(s.reservation_after_ms),
                max_reservations: s.max_reservations as usize,
            },
            usage_half_life: Some(Duration::from_secs(s.fair_share.usage_half_life_s)).filter(|d| !d.is_zero()),
            preemption: s.preemption.enabled,
            // The stored rate versions are set at start (`rate_versions`); until then, the file's.
            rates: vec![hodei_core::cost::RateVersion { effective_from: hodei_core::Timestamp::from_millis(0), rates: rates(cfg) }],
            pool_rates: cfg
                .resource_pools
                .pools
                .iter()
                .filter(|p| p.cost_rates != config::CostRatesConfig::default())
                .filter_map(|p| {
                    let r = &p.cost_rates;
                    let o = hodei_core::cost::RateOverride {
                        cpu_core_hour: r.hourly_rate_cpu.map(|m| m.0),
                        memory_gib_hour: r.hourly_rate_memory_gb.map(|m| m.0),
                        gpu_hour: r.hourly_rate_gpu.map(|m| m.0),
                    };
                    Some((PoolId::parse(&p.id).ok()?, o))
                })
                .collect(),
            accrual_interval: Duration::from_secs(cfg.cost_tracking.accrual_interval_s),
            keep_cost_records: cfg.cost_tracking.track_by_job,
            cost_by_pool: cfg.cost_tracking.track_by_pool,
        },
        // The tick only drives timeouts and retries; dispatch is event-driven.
        tick: Duration::from_millis(s.tick_ms.clamp(50, 250)),
        kill_grace: Duration::from_millis(w.kill_grace_ms),
        max_log_bytes: cfg.jobs.logs.max_bytes_per_attempt,
        tier_weights: tier_weights(cfg),
        local_workers: None,
    }
}

/// Starts everything and returns once every listener is bound and the built-in pool's
/// workers are connected.
pub async fn start(opts: ServerOptions) -> anyhow::Result<RunningServer> {
    let mut cfg = opts.config;
    let unsupported = cfg.unsupported();
    if !unsupported.is_empty() {
        bail!("{}", unsupported.join("; "));
    }
    let tls = tls::Tls::load(&cfg.server.tls)?;
    private_data_dir(&cfg)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = match opts.store {
        Some(s) => s,
        None => open_store(&cfg, schema_policy(&cfg), true).await?,
    };
    apply_overrides(&mut cfg, store.as_ref()).await?;
    // The recorder is installed whether or not metrics are served: the history samples it.
    let recorder = metrics_handle()?;
    let metrics = cfg.metrics.prometheus.enabled.then(|| recorder.clone());
    let admin_token = match (cfg.auth.mode, &cfg.auth.admin_token) {
        (AuthMode::None, _) => {
            if !cfg.server.http_addr.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_loopback()) {
                bail!("auth.mode: none is only allowed when server.http_addr is a loopback address");
            }
            None
        }
        (AuthMode::Token, Some(t)) => Some(t.0.clone()),
        (AuthMode::Token, None) => {
            let file = cfg.data_dir().join("admin.token");
            let token = secret_file(&file)?;
            // The CLI finds this file by itself only next to the data dir: say where it is.
            let shown = std::path::absolute(&file).unwrap_or(file);
            tracing::info!(
                file = %shown.display(),
                "the admin token; the CLI on this machine finds it from the data dir's parent directory, elsewhere with HODEI_DATA_DIR={} or HODEI_TOKEN",
                shown.parent().map(|p| p.display().to_string()).unwrap_or_default()
            );
            Some(token)
        }
    };
    let setup = seed(&cfg, store.as_ref(), clock.now(), opts.worker_exe.as_ref()).await?;
    let default_tenant = TenantId::parse(&cfg.multi_tenancy.default_tenant_id).context("multi_tenancy.default_tenant_id")?;
    for p in &setup.pools {
        hodei_api::zero_series_for_pool(p, &default_tenant, cfg.cost_tracking.track_by_pool);
    }
    for t in store.list_tenants().await.context("listing tenants")? {
        hodei_api::zero_series_for_tenant(&t.id, &setup.pools);
    }
    let max_log_bytes = cfg.jobs.logs.max_bytes_per_attempt;
    let logs = Arc::new(match (store.log_store(), &cfg.jobs.logs.dir) {
        (Some(db), None) => Logs::new(db, max_log_bytes),
        _ => Logs::in_dir(cfg.logs_dir(), max_log_bytes).context("creating the logs dir")?,
    });
    let rates = rate_versions(&cfg, store.as_ref(), clock.now()).await?;
    let mut engine_cfg = engine_config(&cfg);
    engine_cfg.sched.rates = rates.clone();
    engine_cfg.local_workers = Some(engine::LocalWorkers {
        pools: setup.local.iter().filter_map(|spec| PoolId::parse(&spec.pool).ok()).collect(),
        running: local_pool::running(cfg.data_dir()),
    });
    let (engine, handle) = Engine::start(store.clone(), clock.clone(), logs.clone(), engine_cfg).await.context("loading scheduler state")?;

    let http = TcpListener::bind(&cfg.server.http_addr).await.with_context(|| format!("binding HTTP on {}", cfg.server.http_addr))?;
    let grpc = TcpListener::bind(&cfg.server.grpc_addr).await.with_context(|| format!("binding gRPC on {}", cfg.server.grpc_addr))?;
    let (http_addr, grpc_addr) = (http.local_addr()?, grpc.local_addr()?);
    let metrics_listener = match (&metrics, cfg.metrics.prometheus.port) {
        (Some(_), port) if port != 0 || opts.metrics_addr.is_some() => {
            let addr = opts.metrics_addr.clone().unwrap_or_else(|| format!("{}:{port}", http_addr.ip()));
            Some(TcpListener::bind(&addr).await.with_context(|| format!("binding metrics on {addr}"))?)
        }
        _ => None,
    };
    let metrics_addr = metrics_listener.as_ref().map(|l| l.local_addr()).transpose()?;

    let pools_changed = Arc::new(tokio::sync::Notify::new());
    let parts = ApiParts {
        grpc_addr,
        admin: bootstrap_admin(store.as_ref(), clock.now()).await?,
        store: store.clone(),
        engine: handle.clone(),
        logs: logs.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        pools: setup.pools,
        admin_token,
        pools_changed: pools_changed.clone(),
        rates,
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let state = api_state(&cfg, parts, shutdown_rx.clone())?;
    let mut tasks = vec![
        tokio::spawn(engine.run()),
        tokio::spawn(gauges::sla_compliance(store.clone(), clock.clone(), cfg.sla.compliance_window_hours, shutdown_rx.clone())),
        tokio::spawn(retention::sweep(
            store.clone(),
            handle.clone(),
            logs.clone(),
            clock.clone(),
            retention::Retention {
                jobs: Duration::from_secs_f64(cfg.jobs.retention_days * 86_400.0),
                cost_records: Duration::from_secs(u64::from(cfg.cost_tracking.retention_days) * 86_400),
            },
            shutdown_rx.clone(),
        )),
        tokio::spawn(burst::sweep(
            store.clone(),
            handle.clone(),
            clock.clone(),
            burst_rules(&cfg),
            Duration::from_millis(cfg.scheduler.tick_ms.max(1)),
            shutdown_rx.clone(),
        )),
    ];
    let alerting = &cfg.observability.alerting;
    if alerting.enabled {
        if let Some(dir) = &alerting.prometheus_alerts_dir {
            let path = alerting::write_rules(dir)?;
            tracing::info!(file = %path.display(), "wrote the Prometheus alert rules");
        }
        if let Some(url) = alerting.alertmanager_url.clone().filter(|u| !u.is_empty()) {
            tasks.push(tokio::spawn(alerting::push(store.clone(), clock.clone(), url, shutdown_rx.clone())));
        }
    }
    if let Some(g) = grafana_settings(&cfg) {
        // Once at start, in the background: a Grafana that is down does not hold the server up.
        tasks.push(tokio::spawn(async move {
            match hodei_api::push_dashboards(&g).await {
                Ok(r) if r.errors.is_empty() => tracing::info!(url = %g.url, dashboards = r.uploaded.len(), "pushed the dashboards to Grafana"),
                Ok(r) => tracing::warn!(url = %g.url, failed = ?r.errors.iter().map(|e| format!("{}: {}", e.dashboard, e.error)).collect::<Vec<_>>(), "Grafana refused some dashboards"),
                Err(e) => tracing::warn!(url = %g.url, error = %e.detail, "cannot push the dashboards to Grafana; POST /api/v1/observability/grafana/sync tries again"),
            }
        }));
    }
    if let Some(settings) = history_settings(&cfg) {
        tasks.push(tokio::spawn(history::run(recorder.clone(), store.clone(), clock.clone(), settings, shutdown_rx.clone())));
    }
    // With budgets off none is enforced (and none can be created).
    if cfg.budgets.enabled {
        tasks.push(tokio::spawn(budgets::watch(state.clone(), handle.clone(), Duration::from_secs(1), cfg.budgets.fair_share_demotion, shutdown_rx.clone())));
    }
    let router = hodei_api::router(state.clone());
    let app = router.clone();
    let limits = serve::HttpLimits::new(Duration::from_millis(cfg.server.shutdown_grace_ms));
    let http = tokio::spawn(serve::serve(http, router, limits, tls.as_ref().map(|t| t.acceptor.clone()), shutdown_rx.clone()));
    if let Some(l) = metrics_listener {
        let router = axum::Router::new().route(&cfg.metrics.prometheus.path, axum::routing::get(hodei_api::routes_metrics)).with_state(state.clone());
        // The same TLS and connection limits as the API's listener.
        tasks.push(tokio::spawn(serve::serve(l, router, limits, tls.as_ref().map(|t| t.acceptor.clone()), shutdown_rx.clone())));
    }
    let timeouts = WorkerTimeouts {
        heartbeat_interval: Duration::from_millis(cfg.workers.heartbeat_interval_ms),
        heartbeat_timeout: Duration::from_millis(cfg.workers.heartbeat_timeout_ms),
        kill_grace: Duration::from_millis(cfg.workers.kill_grace_ms),
        usage_sample_interval: Duration::from_millis(cfg.workers.usage_sample_interval_ms),
    };
    let (usage, usage_writer) = usage::start(store.clone(), clock.clone(), shutdown_rx.clone());
    tasks.push(usage_writer);
    let svc = WorkerSvc::new(store.clone(), handle.clone(), logs, clock.clone(), timeouts, usage);
    // With TLS, the local pools' workers (started by this server, holding their join tokens)
    // connect to a plaintext listener of their own on loopback; remote workers only get TLS.
    let local_grpc = match (&tls, setup.local.is_empty()) {
        (Some(_), false) => Some(TcpListener::bind("127.0.0.1:0").await.context("binding the built-in pool's loopback gRPC listener")?),
        _ => None,
    };
    let local_grpc_addr = local_grpc.as_ref().map(|l| l.local_addr()).transpose()?.unwrap_or(grpc_addr);
    let remote = match &tls {
        Some(t) => tonic::transport::Server::builder().tls_config(t.grpc()).context("server.tls: the gRPC listener refused it")?,
        None => tonic::transport::Server::builder(),
    };
    tasks.push(tokio::spawn(grpc_server(grpc, remote, svc.clone(), shutdown_rx.clone())));
    if let Some(l) = local_grpc {
        tasks.push(tokio::spawn(grpc_server(l, tonic::transport::Server::builder(), svc, shutdown_rx.clone())));
    }

    let grpc_url = format!("http://{local_grpc_addr}");
    local_pool::publish(cfg.data_dir(), &grpc_url, &setup.local).context("writing where local workers find this server")?;
    let expected: u32 = setup.local.iter().map(|s| s.count).sum();
    let a = &cfg.autoscaling;
    let mut kube = kubernetes::KubePools::new(Duration::from_secs(a.provision_timeout_s), a.provision_max_retries);
    for (pool, spec) in setup.kube {
        kube.add(&pool, spec).await.with_context(|| format!("pool {pool}: connecting to the Kubernetes API"))?;
    }
    let local = local_pool::LocalPools::start(agent_template(&cfg, opts.worker_exe.as_ref()), setup.local, &grpc_url, shutdown_rx.clone());
    let autoscaler = autoscaler::Autoscaler {
        providers: vec![Box::new(local), Box::new(kube)],
        store: store.clone(),
        engine: handle.clone(),
        clock: clock.clone(),
        interval: Duration::from_secs(cfg.autoscaling.evaluation_interval_s),
        enabled: cfg.autoscaling.enabled,
        provision_delay: Duration::from_secs(1),
        poke: pools_changed,
        history_retention: Duration::from_secs(u64::from(cfg.autoscaling.history_retention_days) * 86_400),
    };
    // The autoscaler owns the local pools' supervisors (started now): shutting down waits for their agents.
    let deadline = Instant::now() + Duration::from_secs(20);
    while handle.connected_workers() < expected as usize {
        if Instant::now() > deadline {
            bail!("the {expected} local workers did not connect within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Its first round sees the local workers that just connected.
    let workers = vec![tokio::spawn(autoscaler.run(shutdown_rx.clone()))];
    Ok(RunningServer { http_addr, grpc_addr, metrics_addr, engine: handle, store, router: app, shutdown, http, tasks, workers })
}

/// Serves the worker service on `listener` with `builder` (TLS or not) until `stop` flips.
async fn grpc_server(listener: TcpListener, mut builder: tonic::transport::Server, svc: WorkerSvc, mut stop: watch::Receiver<bool>) {
    // Assignments are small frames: without TCP_NODELAY they wait on delayed ACKs (seen: 3–23 ms).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = builder.add_service(WorkerServiceServer::new(svc)).serve_with_incoming_shutdown(incoming, stopped).await {
        tracing::error!(error = %e, "gRPC server failed");
    }
}

#[cfg(test)]
mod tests {
    use super::redact_password;

    #[test]
    fn database_passwords_never_reach_a_message() {
        assert_eq!(redact_password("postgres://hodei:s3cret@db:5432/jobs"), "postgres://hodei:***@db:5432/jobs");
        assert_eq!(redact_password("postgres://hodei@db/jobs"), "postgres://hodei@db/jobs");
        assert_eq!(redact_password("postgres://db/jobs"), "postgres://db/jobs");
    }
}
