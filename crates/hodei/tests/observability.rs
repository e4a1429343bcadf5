//! What operators see, checked against real servers: every metric of the contract exported by a
//! fresh server with its type and labels; the shipped alert rules through `promtool`; every
//! dashboard query through a real Prometheus scraping a real server with real workers; and an
//! alert travelling from a killed worker to a real Alertmanager.
//!
//! Prometheus, promtool and Alertmanager are Debian's `prometheus` and `prometheus-alertmanager`
//! (`.ci/run` installs them); without them these tests say `SKIPPED`, and fail under `CI=true`.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// SPEC §7.1, as the contract lists it: name, type, label names.
const CONTRACT: &[(&str, &str, &[&str])] = &[
    ("hodei_jobs_submitted_total", "counter", &["tenant", "priority"]),
    ("hodei_jobs_scheduled_total", "counter", &["tenant", "pool"]),
    ("hodei_jobs_completed_total", "counter", &["tenant", "pool", "state"]),
    ("hodei_jobs_retried_total", "counter", &["tenant"]),
    ("hodei_jobs_requeued_total", "counter", &["pool", "reason"]),
    ("hodei_submissions_rejected_total", "counter", &["tenant", "code"]),
    ("hodei_quota_violations_total", "counter", &["tenant", "resource"]),
    ("hodei_jobs_queued", "gauge", &["tenant", "priority", "state"]),
    ("hodei_jobs_running", "gauge", &["tenant", "pool"]),
    ("hodei_queue_oldest_wait_seconds", "gauge", &["tenant"]),
    ("hodei_jobs_overdue", "gauge", &["pool"]),
    ("hodei_scheduling_latency_seconds", "histogram", &[]),
    ("hodei_dispatch_latency_seconds", "histogram", &["pool"]),
    ("hodei_worker_allocation_latency_seconds", "histogram", &["pool"]),
    ("hodei_queue_wait_seconds", "histogram", &["tenant", "priority"]),
    ("hodei_job_run_duration_seconds", "histogram", &["pool", "state"]),
    ("hodei_http_requests_total", "counter", &["method", "route", "status"]),
    ("hodei_http_request_duration_seconds", "histogram", &["method", "route"]),
    ("hodei_workers", "gauge", &["pool", "state"]),
    ("hodei_workers_unhealthy", "gauge", &["pool"]),
    ("hodei_workers_lost_total", "counter", &["pool"]),
    ("hodei_pool_size", "gauge", &["pool"]),
    ("hodei_pool_desired_size", "gauge", &["pool"]),
    ("hodei_pool_min_size", "gauge", &["pool"]),
    ("hodei_pool_max_size", "gauge", &["pool"]),
    ("hodei_pool_queue_depth", "gauge", &["pool"]),
    ("hodei_pool_cpu_utilization_ratio", "gauge", &["pool"]),
    ("hodei_pool_memory_utilization_ratio", "gauge", &["pool"]),
    ("hodei_pool_busy_ratio", "gauge", &["pool"]),
    ("hodei_pool_state", "gauge", &["pool", "state"]),
    ("hodei_pool_provisioning_failures_total", "counter", &["pool"]),
    ("hodei_autoscaler_decisions_total", "counter", &["pool", "action", "decision"]),
    ("hodei_tenant_cpu_m", "gauge", &["tenant"]),
    ("hodei_tenant_memory_mb", "gauge", &["tenant"]),
    ("hodei_tenant_gpu", "gauge", &["tenant"]),
    ("hodei_tenant_weight", "gauge", &["tenant"]),
    ("hodei_tenant_fair_share", "gauge", &["tenant"]),
    ("hodei_tenant_actual_share", "gauge", &["tenant"]),
    ("hodei_tenant_burst_active", "gauge", &["tenant"]),
    ("hodei_tenant_burst_utilization_ratio", "gauge", &["tenant"]),
    ("hodei_tenant_quota_utilization", "gauge", &["tenant", "resource"]),
    ("hodei_tenant_cost_micros_total", "counter", &["tenant"]),
    ("hodei_pool_cost_micros_total", "counter", &["pool"]),
    ("hodei_budget_utilization_ratio", "gauge", &["tenant", "project"]),
    ("hodei_sla_compliance_ratio", "gauge", &["tenant", "level"]),
    ("hodei_sla_jobs", "gauge", &["tenant", "level", "status"]),
    ("hodei_sla_breaches_total", "counter", &["tenant", "level"]),
    ("hodei_db_errors_total", "counter", &["op"]),
    ("hodei_db_query_duration_seconds", "histogram", &["op"]),
    ("hodei_scheduler_leader", "gauge", &[]),
    ("hodei_scheduler_loop_lag_seconds", "gauge", &[]),
    ("hodei_alerts_firing", "gauge", &["kind", "severity"]),
    ("hodei_build_info", "gauge", &["version"]),
];

