//! Configuration (SPEC §6): YAML from `--config` / `HODEI_CONFIG_PATH`, `${VAR}` and
//! `${VAR:-default}` substituted first, then `HODEI_<SECTION>__<KEY>` env overrides, then flags.
//! Every section of the schema is parsed and validated now, including those used by later
//! features. An unknown key or a bad value is an error naming the full key path.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_yaml_ng::Value;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config line {line} (key `{key}`): environment variable {var} is not set (use ${{{var}:-default}} for a default)")]
    UnsetVar { line: usize, key: String, var: String },
    #[error("config file is not valid YAML: {0}")]
    Syntax(String),
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// A secret: never printed.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Serialize for Secret {
    /// Never the secret: whether one is set.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// A duration written `<int>ms|s|m|h|d` (a bare integer is seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationStr(pub std::time::Duration);

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let s = match &v {
            Value::Number(n) if n.as_u64().is_some() => format!("{}s", n),
            Value::String(s) => s.trim().to_owned(),
            _ => return Err(de::Error::custom(format!("{v:?} is not a duration (expected <int>ms|s|m|h|d, e.g. 5m)"))),
        };
        parse_duration(&s).map(DurationStr).ok_or_else(|| de::Error::custom(format!("{s:?} is not a duration (expected <int>ms|s|m|h|d, e.g. 5m)")))
    }
}

impl Serialize for DurationStr {
    /// In the largest unit that divides it, e.g. `5m`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ms = self.0.as_millis();
        let text = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s")]
            .iter()
            .find(|(unit, _)| ms > 0 && ms.is_multiple_of(*unit))
            .map_or_else(|| format!("{ms}ms"), |(unit, name)| format!("{}{name}", ms / unit));
        s.serialize_str(&text)
    }
}

pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(ms))
}

/// A money rate with at most 6 decimals, held as integer micro-units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Micros(pub i64);

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        // YAML numbers arrive as f64; their shortest decimal form is what the user wrote.
        let s = match &v {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.trim().to_owned(),
            _ => String::new(),
        };
        parse_micros(&s).map(Micros).ok_or_else(|| de::Error::custom(format!("{s:?} is not a non-negative decimal with at most 6 decimals")))
    }
}

pub use hodei_core::cost::parse_micros;

impl Serialize for Micros {
    /// As the decimal a file holds, e.g. `0.05`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (whole, frac) = (self.0 / 1_000_000, self.0 % 1_000_000);
        let frac = format!("{frac:06}");
        let frac = frac.trim_end_matches('0');
        s.serialize_str(&if frac.is_empty() { whole.to_string() } else { format!("{whole}.{frac}") })
    }
}

/// A section of the file: its keys with their defaults and documentation, which is also the
/// configuration reference (`config_reference`).
macro_rules! section {
    ($(#[$m:meta])* $name:ident { $($(#[doc = $doc:literal])* $field:ident : $ty:ty = $default:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name { $($(#[doc = $doc])* pub $field: $ty),* }

        impl crate::config_reference::Describe for $name {
            fn kind() -> String {
                "section".into()
            }

            fn keys(prefix: &str, out: &mut Vec<crate::config_reference::Key>) -> bool {
                use crate::config_reference::Describe;
                $(
                    let path = format!("{prefix}{}", stringify!($field));
                    if !<$ty as Describe>::keys(&format!("{path}."), out) {
                        let lines: &[&str] = &[$($doc),*];
                        let doc = lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
                        out.push(crate::config_reference::Key { path, kind: <$ty as Describe>::kind(), doc });
                    }
                )*
                true
            }
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $($field: $default),* }
            }
        }

        impl $name {
            /// The section's keys, as a file spells them (for the test that every key is
            /// honoured or refused).
            #[allow(dead_code)]
            pub const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];
        }
    };
}

section!(Config {
    server: ServerConfig = Default::default(),
    log: LogConfig = Default::default(),
    database: DatabaseConfig = Default::default(),
    auth: AuthConfig = Default::default(),
    limits: LimitsConfig = Default::default(),
    scheduler: SchedulerConfig = Default::default(),
    jobs: JobsConfig = Default::default(),
    workers: WorkersConfig = Default::default(),
    resource_pools: ResourcePoolsConfig = Default::default(),
    multi_tenancy: MultiTenancyConfig = Default::default(),
    burst_capacity: BurstConfig = Default::default(),
    budgets: BudgetsConfig = Default::default(),
    sla: SlaConfig = Default::default(),
    cost_tracking: CostConfig = Default::default(),
    autoscaling: AutoscalingConfig = Default::default(),
    metrics: MetricsConfig = Default::default(),
    observability: ObservabilityConfig = Default::default(),
    multi_cluster: MultiClusterConfig = Default::default(),
    deployments: DeploymentsConfig = Default::default(),
    optimization: OptimizationConfig = Default::default(),
});

section!(ServerConfig {
    /// Where the REST API (and the web pages) listen, `host:port`; port 0 picks a free one (printed on
    /// the ready line).
    http_addr: String = "127.0.0.1:8080".into(),
    /// Where workers connect (gRPC), `host:port`.
    grpc_addr: String = "127.0.0.1:9090".into(),
    /// The server's directory (made private, 0700): the SQLite database, job output, the admin token,
    /// pool join tokens.
    data_dir: PathBuf = "./hodei-data".into(),
    /// A request not answered within this gets 503 `unavailable` (what it changed by then stands).
    request_timeout_ms: u64 = 30_000,
    /// On SIGTERM, how long requests in flight may still finish.
    shutdown_grace_ms: u64 = 30_000,
    tls: TlsConfig = Default::default(),
});

section!(TlsConfig {
    /// PEM certificate chain: with `key_file`, the REST and gRPC listeners speak TLS only.
    cert_file: Option<PathBuf> = None,
    /// PEM private key of `cert_file`.
    key_file: Option<PathBuf> = None,
    /// PEM CA: workers must present a client certificate it signed (mutual TLS on the gRPC listener).
    client_ca_file: Option<PathBuf> = None,
});

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

section!(LogConfig {
    /// `error`, `warn`, `info`, `debug` or `trace`, or a filter such as `info,hodei_server=debug`
    /// (`RUST_LOG` overrides it).
    level: String = "info".into(),
    /// `text` for people (colours only on a terminal), `json` for one JSON object a line (also
    /// `--log-json`).
    format: LogFormat = LogFormat::Text,
});

section!(DatabaseConfig {
    /// `sqlite://PATH` or `postgres://…`; default `sqlite://{data_dir}/hodei.db`.
    url: Option<String> = None,
    /// The most connections to the database (PostgreSQL; SQLite's readers).
    max_connections: u32 = 16,
    /// PostgreSQL: a statement running longer is cancelled.
    statement_timeout_ms: u64 = 5000,
    /// Bring the schema up to date at start. Off: the server waits for `hodei migrate` instead.
    auto_migrate: bool = true,
    /// SQLite only. `full` (default): every commit is fsync'd, durable against power loss.
    /// `normal`: durable against a crash of the process, not of the machine; faster commits.
    sqlite_synchronous: SqliteSync = SqliteSync::Full,
});

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SqliteSync {
    #[default]
    Full,
    Normal,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    #[default]
    Token,
    None,
}

section!(AuthConfig {
    /// `token`: every request needs a bearer token. `none`: no authentication, allowed only when
    /// `server.http_addr` is a loopback address.
    mode: AuthMode = AuthMode::Token,
    /// The admin token (default: a random one drawn at first start, kept in `{data_dir}/admin.token`,
    /// 0600).
    admin_token: Option<Secret> = None,
    /// API tokens created without an expiry expire after this many days (default: never).
    token_default_ttl_days: Option<u32> = None,
});

