//! `hodei`: the one binary — server, worker agent, and the REST client commands.

mod batch;
mod bench;
mod client;
mod cmd;
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
use crate::cmd::{costs::*, jobs::*, pools::*, server::*, submit::*, tenants::*};

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
    /// Open the web dashboard in a browser, signed in with this CLI's token (`--print`: print
    /// the link instead; it holds the token).
    Ui {
        #[command(flatten)]
        c: ClientOpts,
        /// A page of the dashboard, e.g. `jobs/ID`, `pools/local` (default: the overview).
        page: Option<String>,
        #[arg(long)]
        print: bool,
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
        /// Only workers whose labels match this selector: `zone=eu,disk!=hdd`, `gpu`, `!spot`.
        #[arg(long, short = 'l')]
        selector: Option<String>,
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

fn kv(items: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| client::fail_usage(&format!("{what} {s:?} is not KEY=VALUE"))))
        .collect()
}

/// A document in this invocation's format: YAML with `-o yaml`, else JSON.
fn print_json(v: &Value) {
    match FORMAT.get() {
        Some(Output::Yaml) => print!("{}", serde_yaml_ng::to_string(v).unwrap_or_default()),
        _ => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
    }
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

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let q: Vec<String> = pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencode(v)))).collect();
    if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) }
}

async fn listing(c: ClientOpts, path: &str, headers: &[&str], keys: &[&str]) -> anyhow::Result<i32> {
    let cl = c.client()?;
    let page = cl.get(path).await?;
    show_page(&c, &page, headers, keys);
    Ok(0)
}

/// The most rows a whole listing reads (pages of 500), so that it is bounded too.
const LISTING_MAX: usize = 10_000;

/// Every page of a list (tenants, pools, budgets, workers) as one table, or one JSON page
/// `{items, next_cursor}` whose cursor is set only past [`LISTING_MAX`] rows.
async fn listing_all(c: ClientOpts, path: &str, headers: &[&str], keys: &[&str]) -> anyhow::Result<i32> {
    let cl = c.client()?;
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut p = format!("{path}{sep}limit=500");
        if let Some(at) = &cursor {
            p.push_str(&format!("&cursor={}", urlencode(at)));
        }
        let page = cl.get(&p).await?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() || items.len() >= LISTING_MAX {
            break;
        }
    }
    if cursor.is_some() && !c.output.structured() {
        eprintln!("(the first {} only)", items.len());
    }
    show_page(&c, &serde_json::json!({"items": items, "next_cursor": cursor}), headers, keys);
    Ok(0)
}

fn show_page(c: &ClientOpts, page: &Value, headers: &[&str], keys: &[&str]) {
    if c.output.structured() {
        print_json(page);
    } else {
        let items = page["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        table(headers, items.iter().map(|w| keys.iter().map(|k| s(w, k)).collect()).collect());
    }
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
        Cmd::Costs { c, group_by, scope } => costs(c, group_by, scope).await,
        Cmd::Recommendations { c, tenant, pool, kind } => recommendations(c, tenant, pool, kind).await,
        Cmd::Alerts { c, cmd, state, tenant } => alerts(c, cmd, state, tenant).await,
        Cmd::Reports { c, cmd, tenant } => reports(c, cmd, tenant).await,
        Cmd::Budgets { c, cmd } => budgets(c, cmd).await,
        Cmd::Workers { c, cmd, all, selector } => workers(c, cmd, all, selector).await,
        Cmd::Pools { c, cmd } => pools(c, cmd).await,
        Cmd::Login { server, token, ca_file, name } => contexts::login(&server, token, ca_file, name).await,
        Cmd::Context { cmd } => contexts::context(cmd),
        Cmd::Whoami { c } => identity::whoami(c).await,
        Cmd::Ui { c, page, print } => identity::ui(c, page, print).await,
        Cmd::Tokens { c, cmd } => identity::tokens(c, cmd).await,
        Cmd::Principals { c, cmd } => identity::principals(c, cmd).await,
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
