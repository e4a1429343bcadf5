//! `hodei`: the one binary — server, worker agent, and the REST client commands.

mod batch;
mod bench;
mod client;
mod contexts;
mod identity;
mod views;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::client::{Client, s, table};

#[derive(Parser)]
#[command(name = "hodei", version, about = "Hodei Jobs: multi-tenant job orchestration", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, Default, PartialEq, Eq, Debug)]
enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The table with more columns.
    Wide,
    Json,
    Yaml,
}

impl Output {
    /// A document (JSON or YAML) rather than a table.
    fn structured(self) -> bool {
        matches!(self, Output::Json | Output::Yaml)
    }
}

/// This invocation's output format, set once when its client is made.
static FORMAT: std::sync::OnceLock<Output> = std::sync::OnceLock::new();

#[derive(Args, Clone)]
struct ClientOpts {
    /// Server URL (default: the context's, else http://127.0.0.1:8080).
    #[arg(long, global = true, env = "HODEI_SERVER")]
    server: Option<String>,
    /// API token (default: the context's; on loopback, the data dir's admin.token).
    #[arg(long, global = true, env = "HODEI_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A context of ~/.config/hodei/config.yaml instead of the current one.
    #[arg(long, global = true, env = "HODEI_CONTEXT")]
    context: Option<String>,
    /// For an https:// server: the PEM CA that signed its certificate (default: the system's roots).
    #[arg(long, global = true, env = "HODEI_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
}