section!(LimitsConfig {
    /// The largest request body (a batch: `max_batch_body_bytes`); larger is 413.
    max_body_bytes: u64 = 16 << 20,
    /// The largest body of a batch submit.
    max_batch_body_bytes: u64 = 256 << 20,
    /// The most bytes a job's command and environment may hold together.
    max_argv_env_bytes: u64 = 131_072,
    /// The most labels a job may carry.
    max_labels: u32 = 32,
    /// Jobs a tenant may submit per second (0: no limit); over it, 429 `rate_limited` with
    /// `Retry-After`.
    submit_rate_per_tenant: u32 = 0,
    /// The most jobs a tenant may submit at once (0: one second's worth of the rate).
    submit_burst_per_tenant: u32 = 0,
});

section!(FairShareConfig {
    /// 0: pure start-time fair queuing. Otherwise a tenant that used much recently waits longer when it
    /// comes back, its usage halving every this many seconds.
    usage_half_life_s: u64 = 0,
});
section!(PreemptionConfig {
    /// A `critical` job with no room stops the youngest preemptible job of a lower priority (requeued,
    /// not failed).
    enabled: bool = false,
});

section!(SchedulerConfig {
    /// How often the scheduler looks at time-driven work: timeouts, retry back-offs, SLA clocks, lost
    /// workers.
    tick_ms: u64 = 1000,
    /// A worker that does not accept a job within this loses it, and the job is placed again.
    assign_ack_timeout_ms: u64 = 10_000,
    /// A job whose worker was lost is requeued at most this many times (without using a retry); then it
    /// fails `worker_lost`.
    max_lost_requeues: u32 = 3,
    /// The wait before a failed job's first retry (a job's own `retry_backoff_ms` wins); it doubles
    /// with each retry.
    retry_backoff_ms: u64 = 10_000,
    /// The longest wait before a retry.
    retry_backoff_max_ms: u64 = 600_000,
    /// How long a job without `expected_duration_ms` is assumed to run, for fair share and start-time
    /// estimates, until its name's history says better.
    default_expected_duration_ms: u64 = 60_000,
    fair_share: FairShareConfig = Default::default(),
    /// Let smaller jobs run on room a waiting larger job cannot use yet, as long as they do not delay
    /// its reservation.
    backfill: bool = true,
    /// A job waiting this long for room gets a reservation on the worker expected to have room first.
    reservation_after_ms: u64 = 30_000,
    /// The most reservations held at once.
    max_reservations: u32 = 16,
    /// Jobs critical or past their SLA's maximum wait are placed before the others.
    sla_escalation: bool = true,
    preemption: PreemptionConfig = Default::default(),
    /// How far ahead `explain` simulates to estimate a start time (beyond it: unknown).
    eta_horizon_ms: u64 = 86_400_000,
});

section!(ResourcesConfig {
    /// Millicores a job asks for when it names none.
    cpu_m: u32 = 250,
    /// MiB a job asks for when it names none (the worker kills a job above its memory as `oom`).
    memory_mb: u32 = 256,
    /// GPUs a job asks for when it names none.
    gpu: u32 = 0,
});

section!(JobLogsConfig {
    /// Output kept per attempt (stdout and stderr together); beyond it output is dropped and the job
    /// marked `log_truncated`.
    max_bytes_per_attempt: u64 = 64 << 20,
    /// Job output in files here. Default: in the database with PostgreSQL (every server of
    /// the database reaches it), `{data_dir}/logs` with SQLite.
    dir: Option<PathBuf> = None,
});

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PriorityName {
    Critical,
    High,
    #[default]
    Normal,
    Low,
    Batch,
}

section!(JobsConfig {
    default_resources: ResourcesConfig = Default::default(),
    /// A job without `timeout_ms` is killed after this long (`timed_out`).
    default_timeout_ms: u64 = 3_600_000,
    /// The longest `timeout_ms` a job may ask for.
    max_timeout_ms: u64 = 604_800_000,
    /// The priority of a job that names none.
    default_priority: PriorityName = PriorityName::Normal,
    /// The most `max_retries` a job may ask for.
    max_retries_limit: u32 = 10,
    /// The most jobs one batch submit may hold.
    max_batch_size: u32 = 100_000,
    /// The most jobs one array may hold.
    max_array_size: u32 = 100_000,
    /// Ended jobs (attempts, events, logs) are deleted this long after they ended; a fraction
    /// of a day is allowed (0.5 = 12 h).
    retention_days: f64 = 30.0,
    logs: JobLogsConfig = Default::default(),
});

section!(WorkersConfig {
    /// How often workers report (sent to them when they register).
    heartbeat_interval_ms: u64 = 3000,
    /// A worker silent this long is lost: its jobs are requeued.
    heartbeat_timeout_ms: u64 = 10_000,
    /// Built-in workers whose server has not come back within this stop, ending their jobs.
    gc_after_ms: u64 = 3_600_000,
    /// Between SIGTERM and SIGKILL when a job is cancelled or times out.
    kill_grace_ms: u64 = 10_000,
    /// How often workers sample each running job's cpu, memory, IO and GPU use.
    usage_sample_interval_ms: u64 = 10_000,
    /// The user the built-in pool's jobs run as when the server runs as root (default
    /// `nobody`); a server not running as root runs them as itself.
    run_as: Option<String> = None,
    /// Run each job of the agents this server starts (the built-in pool, `local` pools) in a
    /// cgroup of its own: the kernel holds the job to its `memory_mb` (over it: `oom`) and its
    /// `cpu_m`, and its use is read from the cgroup. Needs a server running as root on a
    /// machine with the memory and cpu controllers (cgroup v2, or v1 hierarchies); refused at
    /// start otherwise. Off: memory is watched through procfs, cpu is not capped. Off by
    /// default: moving each new job into its cgroup costs the kernel an RCU grace period.
    cgroups: bool = false,
});

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PoolTypeName {
    #[default]
    Static,
    Dynamic,
}

section!(BuiltinLocalConfig {
    /// Start the built-in pool: worker agents the server runs on its own machine. Turned off by
    /// configuring `pools`.
    enabled: bool = true,
    /// The built-in pool's id.
    id: String = "local".into(),
    /// How many agents the built-in pool runs.
    workers: u32 = 2,
    /// Slots of the whole pool, split evenly over its workers; default cores × 4.
    slots: Option<u32> = None,
});

section!(WorkerTemplateConfig {
    /// Millicores one worker offers.
    cpu_m: u32 = 1000,
    /// MiB one worker offers.
    memory_mb: u32 = 1024,
    /// GPUs one worker offers.
    gpu: u32 = 0,
    /// Jobs one worker runs at once.
    slots: u32 = 1,
    /// Not supported yet: refused unless empty (give the pool `labels`, or a remote worker `--labels`).
    labels: BTreeMap<String, String> = BTreeMap::new(),
    /// Not supported yet: refused unless `[process]`.
    capabilities: Vec<String> = vec!["process".into()],
});

