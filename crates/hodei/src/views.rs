//! Views Slurm users reach for: `hodei queue` (squeue: what waits and runs, and why it waits)
//! and `hodei acct` (sacct: what ended, with exit code, elapsed, cpu time, max RSS and cost).

use clap::Args;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::client::{Client, s, table};
use crate::{ClientOpts, Output, print_json, urlencode};

/// Requests in flight at once when a view needs one per row (explain, attempts).
const CONCURRENCY: usize = 8;

#[derive(Args)]
pub struct QueueArgs {
    #[command(flatten)]
    c: ClientOpts,
    #[arg(long)]
    tenant: Option<String>,
    /// Comma-separated states (default: pending,held,scheduled,running).
    #[arg(long)]
    state: Option<String>,
    /// k=v: only jobs carrying this label.
    #[arg(long, short = 'l')]
    label: Option<String>,
    /// Rows shown, newest first (1–500).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Columns, comma-separated, of: id, tenant, name, state, elapsed, pool, worker, reason,
    /// priority, submitted, cpu_m, memory_mb, index.
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct AcctArgs {
    #[command(flatten)]
    c: ClientOpts,
    #[arg(long)]
    tenant: Option<String>,
    /// Jobs submitted at or after this instant (RFC 3339, or a date: 2026-12-01; default:
    /// today 00:00 UTC), as sacct's --starttime.
    #[arg(long, short = 'S')]
    since: Option<String>,
    /// Comma-separated ended states (default: succeeded,failed,cancelled,timed_out).
    #[arg(long)]
    state: Option<String>,
    /// Only jobs of this name.
    #[arg(long)]
    name: Option<String>,
    /// The most rows shown, newest first.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Columns, comma-separated, of: id, tenant, name, state, exit, elapsed, cpu_time,
    /// max_rss_mb, cost, attempts, submitted, finished, reason, index.
    #[arg(long)]
    format: Option<String>,
}

/// The rows of `columns` (upper-cased as headers) from each row's values by column name.
fn render(columns: &[&str], rows: &[Vec<(&'static str, String)>]) {
    let headers: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let cells = rows.iter().map(|r| columns.iter().map(|c| r.iter().find(|(k, _)| k == c).map_or("-".to_owned(), |(_, v)| v.clone())).collect()).collect();
    table(&headers, cells);
}

/// `--format` as column names, each checked against `known`.
fn columns<'a>(format: Option<&'a str>, default: &'a [&'a str], known: &[&str]) -> anyhow::Result<Vec<&'a str>> {
    let Some(f) = format else { return Ok(default.to_vec()) };
    let cols: Vec<&str> = f.split(',').map(str::trim).filter(|c| !c.is_empty()).collect();
    for c in &cols {
        anyhow::ensure!(known.contains(c), "--format: unknown column {c:?} (one of {})", known.join(", "));
    }
    anyhow::ensure!(!cols.is_empty(), "--format: no column");
    Ok(cols)
}

fn parse_time(t: &str) -> Option<jiff::Timestamp> {
    t.parse::<jiff::Timestamp>()
        .ok()
        .or_else(|| t.parse::<jiff::civil::Date>().ok().and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok()).map(|z| z.timestamp()))
}

/// `1h02m`, `3m04s`, `12s`, `850ms`.
pub fn elapsed(ms: i64) -> String {
    let ms = ms.max(0);
    let (h, m, sec) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    match (h, m) {
        (0, 0) if ms < 1000 => format!("{ms}ms"),
        (0, 0) => format!("{sec}s"),
        (0, _) => format!("{m}m{sec:02}s"),
        _ => format!("{h}h{m:02}m"),
    }
}

fn since(j: &Value, key: &str, now: jiff::Timestamp) -> Option<i64> {
    j[key].as_str().and_then(parse_time).map(|t| now.duration_since(t).as_millis() as i64)
}

/// Every job the query lists (page after page).
pub async fn all_jobs(cl: &Client, query: &[(&str, Option<String>)]) -> anyhow::Result<Vec<Value>> {
    list(cl, query, u32::MAX, |_| true).await
}