/// One scrape: type and help of each metric family, and the label names of each sample.
#[derive(Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    help: BTreeSet<String>,
    /// Family → label-name sets of its samples (`le` and the `_bucket/_sum/_count` suffixes taken off).
    samples: BTreeMap<String, BTreeSet<Vec<String>>>,
}

fn parse(text: &str) -> Exposition {
    let mut e = Exposition::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            e.types.insert(it.next().unwrap().to_owned(), it.next().unwrap().to_owned());
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            e.help.insert(rest.split_whitespace().next().unwrap().to_owned());
        } else if !line.is_empty() && !line.starts_with('#') {
            let (name, labels) = match line.split_once('{') {
                Some((n, rest)) => (n, rest.rsplit_once('}').unwrap().0),
                None => (line.split_whitespace().next().unwrap(), ""),
            };
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| e.types.get(*f).is_some_and(|t| t == "histogram")))
                .unwrap_or(name);
            let mut names: Vec<String> =
                labels.split("\",").filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap().0.to_owned()).filter(|n| n != "le").collect();
            names.sort();
            e.samples.entry(family.to_owned()).or_default().insert(names);
        }
    }
    e
}

/// A fresh server — one tenant, one pool, no job yet — exports every metric of the contract and
/// of `docs/metrics.md`, with its type, its label names and a help line (SPEC §10: series exist
/// from the start).
#[tokio::test]
async fn a_fresh_server_exports_every_metric_of_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    // One API call, so the HTTP series exist.
    let (status, _) = srv.call(reqwest::Method::GET, "/whoami", None).await;
    assert_eq!(status, 200);
    let text = srv.http_client.get(format!("{}/metrics", srv.metrics)).send().await.unwrap().text().await.unwrap();
    let e = parse(&text);
    let mut wrong = Vec::new();
    let contract = CONTRACT.iter().map(|(n, k, l)| (n.to_string(), k.to_string(), l.iter().map(|l| l.to_string()).collect::<Vec<_>>()));
    let reference = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    let documented: Vec<_> = reference
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            let labels = cells[2].split(", ").filter(|l| !l.is_empty()).map(String::from).collect();
            (cells[0].trim_end_matches('`').to_owned(), cells[1].to_owned(), labels)
        })
        .collect();
    for (name, _, _) in CONTRACT {
        assert!(documented.iter().any(|(n, _, _)| n == name), "{name} is not in docs/metrics.md");
    }
    for (name, kind, mut want) in contract.chain(documented) {
        let (name, kind) = (name.as_str(), kind.as_str());
        want.sort();
        match (e.types.get(name), e.samples.get(name)) {
            (None, _) | (_, None) => wrong.push(format!("{name}: not exported")),
            (Some(t), Some(sets)) => {
                if t != kind {
                    wrong.push(format!("{name}: type {t}, expected {kind}"));
                }
                if sets.iter().any(|s| *s != want) {
                    wrong.push(format!("{name}: labels {sets:?}, expected {want:?}"));
                }
                if !e.help.contains(name) {
                    wrong.push(format!("{name}: no HELP line"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}\n\n{text}", wrong.join("\n"));
    // Nothing exported is left undocumented either.
    let undocumented: Vec<_> = e.types.keys().filter(|n| !e.help.contains(*n)).collect();
    assert!(undocumented.is_empty(), "metrics without HELP: {undocumented:?}");
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A Debian tool by its names, or `None` (SKIPPED outside CI).
fn tool(names: &[&str]) -> Option<PathBuf> {
    let found = names.iter().find_map(|n| std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(n)).find(|p| p.is_file())));
    if found.is_none() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: {} is required (.ci/run installs it)", names[0]);
        eprintln!("SKIPPED: {} not found (Debian: apt-get install prometheus prometheus-alertmanager)", names[0]);
    }
    found
}

/// `promtool check rules` and `promtool test rules` on the shipped rules: 30 alerts, each with
/// severity, summary, description and a runbook section, each tested firing and not firing.
#[test]
fn the_alert_rules_pass_promtool_and_each_has_a_runbook_section() {
    let Some(promtool) = tool(&["promtool"]) else { return };
    let dir = repo().join("deploy/prometheus");
    for args in [&["check", "rules", "alerts.yml"][..], &["test", "rules", "alerts_test.yml"], &["check", "config", "prometheus.yml"]] {
        let out = Command::new(&promtool).args(args).current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "promtool {args:?}:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("alerts.yml")).unwrap()).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts_test.yml")).unwrap();
    let runbook = std::fs::read_to_string(repo().join("docs/runbook.md")).unwrap();
    let mut names = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for r in group["rules"].as_sequence().unwrap() {
            let name = r["alert"].as_str().unwrap();
            names.push(name.to_owned());
            assert!(["info", "warning", "critical"].contains(&r["labels"]["severity"].as_str().unwrap_or("")), "{name}: severity");
            for a in ["summary", "description"] {
                assert!(r["annotations"][a].as_str().is_some_and(|s| !s.is_empty()), "{name}: {a}");
            }
            assert_eq!(r["annotations"]["runbook"].as_str(), Some(format!("docs/runbook.md#{}", name.to_lowercase()).as_str()));
            assert!(runbook.contains(&format!("\n## {name}\n")), "{name}: no section in docs/runbook.md");
            assert!(tests.contains(&format!("alertname: {name}\n")), "{name}: no promtool test");
        }
    }
    // SPEC §7.3's alerts, every one.
    for name in [
        "HodeiPoolProvisioningFailing",
        "HodeiPoolInError",
        "HodeiPoolNoAvailableWorkers",
        "HodeiPoolAtMaxWithQueue",
        "HodeiPoolBelowMinSize",
        "HodeiHighAllocationLatency",
        "HodeiScaleFlapping",
        "HodeiTenantQuotaExceeded",
        "HodeiTenantNearQuota",
        "HodeiTenantBurstExhausted",
        "HodeiTenantStarved",
        "HodeiBudget80",
        "HodeiBudget90",
        "HodeiBudgetExhausted",
        "HodeiSLAAtRisk",
        "HodeiSLACritical",
        "HodeiSLABreach",
        "HodeiSLAComplianceLow",
        "HodeiJobFailureRateHigh",
        "HodeiJobsStuckPending",
        "HodeiJobsStuckRunning",
        "HodeiWorkerHeartbeatLost",
        "HodeiWorkersOfflineRatioHigh",
        "HodeiWorkerUnhealthy",
        "HodeiAPIErrorRateHigh",
        "HodeiAPILatencyP95High",
        "HodeiDatabaseErrors",
        "HodeiSchedulerLoopLag",
        "HodeiNoSchedulerLeader",
        "HodeiAutoscalerFailures",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} missing from alerts.yml");
    }
}