impl ClientOpts {
    /// The REST client these options (over the contexts file, over the defaults) describe.
    fn client(&self) -> anyhow::Result<Client> {
        let _ = FORMAT.set(self.output);
        contexts::client(contexts::Overrides {
            server: self.server.as_deref(),
            token: self.token.as_deref(),
            ca_file: self.ca_file.as_deref(),
            context: self.context.as_deref(),
        })
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (REST, worker gRPC, scheduler, built-in pool of local workers).
    Server(ServerArgs),
    /// Run a worker agent that joins a pool.
    Worker(WorkerArgs),
    /// Submit a job: `hodei submit [flags] -- argv…`.
    Submit(Box<SubmitArgs>),
    /// Jobs: list, inspect, cancel, retry, follow output.
    Jobs {
        #[command(flatten)]
        c: ClientOpts,
        #[command(subcommand)]
        cmd: JobsCmd,
    },
    /// Submit the jobs and arrays a YAML file describes (`-` for stdin; several documents
    /// separated by `---`). The same document applied again within 24 h gives back the job it
    /// made instead of a new one.
    Apply {
        #[command(flatten)]
        c: ClientOpts,
        /// The file (repeatable).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// What waits and runs, and why a waiting job waits (like squeue).
    Queue(views::QueueArgs),
    /// Ended jobs since a time: exit code, elapsed, cpu time, max RSS, cost (like sacct).
    #[command(visible_alias = "history")]
    Acct(views::AcctArgs),
    /// Tenants.
    Tenants {
        #[command(flatten)]
        c: ClientOpts,
        #[command(subcommand)]
        cmd: Option<TenantsCmd>,
    },
    /// SLA compliance per level and tenant; breaches; jobs at risk now.
    Sla {
        #[command(flatten)]
        c: ClientOpts,
        #[command(subcommand)]
        cmd: Option<SlaCmd>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        window_hours: Option<u32>,
    },
    /// What jobs cost over a period, grouped by tenant, pool, day or job name (the most costly first).
    Costs {
        #[command(flatten)]
        c: ClientOpts,
        /// tenant|pool|day|job_name.
        #[arg(long, default_value = "tenant")]
        group_by: String,
        #[command(flatten)]
        scope: CostScope,
    },
    /// Right-sizing advice from the usage of finished runs (5 runs of a job name at least).
    Recommendations {
        #[command(flatten)]
        c: ClientOpts,
        #[arg(long)]
        tenant: Option<String>,
        /// Only runs in this pool.
        #[arg(long)]
        pool: Option<String>,
        /// job_reduce_cpu|job_increase_memory|job_drop_gpu.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Burst sessions: ask for more than the quota for a while.
    Burst {
        #[command(flatten)]
        c: ClientOpts,
        #[command(subcommand)]
        cmd: BurstCmd,
    },
    /// Save a server and token as a context (checked with whoami) and make it current.
    Login {
        /// Server URL.
        #[arg(long, env = "HODEI_SERVER")]
        server: String,
        /// API token (default: HODEI_TOKEN, else one line read from stdin).
        #[arg(long, env = "HODEI_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// PEM CA of an https:// server.
        #[arg(long, env = "HODEI_CA_FILE")]
        ca_file: Option<PathBuf>,
        /// Context name (default: the server's host:port).
        #[arg(long)]
        name: Option<String>,
    },
    /// CLI contexts (~/.config/hodei/config.yaml): list, switch, remove.
    Context {
        #[command(subcommand)]
        cmd: contexts::ContextCmd,
    },
    /// Who your token is: principal and role bindings.
    Whoami {
        #[command(flatten)]
        c: ClientOpts,
    },
    /// API tokens: create (the secret is shown once), list, revoke.
    Tokens {
        #[command(flatten)]
        c: ClientOpts,
        #[command(subcommand)]
        cmd: identity::TokensCmd,
    },
    /// Principals (users and services) and their roles (admins only).
    Principals {
        #[command(flatten)]
        c: ClientOpts,
        #[command(subcommand)]
        cmd: identity::PrincipalsCmd,
    },
    /// Registered workers: lists the live ones (`--all`: also offline and terminated), or drains one.
    Workers {
        #[command(flatten)]
        c: ClientOpts,
        #[command(subcommand)]
        cmd: Option<WorkersCmd>,
        /// Also workers that went offline or terminated (earlier server runs' among them).
        #[arg(long)]
        all: bool,
    },
    /// Alerts the server raised (budget thresholds), newest first.
    Alerts {
        #[command(flatten)]
        c: ClientOpts,
        #[command(subcommand)]
        cmd: Option<AlertsCmd>,
        /// firing|acknowledged|resolved.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Cost reports: make one (`create`), read one (`get ID`), or list them.
    Reports {
        #[command(flatten)]
        c: ClientOpts,
        #[command(subcommand)]
        cmd: Option<ReportsCmd>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Budgets: what each tenant may spend per period, what it has spent, and their state.
    Budgets {
        #[command(flatten)]
        c: ClientOpts,
        #[command(subcommand)]
        cmd: Option<BudgetsCmd>,
    },
    /// Pools: lists them, creates and deletes them, shows one's status, rotates its join token.
    Pools {
        #[command(flatten)]
        c: ClientOpts,
        #[command(subcommand)]
        cmd: Option<PoolsCmd>,
    },
    /// Create or bring up to date the database schema (what `server` does at start unless
    /// `database.auto_migrate: false`), then exit.
    Migrate(MigrateArgs),
    /// Configuration.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Shell completions: `source <(hodei completions bash)` (also zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Manual pages: `hodei man --dir DIR` writes hodei.1 and one page per command
    /// (hodei-jobs-ls.1, …); without --dir, hodei.1 to stdout.
    Man {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Load generator against a running server (see BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Run the scheduler core on a simulated workload (virtual clock, seeded, deterministic).
    Simulate(SimulateArgs),
}

#[derive(Args)]
struct SimulateArgs {
    /// Workload file (YAML; see bench/workloads/).
    workload: PathBuf,
    /// Overrides the file's seed.
    #[arg(long)]
    seed: Option<u64>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Args)]
struct ServerArgs {
    /// YAML config file.
    #[arg(long, env = "HODEI_CONFIG_PATH")]
    config: Option<PathBuf>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    http_addr: Option<String>,
    #[arg(long)]
    grpc_addr: Option<String>,
    /// Metrics listener (default 127.0.0.1:9091).
    #[arg(long)]
    metrics_addr: Option<String>,
    #[arg(long)]
    database_url: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

#[derive(Args)]
struct MigrateArgs {
    /// YAML config file.
    #[arg(long, env = "HODEI_CONFIG_PATH")]
    config: Option<PathBuf>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Args)]
struct WorkerArgs {
    /// Server gRPC URL(s), comma-separated; the worker reconnects to any of them.
    #[arg(long, env = "HODEI_WORKER_SERVER", value_delimiter = ',', required = true)]
    server: Vec<String>,
    #[arg(long, env = "HODEI_WORKER_POOL")]
    pool: String,
    /// The pool's join token (also HODEI_JOIN_TOKEN; the data dir's pool-<id>.token on the server's machine).
    #[arg(long, env = "HODEI_JOIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// For an https:// server: the PEM CA that signed its certificate (default: the system's roots).
    #[arg(long, env = "HODEI_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// PEM client certificate, for a server that requires one (with --key-file).
    #[arg(long, requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// PEM private key of --cert-file.
    #[arg(long, requires = "cert_file")]
    key_file: Option<PathBuf>,
    #[arg(long, env = "HODEI_WORKER_SLOTS", default_value_t = 4)]
    slots: u32,
    /// Labels: k=v,k2=v2.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// CPU offered, in millicores (default: all cores).
    #[arg(long, env = "HODEI_WORKER_CPU_M")]
    cpu_m: Option<u32>,
    /// Memory offered, in MiB (default: 80 % of RAM).
    #[arg(long, env = "HODEI_WORKER_MEMORY_MB")]
    memory_mb: Option<u32>,
    #[arg(long, env = "HODEI_WORKER_GPU", default_value_t = 0)]
    gpu: u32,
    /// The name it registers under (a pod started by the kubernetes provider: the pod's name).
    #[arg(long, env = "HODEI_WORKER_INSTANCE_NAME")]
    instance_name: Option<String>,
    /// Where jobs without a working dir get scratch directories (default: a fresh directory
    /// under $TMPDIR, removed when the agent stops).
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// Only `process` is available in this version.
    #[arg(long, default_value = "process")]
    backend: String,
    /// The user jobs run as when the worker runs as root (a name or uid[:gid]; default nobody).
    /// A worker not running as root runs jobs as itself.
    #[arg(long, env = "HODEI_RUN_AS")]
    run_as: Option<String>,
    /// Read the server's URL from this file at each connection attempt, falling back to
    /// --server (the built-in pool: a restarted server may listen on another port).
    #[arg(long)]
    server_file: Option<PathBuf>,
    /// Stop, ending the jobs, after this long without a server (default: retry for ever).
    #[arg(long)]
    give_up_after_ms: Option<u64>,
}

#[derive(Args)]
#[command(args_override_self = true)]
struct SubmitArgs {
    #[command(flatten)]
    c: ClientOpts,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    cpu_m: Option<i64>,
    #[arg(long)]
    memory_mb: Option<i64>,
    #[arg(long)]
    gpu: Option<i64>,
    /// Timeout: <int>ms|s|m|h|d.
    #[arg(long)]
    timeout: Option<String>,
    #[arg(long)]
    max_retries: Option<i64>,
    #[arg(long)]
    retry_backoff_ms: Option<i64>,
    #[arg(long)]
    priority: Option<String>,
    #[arg(long)]
    sla: Option<String>,
    /// K=V, repeatable.
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// k=v, repeatable.
    #[arg(long = "label", short = 'l')]
    labels: Vec<String>,
    /// The directory the job runs in (default: the current directory, as sbatch does).
    #[arg(long, conflicts_with = "scratch")]
    workdir: Option<PathBuf>,
    /// Run in a fresh scratch directory of the worker, removed after the run, instead of the
    /// current directory.
    #[arg(long)]
    scratch: bool,
    /// Only this pool's workers run the job.
    #[arg(long)]
    pool: Option<String>,
    /// k=v, repeatable: only workers carrying these labels (their own or their pool's) run it.
    #[arg(long = "pool-label")]
    pool_labels: Vec<String>,
    /// Submit held.
    #[arg(long)]
    hold: bool,
    /// Start only after these jobs succeeded (sbatch -d afterok); cancelled if one does not.
    #[arg(long, value_delimiter = ',', value_name = "ID[,ID]")]
    after_ok: Vec<String>,
    /// Start after these jobs ended, however they ended (afterany).
    #[arg(long, value_delimiter = ',', value_name = "ID[,ID]")]
    after_any: Vec<String>,
    /// Start only after these jobs ended without succeeding (afternotok); cancelled if one
    /// succeeds.
    #[arg(long, value_delimiter = ',', value_name = "ID[,ID]")]
    after_not_ok: Vec<String>,
    /// Run the command through `sh -c`.
    #[arg(long)]
    shell: bool,
    /// Wait for the job to end, printing its output; exit with its exit code (128+N for a
    /// signal). Ctrl-C cancels the job; a second Ctrl-C leaves it running.
    #[arg(long)]
    wait: bool,
    /// Like --wait.
    #[arg(long)]
    follow: bool,
    /// Expected run time hint (<int>ms|s|m|h|d), used for fair share and ETAs.
    #[arg(long)]
    expected_duration: Option<String>,
    /// Say whether it would be admitted, where and when; store nothing.
    #[arg(long)]
    dry_run: bool,
    /// An array job: one job per index A, A+S, … ≤ B, at most P running at once
    /// (`A-B[:S][%P]`); each sees its index in HODEI_ARRAY_INDEX.
    #[arg(long, value_name = "A-B[:S][%P]")]
    array: Option<String>,
    /// Makes the submit safe to repeat: for 24 h, submitting again with the same key and the
    /// same job gets the job the first submit stored instead of a new one.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Where the job's stdout goes, a file where it runs (`%j` the job id, `%a` the array
    /// index); stderr too unless --error-file. sbatch's --output (which a #HODEI line may
    /// also spell `--output`: here `-o` is the output format).
    #[arg(long, value_name = "PATTERN")]
    output_file: Option<String>,
    /// Where the job's stderr goes (`%j`, `%a` as in --output-file); sbatch's --error.
    #[arg(long, value_name = "PATTERN")]
    error_file: Option<String>,
    /// The command and its arguments (after `--` when an argument starts with `-`). A batch
    /// script (a file starting with `#!` or holding `#HODEI` lines) is sent with the job and its
    /// `#HODEI --flag value` lines are flags of this command, those given here winning.
    #[arg(trailing_var_arg = true, required = true, value_name = "COMMAND")]
    argv: Vec<String>,
}

#[derive(Subcommand)]
enum AlertsCmd {
    /// Acknowledge a firing alert (its tenant's PI or an admin).
    Ack { id: String },
}

/// The period and scope of a breakdown or a report.
#[derive(Args)]
struct CostScope {
    /// last_day|last_week|last_month|month_to_date|custom (with --start and --end).
    #[arg(long, default_value = "month_to_date")]
    period: String,
    /// RFC 3339, with --period custom.
    #[arg(long)]
    start: Option<String>,
    /// RFC 3339, with --period custom (at most 366 days after --start).
    #[arg(long)]
    end: Option<String>,
    /// Only this tenant's jobs.
    #[arg(long)]
    tenant: Option<String>,
    /// Only what ran in this pool.
    #[arg(long)]
    pool: Option<String>,
}

#[derive(Subcommand)]
enum ReportsCmd {
    /// Make a report: totals, breakdowns, top jobs, a forecast to the month's end and the
    /// recommendations of the moment.
    Create {
        #[command(flatten)]
        scope: CostScope,
    },
    Get {
        id: String,
    },
}

#[derive(Subcommand)]
enum BudgetsCmd {
    /// Give a tenant a budget (its PI or an admin).
    Create {
        #[arg(long)]
        tenant: String,
        /// A decimal amount of the currency, e.g. 250.00.
        #[arg(long)]
        amount: String,
        /// daily|weekly|monthly|total.
        #[arg(long, default_value = "monthly")]
        period: String,
        /// hold (new and pending jobs wait) or reject (submits are refused with 402).
        #[arg(long, default_value = "hold")]
        on_exhausted: String,
    },
    /// Change a budget's amount.
    Set {
        id: String,
        amount: String,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand)]
enum WorkersCmd {
    /// Drain a worker (admins): it takes no new jobs, its running jobs finish, then it stops.
    Drain { id: String },
}

#[derive(Subcommand)]
enum PoolsCmd {
    /// Draw a new join token for a pool (admins); it is printed once, alone on stdout. The old
    /// token stops registering workers at once; workers already registered keep running.
    RotateToken { id: String },
    /// A pool's size now: live workers by state, slots in use, the size it is kept at, its last
    /// scaling decision.
    Status { id: String },
    /// Create a pool (admins): its workers join with its token, printed once alone on stdout,
    /// or (`--provider local`) the server starts them on its machine.
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// Millicores one worker offers.
        #[arg(long)]
        cpu_m: u32,
        /// MiB one worker offers.
        #[arg(long)]
        memory_mb: u32,
        #[arg(long, default_value_t = 0)]
        gpu: u32,
        /// Jobs one worker runs at once.
        #[arg(long)]
        slots: u32,
        #[arg(long, default_value_t = 0)]
        min_size: u32,
        #[arg(long)]
        max_size: Option<u32>,
        /// external (workers join with the token) or local (the server starts them).
        #[arg(long, default_value = "external")]
        provider: String,
        /// static or dynamic (idle workers above min_size dropped after --idle-timeout-s).
        #[arg(long = "type", default_value = "static")]
        pool_type: String,
        #[arg(long)]
        idle_timeout_s: Option<u64>,
        /// k=v, repeatable: labels its workers carry, selected by `submit --pool-label`.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Repeatable: only these tenants' jobs run there (default: every tenant's).
        #[arg(long = "allowed-tenant")]
        allowed_tenants: Vec<String>,
    },
    /// Delete a pool created through the API, once it has no workers and no job waits for it.
    Delete { id: String },
    /// Set the size a pool is kept at, within its min and max (admins); recorded in its history.
    Scale {
        id: String,
        target_size: u32,
        #[arg(long)]
        reason: Option<String>,
    },
    /// A pool's scaling decisions, newest first: executed and skipped, with trigger and reason.
    History {
        id: String,
        /// executed|suppressed_cooldown|clamped|failed.
        #[arg(long)]
        decision: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum JobsCmd {
    /// List jobs, newest first.
    Ls {
        #[arg(long)]
        tenant: Option<String>,
        /// Comma-separated states.
        #[arg(long)]
        state: Option<String>,
        /// A label selector: `team=ml,env!=prod` (k=v, k!=v, k, !k; all must hold).
        #[arg(long, short = 'l')]
        label: Option<String>,
        /// The jobs of one array job.
        #[arg(long)]
        array_id: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        cursor: Option<String>,
        /// Watch: redraw as jobs change (into a pipe: a line per new or changed job).
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Show one job and its attempts (an array id: its jobs).
    Get {
        id: String,
        /// Watch the job until it ends: a line each time its state changes.
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Cancel jobs: by id (several at once), every waiting or running job of an array
    /// (`--array`), or those matching `--name` and/or a label selector (`-l`).
    Cancel {
        ids: Vec<String>,
        /// Every unfinished job of this array.
        #[arg(long, value_name = "ARRAY_ID")]
        array: Option<String>,
        /// Unfinished jobs of this name.
        #[arg(long)]
        name: Option<String>,
        /// Unfinished jobs matching this label selector (`team=ml,env!=prod`).
        #[arg(long, short = 'l')]
        label: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Retry an ended job.
    Retry { id: String },
    /// Hold a pending job.
    Hold { id: String },
    /// Release a held job.
    Release { id: String },
    /// Print a job's output (all of it, page by page); -f follows it until the job ends.
    Logs {
        id: String,
        #[arg(short, long)]
        follow: bool,
        /// The output of this attempt (1 for the first; default: the latest).
        #[arg(long, conflicts_with_all = ["previous", "follow"])]
        attempt: Option<u32>,
        /// The output of the attempt before the latest (kubectl's --previous).
        #[arg(short, long, conflicts_with = "follow")]
        previous: bool,
    },
    /// Wait for a job to end; exit with its exit code.
    Wait { id: String },
    /// State transitions.
    Events { id: String },
    /// Why the job is not running yet, and when it is expected to start.
    Explain { id: String },
    /// What the job's attempts used: cpu and memory over time, and each ended one's summary.
    Usage {
        id: String,
        /// Only this attempt (1 for the first).
        #[arg(long)]
        attempt: Option<u32>,
    },
}

#[derive(Subcommand)]
enum TenantsCmd {
    Ls,
    Get {
        id: String,
    },
    Create {
        name: String,
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        tier: Option<String>,
        #[arg(long)]
        weight: Option<i64>,
        #[arg(long)]
        email: Option<String>,
    },
    Delete {
        id: String,
    },
    /// Show a tenant's quota and usage; with any limit flag, set it.
    Quota {
        id: String,
        #[arg(long)]
        cpu_m: Option<i64>,
        #[arg(long)]
        memory_mb: Option<i64>,
        #[arg(long)]
        gpu: Option<i64>,
        #[arg(long)]
        max_concurrent_jobs: Option<i64>,
        #[arg(long)]
        max_queued_jobs: Option<i64>,
    },
}

#[derive(Subcommand)]
enum SlaCmd {
    /// Jobs that breached their SLA, most recent first.
    Breaches {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        level: Option<String>,
        /// RFC 3339.
        #[arg(long)]
        since: Option<String>,
    },
    /// Waiting jobs past 70 % of their maximum wait, nearest deadline first.
    AtRisk {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        level: Option<String>,
    },
}

#[derive(Subcommand)]
enum BurstCmd {
    /// Open a session for TENANT (active at once unless approval is required).
    Request {
        tenant: String,
        #[arg(long)]
        cpu_m: Option<i64>,
        #[arg(long)]
        memory_mb: Option<i64>,
        #[arg(long)]
        gpu: Option<i64>,
        #[arg(long)]
        concurrent_jobs: Option<i64>,
        /// Default: burst_capacity.burst_duration_minutes.
        #[arg(long)]
        duration_minutes: Option<i64>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List sessions, newest first.
    Ls {
        #[arg(long)]
        tenant: Option<String>,
        /// pending_approval|active|rejected|expired|ended|revoked (comma-separated)
        #[arg(long)]
        state: Option<String>,
    },
    Get {
        tenant: String,
        session: String,
    },
    Approve {
        tenant: String,
        session: String,
    },
    Reject {
        tenant: String,
        session: String,
    },
    /// End an active session early (or withdraw a pending request).
    End {
        tenant: String,
        session: String,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the reference of every configuration key (Markdown: value, default, meaning).
    Reference,
    /// Load and validate the configuration; print the effective one as YAML (secrets as ***).
    Check {
        #[arg(long, env = "HODEI_CONFIG_PATH")]
        config: Option<PathBuf>,
    },
}

fn env_vars() -> Vec<(String, String)> {
    std::env::vars().filter(|(k, _)| k.starts_with("HODEI_")).collect()
}

fn init_tracing(json: bool, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},h2=warn,hyper=warn,tower=warn,sqlx=warn")));
    // Colours only for a person at a terminal, never in a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn kv(items: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| client::fail_usage(&format!("{what} {s:?} is not KEY=VALUE"))))
        .collect()
}

async fn server(a: ServerArgs) -> anyhow::Result<i32> {
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
    init_tracing(json, &cfg.log.level);
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
    Ok(0)
}

/// `workers.run_as` names a user this machine has and this server may switch to.
fn check_run_as(cfg: &hodei_server::config::Config) -> anyhow::Result<()> {
    let euid = unsafe { libc::geteuid() };
    hodei_worker::JobUser::for_worker(cfg.workers.run_as.as_deref(), euid).map(drop).map_err(|e| anyhow::anyhow!("workers.run_as: {e:#}"))
}

async fn migrate(a: MigrateArgs) -> anyhow::Result<i32> {
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

async fn worker(a: WorkerArgs) -> anyhow::Result<i32> {
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
        sandbox: hodei_worker::Sandbox::new(scratch.path().to_owned(), job_user),
        server_file: a.server_file,
        give_up_after: a.give_up_after_ms.map(std::time::Duration::from_millis),
        tls,
    };
    hodei_worker::run(opts).await?;
    Ok(0)
}

/// A document in this invocation's format: YAML with `-o yaml`, else JSON.
fn print_json(v: &Value) {
    match FORMAT.get() {
        Some(Output::Yaml) => print!("{}", serde_yaml_ng::to_string(v).unwrap_or_default()),
        _ => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
    }
}

/// Jobs as a table; with an INDEX column when any of them belongs to an array.
fn job_table(items: &[Value]) {
    let (headers, rows) = job_rows(items);
    table(&headers, rows);
}

/// The headers and rows of `job_table` (the id first).
fn job_rows(items: &[Value]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let indexed = items.iter().any(|j| j["array_index"].is_number());
    let mut headers = vec!["ID", "TENANT", "NAME", "STATE", "EXIT", "SUBMITTED"];
    if indexed {
        headers.insert(3, "INDEX");
    }
    let rows = items
        .iter()
        .map(|j| {
            let mut row = vec![s(j, "id"), s(j, "tenant_id"), s(j, "name"), s(j, "state"), s(j, "exit_code"), s(j, "submitted_at")];
            if indexed {
                row.insert(3, s(j, "array_index"));
            }
            row
        })
        .collect();
    (headers, rows)
}

/// The submit with a batch script's `#HODEI` directives applied: the script's flags first, then
/// the command line's (later flags override earlier ones).
fn with_directives(a: SubmitArgs, script: &batch::Script) -> anyhow::Result<SubmitArgs> {
    if script.directives.is_empty() {
        return Ok(a);
    }
    anyhow::ensure!(!script.directives.iter().any(|d| d == "--"), "{}: a #HODEI line may not hold `--`", a.argv[0]);
    let raw: Vec<String> = std::env::args().collect();
    let at = raw.iter().position(|r| r == "submit").context("the submit command's arguments")?;
    let args = raw[..=at].iter().chain(&script.directives).chain(&raw[at + 1..]);
    let parsed =
        Cli::try_parse_from(args).map_err(|e| client::fail_usage(&format!("in the #HODEI lines of {}: {}", a.argv[0], e.render().to_string().trim())))?;
    let Cmd::Submit(b) = parsed.cmd else { anyhow::bail!("the submit command's arguments") };
    anyhow::ensure!(b.argv == a.argv, "{}: a #HODEI line holds something that is not a flag with its value", a.argv[0]);
    Ok(*b)
}

async fn submit(a: SubmitArgs) -> anyhow::Result<i32> {
    let script = if a.shell { None } else { batch::read(&a.argv[0])? };
    let a = match &script {
        Some(s) => with_directives(a, s)?,
        None => a,
    };
    let c = a.c.client()?;
    let name = a
        .name
        .clone()
        .or_else(|| script.as_ref().map(|_| std::path::Path::new(&a.argv[0]).file_name().map_or(a.argv[0].clone(), |n| n.to_string_lossy().into_owned())));
    let argv = if a.shell { vec!["sh".to_owned(), "-c".to_owned(), a.argv.join(" ")] } else { a.argv.clone() };
    let argv = batch::wrap(&argv, script.as_ref(), a.output_file.as_deref(), a.error_file.as_deref())?.unwrap_or(argv);
    let env = kv(&a.env, "--env")?;
    let ms = |flag: &str, v: Option<&str>| {
        v.map(|t| {
            hodei_server::config::parse_duration(t)
                .map(|d| d.as_millis() as i64)
                .ok_or_else(|| client::fail_usage(&format!("{flag} {t:?}: expected <int>ms|s|m|h|d")))
        })
        .transpose()
    };
    let timeout_ms = ms("--timeout", a.timeout.as_deref())?;
    let expected_ms = ms("--expected-duration", a.expected_duration.as_deref())?;
    let mut body = json!({ "command": argv });
    let set = |body: &mut Value, k: &str, v: Value| {
        if !v.is_null() {
            body[k] = v;
        }
    };
    set(&mut body, "name", json!(name));
    set(&mut body, "tenant_id", json!(a.tenant));
    set(&mut body, "timeout_ms", json!(timeout_ms));
    set(&mut body, "expected_duration_ms", json!(expected_ms));
    set(&mut body, "max_retries", json!(a.max_retries));
    set(&mut body, "retry_backoff_ms", json!(a.retry_backoff_ms));
    set(&mut body, "priority", json!(a.priority));
    set(&mut body, "sla", json!(a.sla));
    // Like sbatch: the job runs where it was submitted from, unless told otherwise.
    let workdir = match (a.workdir, a.scratch) {
        (_, true) => None,
        (Some(d), false) => Some(std::path::absolute(&d).with_context(|| format!("--workdir {}", d.display()))?),
        (None, false) => Some(std::env::current_dir().context("reading the current directory (or pass --workdir DIR or --scratch)")?),
    };
    if let Some(d) = workdir {
        body["working_dir"] = json!(d.to_str().ok_or_else(|| client::fail_usage(&format!("the working directory {} is not UTF-8", d.display())))?);
    }
    if a.hold {
        body["hold"] = json!(true);
    }
    let deps: Vec<Value> = [("after_ok", &a.after_ok), ("after_any", &a.after_any), ("after_not_ok", &a.after_not_ok)]
        .iter()
        .flat_map(|(condition, ids)| ids.iter().filter(|i| !i.is_empty()).map(move |id| json!({"job_id": id, "condition": condition})))
        .collect();
    if !deps.is_empty() {
        body["depends_on"] = Value::Array(deps);
    }
    let mut res = serde_json::Map::new();
    for (k, v) in [("cpu_m", a.cpu_m), ("memory_mb", a.memory_mb), ("gpu", a.gpu)] {
        if let Some(v) = v {
            res.insert(k.into(), json!(v));
        }
    }
    if !res.is_empty() {
        body["resources"] = Value::Object(res);
    }
    if !env.is_empty() {
        body["env"] = json!(env);
    }
    if !a.labels.is_empty() {
        body["labels"] = json!(kv(&a.labels, "--label")?);
    }
    if a.pool.is_some() || !a.pool_labels.is_empty() {
        body["pool_selector"] = json!({"pool": a.pool, "labels": kv(&a.pool_labels, "--pool-label")?});
    }
    if let Some(r) = &a.array {
        if a.wait || a.follow {
            return Err(client::fail_usage("--wait/--follow follow one job; for an array use `hodei jobs ls --array-id ID`"));
        }
        body["array"] = parse_array(r)?;
    }
    if a.dry_run {
        let v = c.post("/jobs?dry_run=true", &body).await?;
        if a.c.output.structured() {
            print_json(&v);
        } else {
            println!("admissible: {}", v["admissible"]);
            if let Some(st) = v["would_be_state"].as_str() {
                println!("would be:   {st}");
            }
            for p in v["problems"].as_array().into_iter().flatten() {
                println!("problem:    {} — {}", s(p, "code"), s(p, "message"));
            }
            print_explained(&v);
            println!("cost:       {} µ$ expected, {} µ$ at the timeout", v["estimated_cost_micros"]["expected"], v["estimated_cost_micros"]["max"]);
        }
        return Ok(if v["admissible"].as_bool() == Some(true) { 0 } else { 1 });
    }
    // With --wait, Ctrl-C is ours from before the submit: it cancels the job instead of
    // leaving it running unseen.
    let mut interrupts = if a.wait || a.follow { Some(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?) } else { None };
    let job = c.post_keyed("/jobs", &body, a.idempotency_key.as_deref()).await?;
    if a.array.is_some() {
        match a.c.output {
            Output::Json | Output::Yaml => print_json(&job),
            Output::Table | Output::Wide => {
                // The id alone on stdout, so that `AR=$(hodei submit --array …)` can be passed on.
                println!("{}", s(&job, "array_id"));
                eprintln!("array of {} jobs: hodei jobs ls --array-id {}", job["count"], s(&job, "array_id"));
            }
        }
        return Ok(0);
    }
    let id = s(&job, "id");
    if a.wait || a.follow {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            // Progress for a person: the id first, so that a Ctrl-C'd or detached job can be found.
            eprintln!("\x1b[2m[hodei] job {id} submitted\x1b[0m");
        }
        let interrupts = interrupts.as_mut().context("listening for Ctrl-C")?;
        let Some(end) = follow_or_cancel(&c, &id, interrupts).await? else { return Ok(client::EXIT_CANCELLED) };
        if a.c.output.structured() {
            print_json(&c.get(&format!("/jobs/{id}")).await?);
        }
        return Ok(c.exit_status(&id, &end).await);
    }
    match a.c.output {
        Output::Json | Output::Yaml => print_json(&job),
        Output::Table | Output::Wide => println!("{id}"),
    }
    Ok(0)
}

/// Follows a job until it ends, like srun: the first Ctrl-C cancels the job (and the follow goes
/// on until it has ended), a second one leaves it running. `None`: left running.
async fn follow_or_cancel(c: &Client, id: &str, interrupts: &mut tokio::signal::unix::Signal) -> anyhow::Result<Option<Value>> {
    let follow = c.follow(id, true);
    tokio::pin!(follow);
    let mut cancelling = false;
    loop {
        tokio::select! {
            end = &mut follow => return end.map(Some),
            _ = interrupts.recv() => {
                if cancelling {
                    eprintln!("[hodei] left running: job {id} (`hodei jobs logs -f {id}`, `hodei jobs cancel {id}`)");
                    return Ok(None);
                }
                cancelling = true;
                eprintln!("[hodei] cancelling job {id} (Ctrl-C again to leave it running)");
                if let Err(e) = c.post_empty(&format!("/jobs/{id}/cancel")).await {
                    eprintln!("[hodei] could not cancel job {id}: {e:#}");
                }
            }
        }
    }
}

/// `hodei apply -f`: each YAML document is a job as `POST /jobs` takes it (an array when it has
/// `array`), with an optional `kind: job|array`; without `working_dir` it runs in the current
/// directory, as `submit` does. Documents are keyed by their content, so applying a file twice
/// does not run its jobs twice.
async fn apply(c: ClientOpts, files: Vec<PathBuf>) -> anyhow::Result<i32> {
    use std::hash::{Hash, Hasher};
    let cl = c.client()?;
    let mut docs = Vec::new();
    for f in &files {
        let text = if f.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading stdin")?
        } else {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        };
        for (n, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let v: Value = serde::Deserialize::deserialize(doc).map_err(|e| client::fail_usage(&format!("{} (document {}): {e}", f.display(), n + 1)))?;
            if v.is_null() {
                continue;
            }
            docs.push((format!("{} (document {})", f.display(), n + 1), v));
        }
    }
    // Every document is checked before any is sent.
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let mut bodies = Vec::new();
    for (at, mut v) in docs {
        let Some(obj) = v.as_object_mut() else { return Err(client::fail_usage(&format!("{at}: expected a mapping of job fields"))) };
        match obj.remove("kind").as_ref().map(|k| k.as_str().map(str::to_ascii_lowercase)) {
            None => {}
            Some(Some(k)) if k == "job" || k == "array" => {}
            Some(Some(k)) if k == "workflow" => return Err(client::fail_usage(&format!("{at}: workflows are not available in this version"))),
            Some(k) => return Err(client::fail_usage(&format!("{at}: kind {k:?}: expected job or array"))),
        }
        if !obj.contains_key("command") {
            return Err(client::fail_usage(&format!("{at}: a job needs `command`")));
        }
        obj.entry("working_dir").or_insert_with(|| json!(cwd.to_string_lossy()));
        bodies.push((at, v));
    }
    let mut out = Vec::new();
    for (at, body) in bodies {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.to_string().hash(&mut h);
        let key = format!("hodei-apply-{:016x}", h.finish());
        let r = cl.post_keyed("/jobs", &body, Some(&key)).await.with_context(|| at.clone())?;
        if c.output.structured() {
            out.push(r);
        } else if r["array_id"].is_string() {
            println!("array/{} ({} jobs)", s(&r, "array_id"), r["count"]);
        } else {
            println!("job/{}", s(&r, "id"));
        }
    }
    if c.output.structured() {
        print_json(&json!({ "items": out }));
    }
    Ok(0)
}

/// Writes `name.1` for `cmd` and each of its subcommands (`name-sub.1`), all levels down.
fn man_pages(cmd: clap::Command, name: &str, dir: &std::path::Path) -> anyhow::Result<usize> {
    let mut n = 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let sub_name = format!("{name}-{}", sub.get_name());
        // A page names its command in full (`hodei-jobs-ls`); the CLI ends right after.
        let full: &'static str = Box::leak(sub_name.clone().into_boxed_str());
        n += man_pages(sub.clone().name(full), &sub_name, dir)?;
    }
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    Ok(n)
}

/// `A-B[:S][%P]` → the `array` of a submit. Range checks are the server's.
fn parse_array(r: &str) -> anyhow::Result<Value> {
    let bad = || client::fail_usage(&format!("--array {r:?}: expected A-B[:S][%P], e.g. 1-100 or 0-99:2%10"));
    let (rest, parallel) = match r.split_once('%') {
        Some((rest, p)) => (rest, Some(p.parse::<i64>().map_err(|_| bad())?)),
        None => (r, None),
    };
    let (range, step) = match rest.split_once(':') {
        Some((range, st)) => (range, Some(st.parse::<i64>().map_err(|_| bad())?)),
        None => (rest, None),
    };
    let (start, end) = range.split_once('-').ok_or_else(bad)?;
    let (start, end) = (start.parse::<i64>().map_err(|_| bad())?, end.parse::<i64>().map_err(|_| bad())?);
    let mut v = json!({ "start": start, "end": end });
    if let Some(st) = step {
        v["step"] = json!(st);
    }
    if let Some(p) = parallel {
        v["max_parallel"] = json!(p);
    }
    Ok(v)
}

/// Blocking reasons, candidate pools and ETA of an explain or dry-run answer.
fn print_explained(v: &Value) {
    for b in v["blocking_reasons"].as_array().into_iter().flatten() {
        println!("waiting:    {} — {}", s(b, "code"), s(b, "message"));
    }
    for p in v["candidate_pools"].as_array().into_iter().flatten() {
        let mark = if p["eligible"].as_bool() == Some(true) { "yes" } else { "no" };
        println!("pool:       {} ({mark}: {})", s(p, "pool_id"), s(p, "reason"));
    }
    match v["estimated_start_at"].as_str() {
        Some(t) => println!("starts:     ~{t}"),
        None => println!("starts:     unknown (no time-bounded estimate)"),
    }
}

async fn jobs(c: ClientOpts, cmd: JobsCmd) -> anyhow::Result<i32> {
    let cl = c.client()?;
    let out = c.output;
    let show = |v: &Value| {
        if out.structured() {
            print_json(v);
        } else {
            job_table(std::slice::from_ref(v));
        }
    };
    match cmd {
        JobsCmd::Ls { tenant, state, label, array_id, limit, cursor, watch } => {
            let mut q = vec![format!("limit={limit}")];
            for (k, v) in [("tenant_id", tenant), ("state", state), ("label", label), ("array_id", array_id), ("cursor", cursor)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", urlencode(&v)));
                }
            }
            if watch {
                let path = format!("/jobs?{}", q.join("&"));
                let headers = job_rows(&[]).0;
                return views::watch(&headers, || async {
                    let page = cl.get(&path).await?;
                    let items = page["items"].as_array().cloned().unwrap_or_default();
                    let (h, rows) = job_rows(&items);
                    // The same columns whatever the page holds.
                    let rows = if h.len() == headers.len() {
                        rows
                    } else {
                        rows.into_iter()
                            .map(|mut r| {
                                r.remove(3);
                                r
                            })
                            .collect()
                    };
                    Ok((rows, false))
                })
                .await;
            }
            let page = cl.get(&format!("/jobs?{}", q.join("&"))).await?;
            if out.structured() {
                print_json(&page);
            } else {
                let items = page["items"].as_array().cloned().unwrap_or_default();
                job_table(&items);
                if let Some(next) = page["next_cursor"].as_str() {
                    eprintln!("more: --cursor {next}");
                }
            }
        }
        JobsCmd::Get { id, watch: true } => {
            let headers = job_rows(&[]).0;
            return views::watch(&headers, || async {
                let j = cl.get(&format!("/jobs/{id}")).await?;
                let done = matches!(j["state"].as_str(), Some("succeeded" | "failed" | "cancelled" | "timed_out"));
                let (h, mut rows) = job_rows(std::slice::from_ref(&j));
                if h.len() != headers.len() {
                    rows[0].remove(3);
                }
                Ok((rows, done))
            })
            .await;
        }
        JobsCmd::Get { id, watch: false } => {
            let j = match cl.get(&format!("/jobs/{id}")).await {
                Err(e) if e.downcast_ref::<client::ApiFailure>().is_some_and(|f| f.status == 404) => return print_array(&cl, &id, out).await.map_err(|_| e),
                r => r?,
            };
            if out.structured() {
                print_json(&j);
            } else {
                for k in [
                    "id",
                    "tenant_id",
                    "name",
                    "state",
                    "state_reason",
                    "exit_code",
                    "failure_reason",
                    "priority",
                    "sla",
                    "attempt_count",
                    "retries_left",
                    "submitted_at",
                    "started_at",
                    "finished_at",
                    "queue_wait_ms",
                    "run_time_ms",
                    "pool_id",
                    "worker_id",
                ] {
                    println!("{k:<16} {}", s(&j, k));
                }
                println!("{:<16} {}", "command", j["command"]);
                let attempts = j["attempts"].as_array().cloned().unwrap_or_default();
                if let Some(sig) = attempts.last().and_then(|a| a["signal"].as_i64()) {
                    println!("{:<16} {}", "killed by", client::signal_name(sig as i32));
                }
                if !attempts.is_empty() {
                    println!();
                    table(
                        &["ATTEMPT", "STATE", "EXIT", "REASON", "WORKER", "STARTED", "FINISHED"],
                        attempts
                            .iter()
                            .map(|a| {
                                vec![
                                    s(a, "number"),
                                    s(a, "state"),
                                    match a["signal"].as_i64() {
                                        Some(sig) if a["exit_code"].is_null() => client::signal_name(sig as i32),
                                        _ => s(a, "exit_code"),
                                    },
                                    s(a, "failure_reason"),
                                    s(a, "worker_id"),
                                    s(a, "started_at"),
                                    s(a, "finished_at"),
                                ]
                            })
                            .collect(),
                    );
                }
            }
        }
        JobsCmd::Cancel { ids, array: None, name: None, label: None, .. } if ids.len() == 1 => {
            let id = &ids[0];
            let j = cl.post_empty(&format!("/jobs/{id}/cancel")).await?;
            show(&j);
            if j["state"] == "running" {
                eprintln!("cancel requested: the job ends as cancelled once its process group is killed (`hodei jobs wait {id}`)");
            }
        }
        JobsCmd::Cancel { mut ids, array, name, label, tenant } => {
            if array.is_none() && name.is_none() && label.is_none() && ids.is_empty() {
                return Err(client::fail_usage("give job ids, --array, --name or -l"));
            }
            if array.is_some() || name.is_some() || label.is_some() {
                let live = "pending,held,scheduled,running".to_owned();
                let q = [("state", Some(live)), ("array_id", array), ("label", label), ("tenant_id", tenant)];
                let matched = views::all_jobs(&cl, &q).await?;
                ids.extend(matched.iter().filter(|j| name.as_deref().is_none_or(|n| j["name"] == n)).map(|j| s(j, "id")));
            }
            let results: Vec<(String, anyhow::Result<Value>)> = futures::stream::iter(ids.into_iter().map(|id| {
                let cl = &cl;
                async move {
                    let r = cl.post_empty(&format!("/jobs/{id}/cancel")).await;
                    (id, r)
                }
            }))
            .buffered(8)
            .collect()
            .await;
            let mut failed = 0;
            for (id, r) in &results {
                match r {
                    Ok(j) if !out.structured() => println!("{id} {}", if j["state"] == "running" { "cancel requested" } else { "cancelled" }),
                    Ok(_) => {}
                    Err(e) => {
                        failed += 1;
                        eprintln!("{id}: {e:#}");
                    }
                }
            }
            if out.structured() {
                print_json(&json!({"items": results.iter().filter_map(|(_, r)| r.as_ref().ok()).collect::<Vec<_>>()}));
            }
            eprintln!("{} of {} jobs cancelled or being cancelled", results.len() - failed, results.len());
            return Ok(if failed > 0 { client::EXIT_API_ERROR } else { 0 });
        }
        JobsCmd::Retry { id } => show(&cl.post_empty(&format!("/jobs/{id}/retry")).await?),
        JobsCmd::Hold { id } => show(&cl.post_empty(&format!("/jobs/{id}/hold")).await?),
        JobsCmd::Release { id } => show(&cl.post_empty(&format!("/jobs/{id}/release")).await?),
        JobsCmd::Logs { id, follow, attempt, previous } => {
            let attempt = match (attempt, previous) {
                (Some(n), _) => Some(n),
                (None, true) => {
                    let j = cl.get(&format!("/jobs/{id}")).await?;
                    let n = j["attempt_count"].as_u64().unwrap_or(0);
                    anyhow::ensure!(n >= 2, "job {id} has no previous attempt (it has {n})");
                    Some(n as u32 - 1)
                }
                (None, false) => None,
            };
            if follow && attempt.is_none() {
                cl.follow(&id, true).await?;
            } else {
                print_logs(&cl, &id, attempt, out).await?;
            }
        }
        JobsCmd::Wait { id } => {
            let end = cl.follow(&id, false).await?;
            if out.structured() {
                print_json(&end);
            }
            return Ok(cl.exit_status(&id, &end).await);
        }
        JobsCmd::Events { id } => {
            let v = cl.get(&format!("/jobs/{id}/events?limit=500")).await?;
            if out.structured() {
                print_json(&v);
            } else {
                let items = v["items"].as_array().cloned().unwrap_or_default();
                table(
                    &["AT", "FROM", "TO", "ACTOR", "REASON"],
                    items.iter().map(|e| vec![s(e, "at"), s(e, "from"), s(e, "to"), s(e, "actor"), s(e, "reason")]).collect(),
                );
            }
        }
        JobsCmd::Explain { id } => {
            let v = cl.get(&format!("/jobs/{id}/explain")).await?;
            if out.structured() {
                print_json(&v);
            } else {
                println!("state:      {}", s(&v, "state"));
                if let Some(p) = v["position"]["in_tenant"].as_u64() {
                    println!("position:   {p} in its tenant's queue");
                }
                if let Some(f) = v["fair_share"].as_object() {
                    println!("fair share: weight {}, {} tenants ahead", f["weight"], f["tenants_ahead"]);
                }
                print_explained(&v);
            }
        }
        JobsCmd::Usage { id, attempt } => {
            let q = attempt.map(|n| format!("?attempt={n}")).unwrap_or_default();
            let v = cl.get(&format!("/jobs/{id}/usage{q}")).await?;
            if out.structured() {
                print_json(&v);
            } else {
                print_usage(&v);
            }
        }
    }
    Ok(0)
}

/// `jobs get` of an array id: its jobs by state, then (up to 500 of) them. Fails when no job
/// belongs to such an array.
async fn print_array(cl: &Client, id: &str, out: Output) -> anyhow::Result<i32> {
    let page = cl.get(&format!("/jobs?array_id={}&limit=500", urlencode(id))).await?;
    let items = page["items"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(!items.is_empty(), "no array {id}");
    if out.structured() {
        print_json(&page);
        return Ok(0);
    }
    let mut by_state = BTreeMap::<String, usize>::new();
    for j in &items {
        *by_state.entry(s(j, "state")).or_default() += 1;
    }
    let more = if page["next_cursor"].is_string() { " (the first 500)" } else { "" };
    let states: Vec<String> = by_state.iter().map(|(st, n)| format!("{n} {st}")).collect();
    println!("array {id}: {} jobs{more}: {}", items.len(), states.join(", "));
    println!();
    let mut items = items;
    items.sort_by_key(|j| j["array_index"].as_u64());
    job_table(&items);
    Ok(0)
}

/// Prints a job's output as it is now, one page after another until the last: stdout to
/// stdout, stderr to stderr, byte for byte (pages end on whole characters). `-o json` prints
/// every page's chunks as one document.
async fn print_logs(cl: &Client, id: &str, attempt: Option<u32>, out: Output) -> anyhow::Result<()> {
    let (mut off, mut err_off) = (0u64, 0u64);
    let mut all = Vec::new();
    let mut truncated = false;
    loop {
        let mut path = format!("/jobs/{id}/logs?offset={off}&stderr_offset={err_off}");
        if let Some(n) = attempt {
            path.push_str(&format!("&attempt={n}"));
        }
        let v = cl.get(&path).await?;
        let chunks = v["chunks"].as_array().cloned().unwrap_or_default();
        truncated |= v["truncated"] == true;
        let read = !chunks.is_empty();
        if out.structured() {
            all.extend(chunks);
        } else {
            for ch in chunks {
                let text = ch["data"].as_str().unwrap_or("");
                if ch["stream"] == "stderr" {
                    std::io::stderr().write_all(text.as_bytes())?;
                } else {
                    std::io::stdout().write_all(text.as_bytes())?;
                }
            }
        }
        off = v["next_offset"].as_u64().unwrap_or(off);
        err_off = v["next_stderr_offset"].as_u64().unwrap_or(err_off);
        // The end: everything of an ended job, or all there is so far of a running one.
        if v["eof"] == true || !read {
            if out.structured() {
                print_json(
                    &json!({"attempt": v["attempt"], "chunks": all, "next_offset": off, "next_stderr_offset": err_off, "eof": v["eof"], "truncated": truncated}),
                );
            }
            break;
        }
    }
    std::io::stdout().flush()?;
    if truncated && !out.structured() {
        eprintln!("[hodei] output was truncated at the per-attempt cap");
    }
    Ok(())
}

/// A cost report as text: totals, its breakdowns, top jobs and recommendations.
fn print_report(r: &Value) {
    println!("report {} ({}, {} to {})", s(r, "id"), s(r, "period"), s(r, "start"), s(r, "end"));
    println!("total:    {}", s(r, "total_cost"));
    println!("forecast: {} by the end of the month", s(r, "forecast_period_end"));
    for (title, key) in [("TENANT", "by_tenant"), ("POOL", "by_pool"), ("DAY", "by_day")] {
        let rows: Vec<Vec<String>> = r["breakdown"][key]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .map(|g| vec![s(g, "key"), s(g, "cost"), g["attempts"].to_string()])
            .collect();
        println!();
        table(&[title, "COST", "ATTEMPTS"], rows);
    }
    let jobs: Vec<Vec<String>> = r["top_jobs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|j| vec![s(j, "job_id"), s(j, "name"), s(j, "tenant_id"), s(j, "cost")])
        .collect();
    println!();
    table(&["TOP JOB", "NAME", "TENANT", "COST"], jobs);
    let recs: Vec<Vec<String>> = r["recommendations"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|i| vec![s(i, "kind"), s(i, "target"), format!("{} → {} {}", i["current"], i["suggested"], s(i, "unit")), s(i, "estimated_monthly_savings")])
        .collect();
    if !recs.is_empty() {
        println!();
        table(&["RECOMMENDATION", "TARGET", "CHANGE", "SAVING/MONTH"], recs);
    }
    println!("potential savings: {} a month", s(r, "potential_savings"));
}

/// Each attempt's usage: its summary and a line of cpu and of memory over time.
fn print_usage(v: &Value) {
    let attempts = v["attempts"].as_array().cloned().unwrap_or_default();
    if attempts.is_empty() {
        println!("no attempt of this job has started yet");
    }
    for a in &attempts {
        let n = |k: &str| a[k].as_u64().unwrap_or(0);
        println!("attempt {} ({}): asked for {} m cpu, {} MiB memory", n("number"), s(a, "state"), n("requested_cpu_m"), n("requested_memory_mb"));
        let points = a["points"].as_array().cloned().unwrap_or_default();
        let series = |k: &str| points.iter().map(|p| p[k].as_u64().unwrap_or(0)).collect::<Vec<_>>();
        if !points.is_empty() {
            let (cpu, mem) = (series("cpu_m"), series("memory_mb"));
            println!("  cpu    {} peak {} m", sparkline(&cpu, 60), cpu.iter().max().unwrap_or(&0));
            println!("  memory {} peak {} MiB", sparkline(&mem, 60), mem.iter().max().unwrap_or(&0));
            println!("  {} points from {} to {}", points.len(), s(&points[0], "at"), s(&points[points.len() - 1], "at"));
        }
        match a["summary"].as_object() {
            Some(u) => {
                let g = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
                println!(
                    "  cpu avg {} m, p95 {} m, peak {} m ({} ms cpu time); memory avg {} MiB, p95 {} MiB, peak {} MiB; io {} B read, {} B written",
                    g("cpu_avg_m"),
                    g("cpu_p95_m"),
                    g("cpu_peak_m"),
                    g("cpu_time_ms"),
                    g("memory_avg_mb"),
                    g("memory_p95_mb"),
                    g("memory_peak_mb"),
                    g("io_read_bytes"),
                    g("io_write_bytes")
                );
            }
            None if points.is_empty() => println!("  no sample yet"),
            None => println!("  still running"),
        }
    }
}

/// `values` as at most `width` block characters, each the largest of the values it stands for,
/// scaled to the largest value.
fn sparkline(values: &[u64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let per = values.len().div_ceil(width.max(1)).max(1);
    let cols: Vec<u64> = values.chunks(per).map(|c| c.iter().copied().max().unwrap_or(0)).collect();
    let top = cols.iter().copied().max().unwrap_or(0).max(1);
    cols.iter().map(|v| BARS[((v * 7).div_ceil(top) as usize).min(7)]).collect()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn tenants(c: ClientOpts, cmd: Option<TenantsCmd>) -> anyhow::Result<i32> {
    let cl = c.client()?;
    let rows =
        |items: &[Value]| items.iter().map(|t| vec![s(t, "id"), s(t, "name"), s(t, "tier"), s(t, "effective_weight"), s(t, "status")]).collect::<Vec<_>>();
    let headers = ["ID", "NAME", "TIER", "WEIGHT", "STATUS"];
    let v = match cmd.unwrap_or(TenantsCmd::Ls) {
        TenantsCmd::Ls => {
            let page = cl.get("/tenants").await?;
            if !c.output.structured() {
                table(&headers, rows(page["items"].as_array().map(Vec::as_slice).unwrap_or(&[])));
                return Ok(0);
            }
            page
        }
        TenantsCmd::Get { id } => cl.get(&format!("/tenants/{id}")).await?,
        TenantsCmd::Create { name, id, tier, weight, email } => {
            let mut body = json!({"name": name});
            for (k, v) in [("id", json!(id)), ("tier", json!(tier)), ("weight", json!(weight)), ("email", json!(email))] {
                if !v.is_null() {
                    body[k] = v;
                }
            }
            cl.post("/tenants", &body).await?
        }
        TenantsCmd::Delete { id } => {
            cl.delete(&format!("/tenants/{id}")).await?;
            return Ok(0);
        }
        TenantsCmd::Quota { id, cpu_m, memory_mb, gpu, max_concurrent_jobs, max_queued_jobs } => {
            let set: serde_json::Map<String, Value> =
                [("cpu_m", cpu_m), ("memory_mb", memory_mb), ("gpu", gpu), ("max_concurrent_jobs", max_concurrent_jobs), ("max_queued_jobs", max_queued_jobs)]
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), json!(v))))
                    .collect();
            let path = format!("/tenants/{id}/quota");
            let q = if set.is_empty() { cl.get(&path).await? } else { cl.put(&path, &Value::Object(set)).await? };
            if c.output.structured() {
                print_json(&q);
            } else {
                let u = &q["current_usage"];
                let ce = &q["ceiling"];
                table(
                    &["LIMIT", "QUOTA", "CEILING", "USAGE"],
                    vec![
                        vec!["cpu_m".into(), s(&q, "cpu_m"), s(ce, "cpu_m"), s(u, "cpu_m")],
                        vec!["memory_mb".into(), s(&q, "memory_mb"), s(ce, "memory_mb"), s(u, "memory_mb")],
                        vec!["gpu".into(), s(&q, "gpu"), s(ce, "gpu"), s(u, "gpu")],
                        vec!["concurrent jobs".into(), s(&q, "max_concurrent_jobs"), s(ce, "max_concurrent_jobs"), s(u, "active_jobs")],
                        vec!["queued jobs".into(), s(&q, "max_queued_jobs"), s(&q, "max_queued_jobs"), s(u, "queued_jobs")],
                    ],
                );
            }
            return Ok(0);
        }
    };
    if c.output.structured() {
        print_json(&v);
    } else {
        table(&headers, rows(std::slice::from_ref(&v)));
    }
    Ok(0)
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let q: Vec<String> = pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}"))).collect();
    if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) }
}

async fn sla(c: ClientOpts, cmd: Option<SlaCmd>, tenant: Option<String>, window_hours: Option<u32>) -> anyhow::Result<i32> {
    let cl = c.client()?;
    let jobs = |page: &Value| {
        let rows = page["items"].as_array().map(Vec::as_slice).unwrap_or(&[]).iter();
        let cols = ["job_id", "tenant_id", "level", "status", "state", "wait_ms", "max_wait_ms", "dominant_blocking_reason"];
        rows.map(|j| cols.iter().map(|k| s(j, k)).collect()).collect::<Vec<Vec<String>>>()
    };
    let headers = ["JOB", "TENANT", "LEVEL", "STATUS", "STATE", "WAIT_MS", "MAX_WAIT_MS", "BLOCKED_BY"];
    let page = match cmd {
        Some(SlaCmd::Breaches { tenant, level, since }) => {
            cl.get(&format!("/sla/breaches{}", query(&[("tenant_id", tenant), ("level", level), ("since", since)]))).await?
        }
        Some(SlaCmd::AtRisk { tenant, level }) => cl.get(&format!("/sla/at-risk{}", query(&[("tenant_id", tenant), ("level", level)]))).await?,
        None => {
            let path = match &tenant {
                Some(t) => format!("/tenants/{t}/sla"),
                None => "/sla".to_owned(),
            };
            let r = cl.get(&format!("{path}{}", query(&[("window_hours", window_hours.map(|h| h.to_string()))]))).await?;
            if c.output.structured() {
                print_json(&r);
            } else {
                let cols = ["level", "started", "met", "breached", "compliance_ratio", "wait_p50_ms", "wait_p95_ms", "at_risk", "critical", "breached_waiting"];
                let row = |tenant: &str, l: &Value| std::iter::once(tenant.to_owned()).chain(cols.iter().map(|k| s(l, k))).collect::<Vec<_>>();
                let mut rows: Vec<Vec<String>> = vec![];
                for l in r["levels"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    rows.push(row("(all)", l));
                }
                for t in r["tenants"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    for l in t["levels"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                        rows.push(row(&s(t, "tenant_id"), l));
                    }
                }
                let h =
                    ["TENANT", "LEVEL", "STARTED", "MET", "BREACHED", "COMPLIANCE", "WAIT_P50_MS", "WAIT_P95_MS", "AT_RISK", "CRITICAL", "BREACHED_WAITING"];
                table(&h, rows);
            }
            return Ok(0);
        }
    };
    if c.output.structured() {
        print_json(&page);
    } else {
        table(&headers, jobs(&page));
    }
    Ok(0)
}

async fn burst(c: ClientOpts, cmd: BurstCmd) -> anyhow::Result<i32> {
    let cl = c.client()?;
    let headers = ["ID", "TENANT", "STATE", "CPU_M", "MEMORY_MB", "GPU", "JOBS", "EXPIRES_AT"];
    let row = |b: &Value| {
        let cols = ["id", "tenant_id", "state", "requested_cpu_m", "requested_memory_mb", "requested_gpu", "requested_concurrent_jobs", "expires_at"];
        cols.iter().map(|k| s(b, k)).collect::<Vec<_>>()
    };
    let session = |tenant: &str, sid: &str, action: &str| format!("/tenants/{tenant}/burst/sessions/{sid}{action}");
    let v = match cmd {
        BurstCmd::Request { tenant, cpu_m, memory_mb, gpu, concurrent_jobs, duration_minutes, reason } => {
            let mut body = json!({"reason": reason});
            let fields = [
                ("requested_cpu_m", cpu_m),
                ("requested_memory_mb", memory_mb),
                ("requested_gpu", gpu),
                ("requested_concurrent_jobs", concurrent_jobs),
                ("duration_minutes", duration_minutes),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            cl.post(&format!("/tenants/{tenant}/burst"), &body).await?
        }
        BurstCmd::Ls { tenant, state } => {
            let page = cl.get(&format!("/burst/sessions{}", query(&[("tenant_id", tenant), ("state", state)]))).await?;
            if !c.output.structured() {
                table(&headers, page["items"].as_array().map(Vec::as_slice).unwrap_or(&[]).iter().map(row).collect());
                return Ok(0);
            }
            page
        }
        BurstCmd::Get { tenant, session: sid } => cl.get(&session(&tenant, &sid, "")).await?,
        BurstCmd::Approve { tenant, session: sid } => cl.post(&session(&tenant, &sid, "/approve"), &json!({})).await?,
        BurstCmd::Reject { tenant, session: sid } => cl.post(&session(&tenant, &sid, "/reject"), &json!({})).await?,
        BurstCmd::End { tenant, session: sid } => cl.post(&session(&tenant, &sid, "/end"), &json!({})).await?,
    };
    if c.output.structured() {
        print_json(&v);
    } else {
        table(&headers, vec![row(&v)]);
    }
    Ok(0)
}

async fn listing(c: ClientOpts, path: &str, headers: &[&str], keys: &[&str]) -> anyhow::Result<i32> {
    let cl = c.client()?;
    let page = cl.get(path).await?;
    if c.output.structured() {
        print_json(&page);
    } else {
        let items = page["items"].as_array().cloned().unwrap_or_default();
        table(headers, items.iter().map(|w| keys.iter().map(|k| s(w, k)).collect()).collect());
    }
    Ok(0)
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.cmd {
        Cmd::Server(a) => server(a).await,
        Cmd::Migrate(a) => migrate(a).await,
        Cmd::Worker(a) => worker(a).await,
        Cmd::Submit(a) => submit(*a).await,
        Cmd::Jobs { c, cmd } => jobs(c, cmd).await,
        Cmd::Queue(a) => views::queue(a).await,
        Cmd::Apply { c, files } => apply(c, files).await,
        Cmd::Acct(a) => views::acct(a).await,
        Cmd::Tenants { c, cmd } => tenants(c, cmd).await,
        Cmd::Burst { c, cmd } => burst(c, cmd).await,
        Cmd::Sla { c, cmd, tenant, window_hours } => sla(c, cmd, tenant, window_hours).await,
        Cmd::Costs { c, group_by, scope: CostScope { period, start, end, tenant, pool } } => {
            let q = query(&[("group_by", Some(group_by)), ("period", Some(period)), ("start", start), ("end", end), ("tenant_id", tenant), ("pool_id", pool)]);
            let b = c.client()?.get(&format!("/cost-optimization/breakdown{q}")).await?;
            if c.output.structured() {
                print_json(&b);
            } else {
                let head = ["key", "cost", "attempts", "cpu_m_seconds", "memory_mb_seconds", "gpu_seconds"];
                let mut rows: Vec<Vec<String>> =
                    b["groups"].as_array().map(Vec::as_slice).unwrap_or(&[]).iter().map(|g| head.iter().map(|k| s(g, k)).collect()).collect();
                rows.push(vec!["TOTAL".into(), s(&b, "total_cost"), String::new(), String::new(), String::new(), String::new()]);
                table(&[&s(&b, "group_by").to_uppercase(), "COST", "ATTEMPTS", "CPU_M_SECONDS", "MEMORY_MB_SECONDS", "GPU_SECONDS"], rows);
                eprintln!("{} to {} (whole UTC days)", s(&b, "start"), s(&b, "end"));
            }
            Ok(0)
        }
        Cmd::Recommendations { c, tenant, pool, kind } => {
            let q = query(&[("tenant_id", tenant), ("pool_id", pool), ("kind", kind)]);
            let r = c.client()?.get(&format!("/cost-optimization/recommendations{q}")).await?;
            if c.output.structured() {
                print_json(&r);
            } else {
                let items = r["items"].as_array().cloned().unwrap_or_default();
                let change = |i: &Value| format!("{} → {} {}", i["current"], i["suggested"], s(i, "unit"));
                table(
                    &["KIND", "TARGET", "CHANGE", "SAVING/MONTH", "RUNS", "WHY"],
                    items
                        .iter()
                        .map(|i| {
                            vec![
                                s(i, "kind"),
                                s(i, "target"),
                                change(i),
                                s(i, "estimated_monthly_savings"),
                                i["evidence"]["runs"].to_string(),
                                s(i, "rationale"),
                            ]
                        })
                        .collect(),
                );
                eprintln!("potential savings: {} a month", s(&r, "potential_savings"));
            }
            Ok(0)
        }
        Cmd::Login { server, token, ca_file, name } => contexts::login(&server, token, ca_file, name).await,
        Cmd::Context { cmd } => contexts::context(cmd),
        Cmd::Whoami { c } => identity::whoami(c).await,
        Cmd::Tokens { c, cmd } => identity::tokens(c, cmd).await,
        Cmd::Principals { c, cmd } => identity::principals(c, cmd).await,
        Cmd::Workers { c, cmd: Some(WorkersCmd::Drain { id }), .. } => {
            let v = c.client()?.post(&format!("/workers/{id}/drain"), &json!({})).await?;
            if c.output.structured() {
                print_json(&v);
            } else {
                let state = s(&v, "state");
                let then = if state == "terminated" { "it ran nothing and has stopped" } else { "it stops once its running jobs have ended" };
                println!("worker {id} is {state}: {then}");
            }
            Ok(0)
        }
        Cmd::Alerts { c, cmd: Some(AlertsCmd::Ack { id }), .. } => {
            let v = c.client()?.post(&format!("/alerts/{id}/ack"), &json!({})).await?;
            if c.output.structured() {
                print_json(&v);
            } else {
                eprintln!("alert {id} acknowledged: {}", s(&v, "message"));
            }
            Ok(0)
        }
        Cmd::Alerts { c, cmd: None, state, tenant } => {
            listing(
                c,
                &format!("/alerts{}", query(&[("state", state), ("tenant_id", tenant), ("limit", Some("500".into()))])),
                &["ID", "KIND", "SEVERITY", "TENANT", "STATE", "FIRED", "MESSAGE"],
                &["id", "kind", "severity", "tenant_id", "state", "fired_at", "message"],
            )
            .await
        }
        Cmd::Reports { c, cmd: None, tenant } => {
            listing(
                c,
                &format!("/cost-optimization/reports{}", query(&[("tenant_id", tenant), ("limit", Some("100".into()))])),
                &["ID", "CREATED", "PERIOD", "TENANT", "TOTAL", "FORECAST", "SAVINGS"],
                &["id", "created_at", "period", "tenant_id", "total_cost", "forecast_period_end", "potential_savings"],
            )
            .await
        }
        Cmd::Reports { c, cmd: Some(cmd), .. } => {
            let cl = c.client()?;
            let r = match cmd {
                ReportsCmd::Create { scope: CostScope { period, start, end, tenant, pool } } => {
                    cl.post("/cost-optimization/reports", &json!({"period": period, "start": start, "end": end, "tenant_id": tenant, "pool_id": pool})).await?
                }
                ReportsCmd::Get { id } => cl.get(&format!("/cost-optimization/reports/{id}")).await?,
            };
            if c.output.structured() {
                print_json(&r);
            } else {
                print_report(&r);
            }
            Ok(0)
        }
        Cmd::Budgets { c, cmd: None } => {
            listing(
                c,
                "/budgets",
                &["ID", "TENANT", "PERIOD", "AMOUNT", "SPENT", "STATE", "ON EXHAUSTED"],
                &["id", "tenant_id", "period", "amount", "spent", "state", "on_exhausted"],
            )
            .await
        }
        Cmd::Budgets { c, cmd: Some(cmd) } => {
            let cl = c.client()?;
            let v = match cmd {
                BudgetsCmd::Create { tenant, amount, period, on_exhausted } => {
                    cl.post("/budgets", &json!({"tenant_id": tenant, "amount": amount, "period": period, "on_exhausted": on_exhausted})).await?
                }
                BudgetsCmd::Set { id, amount } => cl.put(&format!("/budgets/{id}"), &json!({"amount": amount})).await?,
                BudgetsCmd::Delete { id } => {
                    cl.delete(&format!("/budgets/{id}")).await?;
                    eprintln!("budget {id} deleted");
                    return Ok(0);
                }
            };
            if c.output.structured() {
                print_json(&v);
            } else {
                println!("{}", s(&v, "id"));
                eprintln!("{} budget of tenant {}: {} spent of {} ({})", s(&v, "period"), s(&v, "tenant_id"), s(&v, "spent"), s(&v, "amount"), s(&v, "state"));
            }
            Ok(0)
        }
        Cmd::Workers { c, cmd: None, all } => {
            listing(
                c,
                if all { "/workers?limit=500" } else { "/workers?limit=500&state=registering,idle,busy,draining" },
                &["ID", "POOL", "INSTANCE", "STATE", "SLOTS", "LAST HEARTBEAT"],
                &["id", "pool_id", "instance_name", "state", "slots", "last_heartbeat_at"],
            )
            .await
        }
        Cmd::Pools { c, cmd: Some(PoolsCmd::RotateToken { id }) } => {
            let v = c.client()?.post(&format!("/pools/{id}/join-token"), &json!({})).await?;
            if c.output.structured() {
                print_json(&v);
            } else {
                println!("{}", s(&v, "join_token"));
                eprintln!("pool {id} has a new join token; the token above is shown only once");
            }
            Ok(0)
        }
        Cmd::Pools {
            c,
            cmd:
                Some(PoolsCmd::Create { id, name, cpu_m, memory_mb, gpu, slots, min_size, max_size, provider, pool_type, idle_timeout_s, labels, allowed_tenants }),
        } => {
            let mut body = json!({"id": id, "worker_template": {"cpu_m": cpu_m, "memory_mb": memory_mb, "gpu": gpu, "slots": slots}, "min_size": min_size,
                "provider": provider, "type": pool_type, "labels": kv(&labels, "--label")?, "allowed_tenants": allowed_tenants});
            if let Some(t) = idle_timeout_s {
                body["idle_timeout_s"] = json!(t);
            }
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(m) = max_size {
                body["max_size"] = json!(m);
            }
            let v = c.client()?.post("/pools", &body).await?;
            if c.output.structured() {
                print_json(&v);
            } else if provider == "local" {
                eprintln!("pool {id} created; the server starts its workers (min {min_size}, scaled with `hodei pools scale {id} N`)");
            } else {
                println!("{}", s(&v, "join_token"));
                eprintln!("pool {id} created; workers join it with the token above (shown only once): hodei worker --pool {id}");
            }
            Ok(0)
        }
        Cmd::Pools { c, cmd: Some(PoolsCmd::Scale { id, target_size, reason }) } => {
            let v = c.client()?.post(&format!("/pools/{id}/scale"), &json!({"target_size": target_size, "reason": reason})).await?;
            if c.output.structured() {
                print_json(&v);
            } else {
                eprintln!("pool {id}: desired size {} → {}", v["from_size"], v["to_size"]);
            }
            Ok(0)
        }
        Cmd::Pools { c, cmd: Some(PoolsCmd::History { id, decision, limit }) } => {
            let mut path = format!("/pools/{id}/scaling/history?limit={limit}");
            if let Some(d) = decision {
                path.push_str(&format!("&decision={d}"));
            }
            listing(c, &path, &["AT", "SOURCE", "FROM", "TO", "DECISION", "REASON"], &["at", "source", "from_size", "to_size", "decision", "reason"]).await
        }
        Cmd::Pools { c, cmd: Some(PoolsCmd::Delete { id }) } => {
            c.client()?.delete(&format!("/pools/{id}")).await?;
            eprintln!("pool {id} deleted");
            Ok(0)
        }
        Cmd::Pools { c, cmd: Some(PoolsCmd::Status { id }) } => {
            let v = c.client()?.get(&format!("/pools/{id}/status")).await?;
            if c.output.structured() {
                print_json(&v);
            } else {
                let by_state: Vec<String> = v["workers_by_state"].as_object().map(|m| m.iter().map(|(k, n)| format!("{k} {n}")).collect()).unwrap_or_default();
                println!(
                    "pool {id}: {}, {} workers (desired {}, min {}, max {}); {}; slots {}/{} in use",
                    s(&v, "state"),
                    v["current_size"],
                    v["desired_size"],
                    v["min_size"],
                    v["max_size"],
                    if by_state.is_empty() { "no workers".to_owned() } else { by_state.join(", ") },
                    v["slots_used"],
                    v["slots"]
                );
                if v["last_event"].is_object() {
                    let e = &v["last_event"];
                    println!("last scaling decision {}: {} {} → {} ({})", s(e, "at"), s(e, "decision"), e["from_size"], e["to_size"], s(e, "reason"));
                }
            }
            Ok(0)
        }
        Cmd::Pools { c, cmd: None } => {
            listing(
                c,
                "/pools",
                &["ID", "TYPE", "PROVIDER", "MIN", "DESIRED", "MAX", "SLOTS/WORKER", "STATE"],
                &["id", "type", "provider", "min_size", "desired_size", "max_size", "worker_slots", "state"],
            )
            .await
        }
        Cmd::Config { cmd: ConfigCmd::Reference } => {
            print!("{}", hodei_server::config_reference::reference());
            Ok(0)
        }
        Cmd::Config { cmd: ConfigCmd::Check { config } } => {
            let cfg = hodei_server::config::Config::load(config.as_deref(), &env_vars())?;
            // The effective configuration as a file would hold it (secrets shown as ***).
            print!("{}", serde_yaml_ng::to_string(&cfg).context("printing the configuration")?);
            check_run_as(&cfg)?;
            let unsupported = cfg.unsupported();
            if !unsupported.is_empty() {
                anyhow::bail!("the server would refuse this configuration: {}", unsupported.join("; "));
            }
            eprintln!("configuration is valid");
            Ok(0)
        }
        Cmd::Bench(a) => bench::run(a).await,
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "hodei", &mut std::io::stdout());
            Ok(0)
        }
        Cmd::Man { dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match dir {
                None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
                Some(dir) => {
                    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                    let n = man_pages(cmd, "hodei", &dir)?;
                    eprintln!("{n} pages written to {}", dir.display());
                }
            }
            Ok(0)
        }
        Cmd::Simulate(a) => {
            let (mut w, trace) = hodei_sim::Workload::load(&a.workload)?;
            if let Some(seed) = a.seed {
                w.seed = seed;
            }
            let report = hodei_sim::simulate(&w, trace)?;
            match a.output {
                Output::Table | Output::Wide => print!("{}", report.render()),
                Output::Json | Output::Yaml => {
                    let _ = FORMAT.set(a.output);
                    print_json(&serde_json::to_value(&report)?)
                }
            }
            Ok(0)
        }
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Server(_) | Cmd::Worker(_)) {
        // A client piped into `head` ends quietly when the reader goes away, as Unix tools do.
        // (The server and worker keep Rust's default: a closed socket is an error, not a signal.)
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let code = match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<client::UsageError>().is_some() { 2 } else { client::EXIT_API_ERROR }
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
