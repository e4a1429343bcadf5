//! `hodei jobs …`: list, inspect, watch, control and read the output of jobs.

#[allow(unused_imports)]
use crate::*;

#[derive(Subcommand)]
pub(crate) enum JobsCmd {
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

/// Jobs as a table; with an INDEX column when any of them belongs to an array.
pub(crate) fn job_table(items: &[Value]) {
    let (headers, rows) = job_rows(items);
    table(&headers, rows);
}

/// The headers and rows of `job_table` (the id first).
pub(crate) fn job_rows(items: &[Value]) -> (Vec<&'static str>, Vec<Vec<String>>) {
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

/// Blocking reasons, candidate pools and ETA of an explain or dry-run answer.
pub(crate) fn print_explained(v: &Value) {
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

pub(crate) async fn jobs(c: ClientOpts, cmd: JobsCmd) -> anyhow::Result<i32> {
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
pub(crate) async fn print_array(cl: &Client, id: &str, out: Output) -> anyhow::Result<i32> {
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
pub(crate) async fn print_logs(cl: &Client, id: &str, attempt: Option<u32>, out: Output) -> anyhow::Result<()> {
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

/// Each attempt's usage: its summary and a line of cpu and of memory over time.
pub(crate) fn print_usage(v: &Value) {
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
pub(crate) fn sparkline(values: &[u64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let per = values.len().div_ceil(width.max(1)).max(1);
    let cols: Vec<u64> = values.chunks(per).map(|c| c.iter().copied().max().unwrap_or(0)).collect();
    let top = cols.iter().copied().max().unwrap_or(0).max(1);
    cols.iter().map(|v| BARS[((v * 7).div_ceil(top) as usize).min(7)]).collect()
}
