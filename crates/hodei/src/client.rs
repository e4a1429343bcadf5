//! The REST client behind the CLI commands.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use futures::StreamExt;
use serde_json::Value;

/// Exit codes (SPEC §1.1).
pub const EXIT_API_ERROR: i32 = 1;
pub const EXIT_TIMED_OUT: i32 = 124;
pub const EXIT_CANCELLED: i32 = 130;

#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub body: Value,
    /// For a 401: which token was sent, and where it came from.
    pub hint: Option<String>,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = self.body.get("code").and_then(Value::as_str).unwrap_or("error");
        let detail = self.body.get("detail").and_then(Value::as_str).unwrap_or("");
        write!(f, "{} {code}: {detail}", self.status)?;
        if let Some(errs) = self.body.get("errors").and_then(Value::as_array).filter(|e| e.len() > 1) {
            for e in errs {
                let g = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                write!(f, "\n  {}: {} (expected {})", g("field"), g("message"), g("expected"))?;
            }
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

/// Where the token a client sends came from, for the hint on a 401.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token` or `HODEI_TOKEN`.
    Given,
    /// A context of the contexts file.
    Context(String),
    /// The data dir's `admin.token` (a loopback server only).
    DataDir(PathBuf),
}

pub struct Client {
    pub base: String,
    token: Option<(String, TokenSource)>,
    http: reqwest::Client,
}

/// Is `server` on this machine? Only then may the data dir's admin token be sent to it.
fn is_loopback(server: &str) -> bool {
    let rest = server.split_once("://").map_or(server, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or(rest);
    let host = host.rsplit_once(':').filter(|(h, p)| !h.is_empty() && p.chars().all(|c| c.is_ascii_digit())).map_or(host, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The admin token from the data dir (`HODEI_DATA_DIR`, else `./hodei-data`), when the caller
/// gave none and the server is on loopback.
fn data_dir_token() -> Option<(String, TokenSource)> {
    let dir = std::env::var_os("HODEI_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("./hodei-data"));
    let file = dir.join("admin.token");
    let token = std::fs::read_to_string(&file).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())?;
    Some((token, TokenSource::DataDir(file)))
}

impl Client {
    /// `ca_file`: the PEM CA an `https://` server's certificate must chain to, instead of the
    /// system's roots.
    pub fn new(server: &str, token: Option<(String, TokenSource)>, ca_file: Option<&std::path::Path>) -> anyhow::Result<Client> {
        let mut b = reqwest::Client::builder().tcp_nodelay(true);
        if !server.starts_with("https://") {
            // Plain HTTP never verifies a certificate: skip loading the system's roots (a
            // machine without any would otherwise fail every command).
            let unused = rustls::ClientConfig::builder().with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth();
            b = b.tls_backend_preconfigured(unused);
        } else if let Some(path) = ca_file {
            let pem = std::fs::read(path).with_context(|| format!("--ca-file: cannot read {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| format!("--ca-file: {} holds no PEM certificate", path.display()))?;
            anyhow::ensure!(!certs.is_empty(), "--ca-file: {} holds no PEM certificate", path.display());
            b = b.tls_certs_only(certs);
        }
        let http = b.build().context("building the HTTP client")?;
        let token = token.or_else(|| if is_loopback(server) { data_dir_token() } else { None });
        Ok(Client { base: server.trim_end_matches('/').to_owned(), token, http })
    }

    /// What a 401 should tell: the token that was refused and where it came from.
    fn auth_hint(&self) -> String {
        match &self.token {
            None => "no token was sent: set HODEI_TOKEN or --token, run `hodei login`, or run next to the server's data dir (./hodei-data or HODEI_DATA_DIR)"
                .to_owned(),
            Some((t, src)) => {
                let shown: String = t.chars().take(10).collect();
                let from = match src {
                    TokenSource::Given => "--token or HODEI_TOKEN".to_owned(),
                    TokenSource::Context(n) => format!("context {n:?} of the contexts file"),
                    TokenSource::DataDir(f) => format!("{} (is this the data dir of the server at {}?)", f.display(), self.base),
                };
                format!("the server refused the token {shown}… from {from}")
            }
        }
    }

    fn failure(&self, status: u16, body: Value) -> anyhow::Error {
        let hint = (status == 401).then(|| self.auth_hint());
        ApiFailure { status, body, hint }.into()
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}/api/v1{path}", self.base));
        if let Some((t, _)) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = r.send().await.with_context(|| format!("cannot reach the server at {} (set --server or HODEI_SERVER)", self.base))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.context("reading the response")?;
        let value: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
        };
        if status >= 400 {
            return Err(self.failure(status, value));
        }
        Ok(value)
    }

    /// The token this client sends, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_ref().map(|(t, _)| t.as_str())
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.req(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.req(reqwest::Method::POST, path).json(body)).await
    }

    /// POST with an `Idempotency-Key`, when given.
    pub async fn post_keyed(&self, path: &str, body: &Value, key: Option<&str>) -> anyhow::Result<Value> {
        let mut r = self.req(reqwest::Method::POST, path).json(body);
        if let Some(k) = key {
            r = r.header("idempotency-key", k);
        }
        self.send(r).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.req(reqwest::Method::PUT, path).json(body)).await
    }

    pub async fn post_empty(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.req(reqwest::Method::POST, path)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.req(reqwest::Method::DELETE, path)).await
    }

    /// Follows a job's output and state until it ends; prints output as it comes, state
    /// changes only on a terminal. Returns the `end` event. Reconnects where it left off.
    pub async fn follow(&self, job_id: &str, print_output: bool) -> anyhow::Result<Value> {
        let progress = std::io::stderr().is_terminal();
        let mut last_id: Option<String> = None;
        let mut failures = 0;
        loop {
            let mut r = self.req(reqwest::Method::GET, &format!("/jobs/{job_id}/logs?follow=true")).header("accept", "text/event-stream");
            if let Some(id) = &last_id {
                r = r.header("last-event-id", id);
            }
            let resp = match r.send().await {
                Ok(resp) if resp.status().is_success() => resp,
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
                    return Err(self.failure(status, body));
                }
                Err(e) => {
                    failures += 1;
                    if failures > 60 {
                        return Err(e).context("lost the server while following the job");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
            };
            failures = 0;
            let mut stream = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(chunk) = stream.next().await {
                let Ok(chunk) = chunk else { break };
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(pos) = buf.find("\n\n") {
                    let frame: String = buf.drain(..pos + 2).collect();
                    let (mut event, mut data, mut id) = ("message".to_owned(), String::new(), None);
                    for line in frame.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            event = v.trim().to_owned();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        } else if let Some(v) = line.strip_prefix("id:") {
                            id = Some(v.trim().to_owned());
                        }
                    }
                    if id.is_some() {
                        last_id = id;
                    }
                    let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                    match event.as_str() {
                        "log" if print_output => {
                            use std::io::Write;
                            let text = v.get("data").and_then(Value::as_str).unwrap_or("");
                            if v.get("stream").and_then(Value::as_str) == Some("stderr") {
                                let _ = std::io::stderr().write_all(text.as_bytes());
                            } else {
                                let mut out = std::io::stdout().lock();
                                let _ = out.write_all(text.as_bytes());
                                let _ = out.flush();
                            }
                        }
                        "state" if progress => {
                            let state = v.get("state").and_then(Value::as_str).unwrap_or("?");
                            eprintln!("\x1b[2m[hodei] job {job_id}: {state}\x1b[0m");
                        }
                        "end" => return Ok(v),
                        _ => {}
                    }
                }
            }
            // The stream ended without `end` (server restart): resume.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

/// Exit codes a shell gives a command it could not start, and one a signal killed (128 + N).
pub const EXIT_CANNOT_START: i32 = 127;
const EXIT_SIGNAL_BASE: i32 = 128;

/// The process exit code for an ended job, as a shell would give it: 0 succeeded, the job's own
/// code, 124 timed out, 130 cancelled, 128+N killed by signal N, 127 could not be started, 1
/// for any other failure (worker lost, …).
pub fn exit_code_of(end: &Value, signal: Option<i32>) -> i32 {
    match end.get("state").and_then(Value::as_str) {
        Some("succeeded") => 0,
        Some("timed_out") => EXIT_TIMED_OUT,
        Some("cancelled") => EXIT_CANCELLED,
        _ => match (end.get("exit_code").and_then(Value::as_i64), signal, end.get("failure_reason").and_then(Value::as_str)) {
            (Some(c), _, _) if c != 0 => c as i32,
            (None, Some(sig), _) => EXIT_SIGNAL_BASE + sig,
            (None, None, Some("spawn_error")) => EXIT_CANNOT_START,
            _ => EXIT_API_ERROR,
        },
    }
}

/// A signal's name (the common ones), for messages.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return format!("signal {sig}"),
    };
    format!("{name} ({sig})")
}