/// The dashboard JSON files are what their generator writes, and each is provisionable: a
/// stable uid, a `datasource` variable every query goes through.
#[test]
fn the_dashboards_are_their_generators_output() {
    let out = Command::new("python3").arg(repo().join("deploy/grafana/dashboards.py")).arg("--check").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let uids: BTreeSet<String> = dashboards().iter().map(|d| d["uid"].as_str().unwrap().to_owned()).collect();
    assert_eq!(uids, ["hodei-cost", "hodei-overview", "hodei-pools", "hodei-sla", "hodei-tenants"].map(String::from).into());
    for d in dashboards() {
        assert_eq!(d["templating"]["list"][0]["name"], "datasource", "{}", d["uid"]);
        for p in d["panels"].as_array().unwrap() {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{} / {}", d["uid"], p["title"]);
        }
    }
}

fn dashboards() -> Vec<Value> {
    let dir = repo().join("deploy/grafana/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|f| serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap()).collect()
}

/// A child process killed when the test ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon(bin: &Path, args: &[String], log: &Path) -> Daemon {
    let log = std::fs::File::create(log).unwrap();
    Daemon(Command::new(bin).args(args).stdout(Stdio::null()).stderr(log).spawn().unwrap())
}

/// Polls `url` until `ok` accepts its JSON, or fails after `secs` with the last answer and `log`.
async fn wait_json(url: &str, secs: u64, log: &Path, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(url).await
            && let Ok(v) = r.json::<Value>().await
        {
            if ok(&v) {
                return v;
            }
            last = v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{url}: not as expected within {secs} s; last answer {last}\n{}", std::fs::read_to_string(log).unwrap_or_default());
}

/// A real Prometheus scrapes a running server with real workers and jobs, and evaluates the
/// alert rules the server wrote for it (`prometheus_alerts_dir`): every query of every
/// dashboard panel is valid PromQL and names only metrics the server exports; the server's own
/// budget alerts reach a real Alertmanager (`alertmanager_url`); then a worker is killed with
/// SIGKILL and the Alertmanager holds `HodeiWorkerHeartbeatLost` for its pool within 30 s.
#[tokio::test]
async fn prometheus_runs_every_dashboard_query_and_alertmanager_hears_of_a_lost_worker() {
    let (Some(prometheus), Some(alertmanager)) = (tool(&["prometheus"]), tool(&["prometheus-alertmanager", "alertmanager"])) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (am_port, prom_port) = (free_port(), free_port());
    let am_log = dir.path().join("alertmanager.log");
    std::fs::write(dir.path().join("alertmanager.yml"), "route: { receiver: none, group_wait: 1s, group_interval: 1s }\nreceivers: [{ name: none }]\n")
        .unwrap();
    let _am = daemon(
        &alertmanager,
        &[
            format!("--config.file={}", dir.path().join("alertmanager.yml").display()),
            format!("--storage.path={}", dir.path().join("am-data").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".into(),
        ],
        &am_log,
    );
    // The server writes the rules where Prometheus loads them, and pushes its own alerts to
    // the Alertmanager.
    let rules_dir = dir.path().join("rules");
    let am_url = format!("http://127.0.0.1:{am_port}");
    let env = [
        ("HODEI_OBSERVABILITY__ALERTING__PROMETHEUS_ALERTS_DIR", rules_dir.to_str().unwrap()),
        ("HODEI_OBSERVABILITY__ALERTING__ALERTMANAGER_URL", am_url.as_str()),
    ];
    let srv = Server::start(&dir.path().join("hodei"), &env, 0, Some(REMOTE_POOL));
    let rules = rules_dir.join("hodei-alerts.yml");
    assert_eq!(std::fs::read_to_string(&rules).unwrap(), std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).unwrap());
    // A budget the jobs below spend at once: its threshold alerts go to the Alertmanager.
    let (status, b) = srv.call(reqwest::Method::POST, "/budgets", Some(json!({"tenant_id": "default", "amount": "0.000001", "period": "daily"}))).await;
    assert_eq!(status, 201, "{b}");
    let mut worker = WorkerProc::start(&srv.grpc, "remote", &srv.join_token("remote"), 2);
    for cmd in [json!(["true"]), json!(["false"]), json!(["sleep", "0.2"])] {
        let job = srv.submit(json!({"command": cmd})).await;
        srv.wait_ended(job["id"].as_str().unwrap(), 30).await;
    }
    let target = srv.metrics.trim_start_matches("http://");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: ['{}']\n\
             alerting: {{ alertmanagers: [{{ static_configs: [{{ targets: ['127.0.0.1:{am_port}'] }}] }}] }}\n\
             scrape_configs: [{{ job_name: hodei, static_configs: [{{ targets: ['{target}'] }}] }}]\n",
            rules.display()
        ),
    )
    .unwrap();
    let prom_log = dir.path().join("prometheus.log");
    let _prom = daemon(
        &prometheus,
        &[
            format!("--config.file={}", dir.path().join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.path().join("prom-data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        &prom_log,
    );
    let prom = format!("http://127.0.0.1:{prom_port}");
    wait_json(&format!("{prom}/api/v1/targets"), 60, &prom_log, |v| v["data"]["activeTargets"][0]["health"] == "up").await;
    // Two scrapes at least, so rates have two samples.
    wait_json(&format!("{prom}/api/v1/query?query=count_over_time(hodei_build_info[1m])"), 30, &prom_log, |v| {
        v["data"]["result"][0]["value"][1].as_str().and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n >= 3)
    })
    .await;

    let exported = parse(&srv.http_client.get(format!("{}/metrics", srv.metrics)).send().await.unwrap().text().await.unwrap()).types;
    let client = http_client();
    let mut bad = Vec::new();
    let mut queries = 0;
    for d in dashboards() {
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                for name in metric_names(expr) {
                    let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).filter(|f| exported.contains_key(*f));
                    if !exported.contains_key(&name) && family.is_none() {
                        bad.push(format!("{} / {}: {name} is not exported", d["uid"], p["title"]));
                    }
                }
                let query = expr.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$tenant", ".*").replace("$pool", ".*");
                let r: Value = client
                    .get(reqwest::Url::parse_with_params(&format!("{prom}/api/v1/query"), [("query", &query)]).unwrap())
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                // An empty answer is a label or selector that matches nothing, but for the panels
                // that are empty on a healthy server minutes old.
                let title = p["title"].as_str().unwrap();
                if r["data"]["result"].as_array().is_some_and(|a| a.is_empty()) && !MAY_BE_EMPTY.contains(&title) {
                    bad.push(format!("{} / {title}: {query}: no data", d["uid"]));
                }
                if r["status"] != "success" {
                    bad.push(format!("{} / {}: {query}: {}", d["uid"], p["title"], r["error"]));
                }
                queries += 1;
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert!(queries >= 60, "only {queries} queries");

    // The server's own alerts, pushed.
    let alerts = wait_json(&format!("{am_url}/api/v2/alerts"), 30, &am_log, |v| {
        v.as_array().is_some_and(|a| a.iter().any(|a| a["labels"]["alertname"] == "HodeiBudgetThreshold" && a["labels"]["severity"] == "critical"))
    })
    .await;
    let spent = alerts.as_array().unwrap().iter().find(|a| a["labels"]["alertname"] == "HodeiBudgetThreshold").unwrap();
    assert_eq!((spent["labels"]["tenant"].as_str(), spent["labels"]["source"].as_str()), (Some("default"), Some("hodei")), "{spent}");

    // A worker dies: its lease expires (1.5 s here), the server counts it lost, Prometheus's rule
    // fires and Alertmanager holds the alert — within the design's 30 s.
    let killed = Instant::now();
    worker.kill9();
    let alerts = wait_json(&format!("http://127.0.0.1:{am_port}/api/v2/alerts"), 30, &am_log, |v| {
        v.as_array().is_some_and(|a| a.iter().any(|a| a["labels"]["alertname"] == "HodeiWorkerHeartbeatLost"))
    })
    .await;
    let elapsed = killed.elapsed();
    let lost = alerts.as_array().unwrap().iter().find(|a| a["labels"]["alertname"] == "HodeiWorkerHeartbeatLost").unwrap();
    assert_eq!(lost["labels"]["pool"], "remote");
    assert_eq!(lost["labels"]["severity"], "warning");
    assert_eq!(lost["annotations"]["runbook"], "docs/runbook.md#hodeiworkerheartbeatlost");
    eprintln!("HodeiWorkerHeartbeatLost reached Alertmanager {elapsed:?} after the kill");
}

/// Panels with no data on a healthy server minutes old: alerts firing, and the month-end
/// forecast (a day's trend needs more than a few seconds of samples).
const MAY_BE_EMPTY: &[&str] = &["Alerts firing", "Month-end forecast by tenant"];

/// The metric names an expression uses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("hodei_") {
        let name: String = rest[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        rest = &rest[i + name.len()..];
        out.insert(name);
    }
    out
}