section!(CostRatesConfig {
    /// This pool's price of a core-hour (default: `cost_tracking.hourly_rate_cpu`).
    hourly_rate_cpu: Option<Micros> = None,
    /// This pool's price of a GiB-hour (default: `cost_tracking.hourly_rate_memory_gb`).
    hourly_rate_memory_gb: Option<Micros> = None,
    /// This pool's price of a GPU-hour (default: `cost_tracking.hourly_rate_gpu`).
    hourly_rate_gpu: Option<Micros> = None,
});

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    #[default]
    Threshold,
    Forecast,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ScaleAction {
    ScaleUp,
    ScaleDown,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScalingPolicyConfig {
    pub name: String,
    #[serde(default)]
    pub mode: PolicyMode,
    /// Threshold policies' condition; forecast policies have none.
    pub trigger: Option<String>,
    pub action: ScaleAction,
    #[serde(default = "one")]
    pub step: u32,
    pub cooldown: Option<DurationStr>,
    pub window: Option<DurationStr>,
    #[serde(default = "twenty")]
    pub hysteresis_pct: u32,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn one() -> u32 {
    1
}
fn twenty() -> u32 {
    20
}
fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub id: String,
    pub name: Option<String>,
    #[serde(rename = "type", default)]
    pub pool_type: PoolTypeName,
    #[serde(default = "local_provider")]
    pub provider: String,
    #[serde(default)]
    pub provider_config: BTreeMap<String, Value>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub worker_template: WorkerTemplateConfig,
    #[serde(default)]
    pub min_size: u32,
    #[serde(default = "one")]
    pub max_size: u32,
    #[serde(default)]
    pub auto_scaling_enabled: bool,
    #[serde(default = "three_hundred")]
    pub idle_timeout_s: u64,
    #[serde(default)]
    pub allowed_tenants: Vec<String>,
    #[serde(default)]
    pub cost_rates: CostRatesConfig,
    pub cluster: Option<String>,
    pub join_token: Option<Secret>,
    #[serde(default)]
    pub scaling_policies: Vec<ScalingPolicyConfig>,
}

fn local_provider() -> String {
    "local".into()
}
fn three_hundred() -> u64 {
    300
}

section!(ResourcePoolsConfig {
    /// Off: no pools from this file are made (the built-in pool included); workers join pools made
    /// through the API.
    enabled: bool = true,
    /// Not supported yet: refused unless `static`.
    default_pool_type: PoolTypeName = PoolTypeName::Static,
    builtin_local: BuiltinLocalConfig = Default::default(),
    pools: Vec<PoolConfig> = Vec::new(),
});

section!(TierWeightsConfig {
    /// Fair-share weight of a `free` tenant.
    free: u32 = 1,
    /// Fair-share weight of a `standard` tenant.
    standard: u32 = 2,
    /// Fair-share weight of a `premium` tenant.
    premium: u32 = 3,
    /// Fair-share weight of an `enterprise` tenant.
    enterprise: u32 = 5,
});

section!(QuotaConfig {
    /// Millicores a new tenant's jobs may hold at once.
    cpu_m: u64 = 4000,
    /// MiB a new tenant's jobs may hold at once.
    memory_mb: u64 = 8192,
    /// GPUs a new tenant's jobs may hold at once.
    gpu: u32 = 0,
    /// Jobs of a new tenant running at once.
    max_concurrent_jobs: u32 = 10,
    /// Jobs of a new tenant waiting at once; beyond it submits are refused (429).
    max_queued_jobs: u32 = 1000,
});

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ViolationPolicy {
    Reject,
    #[default]
    Queue,
    Warn,
}

section!(QuotaEnforcementConfig {
    /// On: a job that could never fit the tenant's quota is refused at submit. Off: it waits (held).
    strict_mode: bool = true,
    /// A submit over the quota now: `reject` (429), `queue` (waits for room) or `warn` (waits, with a
    /// warning on the job).
    violation_policy: ViolationPolicy = ViolationPolicy::Queue,
});

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TierName {
    Free,
    #[default]
    Standard,
    Premium,
    Enterprise,
}

section!(MultiTenancyConfig {
    /// Off: every job runs as the default tenant.
    enabled: bool = true,
    /// The tenant of a job that names none, made at first start.
    default_tenant_id: String = "default".into(),
    /// Not supported yet: refused unless `standard`.
    default_tier: TierName = TierName::Standard,
    tier_weights: TierWeightsConfig = Default::default(),
    default_tenant_quota: QuotaConfig = Default::default(),
    quota_enforcement: QuotaEnforcementConfig = Default::default(),
});

section!(BurstConfig {
    /// Let tenants ask for burst sessions: more than their quota for a while.
    enabled: bool = true,
    /// A burst may raise a quota to at most this percentage of it.
    max_overage_percentage: u32 = 150,
    /// How long a burst session lasts unless it asks for less.
    burst_duration_minutes: u32 = 60,
    /// Burst requests wait for an admin's approval.
    require_approval: bool = false,
    /// After a session ends, the tenant waits this long before the next.
    cooldown_minutes: u32 = 30,
    /// A request not approved within this expires.
    approval_timeout_hours: u32 = 24,
});

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnExhausted {
    #[default]
    Hold,
    Reject,
}

section!(BudgetsConfig {
    /// Off: budgets cannot be made (409) and none is enforced.
    enabled: bool = true,
    /// What a spent budget does when it does not say: `hold` new jobs (they wait) or `reject` submits
    /// (402). Running jobs are never killed.
    default_on_exhausted: OnExhausted = OnExhausted::Hold,
    /// Percentages of a budget at which an alert is raised, once each per period.
    alert_thresholds_pct: Vec<u32> = vec![80, 90, 100],
    /// A tenant spending ahead of its period's pace has its fair-share weight lowered in proportion
    /// (down to a tenth).
    fair_share_demotion: bool = true,
});

section!(MaxWaitConfig {
    /// Seconds a `critical` job may wait before its SLA is breached.
    critical: u64 = 300,
    /// Seconds a `high` job may wait.
    high: u64 = 900,
    /// Seconds a `normal` job may wait.
    medium: u64 = 3600,
    /// Seconds a `low` job may wait.
    low: u64 = 14_400,
    /// Seconds a `batch` job may wait.
    best_effort: u64 = 86_400,
});

section!(SlaConfig {
    max_wait_s: MaxWaitConfig = Default::default(),
    /// A waiting job is `at_risk` past this percentage of its maximum wait.
    at_risk_pct: u32 = 70,
    /// A waiting job is `critical` past this percentage of its maximum wait.
    critical_pct: u32 = 90,
    /// The window of the SLA compliance figures and gauge.
    compliance_window_hours: u32 = 24,
});

section!(CostConfig {
    /// Not supported yet: refused unless `true` (costs are always kept).
    enabled: bool = true,
    /// Not supported yet: refused unless `true` (budgets, their fair-share demotion and what
    /// each caller may read of costs all rest on costs kept by tenant).
    track_by_tenant: bool = true,
    /// Keep each attempt's priced stretches as cost records (job, name, rates, for
    /// `retention_days`) beside the daily rollups. Off: the rollups (by day, tenant and pool)
    /// only — a job still shows its own cost, but there is no breakdown by job name and
    /// reports list no top jobs.
    track_by_job: bool = true,
    /// Keep costs by pool: cost records and daily rollups name the pool an attempt ran in, and
    /// `hodei_pool_cost_micros_total{pool}` counts them. Off: the ledger leaves the pool out —
    /// breakdowns by or of a pool are refused, reports have no pool breakdown and the pool
    /// cost counter is not exported (pools' own rates still price their jobs).
    track_by_pool: bool = true,
    /// Cost records and daily rollups older than this are deleted.
    retention_days: u32 = 90,
    /// Price of a core-hour of requested cpu. A change applies from the next start on, never to what
    /// was already billed.
    hourly_rate_cpu: Micros = Micros(50_000),
    /// Price of a GiB-hour of requested memory.
    hourly_rate_memory_gb: Micros = Micros(10_000),
    /// Price of a GPU-hour.
    hourly_rate_gpu: Micros = Micros(2_500_000),
    /// The currency amounts are shown in.
    currency: String = "USD".into(),
    /// How often running jobs are billed for the time they ran so far.
    accrual_interval_s: u64 = 60,
});

section!(AutoscalingConfig {
    /// Off: pools keep the size they are set to.
    enabled: bool = true,
    /// How often pools' scaling policies are evaluated.
    evaluation_interval_s: u64 = 15,
    /// The least time between two scale-ups of a pool (a policy's `cooldown` wins).
    default_scale_up_cooldown_s: u64 = 60,
    /// The least time between two scale-downs of a pool.
    default_scale_down_cooldown_s: u64 = 120,
    /// How long a policy's trigger must hold before it acts (a policy's `window` wins).
    default_window_s: u64 = 60,
    /// A worker that has not registered this long after it was asked for counts as failed.
    provision_timeout_s: u64 = 300,
    /// Failed provisionings retried before the pool's scaling is marked failed.
    provision_max_retries: u32 = 3,
    /// Scaling history older than this is deleted.
    history_retention_days: u32 = 90,
});

section!(PrometheusConfig {
    /// Serve Prometheus metrics.
    enabled: bool = true,
    /// Port of the metrics listener on 127.0.0.1 (`--metrics-addr` sets the whole address). 0: metrics
    /// on the REST listener only.
    port: u16 = 9091,
    /// The path metrics are served at.
    path: String = "/metrics".into(),
    /// Secret a scrape must send as `Authorization: Bearer …` (both listeners), if set.
    bearer_token: Option<Secret> = None,
});
section!(HistoryConfig {
    /// Keep a history of the server's own figures (per pool, per tenant, cluster-wide) in the
    /// database, read with `GET /api/v1/metrics/historical`: raw samples for a day, 5-minute
    /// averages for a week, hourly ones for `retention_days`.
    enabled: bool = true,
    /// Seconds between samples.
    interval_s: u64 = 60,
    /// Days the hourly averages are kept (and no resolution longer).
    retention_days: u32 = 14,
});
section!(MetricsConfig { prometheus: PrometheusConfig = Default::default(), history: HistoryConfig = Default::default() });

section!(GrafanaConfig {
    /// Push the dashboards to a Grafana (`POST /api/v1/observability/grafana/sync`, and once
    /// at start); needs `url`.
    enabled: bool = false,
    /// Grafana's base URL, e.g. `http://grafana:3000`.
    url: Option<String> = None,
    /// A Grafana service-account token allowed to write dashboards and folders (secret).
    api_key: Option<Secret> = None,
    /// Push every `*.json` of this directory instead of the built-in dashboards.
    dashboards_dir: Option<PathBuf> = None,
    /// The Grafana folder the dashboards go in (made if missing).
    folder: String = "Hodei".into(),
});

section!(AlertingConfig {
    /// Write the alert rules to `prometheus_alerts_dir` and push the server's own alerts to
    /// `alertmanager_url`, where those are set.
    enabled: bool = true,
    /// Directory the built-in Prometheus alert rules are written to at start, as
    /// `hodei-alerts.yml` (list it in Prometheus's `rule_files`).
    prometheus_alerts_dir: Option<PathBuf> = None,
    /// An Alertmanager's base URL, e.g. `http://alertmanager:9093`: the alerts the server
    /// raises itself (budget thresholds) are sent there every 30 s while open, and once
    /// resolved.
    alertmanager_url: Option<String> = None,
});

section!(TracingConfig {
    /// Export traces — each REST request's span with its principal, tenant and job — over
    /// OpenTelemetry's OTLP/HTTP protocol.
    enabled: bool = false,
    /// The OTLP/HTTP receiver's base URL (an OpenTelemetry Collector, Jaeger, Tempo…); spans
    /// are sent to `<url>/v1/traces`. `http://` only (a local collector forwards further).
    otlp_endpoint: String = "http://127.0.0.1:4318".into(),
    /// The `service.name` the spans carry.
    service_name: String = "hodei".into(),
});

section!(ObservabilityConfig {
    grafana: GrafanaConfig = Default::default(),
    alerting: AlertingConfig = Default::default(),
    tracing: TracingConfig = Default::default(),
});

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RoutingStrategy {
    Manual,
    #[default]
    LeastLoaded,
    Cheapest,
    DataLocality,
    Affinity,
}

section!(MultiClusterConfig {
    /// Not supported yet: refused unless left at its default.
    enabled: bool = false,
    /// Not supported yet: refused unless left at its default.
    home_cluster: String = "local".into(),
    /// Not supported yet: refused unless left at its default.
    routing_strategy: RoutingStrategy = RoutingStrategy::LeastLoaded,
    /// Not supported yet: refused unless left at its default.
    burst_threshold_pct: u32 = 80,
    /// Not supported yet: refused unless left at its default.
    burst_sustain_s: u64 = 120,
    /// Not supported yet: refused unless left at its default.
    burst_target: Option<String> = None,
});

section!(DeploymentsConfig {
    /// Not supported yet: refused unless left at its default.
    min_runs: u32 = 5,
    /// Not supported yet: refused unless left at its default.
    canary_pct: u32 = 10,
    /// Not supported yet: refused unless left at its default.
    bake_s: u64 = 3600,
    /// Not supported yet: refused unless left at its default.
    progressive_steps_pct: Vec<u32> = vec![10, 30, 50, 100],
    /// Not supported yet: refused unless left at its default.
    min_success_rate_pct: u32 = 95,
    /// Not supported yet: refused unless left at its default.
    max_job_error_rate_pct: u32 = 5,
});

section!(OptimizationConfig {
    /// Recommendations look at runs of the last this many days.
    lookback_days: u32 = 30,
    /// A job name needs this many finished runs before it gets a recommendation.
    min_runs: u32 = 5,
});

/// Replaces `${VAR}` and `${VAR:-default}` in the raw text.
pub fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let expr = &after[..end];
            let (var, default) = match expr.split_once(":-") {
                Some((v, d)) => (v, Some(d)),
                None => (expr, None),
            };
            let value = env(var).filter(|v| !(default.is_some() && v.is_empty()));
            match (value, default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    let key = line.split(':').next().unwrap_or("").trim().trim_start_matches("- ").to_owned();
                    return Err(ConfigError::UnsetVar { line: i + 1, key, var: var.to_owned() });
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    Ok(out)
}

/// Applies `HODEI_<SECTION>__<KEY>[__<KEY>…]` overrides onto the YAML tree.
fn apply_env(root: &mut Value, vars: &[(String, String)]) -> Result<(), ConfigError> {
    for (name, raw) in vars {
        let Some(path) = name.strip_prefix("HODEI_") else { continue };
        if !path.contains("__") {
            continue;
        }
        let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
        let value: Value = serde_yaml_ng::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()));
        let mut node = &mut *root;
        for (i, k) in keys.iter().enumerate() {
            if !node.is_mapping() {
                if node.is_null() {
                    *node = Value::Mapping(Default::default());
                } else {
                    return Err(ConfigError::Invalid { path: keys[..i].join("."), message: format!("cannot apply {name}: not a section") });
                }
            }
            let map = node.as_mapping_mut().expect("made a mapping above");
            let key = Value::String(k.clone());
            if i + 1 == keys.len() {
                map.insert(key, value.clone());
                break;
            }
            node = map.entry(key).or_insert(Value::Null);
        }
    }
    Ok(())
}