impl Client {
    /// The exit code for a job's `end` event; for a failure without an exit code, the latest
    /// attempt says whether a signal killed it (and the reason is told on stderr).
    pub async fn exit_status(&self, job_id: &str, end: &Value) -> i32 {
        let failed_without_code = end.get("state").and_then(Value::as_str) == Some("failed") && end.get("exit_code").is_none_or(Value::is_null);
        if !failed_without_code {
            return exit_code_of(end, None);
        }
        let signal = match self.get(&format!("/jobs/{job_id}")).await {
            Ok(j) => j["attempts"].as_array().and_then(|a| a.last()).and_then(|a| a["signal"].as_i64()).map(|s| s as i32),
            Err(_) => None,
        };
        let reason = end.get("failure_reason").and_then(Value::as_str).unwrap_or("unknown");
        match signal {
            Some(sig) => eprintln!("[hodei] job {job_id} failed ({reason}): killed by {}", signal_name(sig)),
            None => eprintln!("[hodei] job {job_id} failed: {reason}"),
        }
        exit_code_of(end, signal)
    }
}

/// Prints rows as an aligned table.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    table_rows(headers, rows, true);
}

/// Prints rows aligned under `headers` (comfy-table, no borders, two spaces between columns),
/// the header line only with `with_header` (a watch streaming rows prints it once; the columns
/// are as wide as the header or the widest cell).
pub fn table_rows(headers: &[&str], rows: Vec<Vec<String>>, with_header: bool) {
    use comfy_table::{ContentArrangement, Table, presets};
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled).set_header(headers.iter().copied());
    t.add_rows(rows);
    for col in t.column_iter_mut() {
        col.set_padding((0, 2));
    }
    let text = t.to_string();
    let mut out = std::io::stdout().lock();
    for line in text.lines().skip(usize::from(!with_header)) {
        use std::io::Write;
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

pub fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

pub fn fail_usage(msg: &str) -> anyhow::Error {
    anyhow::anyhow!(UsageError(msg.to_owned()))
}

#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

#[cfg(test)]
mod tests {
    #[test]
    fn only_this_machine_gets_the_data_dirs_admin_token() {
        for s in ["http://127.0.0.1:8080", "https://localhost:8443/", "http://[::1]:8080", "127.0.0.2:80", "http://localhost"] {
            assert!(super::is_loopback(s), "{s}");
        }
        for s in ["http://10.0.0.1:8080", "https://hodei.example.com", "http://localhost.evil.com:8080", "http://[2001:db8::1]:80"] {
            assert!(!super::is_loopback(s), "{s}");
        }
    }
}