/// `GET /metrics/historical` with `token`'s caller.
async fn history(srv: &Server, query: &str) -> (u16, Value) {
    srv.call(reqwest::Method::GET, &format!("/metrics/historical?{query}"), None).await
}

/// The server samples its own figures into its database (here every second): a pool's,
/// a tenant's and the cluster's series come back averaged per step, from before and after a
/// kill -9 (the samples are durable), at the coarse resolution too, and never over 11 000
/// points in one answer.
#[tokio::test]
async fn the_metric_history_is_durable_averaged_and_capped() {
    let dir = tempfile::tempdir().unwrap();
    let grpc = free_port();
    let env = [("HODEI_METRICS__HISTORY__INTERVAL_S", "1")];
    let mut srv = Server::start(dir.path(), &env, grpc, Some(REMOTE_POOL));
    let _worker = WorkerProc::start(&srv.grpc, "remote", &srv.join_token("remote"), 1);
    let job = srv.submit(json!({"command": ["sleep", "2"]})).await;
    srv.wait_ended(job["id"].as_str().unwrap(), 30).await;
    // Points of the pool's size: one a second, the last ones with the worker registered.
    let size_points = |v: &Value| v["series"].as_array().and_then(|s| s.first()).map(|s| s["points"].as_array().unwrap().clone()).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        let (status, v) = history(&srv, "pool_id=remote&metric=size&step_s=1").await;
        assert_eq!(status, 200, "{v}");
        let p = size_points(&v);
        if p.len() >= 3 && p.last().unwrap()[1] == 1.0 {
            break p;
        }
        assert!(Instant::now() < deadline, "no pool history: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let first_t = before[0][0].as_i64().unwrap();

    srv.kill9();
    let srv = Server::start(dir.path(), &env, grpc, Some(REMOTE_POOL));
    let start = |t: i64| jiff::Timestamp::from_second(t).unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = history(&srv, &format!("pool_id=remote&metric=size&step_s=1&start={}", start(first_t))).await;
        let p = size_points(&v);
        // The points of the first run are still there, and the second run adds its own.
        if p.first().is_some_and(|f| f[0] == before[0][0]) && p.len() >= before.len() + 3 {
            break;
        }
        assert!(Instant::now() < deadline, "no history after the restart: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // One step over the whole hour: one averaged point per figure of the pool.
    let (status, v) = history(&srv, "pool_id=remote&step_s=3600").await;
    assert_eq!(status, 200, "{v}");
    let series = v["series"].as_array().unwrap();
    let names: BTreeSet<&str> = series.iter().map(|s| s["metric"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["busy_ratio", "cpu_utilization", "desired_size", "jobs_running", "memory_utilization", "queue_depth", "queue_wait_seconds", "size"].into()
    );
    assert!(series.iter().all(|s| s["points"].as_array().unwrap().len() == 1), "{v}");
    let size = series.iter().find(|s| s["metric"] == "size").unwrap()["points"][0][1].as_f64().unwrap();
    assert!(size > 0.0 && size <= 1.0, "the hour's average size {size}");
    // Two days back: read from the 5-minute averages, which include the bucket still filling.
    let two_days = start(first_t - 2 * 86_400);
    let (_, v) = history(&srv, &format!("pool_id=remote&metric=size&start={two_days}")).await;
    assert_eq!(v["resolution_s"], 300, "{v}");
    assert!(!size_points(&v).is_empty(), "{v}");
    // The tenant's and the cluster's figures.
    let (_, v) = history(&srv, "tenant_id=default&metric=jobs_running,cpu_m&step_s=3600").await;
    assert_eq!(v["series"].as_array().unwrap().len(), 2, "{v}");
    let (_, v) = history(&srv, "metric=workers&step_s=60").await;
    assert_eq!(v["scope"], "cluster");
    assert!(!size_points(&v).is_empty(), "{v}");

    // The cap: 8 series over an hour at one point a second would be 28 800 points.
    let (status, v) = history(&srv, "pool_id=remote&step_s=1").await;
    assert_eq!(status, 400, "{v}");
    assert!(v["errors"][0]["field"] == "step_s", "{v}");
    // Without a step, the server picks one within the cap.
    let (_, v) = history(&srv, &format!("pool_id=remote&start={two_days}")).await;
    let total: usize = v["series"].as_array().unwrap().iter().map(|s| s["points"].as_array().unwrap().len()).sum();
    assert!(total <= 11_000 && v["step_s"].as_u64().unwrap() >= 300, "{total} points, step {}", v["step_s"]);
    // Bad input names its field.
    let (status, v) = history(&srv, "pool_id=remote&metric=nope").await;
    assert_eq!((status, v["errors"][0]["field"].as_str()), (400, Some("metric")), "{v}");
    let (status, _) = history(&srv, "pool_id=nowhere").await;
    assert_eq!(status, 404);

    // The figures of a pool (now, and averaged over a window from the history), of a tenant,
    // and of costs.
    let get = |path: &'static str| srv.call(reqwest::Method::GET, path, None);
    let (status, p) = get("/metrics/pools/remote?window_s=3600").await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["now"]["pool_id"], "remote");
    let avg = p["averages"]["size"].as_f64().unwrap();
    assert!(avg > 0.0 && avg <= 1.0, "{p}");
    assert_eq!(get("/metrics/pools/remote?window_s=0").await.0, 400);
    assert_eq!(get("/metrics/pools/nowhere").await.0, 404);
    let (status, t) = get("/metrics/tenants/default").await;
    assert_eq!(status, 200, "{t}");
    assert_eq!((t["jobs"]["pending"].as_u64(), t["jobs"]["running"].as_u64()), (Some(0), Some(0)), "{t}");
    assert!(t["shares"]["weight"].as_u64().unwrap() > 0 && t["quota"].is_object() && t["sla"]["levels"].is_array(), "{t}");
    let mtd = t["cost"]["month_to_date_micros"].as_i64().unwrap();
    assert!(mtd > 0, "the sleep 2 job cost something: {t}");
    let (status, c) = get("/metrics/costs").await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["month_to_date_micros"].as_i64(), Some(mtd), "{c}");
    let by_day: i64 = c["by_day"].as_array().unwrap().iter().map(|d| d["cost_micros"].as_i64().unwrap()).sum();
    assert_eq!(by_day, mtd, "{c}");
    // A report on the whole cluster prices the pool's idle worker from the history; a tenant's
    // report has no idle cost (idle capacity is the cluster's).
    let (status, r) = srv.call(reqwest::Method::POST, "/cost-optimization/reports", Some(json!({"period": "last_day"}))).await;
    assert_eq!(status, 201, "{r}");
    assert!(r["idle_cost_micros"].as_i64().unwrap() > 0, "{r}");
    let (_, r) = srv.call(reqwest::Method::POST, "/cost-optimization/reports", Some(json!({"tenant_id": "default"}))).await;
    assert!(r["idle_cost_micros"].is_null(), "{r}");
    // 13-odd micro-dollars over a day and a half: the hourly rate rounds to 0 or so.
    assert!(c["forecast_month_micros"].as_i64().unwrap() >= mtd && c["rate_micros_per_hour"].as_i64().unwrap() >= 0, "{c}");
}

/// What the fake Grafana was sent.
#[derive(Default)]
struct Grafana {
    folders: Vec<Value>,
    dashboards: Vec<Value>,
    auth: BTreeSet<String>,
}

type Shared = std::sync::Arc<std::sync::Mutex<Grafana>>;

/// A stand-in for Grafana's HTTP API (no Grafana server is installable here): folders by
/// title, dashboards by uid — `hodei-cost` refused, to see a partial failure reported.
async fn fake_grafana() -> (String, Shared) {
    use axum::extract::State as S;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    let shared = Shared::default();
    let seen = |g: &mut Grafana, h: &HeaderMap| {
        g.auth.insert(h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned());
    };
    let app = axum::Router::new()
        .route(
            "/api/folders",
            get(move |S(s): S<Shared>, h: HeaderMap| async move {
                let mut g = s.lock().unwrap();
                seen(&mut g, &h);
                axum::Json(Value::Array(g.folders.clone()))
            })
            .post(move |S(s): S<Shared>, h: HeaderMap, axum::Json(body): axum::Json<Value>| async move {
                let mut g = s.lock().unwrap();
                seen(&mut g, &h);
                let folder = json!({"uid": format!("f{}", g.folders.len() + 1), "title": body["title"]});
                g.folders.push(folder.clone());
                axum::Json(folder)
            }),
        )
        .route(
            "/api/dashboards/db",
            post(move |S(s): S<Shared>, h: HeaderMap, axum::Json(body): axum::Json<Value>| async move {
                let mut g = s.lock().unwrap();
                seen(&mut g, &h);
                if body["dashboard"]["uid"] == "hodei-cost" {
                    return (StatusCode::PRECONDITION_FAILED, axum::Json(json!({"message": "version-mismatch"})));
                }
                g.dashboards.push(body);
                (StatusCode::OK, axum::Json(json!({"status": "success"})))
            }),
        )
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, shared)
}

