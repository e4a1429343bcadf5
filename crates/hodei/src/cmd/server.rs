//! `hodei server`, `hodei migrate` and `hodei worker`: the long-running commands.

#[allow(unused_imports)]
use crate::*;

#[derive(Args)]
pub(crate) struct ServerArgs {
    /// YAML config file.
    #[arg(long, env = "HODEI_CONFIG_PATH")]
    pub(crate) config: Option<PathBuf>,
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    #[arg(long)]
    pub(crate) http_addr: Option<String>,
    #[arg(long)]
    pub(crate) grpc_addr: Option<String>,
    /// Metrics listener (default 127.0.0.1:9091).
    #[arg(long)]
    pub(crate) metrics_addr: Option<String>,
    #[arg(long)]
    pub(crate) database_url: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub(crate) log_json: bool,
}

#[derive(Args)]
pub(crate) struct MigrateArgs {
    /// YAML config file.
    #[arg(long, env = "HODEI_CONFIG_PATH")]
    pub(crate) config: Option<PathBuf>,
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    #[arg(long)]
    pub(crate) database_url: Option<String>,
}

#[derive(Args)]
pub(crate) struct WorkerArgs {
    /// Server gRPC URL(s), comma-separated; the worker reconnects to any of them.
    #[arg(long, env = "HODEI_WORKER_SERVER", value_delimiter = ',', required = true)]
    pub(crate) server: Vec<String>,
    #[arg(long, env = "HODEI_WORKER_POOL")]
    pub(crate) pool: String,
    /// The pool's join token (also HODEI_JOIN_TOKEN; the data dir's pool-<id>.token on the server's machine).
    #[arg(long, env = "HODEI_JOIN_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// For an https:// server: the PEM CA that signed its certificate (default: the system's roots).
    #[arg(long, env = "HODEI_CA_FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// PEM client certificate, for a server that requires one (with --key-file).
    #[arg(long, requires = "key_file")]
    pub(crate) cert_file: Option<PathBuf>,
    /// PEM private key of --cert-file.
    #[arg(long, requires = "cert_file")]
    pub(crate) key_file: Option<PathBuf>,
    #[arg(long, env = "HODEI_WORKER_SLOTS", default_value_t = 4)]
    pub(crate) slots: u32,
    /// Labels: k=v,k2=v2.
    #[arg(long, value_delimiter = ',')]
    pub(crate) labels: Vec<String>,
    /// CPU offered, in millicores (default: all cores).
    #[arg(long, env = "HODEI_WORKER_CPU_M")]
    pub(crate) cpu_m: Option<u32>,
    /// Memory offered, in MiB (default: 80 % of RAM).
    #[arg(long, env = "HODEI_WORKER_MEMORY_MB")]
    pub(crate) memory_mb: Option<u32>,
    #[arg(long, env = "HODEI_WORKER_GPU", default_value_t = 0)]
    pub(crate) gpu: u32,
    /// The name it registers under (a pod started by the kubernetes provider: the pod's name).
    #[arg(long, env = "HODEI_WORKER_INSTANCE_NAME")]
    pub(crate) instance_name: Option<String>,
    /// Where jobs without a working dir get scratch directories (default: a fresh directory
    /// under $TMPDIR, removed when the agent stops).
    #[arg(long)]
    pub(crate) spool_dir: Option<PathBuf>,
    /// Only `process` is available in this version.
    #[arg(long, default_value = "process")]
    pub(crate) backend: String,
    /// The user jobs run as when the worker runs as root (a name or uid[:gid]; default nobody).
    /// A worker not running as root runs jobs as itself.
    #[arg(long, env = "HODEI_RUN_AS")]
    pub(crate) run_as: Option<String>,
    /// Run each job in a cgroup of its own, the kernel holding it to its memory and cpu (needs
    /// root and the memory and cpu controllers; the worker refuses to start without them).
    /// Without: memory is watched through procfs, cpu is not capped.
    #[arg(long)]
    pub(crate) cgroups: bool,
    /// Read the server's URL from this file at each connection attempt, falling back to
    /// --server (the built-in pool: a restarted server may listen on another port).
    #[arg(long)]
    pub(crate) server_file: Option<PathBuf>,
    /// Stop, ending the jobs, after this long without a server (default: retry for ever).
    #[arg(long)]
    pub(crate) give_up_after_ms: Option<u64>,
}

