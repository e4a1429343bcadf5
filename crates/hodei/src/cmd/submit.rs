//! `hodei submit` (commands, batch scripts, arrays, dependencies, --wait with Ctrl-C) and
//! `hodei apply -f`.

#[allow(unused_imports)]
use crate::*;

#[derive(Args)]
#[command(args_override_self = true)]
pub(crate) struct SubmitArgs {
    #[command(flatten)]
    pub(crate) c: ClientOpts,
    #[arg(long)]
    pub(crate) name: Option<String>,
    #[arg(long)]
    pub(crate) tenant: Option<String>,
    #[arg(long)]
    pub(crate) cpu_m: Option<i64>,
    #[arg(long)]
    pub(crate) memory_mb: Option<i64>,
    #[arg(long)]
    pub(crate) gpu: Option<i64>,
    /// Timeout: <int>ms|s|m|h|d.
    #[arg(long)]
    pub(crate) timeout: Option<String>,
    #[arg(long)]
    pub(crate) max_retries: Option<i64>,
    #[arg(long)]
    pub(crate) retry_backoff_ms: Option<i64>,
    #[arg(long)]
    pub(crate) priority: Option<String>,
    #[arg(long)]
    pub(crate) sla: Option<String>,
    /// K=V, repeatable.
    #[arg(long = "env", short = 'e')]
    pub(crate) env: Vec<String>,
    /// k=v, repeatable.
    #[arg(long = "label", short = 'l')]
    pub(crate) labels: Vec<String>,
    /// The directory the job runs in (default: the current directory, as sbatch does).
    #[arg(long, conflicts_with = "scratch")]
    pub(crate) workdir: Option<PathBuf>,
    /// Run in a fresh scratch directory of the worker, removed after the run, instead of the
    /// current directory.
    #[arg(long)]
    pub(crate) scratch: bool,
    /// Only this pool's workers run the job.
    #[arg(long)]
    pub(crate) pool: Option<String>,
    /// k=v, repeatable: only workers carrying these labels (their own or their pool's) run it.
    #[arg(long = "pool-label")]
    pub(crate) pool_labels: Vec<String>,
    /// Submit held.
    #[arg(long)]
    pub(crate) hold: bool,
    /// Start only after these jobs succeeded (sbatch -d afterok); cancelled if one does not.
    #[arg(long, value_delimiter = ',', value_name = "ID[,ID]")]
    pub(crate) after_ok: Vec<String>,
    /// Start after these jobs ended, however they ended (afterany).
    #[arg(long, value_delimiter = ',', value_name = "ID[,ID]")]
    pub(crate) after_any: Vec<String>,
    /// Start only after these jobs ended without succeeding (afternotok); cancelled if one
    /// succeeds.
    #[arg(long, value_delimiter = ',', value_name = "ID[,ID]")]
    pub(crate) after_not_ok: Vec<String>,
    /// Run the command through `sh -c`.
    #[arg(long)]
    pub(crate) shell: bool,
    /// Wait for the job to end, printing its output; exit with its exit code (128+N for a
    /// signal). Ctrl-C cancels the job; a second Ctrl-C leaves it running.
    #[arg(long)]
    pub(crate) wait: bool,
    /// Like --wait.
    #[arg(long)]
    pub(crate) follow: bool,
    /// Expected run time hint (<int>ms|s|m|h|d), used for fair share and ETAs.
    #[arg(long)]
    pub(crate) expected_duration: Option<String>,
    /// Say whether it would be admitted, where and when; store nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// An array job: one job per index A, A+S, … ≤ B, at most P running at once
    /// (`A-B[:S][%P]`); each sees its index in HODEI_ARRAY_INDEX.
    #[arg(long, value_name = "A-B[:S][%P]")]
    pub(crate) array: Option<String>,
    /// Makes the submit safe to repeat: for 24 h, submitting again with the same key and the
    /// same job gets the job the first submit stored instead of a new one.
    #[arg(long, value_name = "KEY")]
    pub(crate) idempotency_key: Option<String>,
    /// Where the job's stdout goes, a file where it runs (`%j` the job id, `%a` the array
    /// index); stderr too unless --error-file. sbatch's --output (which a #HODEI line may
    /// also spell `--output`: here `-o` is the output format).
    #[arg(long, value_name = "PATTERN")]
    pub(crate) output_file: Option<String>,
    /// Where the job's stderr goes (`%j`, `%a` as in --output-file); sbatch's --error.
    #[arg(long, value_name = "PATTERN")]
    pub(crate) error_file: Option<String>,
    /// The command and its arguments (after `--` when an argument starts with `-`). A batch
    /// script (a file starting with `#!` or holding `#HODEI` lines) is sent with the job and its
    /// `#HODEI --flag value` lines are flags of this command, those given here winning.
    #[arg(trailing_var_arg = true, required = true, value_name = "COMMAND")]
    pub(crate) argv: Vec<String>,
}

/// The submit with a batch script's `#HODEI` directives applied: the script's flags first, then
/// the command line's (later flags override earlier ones).
pub(crate) fn with_directives(a: SubmitArgs, script: &batch::Script) -> anyhow::Result<SubmitArgs> {
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

pub(crate) async fn submit(a: SubmitArgs) -> anyhow::Result<i32> {
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
pub(crate) async fn follow_or_cancel(c: &Client, id: &str, interrupts: &mut tokio::signal::unix::Signal) -> anyhow::Result<Option<Value>> {
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
pub(crate) async fn apply(c: ClientOpts, files: Vec<PathBuf>) -> anyhow::Result<i32> {
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

/// `A-B[:S][%P]` → the `array` of a submit. Range checks are the server's.
pub(crate) fn parse_array(r: &str) -> anyhow::Result<Value> {
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