/// With `observability.grafana` set, the server pushes the built-in dashboards at start and on
/// `POST /observability/grafana/sync` — into the configured folder (made once), with the API
/// key — and says which Grafana refused; `GET /observability/config` shows the effective
/// settings with the key as `api_key_set` only, and `PUT` stores settings (never secrets) that
/// take effect at the next start.
#[tokio::test]
async fn the_dashboards_are_pushed_to_grafana_and_the_config_shows_no_secret() {
    let (url, grafana) = fake_grafana().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("HODEI_OBSERVABILITY__GRAFANA__ENABLED", "true"),
        ("HODEI_OBSERVABILITY__GRAFANA__URL", url.as_str()),
        ("HODEI_OBSERVABILITY__GRAFANA__API_KEY", "glsa_secret_key_1234"),
        ("HODEI_OBSERVABILITY__GRAFANA__FOLDER", "Ops"),
    ];
    let srv = Server::start(dir.path(), &env, 0, None);
    // At start, in the background.
    let deadline = Instant::now() + Duration::from_secs(20);
    while grafana.lock().unwrap().dashboards.len() < 4 {
        assert!(Instant::now() < deadline, "nothing pushed at start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, r) = srv.call(reqwest::Method::POST, "/observability/grafana/sync", None).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["uploaded"], json!(["hodei-overview", "hodei-tenants", "hodei-pools", "hodei-sla"]), "{r}");
    assert_eq!(r["errors"][0]["dashboard"], "hodei-cost", "{r}");
    assert!(r["errors"][0]["error"].as_str().unwrap().contains("412"), "{r}");
    {
        let g = grafana.lock().unwrap();
        assert_eq!(g.folders, vec![json!({"uid": "f1", "title": "Ops"})], "the folder is made once");
        assert!(g.dashboards.iter().all(|d| d["folderUid"] == "f1" && d["overwrite"] == true && d["dashboard"]["id"].is_null()));
        assert_eq!(g.dashboards.len(), 8);
        assert_eq!(g.auth, ["Bearer glsa_secret_key_1234".to_owned()].into());
    }
    let (status, c) = srv.call(reqwest::Method::GET, "/observability/config", None).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["observability"]["grafana"]["api_key_set"], true);
    assert_eq!(c["observability"]["grafana"]["folder"], "Ops");
    assert_eq!(c["metrics"]["history"]["interval_s"], 60);
    assert!(!c.to_string().contains("glsa_secret"), "{c}");

    // Settings through the API: checked, stored, in force from the next start.
    let put = |body: Value| srv.call(reqwest::Method::PUT, "/observability/config", Some(body));
    let (status, e) = put(json!({"observability": {"grafana": {"api_key": "x"}, "alerting": {"alertmanager_url": "ftp://x"}}, "metrics": {"nope": 1}})).await;
    assert_eq!(status, 400, "{e}");
    let fields: BTreeSet<&str> = e["errors"].as_array().unwrap().iter().map(|x| x["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["/metrics/nope", "/observability/alerting/alertmanager_url", "/observability/grafana/api_key"].into(), "{e}");
    let (status, c) = put(json!({"observability": {"grafana": {"folder": "Platform"}}})).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(
        (c["overrides"]["observability.grafana.folder"].as_str(), c["restart_required"].clone()),
        (Some("Platform"), json!(["observability.grafana.folder"])),
        "{c}"
    );
    assert_eq!(c["overridden_keys"], json!(["observability.grafana.folder"]), "{c}");
    assert_eq!(c["observability"]["grafana"]["folder"], "Ops", "the running value until a restart");
    assert_eq!(srv.call(reqwest::Method::POST, "/observability/config", Some(json!({}))).await.0, 405);
    let mut srv = srv;
    srv.kill9();
    let srv = Server::start(dir.path(), &env, 0, None);
    let (_, c) = srv.call(reqwest::Method::GET, "/observability/config", None).await;
    assert_eq!((c["observability"]["grafana"]["folder"].as_str(), c["restart_required"].clone()), (Some("Platform"), json!([])), "{c}");
    let (status, r) = srv.call(reqwest::Method::POST, "/observability/grafana/sync", None).await;
    assert_eq!(status, 200, "{r}");
    assert!(grafana.lock().unwrap().folders.iter().any(|f| f["title"] == "Platform"), "pushed into the folder set through the API");
    // A null takes the override away again.
    let (_, c) = srv.call(reqwest::Method::PUT, "/observability/config", Some(json!({"observability": {"grafana": {"folder": null}}}))).await;
    assert_eq!((c["overrides"].clone(), c["restart_required"].clone()), (json!({}), json!([])), "{c}");

    // Grafana away: 502, naming it.
    drop(srv);
    let dir = tempfile::tempdir().unwrap();
    let env = [("HODEI_OBSERVABILITY__GRAFANA__ENABLED", "true"), ("HODEI_OBSERVABILITY__GRAFANA__URL", "http://127.0.0.1:1")];
    let srv = Server::start(dir.path(), &env, 0, None);
    let (status, e) = srv.call(reqwest::Method::POST, "/observability/grafana/sync", None).await;
    assert_eq!((status, e["code"].as_str()), (502, Some("bad_gateway")), "{e}");
}

/// One job followed through the server's log (`log.format: json`): the request that submitted
/// it, the scheduler's transitions and the worker's result all carry its ids.
#[tokio::test]
async fn a_job_can_be_followed_through_the_log_by_its_ids() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let env = [("HODEI_LOG__FORMAT", "json"), ("RUST_LOG", "hodei_api=debug,hodei_server=debug"), (STDERR_TO, log.to_str().unwrap())];
    let srv = Server::start(&dir.path().join("data"), &env, 0, None);
    let job = srv.submit(json!({"command": ["true"]})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let ended = srv.wait_ended(&id, 30).await;
    let attempt = ended["current_attempt_id"].as_str().unwrap().to_owned();
    let lines = |log: &Path| -> Vec<Value> { std::fs::read_to_string(log).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect() };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = lines(&log);
        let of_job: Vec<&Value> = all.iter().filter(|l| l.to_string().contains(&id)).collect();
        // The scheduler's transitions: queued, placed, running, succeeded — each with the
        // tenant, and the attempt once there is one.
        let transitions: Vec<&str> = of_job.iter().filter(|l| l["fields"]["message"] == "job").filter_map(|l| l["fields"]["to"].as_str()).collect();
        let placed = of_job.iter().any(|l| l["fields"]["message"] == "sending assignment" && l["fields"]["attempt_id"] == attempt.as_str());
        let result = all.iter().any(|l| l["fields"]["message"] == "result" && l["fields"]["attempt_id"] == attempt.as_str());
        if transitions.contains(&"succeeded") && placed && result {
            assert!(of_job.iter().filter(|l| l["fields"]["message"] == "job").all(|l| l["fields"]["tenant"] == "default"), "{of_job:?}");
            assert!(transitions.starts_with(&["pending"]), "{transitions:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the job's ids are not in the log: {transitions:?} placed={placed} result={result}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A request about the job: its span names the job, its tenant and who asked.
    let (status, _) = srv.call(reqwest::Method::GET, &format!("/jobs/{id}/nope"), None).await;
    assert_eq!(status, 404);
    let (status, _) = srv.call(reqwest::Method::POST, &format!("/jobs/{id}/cancel"), None).await;
    assert_eq!(status, 409, "an ended job");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = lines(&log).into_iter().find(|l| {
            l["spans"].as_array().is_some_and(|s| {
                s.iter().any(|s| s["name"] == "request" && s["job_id"] == id.as_str() && s["tenant"] == "default" && s["principal"] == "admin")
            })
        });
        if found.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no request line with the job's span fields");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With `observability.tracing` on, the spans go to an OTLP/HTTP receiver (here a stand-in
/// that keeps what it is sent): a request about a job arrives as a span carrying the job's id,
/// its tenant and the service name.
#[tokio::test]
async fn spans_are_exported_over_otlp() {
    use axum::routing::post;
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let kept = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().extend_from_slice(&body);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("HODEI_OBSERVABILITY__TRACING__ENABLED", "true"),
        ("HODEI_OBSERVABILITY__TRACING__OTLP_ENDPOINT", url.as_str()),
        ("HODEI_OBSERVABILITY__TRACING__SERVICE_NAME", "hodei-test"),
        ("RUST_LOG", "info"),
    ];
    let srv = Server::start(dir.path(), &env, 0, None);
    let job = srv.submit(json!({"command": ["true"]})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    srv.job(&id).await;
    // OTLP/HTTP sends protobuf: strings travel as their bytes.
    let has = |needle: &str| bodies.lock().unwrap().windows(needle.len()).any(|w| w == needle.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(has(&id) && has("hodei-test") && has("request") && has("principal")) {
        assert!(Instant::now() < deadline, "no span with the job's id reached the receiver");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