/// Turns serde's wording into "value is not what was expected".
fn explain(path: &str, msg: &str) -> String {
    let unit = match path.rsplit('.').next().unwrap_or("") {
        k if k.ends_with("cpu_m") => " (millicores)",
        k if k.ends_with("memory_mb") => " (MiB)",
        k if k.ends_with("_ms") => " (milliseconds)",
        k if k.ends_with("_s") => " (seconds)",
        k if k.ends_with("_pct") => " (percent)",
        k if k.ends_with("_bytes") => " (bytes)",
        _ => "",
    };
    let value = msg
        .split_once("invalid type: ")
        .or_else(|| msg.split_once("invalid value: "))
        .map(|(_, r)| r.split(", expected").next().unwrap_or(r).trim().to_owned());
    let expected = msg.split_once(", expected ").map(|(_, e)| e.trim().to_owned());
    match (value, expected) {
        (Some(v), Some(e)) => {
            let v = v.trim_start_matches("string ").trim_start_matches("integer ").trim_start_matches("floating point ").replace('`', "");
            let e = match e.as_str() {
                "u8" | "u16" | "u32" | "u64" => "a non-negative integer".to_owned(),
                "a boolean" => "a boolean (true or false)".to_owned(),
                other => other.to_owned(),
            };
            format!("{v} is not {e}{unit}")
        }
        _ => msg.to_owned(),
    }
}