pub(crate) fn init_tracing(json: bool, level: &str) {
    init_tracing_with(json, level, None);
}

/// The log on stderr, and with `otlp` (`observability.tracing`) the spans exported over
/// OTLP/HTTP as well; the provider returned is shut down at exit to send what is left.
pub(crate) fn init_tracing_with(
    json: bool,
    level: &str,
    otlp: Option<&hodei_server::config::TracingConfig>,
) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},h2=warn,hyper=warn,tower=warn,sqlx=warn")));
    // Colours only for a person at a terminal, never in a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let (provider, otel) = match otlp.map(otlp_provider).transpose() {
        Ok(Some(p)) => {
            let tracer = opentelemetry::trace::TracerProvider::tracer(&p, "hodei");
            (Some(p), Some(tracing_opentelemetry::layer().with_tracer(tracer)))
        }
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("observability.tracing: cannot export traces: {e:#}");
            (None, None)
        }
    };
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    if json {
        registry.with(fmt.json()).init();
    } else {
        registry.with(fmt).init();
    }
    provider
}

/// An OTLP/HTTP exporter batching spans on the tokio runtime, every 2 s.
fn otlp_provider(t: &hodei_server::config::TracingConfig) -> anyhow::Result<opentelemetry_sdk::trace::SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let endpoint = format!("{}/v1/traces", t.otlp_endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(endpoint).build()?;
    let batch = opentelemetry_sdk::trace::BatchConfigBuilder::default().with_scheduled_delay(std::time::Duration::from_secs(2)).build();
    let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
        .with_batch_config(batch)
        .build();
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(t.service_name.clone()).build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build())
}

pub(crate) async fn server(a: ServerArgs) -> anyhow::Result<i32> {
    let mut cfg = hodei_server::config::Config::load(a.config.as_deref(), &env_vars())?;
    if let Some(d) = a.data_dir {
        cfg.server.data_dir = d;
    }
    if let Some(h) = a.http_addr {
        cfg.server.http_addr = h;
    }
    if let Some(g) = a.grpc_addr {
        cfg.server.grpc_addr = g;
    }
    if let Some(u) = a.database_url {
        cfg.database.url = Some(u);
    }
    let json = a.log_json || cfg.log.format == hodei_server::config::LogFormat::Json;
    let tracing = &cfg.observability.tracing;
    let traces = init_tracing_with(json, &cfg.log.level, tracing.enabled.then_some(tracing));
    check_run_as(&cfg)?;
    // Listen for SIGTERM before anything can tell a supervisor we are up: a SIGTERM right
    // after the ready line must stop the server, not be lost.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let exe = std::env::current_exe().context("locating the hodei binary for the built-in pool")?;
    let srv = hodei_server::start(hodei_server::ServerOptions { config: cfg, worker_exe: Some(exe), metrics_addr: a.metrics_addr, store: None }).await?;
    let metrics = srv.metrics_addr.unwrap_or(srv.http_addr);
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready http={} grpc={} metrics={}", srv.http_addr, srv.grpc_addr, metrics)?;
        out.flush()?;
    }
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    srv.shutdown().await;
    if let Some(p) = traces
        && let Ok(Err(e)) = tokio::task::spawn_blocking(move || p.shutdown_with_timeout(std::time::Duration::from_secs(3))).await
    {
        eprintln!("observability.tracing: the last spans were not sent: {e}");
    }
    Ok(0)
}