async fn list(cl: &Client, query: &[(&str, Option<String>)], limit: u32, keep_going: impl Fn(&Value) -> bool) -> anyhow::Result<Vec<Value>> {
    let mut q: Vec<String> = query.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencode(v)))).collect();
    q.push(format!("limit={}", limit.clamp(1, 500)));
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/jobs?{}", q.join("&"));
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", urlencode(c)));
        }
        let page = cl.get(&path).await?;
        for j in page["items"].as_array().into_iter().flatten() {
            if !keep_going(j) {
                return Ok(out);
            }
            out.push(j.clone());
            if out.len() >= limit as usize {
                return Ok(out);
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(out),
        }
    }
}

pub async fn queue(a: QueueArgs) -> anyhow::Result<i32> {
    let cl = a.c.client()?;
    let state = a.state.clone().unwrap_or_else(|| "pending,held,scheduled,running".into());
    let jobs = list(&cl, &[("state", Some(state)), ("tenant_id", a.tenant.clone()), ("label", a.label.clone())], a.limit, |_| true).await?;
    // Why each waiting job waits: its first blocking reason, as squeue's REASON.
    let reasons: Vec<Option<String>> = futures::stream::iter(jobs.iter().map(|j| {
        let cl = &cl;
        async move {
            match j["state"].as_str() {
                Some("pending") => {
                    let e = cl.get(&format!("/jobs/{}/explain", s(j, "id"))).await.ok()?;
                    e["blocking_reasons"].as_array()?.first().map(|b| s(b, "code")).or(Some("starting".into()))
                }
                Some("held") => Some(j["state_reason"].as_str().unwrap_or("held").to_owned()),
                _ => None,
            }
        }
    }))
    .buffered(CONCURRENCY)
    .collect()
    .await;
    if a.c.output.structured() {
        let items: Vec<Value> = jobs.iter().zip(&reasons).map(|(j, r)| json!({"job": j, "reason": r})).collect();
        print_json(&json!({ "items": items }));
        return Ok(0);
    }
    let now = jiff::Timestamp::now();
    let rows: Vec<Vec<(&'static str, String)>> = jobs
        .iter()
        .zip(reasons)
        .map(|(j, reason)| {
            let running = matches!(j["state"].as_str(), Some("running"));
            let el = if running { since(j, "started_at", now) } else { since(j, "submitted_at", now) };
            vec![
                ("id", s(j, "id")),
                ("tenant", s(j, "tenant_id")),
                ("name", s(j, "name")),
                ("state", s(j, "state")),
                ("elapsed", el.map_or("-".into(), elapsed)),
                ("pool", s(j, "pool_id")),
                ("worker", s(j, "worker_id")),
                ("reason", reason.unwrap_or_else(|| "-".into())),
                ("priority", s(j, "priority")),
                ("submitted", s(j, "submitted_at")),
                ("cpu_m", j["resources"]["cpu_m"].to_string()),
                ("memory_mb", j["resources"]["memory_mb"].to_string()),
                ("index", s(j, "array_index")),
            ]
        })
        .collect();
    let default: &[&str] = if a.c.output == Output::Wide {
        &["id", "tenant", "name", "state", "elapsed", "pool", "worker", "reason", "priority", "cpu_m", "memory_mb", "submitted"]
    } else {
        &["id", "tenant", "name", "state", "elapsed", "pool", "reason"]
    };
    let known = ["id", "tenant", "name", "state", "elapsed", "pool", "worker", "reason", "priority", "submitted", "cpu_m", "memory_mb", "index"];
    render(&columns(a.format.as_deref(), default, &known)?, &rows);
    Ok(0)
}

pub async fn acct(a: AcctArgs) -> anyhow::Result<i32> {
    let cl = a.c.client()?;
    let start = match &a.since {
        Some(t) => parse_time(t)
            .ok_or_else(|| crate::client::fail_usage(&format!("--since {t:?}: expected RFC 3339 (2026-12-01T08:00:00Z) or a date (2026-12-01)")))?,
        None => jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).start_of_day()?.timestamp(),
    };
    let state = a.state.clone().unwrap_or_else(|| "succeeded,failed,cancelled,timed_out".into());
    // Newest first: stop at the first job submitted before the window.
    let jobs = list(&cl, &[("state", Some(state)), ("tenant_id", a.tenant.clone())], a.limit, |j| {
        j["submitted_at"].as_str().and_then(parse_time).is_some_and(|t| t >= start)
    })
    .await?;
    let jobs: Vec<Value> = jobs.into_iter().filter(|j| a.name.as_deref().is_none_or(|n| j["name"] == n)).collect();
    // cpu time and max RSS live on the attempts: one read per job.
    let full: Vec<Value> = futures::stream::iter(jobs.iter().map(|j| {
        let cl = &cl;
        async move { cl.get(&format!("/jobs/{}", s(j, "id"))).await.unwrap_or_else(|_| j.clone()) }
    }))
    .buffered(CONCURRENCY)
    .collect()
    .await;
    if a.c.output.structured() {
        print_json(&json!({ "items": full }));
        return Ok(0);
    }
    let rows: Vec<Vec<(&'static str, String)>> = full
        .iter()
        .map(|j| {
            let attempts = j["attempts"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            let cpu: u64 = attempts.iter().filter_map(|x| x["cpu_time_ms"].as_u64()).sum();
            let rss = attempts.iter().filter_map(|x| x["max_rss_mb"].as_u64()).max();
            let exit = match (j["exit_code"].as_i64(), attempts.last().and_then(|x| x["signal"].as_i64())) {
                (Some(c), _) => c.to_string(),
                (None, Some(sig)) => format!("SIG{sig}"),
                _ => "-".into(),
            };
            vec![
                ("id", s(j, "id")),
                ("tenant", s(j, "tenant_id")),
                ("name", s(j, "name")),
                ("state", s(j, "state")),
                ("exit", exit),
                ("elapsed", j["run_time_ms"].as_i64().map_or("-".into(), elapsed)),
                ("cpu_time", elapsed(cpu as i64)),
                ("max_rss_mb", rss.map_or("-".into(), |r| r.to_string())),
                ("cost", s(j, "cost")),
                ("attempts", s(j, "attempt_count")),
                ("submitted", s(j, "submitted_at")),
                ("finished", s(j, "finished_at")),
                ("reason", s(j, "failure_reason")),
                ("index", s(j, "array_index")),
            ]
        })
        .collect();
    let default: &[&str] = if a.c.output == Output::Wide {
        &["id", "tenant", "name", "state", "exit", "elapsed", "cpu_time", "max_rss_mb", "cost", "attempts", "reason", "finished"]
    } else {
        &["id", "name", "state", "exit", "elapsed", "cpu_time", "max_rss_mb", "cost"]
    };
    let known = ["id", "tenant", "name", "state", "exit", "elapsed", "cpu_time", "max_rss_mb", "cost", "attempts", "submitted", "finished", "reason", "index"];
    render(&columns(a.format.as_deref(), default, &known)?, &rows);
    Ok(0)
}

/// How often `-w` looks again.
pub const WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// kubectl's `-w`: on a terminal the table is redrawn in place each time it changes; into a
/// pipe, a row is printed each time it is new or changed (header once). `fetch` gives the rows
/// (first cell: the row's key) and whether to stop after showing them.
pub async fn watch<F, Fut>(headers: &[&str], mut fetch: F) -> anyhow::Result<i32>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Vec<Vec<String>>, bool)>>,
{
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stdout().is_terminal();
    let mut seen: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    let mut last: Option<Vec<Vec<String>>> = None;
    let mut header = false;
    loop {
        let (rows, done) = fetch().await?;
        if terminal {
            if last.as_ref() != Some(&rows) {
                // Home and clear, then the table: redrawn in place.
                print!("\x1b[H\x1b[2J");
                table(headers, rows.clone());
                println!("\x1b[2m(every {} ms; Ctrl-C to stop)\x1b[0m", WATCH_EVERY.as_millis());
                last = Some(rows);
            }
        } else {
            let changed: Vec<Vec<String>> = rows.into_iter().filter(|r| seen.get(&r[0]) != Some(r)).collect();
            if !changed.is_empty() {
                crate::client::table_rows(headers, changed.clone(), !header);
                header = true;
                for r in changed {
                    seen.insert(r[0].clone(), r);
                }
            }
        }
        std::io::stdout().flush()?;
        if done {
            return Ok(0);
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_like_squeues() {
        assert_eq!(super::elapsed(850), "850ms");
        assert_eq!(super::elapsed(12_400), "12s");
        assert_eq!(super::elapsed(184_000), "3m04s");
        assert_eq!(super::elapsed(3_720_000), "1h02m");
        assert!(super::parse_time("2026-12-01").is_some() && super::parse_time("2026-12-01T08:00:00Z").is_some() && super::parse_time("soon").is_none());
    }
}