impl Config {
    /// The keys set to something other than their default that no built feature acts on yet,
    /// each as `<key path>: not supported yet`. The server refuses to start while any is set:
    /// a key is either honoured or refused, never silently ignored (a `server.tls` that served
    /// plaintext would be the worst of these). Each entry leaves this list with the feature.
    pub fn unsupported(&self) -> Vec<String> {
        let d = Config::default();
        let mut out = Vec::new();
        let mut check = |path: String, set: bool| {
            if set {
                out.push(format!("{path}: not supported yet"));
            }
        };
        let (c, dc) = (&self.cost_tracking, &d.cost_tracking);
        check("resource_pools.default_pool_type".into(), self.resource_pools.default_pool_type != d.resource_pools.default_pool_type);
        check("multi_tenancy.default_tier".into(), self.multi_tenancy.default_tier != d.multi_tenancy.default_tier);
        // The hourly rates price dry runs' estimates today; the rest is the ledger's.
        check("cost_tracking.enabled".into(), c.enabled != dc.enabled);
        check("cost_tracking.track_by_tenant".into(), c.track_by_tenant != dc.track_by_tenant);
        check("multi_cluster".into(), self.multi_cluster != d.multi_cluster);
        check("deployments".into(), self.deployments != d.deployments);
        for (i, p) in self.resource_pools.pools.iter().enumerate() {
            let at = |key: &str| format!("resource_pools.pools[{i}].{key}");
            check(at("provider"), !["local", "kubernetes"].contains(&p.provider.as_str()));
            check(at("provider_config"), p.provider != "kubernetes" && !p.provider_config.is_empty());
            check(at("cluster"), p.cluster.is_some());
            // Labels and capabilities of workers a provider creates: no provider creates any yet
            // (a remote worker states its own with --labels).
            check(at("worker_template.labels"), !p.worker_template.labels.is_empty());
            check(at("worker_template.capabilities"), p.worker_template.capabilities != WorkerTemplateConfig::default().capabilities);
        }
        out
    }

