//! `hodei bench`: a load generator against a running server. Each mode prints one line of
//! `key=value` figures (see BENCHMARKS.md for the commands and results).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::Client;

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, env = "HODEI_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    #[arg(long, env = "HODEI_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Durable single-job submits (POST /jobs), from N concurrent clients. Jobs are submitted
    /// held unless --run, so the submit path is measured alone.
    Submit {
        #[arg(long, default_value_t = 1)]
        clients: usize,
        #[arg(long, default_value_t = 10_000)]
        jobs: usize,
        #[arg(long)]
        run: bool,
    },
    /// Reads of one job (GET /jobs/{id}, as `hodei jobs get`), from N concurrent clients: the
    /// cost of a request that authenticates and reads the store.
    Read {
        #[arg(long, default_value_t = 1)]
        clients: usize,
        #[arg(long, default_value_t = 10_000)]
        reads: usize,
        /// Read this API path instead (e.g. `/queue`, `/jobs?limit=50`, `/jobs/ID/explain`);
        /// no job is submitted then.
        #[arg(long)]
        path: Option<String>,
    },
    /// One POST /jobs/batch of N held jobs.
    Batch {
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
    },
    /// One POST /jobs with `array` of N held jobs (an array job, as Slurm's `sbatch --array`).
    Array {
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
    },
    /// Trivial jobs (`true`) completed per second with warm workers, from one batch submit to
    /// the last completion; plus this machine's raw rate of spawning `true` with as many
    /// processes in flight.
    Throughput {
        #[arg(long, default_value_t = 10_000)]
        jobs: usize,
        /// Processes in flight for the raw spawn baseline (match the pool's slots).
        #[arg(long, default_value_t = 32)]
        parallel: usize,
    },
    /// Idle server: submit → the job's process has started (the job prints its start time).
    Latency {
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// Random pause before each submit, so submits do not phase-lock with anything.
        #[arg(long, default_value_t = 20)]
        gap_max_ms: u64,
    },
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn job(argv: &[&str], run_id: &str, hold: bool) -> Value {
    json!({"command": argv, "labels": {"bench": run_id}, "hold": hold, "resources": {"cpu_m": 1, "memory_mb": 16}})
}

pub async fn run(a: BenchArgs) -> anyhow::Result<i32> {
    let client = Arc::new(Client::new(
        &a.server,
        a.token.map(|t| (t, crate::client::TokenSource::Given)),
        std::env::var_os("HODEI_CA_FILE").as_deref().map(std::path::Path::new),
    )?);
    client.get("/jobs?limit=1").await.context("the server must be running (hodei server) and reachable")?;
    let run_id = uuid_like();
    match a.mode {
        Mode::Submit { clients, jobs, run } => submit(client, clients, jobs, run, &run_id).await,
        Mode::Read { clients, reads, path } => {
            let path = match path {
                Some(p) => p,
                None => format!("/jobs/{}", client.post("/jobs", &job(&["true"], &run_id, true)).await?["id"].as_str().unwrap_or_default()),
            };
            let (secs, lat, errors) = concurrently(
                clients,
                reads,
                move |c| {
                    let path = path.clone();
                    async move { c.get(&path).await.map(|_| ()) }
                },
                &client,
            )
            .await?;
            println!(
                "hodei bench read clients={clients} reads={reads} elapsed_s={secs:.3} reads_per_s={:.0} latency_p50_ms={:.3} latency_p99_ms={:.3} errors={errors}",
                reads as f64 / secs,
                pct(&lat, 50.0),
                pct(&lat, 99.0),
            );
            Ok(0)
        }
        Mode::Batch { jobs } => {
            let body = json!({"jobs": (0..jobs).map(|_| job(&["true"], &run_id, true)).collect::<Vec<_>>()});
            let started = Instant::now();
            let r = client.post("/jobs/batch", &body).await?;
            let secs = started.elapsed().as_secs_f64();
            let n = r["items"].as_array().map(|i| i.iter().filter(|x| x["job_id"].is_string()).count()).unwrap_or(0);
            println!("hodei bench batch jobs={n} elapsed_s={secs:.3} jobs_per_s={:.0}", n as f64 / secs);
            Ok(0)
        }
        Mode::Array { jobs } => {
            let mut body = job(&["true"], &run_id, true);
            body["array"] = json!({"start": 0, "end": jobs.saturating_sub(1)});
            let started = Instant::now();
            let r = client.post("/jobs", &body).await?;
            let secs = started.elapsed().as_secs_f64();
            let n = r["count"].as_u64().unwrap_or(0);
            println!("hodei bench array jobs={n} elapsed_s={secs:.3} jobs_per_s={:.0}", n as f64 / secs);
            Ok(0)
        }
        Mode::Throughput { jobs, parallel } => throughput(&client, jobs, parallel, &run_id).await,
        Mode::Latency { runs, gap_max_ms } => latency(&client, runs, gap_max_ms, &run_id).await,
    }
}