/// `workers.run_as` names a user this machine has and this server may switch to, and
/// `workers.cgroups` asks only for what this machine can give.
pub(crate) fn check_run_as(cfg: &hodei_server::config::Config) -> anyhow::Result<()> {
    let euid = unsafe { libc::geteuid() };
    hodei_worker::JobUser::for_worker(cfg.workers.run_as.as_deref(), euid).map(drop).map_err(|e| anyhow::anyhow!("workers.run_as: {e:#}"))?;
    if cfg.workers.cgroups {
        hodei_worker::cgroups_available().map_err(|why| anyhow::anyhow!("workers.cgroups: {why}"))?;
    }
    Ok(())
}

pub(crate) async fn migrate(a: MigrateArgs) -> anyhow::Result<i32> {
    let mut cfg = hodei_server::config::Config::load(a.config.as_deref(), &env_vars())?;
    if let Some(d) = a.data_dir {
        cfg.server.data_dir = d;
    }
    if let Some(u) = a.database_url {
        cfg.database.url = Some(u);
    }
    hodei_server::migrate(&cfg).await?;
    println!("the database schema is up to date");
    Ok(0)
}

pub(crate) async fn worker(a: WorkerArgs) -> anyhow::Result<i32> {
    init_tracing(false, "info");
    if a.backend != "process" {
        return Err(client::fail_usage(&format!("--backend {}: only `process` is available in this version", a.backend)));
    }
    let token = a.token.ok_or_else(|| client::fail_usage("--token (or HODEI_JOIN_TOKEN) is required: the pool's join token"))?;
    let read = |p: &PathBuf, flag: &str| std::fs::read(p).with_context(|| format!("{flag}: cannot read {}", p.display()));
    let tls = hodei_worker::TlsOptions {
        ca_pem: a.ca_file.as_ref().map(|p| read(p, "--ca-file")).transpose()?,
        identity: match (&a.cert_file, &a.key_file) {
            (Some(c), Some(k)) => Some((read(c, "--cert-file")?, read(k, "--key-file")?)),
            _ => None,
        },
    };
    let job_user = hodei_worker::JobUser::for_worker(a.run_as.as_deref(), unsafe { libc::geteuid() }).context("--run-as")?;
    let cores = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let mem_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<u64>().ok()))
        .map(|kb| (kb / 1024 * 8 / 10) as u32)
        .unwrap_or(4096);
    // Jobs without a working dir run in scratch directories under a fresh directory of $TMPDIR,
    // never inside the spool (for the built-in pool that is inside the server's data dir, next
    // to its tokens and database). Removed when the agent stops.
    let scratch = tempfile::Builder::new().prefix("hodei-jobs-").tempdir().context("creating the jobs' scratch directory under $TMPDIR")?;
    // Without --spool-dir: a fresh directory under $TMPDIR, removed when the agent stops.
    let temp = match a.spool_dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("hodei-worker-").tempdir().context("creating the worker's directory under $TMPDIR")?),
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "worker".into());
    let opts = hodei_worker::WorkerOptions {
        servers: a.server,
        pool: a.pool,
        join_token: token,
        slots: a.slots,
        cpu_m: a.cpu_m.unwrap_or(cores * 1000),
        memory_mb: a.memory_mb.unwrap_or(mem_mb),
        gpu: a.gpu,
        labels: kv(&a.labels, "label")?,
        instance_name: a.instance_name.unwrap_or_else(|| format!("{host}-{}", std::process::id())),
        work_dir: a.spool_dir.or_else(|| temp.as_ref().map(|t| t.path().to_owned())).context("a work directory")?,
        sandbox: hodei_worker::Sandbox::new(scratch.path().to_owned(), job_user).with_cgroups(a.cgroups).context("--cgroups")?,
        server_file: a.server_file,
        give_up_after: a.give_up_after_ms.map(std::time::Duration::from_millis),
        tls,
    };
    hodei_worker::run(opts).await?;
    Ok(0)
}