    /// Loads from an optional file, the given environment and defaults.
    pub fn load(file: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut root = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                let text = interpolate(&text, &lookup)?;
                serde_yaml_ng::from_str::<Value>(&text).map_err(|e| ConfigError::Syntax(e.to_string()))?
            }
            None => Value::Null,
        };
        if root.is_null() {
            root = Value::Mapping(Default::default());
        }
        apply_env(&mut root, env)?;
        if let Some(dir) = lookup("HODEI_DATA_DIR") {
            apply_env(&mut root, &[("HODEI_SERVER__DATA_DIR".into(), dir)])?;
        }
        let cfg: Config = serde_path_to_error::deserialize(root).map_err(|e| {
            let path = e.path().to_string();
            let msg = e.inner().to_string();
            let message = match msg.strip_prefix("unknown field ") {
                Some(rest) => match rest.replace('`', "").split_once(", expected ") {
                    Some((_, expected)) => format!("unknown key; expected {expected}"),
                    None => "unknown key".to_owned(),
                },
                None => explain(&path, &msg),
            };
            ConfigError::Invalid { path, message }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Sets one key stored through `PUT /observability/config` (the API checked its form) and
    /// checks the whole configuration again.
    pub fn apply_override(&mut self, key: &str, v: &serde_json::Value) -> Result<(), ConfigError> {
        fn take<T: serde::de::DeserializeOwned>(key: &str, v: &serde_json::Value) -> Result<T, ConfigError> {
            serde_json::from_value(v.clone()).map_err(|e| ConfigError::Invalid { path: key.to_owned(), message: format!("{v}: {e}") })
        }
        let (p, g, a) = (&mut self.metrics.prometheus, &mut self.observability.grafana, &mut self.observability.alerting);
        match key {
            "metrics.prometheus.enabled" => p.enabled = take(key, v)?,
            "metrics.prometheus.port" => p.port = take(key, v)?,
            "metrics.prometheus.path" => p.path = take(key, v)?,
            "observability.grafana.enabled" => g.enabled = take(key, v)?,
            "observability.grafana.url" => g.url = Some(take(key, v)?),
            "observability.grafana.dashboards_dir" => g.dashboards_dir = Some(take(key, v)?),
            "observability.grafana.folder" => g.folder = take(key, v)?,
            "observability.alerting.enabled" => a.enabled = take(key, v)?,
            "observability.alerting.prometheus_alerts_dir" => a.prometheus_alerts_dir = Some(take(key, v)?),
            "observability.alerting.alertmanager_url" => a.alertmanager_url = Some(take(key, v)?),
            _ => return Err(ConfigError::Invalid { path: key.to_owned(), message: "cannot be set through the API".into() }),
        }
        self.validate()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |path: &str, message: String| Err(ConfigError::Invalid { path: path.to_owned(), message });
        for (path, addr) in [("server.http_addr", &self.server.http_addr), ("server.grpc_addr", &self.server.grpc_addr)] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return bad(path, format!("{addr:?} is not a host:port address"));
            }
        }
        if self.metrics.prometheus.bearer_token.as_ref().is_some_and(|t| t.0.trim().len() < 16) {
            return bad("metrics.prometheus.bearer_token", "must be at least 16 characters (a secret a scraper sends)".into());
        }
        let days = self.jobs.retention_days;
        if !(days.is_finite() && days > 0.0 && days <= 36_500.0) {
            return bad("jobs.retention_days", format!("{days} is not a number of days above 0 and at most 36500"));
        }
        if self.server.request_timeout_ms == 0 {
            return bad("server.request_timeout_ms", "must be at least 1".into());
        }
        if !(1..=3650).contains(&self.optimization.lookback_days) {
            return bad("optimization.lookback_days", format!("{} is not between 1 and 3650", self.optimization.lookback_days));
        }
        if !hodei_core::budget::valid_thresholds(&self.budgets.alert_thresholds_pct) {
            return bad("budgets.alert_thresholds_pct", format!("{:?} is not 1 to 10 ascending percentages from 1 to 100", self.budgets.alert_thresholds_pct));
        }
        if !(100..=1000).contains(&self.burst_capacity.max_overage_percentage) {
            return bad("burst_capacity.max_overage_percentage", format!("{} is not between 100 and 1000", self.burst_capacity.max_overage_percentage));
        }
        if self.jobs.default_resources.cpu_m == 0 || self.jobs.default_resources.memory_mb == 0 {
            return bad("jobs.default_resources", "cpu_m and memory_mb must be at least 1".into());
        }
        if self.workers.heartbeat_interval_ms == 0 || self.workers.heartbeat_interval_ms >= self.workers.heartbeat_timeout_ms {
            return bad(
                "workers.heartbeat_interval_ms",
                format!("{} must be above 0 and below workers.heartbeat_timeout_ms", self.workers.heartbeat_interval_ms),
            );
        }
        for (i, p) in self.resource_pools.pools.iter().enumerate() {
            if hodei_core::PoolId::parse(&p.id).is_err() {
                return bad(&format!("resource_pools.pools[{i}].id"), format!("{:?} is not a slug", p.id));
            }
            if p.pool_type == PoolTypeName::Static && p.idle_timeout_s != three_hundred() {
                return bad(&format!("resource_pools.pools[{i}].idle_timeout_s"), "only dynamic pools drop idle workers (type: dynamic)".into());
            }
            if p.min_size > p.max_size || p.max_size > 10_000 {
                return bad(&format!("resource_pools.pools[{i}].max_size"), format!("need 0 ≤ min_size ({}) ≤ max_size ({}) ≤ 10000", p.min_size, p.max_size));
            }
        }
        for (i, p) in self.resource_pools.pools.iter().enumerate() {
            self.scaling_policies(i)?;
            if p.provider == "kubernetes" {
                let token = crate::local_pool::JoinToken::Fixed(String::new());
                crate::kubernetes::KubeSpec::from_config(&p.provider_config, token)
                    .map_err(|(key, message)| ConfigError::Invalid { path: format!("resource_pools.pools[{i}].provider_config.{key}"), message })?;
            }
        }
        if self.cost_tracking.accrual_interval_s == 0 {
            return bad("cost_tracking.accrual_interval_s", "must be at least 1".into());
        }
        if self.cost_tracking.retention_days == 0 {
            return bad("cost_tracking.retention_days", "must be at least 1".into());
        }
        let t = &self.observability.tracing;
        if t.enabled && !t.otlp_endpoint.starts_with("http://") {
            return bad(
                "observability.tracing.otlp_endpoint",
                format!("{:?}: only http:// receivers are supported yet (a local collector can forward over TLS)", t.otlp_endpoint),
            );
        }
        if t.service_name.trim().is_empty() {
            return bad("observability.tracing.service_name", "must not be empty".into());
        }
        let g = &self.observability.grafana;
        if g.enabled && g.url.as_deref().is_none_or(str::is_empty) {
            return bad("observability.grafana.url", "is needed with observability.grafana.enabled: true".into());
        }
        for (key, url) in [("observability.grafana.url", &g.url), ("observability.alerting.alertmanager_url", &self.observability.alerting.alertmanager_url)] {
            if let Some(u) = url.as_deref().filter(|u| !u.is_empty())
                && !(u.starts_with("http://") || u.starts_with("https://"))
            {
                return bad(key, format!("{u:?} is not an http:// or https:// URL"));
            }
        }
        if self.metrics.history.interval_s == 0 {
            return bad("metrics.history.interval_s", "must be at least 1".into());
        }
        if self.metrics.history.retention_days == 0 {
            return bad("metrics.history.retention_days", "must be at least 1".into());
        }
        if self.autoscaling.history_retention_days == 0 {
            return bad("autoscaling.history_retention_days", "must be at least 1".into());
        }
        if self.autoscaling.evaluation_interval_s == 0 {
            return bad("autoscaling.evaluation_interval_s", "must be at least 1".into());
        }
        if hodei_core::TenantId::parse(&self.multi_tenancy.default_tenant_id).is_err() {
            return bad("multi_tenancy.default_tenant_id", format!("{:?} is not a slug", self.multi_tenancy.default_tenant_id));
        }
        for pct in [("sla.at_risk_pct", self.sla.at_risk_pct), ("sla.critical_pct", self.sla.critical_pct)] {
            if pct.1 > 100 {
                return bad(pct.0, format!("{} is not between 0 and 100 (percent)", pct.1));
            }
        }
        if !(1..=crate::retention::SLA_HOURS).contains(&self.sla.compliance_window_hours) {
            return bad(
                "sla.compliance_window_hours",
                format!("{} is not between 1 and 2160 (90 days, as long as SLA counts are kept)", self.sla.compliance_window_hours),
            );
        }
        Ok(())
    }

    /// The scaling policies of pool `i` of the file, with the `autoscaling` section's default
    /// cooldowns and window.
    pub fn scaling_policies(&self, i: usize) -> Result<Vec<hodei_core::autoscale::Policy>, ConfigError> {
        use hodei_core::autoscale::{Direction, Mode, Policy, Trigger, policy_id};
        let a = &self.autoscaling;
        let mut out: Vec<Policy> = Vec::new();
        for (j, p) in self.resource_pools.pools[i].scaling_policies.iter().enumerate() {
            let at = |key: &str| format!("resource_pools.pools[{i}].scaling_policies[{j}].{key}");
            let bad = |key: &str, message: String| ConfigError::Invalid { path: at(key), message };
            let id = policy_id(&p.name).ok_or_else(|| bad("name", format!("{:?} has no letter or digit to make an id of", p.name)))?;
            if out.iter().any(|x| x.id == id) {
                return Err(bad("name", format!("{:?} gives the id {id:?} of an earlier policy", p.name)));
            }
            let mode = if p.mode == PolicyMode::Forecast { Mode::Forecast } else { Mode::Threshold };
            let trigger = match (mode, &p.trigger) {
                (Mode::Threshold, None) => return Err(bad("trigger", "a threshold policy needs a trigger such as \"queue_depth > 5\"".into())),
                (Mode::Threshold, Some(t)) => Some(Trigger::parse(t).map_err(|e| bad("trigger", format!("{t:?}: {e}")))?),
                (Mode::Forecast, Some(_)) => return Err(bad("trigger", "forecast policies size the pool from its queue and take no trigger".into())),
                (Mode::Forecast, None) => None,
            };
            if p.step == 0 {
                return Err(bad("step", "must be at least 1 (workers added or removed at a time)".into()));
            }
            if p.hysteresis_pct > 100 {
                return Err(bad("hysteresis_pct", format!("{} is not between 0 and 100 (percent)", p.hysteresis_pct)));
            }
            // Each mode's own knobs: a threshold policy has no hysteresis, a forecast no window.
            if mode == Mode::Threshold && p.hysteresis_pct != 20 {
                return Err(bad("hysteresis_pct", "only forecast policies use it (a threshold policy acts on its trigger)".into()));
            }
            if mode == Mode::Forecast && p.window.is_some() {
                return Err(bad("window", "only threshold policies use it (a forecast reads the queue as it is)".into()));
            }
            let direction = if p.action == ScaleAction::ScaleUp { Direction::ScaleUp } else { Direction::ScaleDown };
            let default_cooldown = if direction == Direction::ScaleUp { a.default_scale_up_cooldown_s } else { a.default_scale_down_cooldown_s };
            out.push(Policy {
                id,
                name: p.name.clone(),
                mode,
                trigger,
                direction,
                step: p.step,
                cooldown: p.cooldown.as_ref().map_or(std::time::Duration::from_secs(default_cooldown), |d| d.0),
                window: p.window.as_ref().map_or(std::time::Duration::from_secs(a.default_window_s), |d| d.0),
                hysteresis_pct: p.hysteresis_pct,
                enabled: p.enabled,
            });
        }
        Ok(out)
    }

    pub fn data_dir(&self) -> &Path {
        &self.server.data_dir
    }

    /// Where job output goes when the store does not keep it (`jobs.logs.dir` unset).
    pub fn logs_dir(&self) -> PathBuf {
        self.jobs.logs.dir.clone().unwrap_or_else(|| self.server.data_dir.join("logs"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_no_feature_acts_on_are_refused_when_set() {
        let env = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        assert!(super::Config::default().unsupported().is_empty(), "the defaults start");
        let cfg = super::Config::load(None, &env(&[("HODEI_COST_TRACKING__TRACK_BY_TENANT", "false")])).unwrap();
        assert_eq!(cfg.unsupported(), ["cost_tracking.track_by_tenant: not supported yet"]);
        // The hourly rates price dry runs already.
        let cfg = super::Config::load(None, &env(&[("HODEI_COST_TRACKING__HOURLY_RATE_CPU", "0.07")])).unwrap();
        assert!(cfg.unsupported().is_empty());
        let yaml = "resource_pools:\n  pools:\n    - id: gpu\n      type: dynamic\n      allowed_tenants: [a]\n      cluster: b\n      scaling_policies:\n        - {name: up, trigger: queue_depth > 5, action: scale_up}\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        let cfg = super::Config::load(Some(&path), &[]).unwrap();
        assert_eq!(cfg.unsupported(), ["resource_pools.pools[0].cluster"].map(|k| format!("{k}: not supported yet")));
        std::fs::write(&path, "resource_pools:\n  pools:\n    - id: gpu\n      worker_template: { labels: { disk: ssd } }\n").unwrap();
        let cfg = super::Config::load(Some(&path), &[]).unwrap();
        assert_eq!(cfg.unsupported(), ["resource_pools.pools[0].worker_template.labels: not supported yet"]);
    }

    #[test]
    fn an_sla_window_longer_than_counts_are_kept_is_refused() {
        let load = |h: &str| super::Config::load(None, &[("HODEI_SLA__COMPLIANCE_WINDOW_HOURS".to_owned(), h.to_owned())]);
        assert_eq!(load("2160").unwrap().sla.compliance_window_hours, 2160);
        for h in ["0", "2161"] {
            let e = load(h).unwrap_err().to_string();
            assert!(e.contains("sla.compliance_window_hours") && e.contains("between 1 and 2160"), "{h}: {e}");
        }
    }

    /// Every key of the schema is classified by hand as honoured (the server acts on it) or
    /// refused (`unsupported()` names it when set): a key added to the schema without a row here
    /// fails, so none can be parsed and dropped unnoticed.
    #[test]
    fn every_key_is_honoured_or_refused() {
        use super::*;
        let pools = [
            "id",
            "name",
            "type",
            "provider",
            "provider_config",
            "labels",
            "worker_template",
            "min_size",
            "max_size",
            "auto_scaling_enabled",
            "idle_timeout_s",
            "allowed_tenants",
            "cost_rates",
            "cluster",
            "join_token",
            "scaling_policies",
        ];
        // Section, its keys, then "honoured | refused" ("*": the whole section is refused).
        let sections: &[(&str, &[&str], &str)] = &[
            ("server", ServerConfig::KEYS, "http_addr grpc_addr data_dir request_timeout_ms shutdown_grace_ms |"),
            ("server.tls", TlsConfig::KEYS, "cert_file key_file client_ca_file |"),
            ("log", LogConfig::KEYS, "level format |"),
            ("database", DatabaseConfig::KEYS, "url max_connections statement_timeout_ms auto_migrate sqlite_synchronous |"),
            ("auth", AuthConfig::KEYS, "mode admin_token token_default_ttl_days |"),
            (
                "limits",
                LimitsConfig::KEYS,
                "max_body_bytes max_batch_body_bytes max_argv_env_bytes max_labels submit_rate_per_tenant submit_burst_per_tenant |",
            ),
            (
                "scheduler",
                SchedulerConfig::KEYS,
                "tick_ms assign_ack_timeout_ms max_lost_requeues retry_backoff_ms retry_backoff_max_ms default_expected_duration_ms backfill \
                 reservation_after_ms max_reservations sla_escalation eta_horizon_ms |",
            ),
            ("scheduler.fair_share", FairShareConfig::KEYS, "usage_half_life_s |"),
            ("scheduler.preemption", PreemptionConfig::KEYS, "enabled |"),
            ("jobs", JobsConfig::KEYS, "default_timeout_ms max_timeout_ms default_priority max_retries_limit max_batch_size max_array_size retention_days |"),
            ("jobs.default_resources", ResourcesConfig::KEYS, "cpu_m memory_mb gpu |"),
            ("jobs.logs", JobLogsConfig::KEYS, "max_bytes_per_attempt dir |"),
            ("workers", WorkersConfig::KEYS, "heartbeat_interval_ms heartbeat_timeout_ms gc_after_ms kill_grace_ms usage_sample_interval_ms run_as cgroups |"),
            ("resource_pools", ResourcePoolsConfig::KEYS, "enabled | default_pool_type"),
            ("resource_pools.builtin_local", BuiltinLocalConfig::KEYS, "enabled id workers slots |"),
            (
                "resource_pools.pools[]",
                &pools,
                "id name type provider provider_config labels min_size max_size auto_scaling_enabled idle_timeout_s join_token scaling_policies allowed_tenants cost_rates | cluster",
            ),
            ("resource_pools.pools[].worker_template", WorkerTemplateConfig::KEYS, "cpu_m memory_mb gpu slots | labels capabilities"),
            ("multi_tenancy", MultiTenancyConfig::KEYS, "enabled default_tenant_id | default_tier"),
            ("multi_tenancy.tier_weights", TierWeightsConfig::KEYS, "free standard premium enterprise |"),
            ("multi_tenancy.default_tenant_quota", QuotaConfig::KEYS, "cpu_m memory_mb gpu max_concurrent_jobs max_queued_jobs |"),
            ("multi_tenancy.quota_enforcement", QuotaEnforcementConfig::KEYS, "strict_mode violation_policy |"),
            (
                "burst_capacity",
                BurstConfig::KEYS,
                "enabled max_overage_percentage burst_duration_minutes require_approval cooldown_minutes approval_timeout_hours |",
            ),
            ("budgets", BudgetsConfig::KEYS, "enabled default_on_exhausted alert_thresholds_pct fair_share_demotion |"),
            ("sla", SlaConfig::KEYS, "at_risk_pct critical_pct compliance_window_hours |"),
            ("sla.max_wait_s", MaxWaitConfig::KEYS, "critical high medium low best_effort |"),
            (
                "cost_tracking",
                CostConfig::KEYS,
                "hourly_rate_cpu hourly_rate_memory_gb hourly_rate_gpu currency retention_days accrual_interval_s track_by_job track_by_pool | enabled track_by_tenant",
            ),
            (
                "autoscaling",
                AutoscalingConfig::KEYS,
                "enabled evaluation_interval_s default_scale_up_cooldown_s default_scale_down_cooldown_s default_window_s provision_timeout_s provision_max_retries history_retention_days |",
            ),
            ("metrics", MetricsConfig::KEYS, "|"),
            ("metrics.history", HistoryConfig::KEYS, "enabled interval_s retention_days |"),
            ("metrics.prometheus", PrometheusConfig::KEYS, "enabled port path bearer_token |"),
            ("observability", ObservabilityConfig::KEYS, "|"),
            ("observability.grafana", GrafanaConfig::KEYS, "enabled url api_key dashboards_dir folder |"),
            ("observability.alerting", AlertingConfig::KEYS, "enabled prometheus_alerts_dir alertmanager_url |"),
            ("observability.tracing", TracingConfig::KEYS, "enabled otlp_endpoint service_name |"),
            ("multi_cluster", MultiClusterConfig::KEYS, "| *"),
            ("deployments", DeploymentsConfig::KEYS, "| *"),
            ("optimization", OptimizationConfig::KEYS, "lookback_days min_runs |"),
        ];
        let paths: Vec<String> = sections.iter().map(|(p, ..)| p.replace("[]", "")).collect();
        for key in Config::KEYS {
            assert!(paths.iter().any(|p| p == key), "section {key} has no row");
        }
        let source = include_str!("config.rs");
        let unsupported = &source[source.find("pub fn unsupported").unwrap()..source.find("pub fn load(").unwrap()];
        for (path, keys, rule) in sections {
            let (honoured, refused) = rule.split_once('|').unwrap();
            let (honoured, refused): (Vec<&str>, Vec<&str>) = (honoured.split_whitespace().collect(), refused.split_whitespace().collect());
            for key in *keys {
                let full = format!("{}.{key}", path.replace("[]", ""));
                let is_section = paths.contains(&full);
                let classified = is_section || refused.contains(&"*") || honoured.contains(key) || refused.contains(key);
                assert!(classified, "{path}.{key} is neither honoured nor refused: classify it here");
                assert!(!(honoured.contains(key) && refused.contains(key)), "{path}.{key} is both");
            }
            for key in honoured.iter().chain(refused.iter().filter(|k| **k != "*")) {
                assert!(keys.contains(key), "{path}.{key} is classified but not in the schema");
            }
            // What is refused, `unsupported()` checks: the section, the key, or a pool's key.
            let pool_key = |k: &str| {
                format!("at(\"{}\")", format!("{path}.{k}").trim_start_matches("resource_pools.pools[].").trim_start_matches("resource_pools.pools[]"))
            };
            for key in &refused {
                let named = if *key == "*" {
                    unsupported.contains(&format!("check(\"{path}\"."))
                } else {
                    unsupported.contains(&format!("check(\"{path}.{key}\"."))
                        || unsupported.contains(&pool_key(key))
                        || unsupported.contains(&format!("\"{path}.{key}\""))
                };
                assert!(named, "{path}.{key} is listed as refused but unsupported() does not check it");
            }
        }
    }

    use super::*;

    fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        let env: Vec<_> = env.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        Config::load(Some(&path), &env)
    }

    #[test]
    fn empty_file_gives_every_default() {
        let c = load("", &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.cost_tracking.hourly_rate_cpu, Micros(50_000));
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let e = load("scheduler:\n  fair_share:\n    half_life: 3\n", &[]).unwrap_err().to_string();
        assert_eq!(e, "scheduler.fair_share.half_life: unknown key; expected usage_half_life_s");
    }

    #[test]
    fn bad_values_name_key_value_and_expectation() {
        let e = load("multi_tenancy:\n  default_tenant_quota:\n    cpu_m: 4k\n", &[]).unwrap_err().to_string();
        assert_eq!(e, "multi_tenancy.default_tenant_quota.cpu_m: \"4k\" is not a non-negative integer (millicores)");
        let e = load("metrics:\n  prometheus:\n    bearer_token: short\n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("metrics.prometheus.bearer_token: must be at least 16"), "{e}");
    }

    #[test]
    fn variables_are_substituted_and_unset_ones_named() {
        let c = load("observability:\n  grafana:\n    api_key: ${GRAFANA_API_KEY}\n    url: ${GRAFANA_URL:-http://g:3000}\n", &[("GRAFANA_API_KEY", "s3cret")])
            .unwrap();
        assert_eq!(c.observability.grafana.api_key, Some(Secret("s3cret".into())));
        assert_eq!(c.observability.grafana.url.as_deref(), Some("http://g:3000"));
        assert!(!format!("{c:?}").contains("s3cret"), "secrets never print");
        let e = load("observability:\n  grafana:\n    api_key: ${GRAFANA_API_KEY}\n", &[]).unwrap_err().to_string();
        assert!(e.contains("key `api_key`") && e.contains("GRAFANA_API_KEY"), "{e}");
    }

    #[test]
    fn env_overrides_nest_with_double_underscores() {
        let c = load(
            "workers:\n  heartbeat_timeout_ms: 5000\n",
            &[("HODEI_WORKERS__HEARTBEAT_TIMEOUT_MS", "2000"), ("HODEI_WORKERS__HEARTBEAT_INTERVAL_MS", "500"), ("HODEI_DATA_DIR", "/tmp/x")],
        )
        .unwrap();
        assert_eq!((c.workers.heartbeat_timeout_ms, c.workers.heartbeat_interval_ms), (2000, 500));
        let e = load("", &[("HODEI_WORKERS__HEARTBEAT_TIMEOUT_MS", "2000")]).unwrap_err().to_string();
        assert!(e.starts_with("workers.heartbeat_interval_ms: 3000 must be above 0 and below"), "{e}");
        assert_eq!(c.server.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn sample_pool_with_policies_and_durations_loads() {
        let yaml = r#"
resource_pools:
  pools:
    - id: gpu-pool
      type: dynamic
      provider: kubernetes
      provider_config:
        namespace: jobs
        server_url: http://hodei.jobs:9090
        pod_template: { spec: { containers: [ { image: ghcr.io/example/hodei:1 } ] } }
      worker_template: { cpu_m: 8000, memory_mb: 32768, gpu: 1, slots: 1 }
      min_size: 0
      max_size: 10
      cost_rates: { hourly_rate_gpu: 2.75 }
      scaling_policies:
        - name: queue-up
          trigger: "queue_depth > 5"
          action: scale_up
          cooldown: 5m
          window: 60s
"#;
        let c = load(yaml, &[]).unwrap();
        let p = &c.resource_pools.pools[0];
        assert_eq!(p.cost_rates.hourly_rate_gpu, Some(Micros(2_750_000)));
        assert_eq!(p.scaling_policies[0].cooldown, Some(DurationStr(std::time::Duration::from_secs(300))));
        // A kubernetes pool's provider_config is checked at load.
        let e = load(&yaml.replace("server_url: http://hodei.jobs:9090", "replicas: 3"), &[]).unwrap_err().to_string();
        assert!(e.starts_with("resource_pools.pools[0].provider_config.replicas: unknown key"), "{e}");
        let e = load(&yaml.replace("server_url: http://hodei.jobs:9090", "api_url: http://k8s:6443"), &[]).unwrap_err().to_string();
        assert!(e.starts_with("resource_pools.pools[0].provider_config.server_url: required"), "{e}");
        let e = load(&yaml.replace("type: dynamic", "type: static\n      idle_timeout_s: 60"), &[]).unwrap_err().to_string();
        assert!(e.starts_with("resource_pools.pools[0].idle_timeout_s: only dynamic pools"), "{e}");
        let e = load(&yaml.replace("window: 60s", "window: 60s\n          hysteresis_pct: 5"), &[]).unwrap_err().to_string();
        assert!(e.starts_with("resource_pools.pools[0].scaling_policies[0].hysteresis_pct: only forecast"), "{e}");
    }

    #[test]
    fn money_is_parsed_without_floats() {
        assert_eq!(parse_micros("0.05"), Some(50_000));
        assert_eq!(parse_micros("2.5"), Some(2_500_000));
        assert_eq!(parse_micros("0.1234567"), None);
        assert_eq!(parse_micros("-1"), None);
    }
}