fn uuid_like() -> String {
    format!("{:x}", now_ns())
}

/// Runs `n` requests made by `one` from `clients` concurrent tasks: (seconds, sorted latencies
/// in ms, errors).
async fn concurrently<F, Fut>(clients: usize, n: usize, one: F, client: &Arc<Client>) -> anyhow::Result<(f64, Vec<f64>, usize)>
where
    F: Fn(Arc<Client>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, next, errors, one) = (client.clone(), next.clone(), errors.clone(), one.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t = Instant::now();
                if one(client.clone()).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok((secs, lat, errors.load(Ordering::Relaxed)))
}

async fn submit(client: Arc<Client>, clients: usize, jobs: usize, run: bool, run_id: &str) -> anyhow::Result<i32> {
    let body = Arc::new(job(&["true"], run_id, !run));
    let (secs, lat, errors) = concurrently(
        clients,
        jobs,
        move |c| {
            let body = body.clone();
            async move { c.post("/jobs", &body).await.map(|_| ()) }
        },
        &client,
    )
    .await?;
    println!(
        "hodei bench submit clients={clients} jobs={jobs} held={} elapsed_s={secs:.3} jobs_per_s={:.0} latency_p50_ms={:.3} latency_p99_ms={:.3} errors={}",
        !run,
        jobs as f64 / secs,
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        errors
    );
    Ok(0)
}

/// Rate at which this machine spawns and reaps `true`, `parallel` at a time.
fn spawn_baseline(n: usize, parallel: usize) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..parallel)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let _ = Command::new("true").stdout(Stdio::null()).stderr(Stdio::null()).status();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn count(client: &Client, run_id: &str, states: &str) -> anyhow::Result<bool> {
    let page = client.get(&format!("/jobs?label=bench={run_id}&state={states}&limit=1")).await?;
    Ok(page["items"].as_array().is_some_and(|i| !i.is_empty()))
}

async fn throughput(client: &Client, jobs: usize, parallel: usize, run_id: &str) -> anyhow::Result<i32> {
    let raw = tokio::task::spawn_blocking(move || spawn_baseline(jobs.min(5000), parallel)).await?;
    let body = json!({"jobs": (0..jobs).map(|_| job(&["true"], run_id, false)).collect::<Vec<_>>()});
    let started = Instant::now();
    client.post("/jobs/batch", &body).await?;
    let submitted = started.elapsed().as_secs_f64();
    // Polled every 1 % of the time so far (20–250 ms): the measurement's error stays ≤ 1 %, and
    // its cost does not compete with the jobs (every 20 ms, a list read took ~10 % of the CPU).
    while count(client, run_id, "pending,scheduled,running").await? {
        tokio::time::sleep((started.elapsed() / 100).clamp(Duration::from_millis(20), Duration::from_millis(250))).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let failed = count(client, run_id, "failed,cancelled,timed_out").await?;
    let rate = jobs as f64 / secs;
    println!(
        "hodei bench throughput jobs={jobs} submit_s={submitted:.3} makespan_s={secs:.3} jobs_per_s={rate:.0} raw_spawn_per_s={raw:.0} ratio_to_raw={:.2} any_failed={failed}",
        rate / raw
    );
    Ok(0)
}

async fn latency(client: &Client, runs: usize, gap_max_ms: u64, run_id: &str) -> anyhow::Result<i32> {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut lat = Vec::with_capacity(runs);
    for _ in 0..runs {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(seed % (gap_max_ms + 1))).await;
        let t0 = now_ns();
        let j = client.post("/jobs", &job(&["date", "+%s%N"], run_id, false)).await?;
        let id = j["id"].as_str().context("job id")?.to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let j = client.get(&format!("/jobs/{id}")).await?;
            match j["state"].as_str() {
                Some("succeeded") => break,
                Some("failed" | "cancelled" | "timed_out") => bail!("latency job {id} ended {}", j["state"]),
                _ if Instant::now() > deadline => bail!("latency job {id} did not finish"),
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
        let logs = client.get(&format!("/jobs/{id}/logs?stream=stdout")).await?;
        let out: String = logs["chunks"].as_array().into_iter().flatten().filter_map(|c| c["data"].as_str()).collect();
        let started: u128 = out.trim().parse().with_context(|| format!("job printed {out:?}"))?;
        lat.push(started.saturating_sub(t0) as f64 / 1e6);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "hodei bench latency runs={runs} dispatch_p50_ms={:.2} dispatch_p90_ms={:.2} dispatch_p99_ms={:.2} min_ms={:.2} max_ms={:.2}",
        pct(&lat, 50.0),
        pct(&lat, 90.0),
        pct(&lat, 99.0),
        lat.first().copied().unwrap_or(f64::NAN),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    Ok(0)
}
