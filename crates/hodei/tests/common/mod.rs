//! Harness for black-box tests: the real `hodei` binary on port 0, a temporary data dir,
//! real worker processes.
#![allow(dead_code)]

pub mod kube_fake;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_hodei");

/// Short timeouts so failure handling is observable within a test.
pub const FAST: &[(&str, &str)] = &[
    ("HODEI_WORKERS__HEARTBEAT_INTERVAL_MS", "200"),
    ("HODEI_WORKERS__HEARTBEAT_TIMEOUT_MS", "1500"),
    ("HODEI_WORKERS__KILL_GRACE_MS", "500"),
    ("HODEI_SCHEDULER__ASSIGN_ACK_TIMEOUT_MS", "3000"),
    ("HODEI_METRICS__PROMETHEUS__PORT", "0"),
];

/// In `Server::start`'s environment: a file the server's log goes to.
pub const STDERR_TO: &str = "TEST_SERVER_STDERR";

pub struct Server {
    pub child: Child,
    pub http: String,
    pub grpc: String,
    /// The metrics listener (the HTTP one when `metrics.prometheus.port` is 0).
    pub metrics: String,
    pub dir: PathBuf,
    pub token: String,
    pub http_client: reqwest::Client,
}

/// An HTTP client for the tests.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::new()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    /// Starts `hodei server` and waits for its ready line.
    pub fn start(dir: &Path, env: &[(&str, &str)], grpc_port: u16, config: Option<&str>) -> Server {
        Server::try_start(dir, env, grpc_port, config).expect("the server exited before its ready line")
    }

    /// Starts `hodei server` and waits for its ready line; `None` when it exits first.
    pub fn try_start(dir: &Path, env: &[(&str, &str)], grpc_port: u16, config: Option<&str>) -> Option<Server> {
        let mut cmd = Command::new(BIN);
        cmd.arg("server").arg("--data-dir").arg(dir).args(["--http-addr", "127.0.0.1:0", "--grpc-addr", &format!("127.0.0.1:{grpc_port}")]);
        if let Some(yaml) = config {
            let path = dir.join("config.yaml");
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(&path, yaml).unwrap();
            cmd.arg("--config").arg(path);
        }
        cmd.env("RUST_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::inherit());
        for (k, v) in FAST.iter().chain(env) {
            // Not the server's: its log goes to this file instead of the test's stderr.
            if *k == STDERR_TO {
                cmd.stderr(std::fs::File::create(v).unwrap());
                continue;
            }
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start hodei server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                return None;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("no ready line within 60 s"),
        };
        assert!(line.starts_with("ready http="), "unexpected first line {line:?}");
        let field = |k: &str| line.split_whitespace().find_map(|p| p.strip_prefix(&format!("{k}="))).unwrap().to_owned();
        let token = std::fs::read_to_string(dir.join("admin.token")).unwrap().trim().to_owned();
        Some(Server {
            child,
            http: format!("http://{}", field("http")),
            grpc: format!("http://{}", field("grpc")),
            metrics: format!("http://{}", field("metrics")),
            dir: dir.to_owned(),
            token,
            http_client: http_client(),
        })
    }

    pub fn kill9(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.http_client.request(method, format!("{}/api/v1{path}", self.http)).bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn submit(&self, body: Value) -> Value {
        let (s, v) = self.call(reqwest::Method::POST, "/jobs", Some(body)).await;
        assert_eq!(s, 201, "{v}");
        v
    }

    pub async fn job(&self, id: &str) -> Value {
        self.call(reqwest::Method::GET, &format!("/jobs/{id}"), None).await.1
    }

    /// Polls until the job's state satisfies `done`, failing after `secs`.
    pub async fn wait_for(&self, id: &str, secs: u64, done: impl Fn(&str) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let j = self.job(id).await;
            if j["state"].as_str().is_some_and(&done) {
                return j;
            }
            assert!(Instant::now() < deadline, "job {id} still {} after {secs} s", j["state"]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a final state: a `failed` job with a retry pending has not ended.
    pub async fn wait_ended(&self, id: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let j = self.job(id).await;
            let done = match j["state"].as_str() {
                Some("succeeded" | "cancelled" | "timed_out") => true,
                Some("failed") => j["next_retry_at"].is_null(),
                _ => false,
            };
            if done {
                return j;
            }
            assert!(Instant::now() < deadline, "job {id} still {} after {secs} s", j["state"]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs a CLI command against this server.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        // Hermetic: no contexts file of the person running the tests.
        Command::new(BIN)
            .args(args)
            .env("HODEI_SERVER", &self.http)
            .env("HODEI_TOKEN", &self.token)
            .env("XDG_CONFIG_HOME", self.dir.join("no-cli-config"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn join_token(&self, pool: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("pool-{pool}.token"))).unwrap().trim().to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A server killed with -9 and not restarted leaves its built-in workers running (as it
        // should): stop them, so that tests leave no processes behind.
        for (pid, spool) in local_agents(&self.dir) {
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while agent_pid(&spool).is_some() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if agent_pid(&spool).is_some() {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// The pid of the agent holding a spool directory's lock, if one does.
pub fn agent_pid(spool: &Path) -> Option<i32> {
    use std::os::unix::io::AsRawFd;
    let lock = std::fs::File::open(spool.join("lock")).ok()?;
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
        return None;
    }
    std::fs::read_to_string(spool.join("lock")).ok()?.trim().parse().ok()
}

/// The built-in pool's agents running for the server of `dir`: (pid, spool directory).
pub fn local_agents(dir: &Path) -> Vec<(i32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir.join("workers")) else { return Vec::new() };
    entries.flatten().filter_map(|e| agent_pid(&e.path()).map(|pid| (pid, e.path()))).collect()
}

/// A `hodei worker` process.
pub struct WorkerProc(pub Child);

impl WorkerProc {
    pub fn start(grpc: &str, pool: &str, token: &str, slots: u32) -> WorkerProc {
        WorkerProc::start_with(grpc, pool, token, slots, &[], &[])
    }

    pub fn start_with(grpc: &str, pool: &str, token: &str, slots: u32, env: &[(&str, &Path)], args: &[&std::ffi::OsStr]) -> WorkerProc {
        let child = Command::new(BIN)
            .args([
                "worker",
                "--server",
                grpc,
                "--pool",
                pool,
                "--slots",
                &slots.to_string(),
                "--cpu-m",
                "4000",
                "--memory-mb",
                "4096",
                "--labels",
                "zone=test",
            ])
            .args(args)
            .env("HODEI_JOIN_TOKEN", token)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        WorkerProc(child)
    }

    pub fn kill9(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        // SIGTERM first: a stopping agent removes its directory under $TMPDIR (a killed one
        // cannot), so tests do not leave one behind per worker.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub const REMOTE_POOL: &str =
    "resource_pools:\n  pools:\n    - id: remote\n      worker_template: { cpu_m: 4000, memory_mb: 4096, slots: 4 }\n      min_size: 0\n      max_size: 4\n";

/// A directory jobs may write to: they run as `nobody` when the tests run as root, and the
/// data dir (0700) is out of their reach by design.
pub fn job_writable_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    d
}

pub fn sh(script: &str) -> Value {
    json!(["sh", "-c", script])
}

/// Submits from 4 clients until the server is killed with SIGKILL, restarts it on the same data
/// (and `env`: the same database), and checks that every acknowledged job ends succeeded, with
/// exactly one successful attempt.
pub async fn kill_9_mid_load_then_restart(dir: &Path, env: &[(&str, &str)]) {
    let grpc_port = free_port();
    let mut srv = Server::start(dir, env, grpc_port, Some(REMOTE_POOL));
    let _w = WorkerProc::start(&srv.grpc, "remote", &srv.join_token("remote"), 4);
    let (http, token) = (srv.http.clone(), srv.token.clone());
    // Submit from 4 clients until the server dies; keep every acknowledged id.
    let mut clients = Vec::new();
    for c in 0..4 {
        let (http, token) = (http.clone(), token.clone());
        clients.push(tokio::spawn(async move {
            let client = http_client();
            let mut acked = Vec::new();
            for i in 0..400 {
                let body = json!({"command": ["sh", "-c", "sleep 0.05"], "labels": {"c": c.to_string(), "i": i.to_string()}});
                let Ok(resp) = client.post(format!("{http}/api/v1/jobs")).bearer_auth(&token).json(&body).send().await else { break };
                if resp.status().as_u16() != 201 {
                    break;
                }
                let Ok(v) = resp.json::<serde_json::Value>().await else { break };
                acked.push(v["id"].as_str().unwrap().to_owned());
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    srv.kill9();
    let mut acked = Vec::new();
    for c in clients {
        acked.extend(c.await.unwrap());
    }
    assert!(acked.len() > 20, "only {} submits were acknowledged before the kill", acked.len());
    let srv = Server::start(dir, env, grpc_port, Some(REMOTE_POOL));
    for id in &acked {
        let j = srv.wait_ended(id, 120).await;
        assert_eq!(j["state"], "succeeded", "job {id}: {j}");
        let wins = j["attempts"].as_array().unwrap().iter().filter(|a| a["state"] == "succeeded").count();
        assert_eq!(wins, 1, "job {id} recorded {wins} successful attempts");
    }
}

/// Waits for the worker to write an unacknowledged result into its spool.
pub async fn wait_for_a_spooled_result(spool: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(spool.join("results")).map_or(0, |d| d.count()) == 0 {
        assert!(Instant::now() < deadline, "no result spooled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One stream of a job's output as stored, read through the API.
pub async fn stored_output(srv: &Server, id: &str, stream: &str) -> String {
    let (status, v) = srv.call(reqwest::Method::GET, &format!("/jobs/{id}/logs?stream={stream}&limit_bytes=16777216"), None).await;
    assert_eq!(status, 200, "{v}");
    v["chunks"].as_array().unwrap().iter().map(|c| c["data"].as_str().unwrap()).collect()
}

/// The server (in `dir`, with `env`) is killed three times while a job writes to both streams
/// on a remote worker, the last time until the job has ended: the worker resends what the dead
/// server missed from where the restarted one says it stands, then the result, so the stored
/// output is what the job printed, byte for byte — no line lost, none twice, no gap.
pub async fn output_survives_server_kills(dir: &Path, env: &[(&str, &str)]) {
    let spool = tempfile::tempdir().unwrap();
    let grpc = free_port();
    let mut srv = Server::start(dir, env, grpc, Some(REMOTE_POOL));
    let args = [std::ffi::OsStr::new("--spool-dir"), spool.path().as_os_str()];
    let _w = WorkerProc::start_with(&srv.grpc, "remote", &srv.join_token("remote"), 1, &[], &args);
    let lines = 600;
    let script = format!("i=0; while [ $i -lt {lines} ]; do i=$((i+1)); echo \"out $i\"; echo \"err $i\" >&2; sleep 0.005; done");
    let id = srv.submit(json!({"command": ["sh", "-c", script]})).await["id"].as_str().unwrap().to_owned();
    for upto in [50, 250, 400] {
        // Kill it while output flows: once some of it is stored, with more to come.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !stored_output(&srv, &id, "stdout").await.contains(&format!("out {upto}\n")) {
            assert!(Instant::now() < deadline, "no output up to line {upto}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        srv.kill9();
        if upto == 400 {
            // The job ends while no server runs: its result waits in the worker's spool.
            wait_for_a_spooled_result(spool.path()).await;
        }
        srv = Server::start(dir, env, grpc, Some(REMOTE_POOL));
    }
    let j = srv.wait_ended(&id, 60).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["attempts"].as_array().unwrap().len(), 1, "one run: {j}");
    for stream in ["out", "err"] {
        let printed: String = (1..=lines).map(|i| format!("{stream} {i}\n")).collect();
        let stored = stored_output(&srv, &id, &format!("std{stream}")).await;
        assert!(stored == printed, "std{stream} differs from what the job printed:\n{stored}");
    }
}

/// Registers a worker with `token` in `pool`; the gRPC status when it is refused.
pub async fn register_with(grpc: &str, pool: &str, token: &str) -> Result<String, tonic::Status> {
    use hodei_proto::v1 as pb;
    let mut client = pb::worker_service_client::WorkerServiceClient::connect(grpc.to_owned()).await.unwrap();
    let r = client
        .register_worker(pb::RegisterWorkerRequest {
            instance_name: "probe".into(),
            pool_id: pool.into(),
            resources: Some(pb::Resources { cpu_m: 1, memory_mb: 1, gpu: 0 }),
            slots: 1,
            join_token: token.into(),
            ..Default::default()
        })
        .await?;
    Ok(r.into_inner().worker_id)
}
