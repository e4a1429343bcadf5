//! The CLI as a Slurm or kubectl user meets it: the real binary against a real server, each
//! test a habit those users bring (whole output, Ctrl-C, the submit directory, shell exit codes).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Server, job_writable_dir};
use reqwest::Method;
use serde_json::{Value, json};

/// A CLI command run from `dir`, against `srv`.
fn cli_in(srv: &Server, dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("HODEI_SERVER", &srv.http)
        .env("HODEI_TOKEN", &srv.token)
        .env("XDG_CONFIG_HOME", srv.dir.join("no-cli-config"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn logs_print_the_whole_output_byte_for_byte_and_any_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    // Over 5 MiB, with two-byte characters that the 1 MiB pages would cut in half.
    let line = "0123456789-éü-ß";
    let lines = 276_000;
    let job = srv.submit(json!({"command": ["sh", "-c", format!("yes '{line}' | head -n {lines}")]})).await;
    let id = job["id"].as_str().unwrap();
    assert_eq!(srv.wait_ended(id, 60).await["state"], "succeeded");
    let out = srv.cli(&["jobs", "logs", id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let expected = format!("{line}\n").repeat(lines);
    assert!(expected.len() > 5 << 20);
    assert_eq!(out.stdout.len(), expected.len(), "every byte, no more");
    assert!(out.stdout == expected.as_bytes(), "the output differs from what the job printed");

    // --attempt N and --previous: the output of an earlier attempt.
    let flaky = srv
        .submit(
            json!({"command": ["sh", "-c", "echo attempt $HODEI_ATTEMPT_NUMBER; [ $HODEI_ATTEMPT_NUMBER -ge 2 ]"], "max_retries": 1, "retry_backoff_ms": 0}),
        )
        .await;
    let flaky = flaky["id"].as_str().unwrap();
    assert_eq!(srv.wait_ended(flaky, 60).await["state"], "succeeded");
    assert_eq!(text(&srv.cli(&["jobs", "logs", flaky]).stdout), "attempt 2\n");
    assert_eq!(text(&srv.cli(&["jobs", "logs", flaky, "--previous"]).stdout), "attempt 1\n");
    assert_eq!(text(&srv.cli(&["jobs", "logs", flaky, "--attempt", "1"]).stdout), "attempt 1\n");
    let none = srv.cli(&["jobs", "logs", id, "--previous"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(text(&none.stderr).contains("no previous attempt"), "{}", text(&none.stderr));
}

#[tokio::test]
async fn ctrl_c_under_a_terminal_cancels_the_waited_job_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    // `script` gives the CLI a pseudo-terminal; ^C written to it becomes SIGINT for the CLI,
    // as a key press would.
    let line = format!("HODEI_SERVER={} HODEI_TOKEN={} {BIN} submit --wait --name ctrlc -- sh -c 'echo started; sleep 60'", srv.http, srv.token);
    let mut script = Command::new("script").args(["-qec", &line, "/dev/null"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = script.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = script.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.contains("started") {
        let l = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("the job did not start");
        seen.push_str(&l);
        seen.push('\n');
    }
    stdin.write_all(b"\x03").unwrap();
    stdin.flush().unwrap();
    let status = script.wait().unwrap();
    seen.extend(rx.try_iter().map(|l| l + "\n"));
    let (_, jobs) = srv.call(Method::GET, "/jobs?limit=1", None).await;
    let id = jobs["items"][0]["id"].as_str().unwrap().to_owned();
    assert!(seen.contains(&format!("job {id} submitted")), "the id is printed at once:\n{seen}");
    assert!(seen.contains(&format!("cancelling job {id}")), "{seen}");
    assert_eq!(srv.wait_ended(&id, 30).await["state"], "cancelled");
    assert_eq!(status.code(), Some(130), "{seen}");
}

#[tokio::test]
async fn jobs_run_in_the_submit_directory_and_exit_codes_read_like_a_shells() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    let work = job_writable_dir();
    let script = work.path().join("nightly.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"nightly in $(pwd)\"\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = cli_in(&srv, work.path(), &["submit", "--wait", "--", "./nightly.sh"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("nightly in {}\n", work.path().display()));
    // --scratch: a fresh directory of the worker instead.
    let out = cli_in(&srv, work.path(), &["submit", "--wait", "--scratch", "--", "pwd"]);
    assert!(!text(&out.stdout).contains(&work.path().display().to_string()), "{}", text(&out.stdout));
    // A missing directory fails naming it.
    let out = srv.cli(&["submit", "--wait", "--workdir", "/no/such/dir", "--", "true"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(text(&out.stderr).contains("/no/such/dir"), "{}", text(&out.stderr));

    // Killed by a signal: 128 + N, and the signal is named.
    let out = srv.cli(&["submit", "--wait", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("SIGKILL"), "{}", text(&out.stderr));
    let (_, jobs) = srv.call(Method::GET, "/jobs?limit=1", None).await;
    let get = srv.cli(&["jobs", "get", jobs["items"][0]["id"].as_str().unwrap()]);
    assert!(text(&get.stdout).contains("killed by        SIGKILL (9)"), "{}", text(&get.stdout));
    // A command that does not exist: 127, as a shell says.
    let out = srv.cli(&["submit", "--wait", "--", "no-such-command-hodei"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no-such-command-hodei"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn an_arrays_id_is_printed_alone_and_reads_like_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    let out = srv.cli(&["submit", "--array", "0-3", "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let array = text(&out.stdout).trim().to_owned();
    assert!(!array.contains(' '), "the id alone on stdout: {array:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, page) = srv.call(Method::GET, &format!("/jobs?array_id={array}&state=succeeded"), None).await;
        if page["items"].as_array().unwrap().len() == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "the array did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let get = srv.cli(&["jobs", "get", &array]);
    assert_eq!(get.status.code(), Some(0), "{}", text(&get.stderr));
    let shown = text(&get.stdout);
    assert!(shown.contains(&format!("array {array}: 4 jobs: 4 succeeded")), "{shown}");
    let ls = text(&srv.cli(&["jobs", "ls", "--array-id", &array]).stdout);
    assert!(ls.lines().next().unwrap().contains("INDEX"), "{ls}");
    let missing = srv.cli(&["jobs", "get", "01900000-0000-7000-8000-000000000000"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("404"), "{}", text(&missing.stderr));
}

#[tokio::test]
async fn workers_of_earlier_runs_are_listed_only_on_request_and_every_placement_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__WORKERS", "1")];
    let mut srv = Server::start(dir.path(), &env, 0, None);
    let ids: Vec<String> = futures::future::join_all((0..30).map(|_| srv.submit(json!({"command": ["true"]}))))
        .await
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &ids {
        srv.wait_ended(id, 60).await;
    }
    let metrics = srv.http_client.get(format!("{}/metrics", srv.metrics)).send().await.unwrap().text().await.unwrap();
    let scheduled: f64 =
        metrics.lines().filter(|l| l.starts_with("hodei_jobs_scheduled_total{")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum();
    assert_eq!(scheduled, 30.0, "every job placed once:\n{metrics}");

    // A clean stop and a start: the first run's worker is terminated, a new one serves.
    unsafe { libc::kill(srv.child.id() as i32, libc::SIGTERM) };
    srv.child.wait().unwrap();
    let srv = Server::start(dir.path(), &env, 0, None);
    let live = srv.cli(&["workers", "-o", "json"]);
    let live: Value = serde_json::from_slice(&live.stdout).unwrap();
    assert_eq!(live["items"].as_array().unwrap().len(), 1, "{live}");
    let all: Value = serde_json::from_slice(&srv.cli(&["workers", "--all", "-o", "json"]).stdout).unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "{all}");
    // Label selectors: the built-in pool's workers carry no labels.
    let count = |args: &[&str]| {
        let out = srv.cli(&[&["workers", "-o", "json"], args].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["items"].as_array().unwrap().len()
    };
    assert_eq!((count(&["-l", "zone=eu"]), count(&["--all", "-l", "!zone"]), count(&["-l", "zone!=eu"])), (0, 2, 1));
    let bad = srv.cli(&["workers", "-l", "a!b"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("label"), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[test]
fn config_check_prints_yaml_that_reads_back_and_logs_carry_no_colour_codes_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).args(["config", "check"]).env("HODEI_WORKERS__HEARTBEAT_TIMEOUT_MS", "5000").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let effective = dir.path().join("effective.yaml");
    std::fs::write(&effective, &out.stdout).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&out.stdout).expect("YAML");
    assert_eq!(doc["workers"]["heartbeat_timeout_ms"], serde_yaml_ng::Value::from(5000));
    let again = Command::new(BIN).args(["config", "check", "--config"]).arg(&effective).output().unwrap();
    assert_eq!((again.status.code(), again.stdout), (Some(0), out.stdout), "what it prints is a file it accepts, unchanged");

    // The server's log, into a file: text without terminal colour codes.
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut child = Command::new(BIN)
        .args(["server", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    assert!(ready.starts_with("ready "), "{ready}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    let logged = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(logged.contains("INFO"), "{logged}");
    assert!(!logged.contains('\x1b'), "colour codes in a log file:\n{logged}");
}

#[tokio::test]
async fn a_batch_script_carries_its_directives_and_is_sent_with_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, None);
    let work = job_writable_dir();
    let script = work.path().join("train.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n#HODEI --name train --cpu-m 500 --memory-mb 128\n#HODEI --output out-%j.log --label team=ml\necho \"args=$* in $(pwd)\"\necho oops >&2\n",
    )
    .unwrap();
    let out = cli_in(&srv, work.path(), &["submit", "--wait", "--memory-mb", "96", "train.sh", "a", "b c"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Edited after the submit: the job ran what was submitted.
    std::fs::write(&script, "#!/bin/sh\necho edited\n").unwrap();
    let (_, jobs) = srv.call(Method::GET, "/jobs?limit=1", None).await;
    let job = &jobs["items"][0];
    let id = job["id"].as_str().unwrap();
    assert_eq!((job["name"].as_str(), job["labels"]["team"].as_str()), (Some("train"), Some("ml")));
    // The command line wins over the script's lines.
    assert_eq!((job["resources"]["cpu_m"].as_i64(), job["resources"]["memory_mb"].as_i64()), (Some(500), Some(96)));
    // --output: both streams in the file, named after the job, where it ran.
    let written = std::fs::read_to_string(work.path().join(format!("out-{id}.log"))).unwrap();
    assert_eq!(written, format!("args=a b c in {}\noops\n", work.path().display()));

    // A bad directive is refused naming the script, and nothing is submitted.
    std::fs::write(&script, "#!/bin/sh\n#HODEI --cpu-m lots\ntrue\n").unwrap();
    let out = cli_in(&srv, work.path(), &["submit", "train.sh"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("#HODEI lines of train.sh"), "{}", text(&out.stderr));
    let (_, after) = srv.call(Method::GET, "/jobs?limit=5", None).await;
    assert_eq!(after["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn apply_queue_watch_acct_and_selectors_as_slurm_and_kubectl_users_use_them() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__WORKERS", "1"), ("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__SLOTS", "1")];
    let srv = Server::start(dir.path(), &env, 0, None);
    let work = job_writable_dir();
    // A job and an array from YAML; applied twice, they run once.
    let yaml = "kind: job\nname: blocker\ncommand: [sh, -c, 'sleep 2; echo blocked']\nlabels: {team: ml, env: dev}\n---\n\
                kind: array\nname: sweep\ncommand: [sh, -c, 'echo $HODEI_ARRAY_INDEX']\narray: {start: 0, end: 1}\nlabels: {team: ml, env: prod}\n";
    std::fs::write(work.path().join("jobs.yaml"), yaml).unwrap();
    let first = cli_in(&srv, work.path(), &["apply", "-f", "jobs.yaml"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let again = cli_in(&srv, work.path(), &["apply", "-f", "jobs.yaml"]);
    assert_eq!(text(&first.stdout), text(&again.stdout), "the same documents give the same jobs");
    let lines: Vec<String> = text(&first.stdout).lines().map(str::to_owned).collect();
    assert!(lines[0].starts_with("job/") && lines[1].starts_with("array/") && lines[1].ends_with("(2 jobs)"), "{lines:?}");
    let (_, all) = srv.call(Method::GET, "/jobs?limit=50", None).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);

    // A job waiting behind them: the queue says why; a watch sees it wait, run and end.
    let late = srv.submit(json!({"command": ["sh", "-c", "sleep 1; echo late"], "name": "late", "labels": {"team": "ml", "env": "dev"}})).await;
    let late = late["id"].as_str().unwrap().to_owned();
    let queue = text(&srv.cli(&["queue", "--format", "id,name,state,reason"]).stdout);
    let row = queue.lines().find(|l| l.starts_with(&late)).unwrap_or_else(|| panic!("{queue}"));
    assert!(row.contains("pending") && row.contains("no_capacity"), "{queue}");
    let watch = srv.cli(&["jobs", "get", "-w", &late]);
    let states: Vec<String> = text(&watch.stdout).lines().skip(1).map(|l| l.split_whitespace().nth(3).unwrap().to_owned()).collect();
    assert_eq!(states.first().map(String::as_str), Some("pending"), "{}", text(&watch.stdout));
    assert!(states.iter().any(|s| s == "running"), "{states:?}");
    assert_eq!(states.last().map(String::as_str), Some("succeeded"), "{states:?}");

    // sacct: every ended job with its exit code, cpu time and max RSS.
    for id in all["items"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()) {
        srv.wait_ended(id, 60).await;
    }
    let acct = text(&srv.cli(&["acct", "--format", "name,state,exit,cpu_time,max_rss_mb"]).stdout);
    assert_eq!(acct.lines().count(), 5, "a header and four jobs:\n{acct}");
    assert!(acct.lines().skip(1).all(|l| l.contains("succeeded") && l.split_whitespace().nth(2) == Some("0")), "{acct}");
    assert!(acct.lines().skip(1).all(|l| l.split_whitespace().nth(4).is_some_and(|rss| rss.parse::<u64>().is_ok())), "{acct}");

    // Label selectors pick jobs to list and to cancel.
    let held: Vec<String> = futures::future::join_all(
        (0..3).map(|i| srv.submit(json!({"command": ["true"], "hold": true, "labels": {"team": "ml", "env": if i == 0 { "prod" } else { "dev" }}}))),
    )
    .await
    .iter()
    .map(|j| j["id"].as_str().unwrap().to_owned())
    .collect();
    let listed = text(&srv.cli(&["jobs", "ls", "--state", "held", "-l", "team=ml,env!=prod", "-o", "json"]).stdout);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    let cancel = srv.cli(&["jobs", "cancel", "-l", "team=ml,env!=prod"]);
    assert_eq!(cancel.status.code(), Some(0), "{}", text(&cancel.stderr));
    assert_eq!(srv.job(&held[0]).await["state"], "held", "env=prod is not selected");
    assert_eq!(srv.job(&held[1]).await["state"], "cancelled");
    assert_eq!(srv.job(&held[2]).await["state"], "cancelled");
}

#[test]
fn completions_and_manual_pages_come_from_the_command_definitions() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN).args(["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(text(&out.stdout).contains("acct") && text(&out.stdout).contains("--output-file"), "{shell}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).args(["man", "--dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let page = std::fs::read_to_string(dir.path().join("hodei-jobs-logs.1")).unwrap();
    assert!(page.contains("hodei\\-jobs\\-logs") && page.contains("previous"), "{page}");
    assert!(dir.path().join("hodei.1").exists() && dir.path().join("hodei-submit.1").exists());
}

#[tokio::test]
async fn a_slurm_session_a_script_then_its_dependant_queued_and_accounted() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[], 0, None);
    let work = job_writable_dir();
    std::fs::write(work.path().join("prep.sh"), "#!/bin/sh\n#HODEI --name prep --cpu-m 500\nsleep 1.5\necho prepared > prepared.txt\n").unwrap();
    std::fs::write(work.path().join("train.sh"), "#!/bin/sh\n#HODEI --name train\ncat prepared.txt\nexit 3\n").unwrap();
    let prep = cli_in(&srv, work.path(), &["submit", "prep.sh"]);
    let prep = text(&prep.stdout).trim().to_owned();
    let train = cli_in(&srv, work.path(), &["submit", "--after-ok", &prep, "train.sh"]);
    assert_eq!(train.status.code(), Some(0), "{}", text(&train.stderr));
    let train = text(&train.stdout).trim().to_owned();
    // An array whose every job waits for prep.
    let sweep = cli_in(&srv, work.path(), &["submit", "--array", "0-2", "--after-ok", &prep, "--", "true"]);
    assert_eq!(sweep.status.code(), Some(0), "{}", text(&sweep.stderr));
    let sweep = text(&sweep.stdout).trim().to_owned();
    // A job after the whole array (its id stands for each of its jobs).
    let report = cli_in(&srv, work.path(), &["submit", "--after-ok", &sweep, "--", "true"]);
    assert_eq!(report.status.code(), Some(0), "{}", text(&report.stderr));
    let report = text(&report.stdout).trim().to_owned();
    assert_eq!(srv.job(&report).await["depends_on"].as_array().unwrap().len(), 3, "one dependency per job of the array");
    // Two dependants that the outcome of `train` decides, and one of an unknown job.
    let when_ok = srv.submit(json!({"command": ["true"], "depends_on": [{"job_id": train, "condition": "after_ok"}]})).await;
    assert_eq!((when_ok["state"].as_str(), when_ok["state_reason"].as_str()), (Some("held"), Some("dependency_pending")), "the 201 says it waits");
    let when_failed = srv.submit(json!({"command": ["true"], "depends_on": [{"job_id": train, "condition": "after_not_ok"}]})).await;
    let (status, body) = srv
        .call(
            Method::POST,
            "/jobs",
            Some(json!({"command": ["true"], "depends_on": [{"job_id": "01900000-0000-7000-8000-000000000000", "condition": "after_ok"}]})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["field"], "/depends_on/0/job_id");

    // squeue: the dependant waits, and says why.
    let queue = text(&srv.cli(&["queue", "--format", "id,name,state,reason"]).stdout);
    let row = queue.lines().find(|l| l.starts_with(&train)).unwrap_or_else(|| panic!("{queue}"));
    assert!(row.contains("held") && row.contains("dependency_pending"), "{queue}");
    let why = text(&srv.cli(&["jobs", "explain", &train]).stdout);
    assert!(why.contains(&format!("waits for {prep} (after_ok)")), "{why}");

    // Kill -9 while they wait: the dependencies are stored and taken up again.
    srv.kill9();
    let srv = Server::start(dir.path(), &[], 0, None);
    assert_eq!(srv.wait_ended(&train, 60).await["exit_code"], 3);
    assert_eq!(srv.wait_ended(when_failed["id"].as_str().unwrap(), 30).await["state"], "succeeded", "after_not_ok of a failure runs");
    let skipped = srv.wait_ended(when_ok["id"].as_str().unwrap(), 30).await;
    assert_eq!((skipped["state"].as_str(), skipped["state_reason"].as_str()), (Some("cancelled"), Some("dependency_failed")));
    assert_eq!(text(&srv.cli(&["jobs", "logs", &train]).stdout), "prepared\n", "it ran after prep, in the submit directory");
    let prep_end = srv.wait_ended(&prep, 30).await["finished_at"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
    let (_, members) = srv.call(Method::GET, &format!("/jobs?array_id={sweep}"), None).await;
    let members: Vec<String> = members["items"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(members.len(), 3);
    for m in &members {
        let j = srv.wait_ended(m, 30).await;
        assert_eq!(j["state"], "succeeded", "{j}");
        assert!(j["started_at"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap() >= prep_end, "an array member started before prep ended");
    }
    assert_eq!(srv.wait_ended(&report, 30).await["state"], "succeeded", "after the whole array");

    // sacct: both ended, with exit codes and cpu time.
    let acct = text(&srv.cli(&["acct", "--format", "id,name,state,exit,cpu_time"]).stdout);
    let line =
        |id: &str| acct.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("{acct}")).split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(line(&prep)[1..4], ["prep", "succeeded", "0"], "{acct}");
    assert_eq!(line(&train)[1..4], ["train", "failed", "3"], "{acct}");
    assert!(line(&prep)[4].ends_with("ms") || line(&prep)[4].ends_with('s'), "{acct}");
}
