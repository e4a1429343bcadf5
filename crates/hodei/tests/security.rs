//! Black-box tests of identity and tenant isolation: principals, roles and tokens through the
//! real binary, the permission table checked on every operation of the OpenAPI document, and
//! workers that may speak only for their own attempts.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// What the permission table answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// Anything but 401, 403 and 404: the request got past authorization.
    Allowed,
    Unauthorized,
    Forbidden,
    NotFound,
}
use Want::*;

/// The callers of the matrix, in the order of every row.
const CALLERS: [&str; 8] = ["no token", "bad token", "revoked token", "other tenant's researcher", "viewer", "researcher", "pi", "admin"];

const U3: [Want; 3] = [Unauthorized, Unauthorized, Unauthorized];

fn row(rest: [Want; 5]) -> [Want; 8] {
    [U3[0], U3[1], U3[2], rest[0], rest[1], rest[2], rest[3], rest[4]]
}

/// The permission table (SPEC §8.2) for every operation, by kind of operation. A new operation
/// without a row here fails the test.
fn expected(method: &str, path: &str) -> Option<[Want; 8]> {
    let read = row([NotFound, Allowed, Allowed, Allowed, Allowed]);
    let submit = row([NotFound, Forbidden, Allowed, Allowed, Allowed]);
    let manage = row([NotFound, Forbidden, Forbidden, Allowed, Allowed]);
    let admin_in_tenant = row([NotFound, Forbidden, Forbidden, Forbidden, Allowed]);
    let admin = row([Forbidden, Forbidden, Forbidden, Forbidden, Allowed]);
    let anyone = row([Allowed, Allowed, Allowed, Allowed, Allowed]);
    Some(match (method, path) {
        ("post", "/jobs" | "/jobs/batch") => submit,
        (
            "get",
            "/jobs"
            | "/queue"
            | "/sla"
            | "/sla/breaches"
            | "/sla/at-risk"
            | "/cost-optimization/breakdown"
            | "/cost-optimization/recommendations"
            | "/cost-optimization/reports"
            | "/cost-reports"
            | "/cost-rates"
            | "/budgets"
            | "/alerts"
            | "/tenants"
            | "/burst/sessions"
            | "/pools"
            | "/pools/{id}"
            | "/pools/{id}/status"
            | "/pools/{id}/scaling/history"
            | "/pools/{id}/scaling/triggers"
            | "/pools/{id}/metrics"
            | "/metrics/historical"
            | "/metrics/pools/{id}"
            | "/metrics/costs"
            | "/pools/{id}/scaling/policies"
            | "/pools/{id}/scaling/policies/{pid}",
        ) => anyone,
        ("get", "/jobs/{id}" | "/jobs/{id}/attempts" | "/jobs/{id}/events" | "/jobs/{id}/explain" | "/jobs/{id}/logs" | "/jobs/{id}/usage") => read,
        // The job was submitted by the researcher: its own job.
        ("post", "/jobs/{id}/cancel" | "/jobs/{id}/retry" | "/jobs/{id}/hold" | "/jobs/{id}/release") => submit,
        ("get", "/metrics/tenants/{id}" | "/queue/tenants/{id}" | "/tenants/{id}" | "/tenants/{id}/sla" | "/tenants/{id}/quota") => read,
        ("get", "/tenants/{id}/burst/sessions" | "/tenants/{id}/burst/sessions/{sid}") => read,
        ("post", "/tenants/{id}/burst" | "/tenants/{id}/burst/sessions/{sid}/end" | "/budgets") => manage,
        ("put" | "delete", "/budgets/{id}") => manage,
        ("get", "/budgets/{id}" | "/alerts/{id}" | "/cost-optimization/reports/{id}") => read,
        // A report of tenant alpha.
        ("post", "/cost-optimization/reports") => read,
        ("post", "/alerts/{id}/ack") => manage,
        ("post", "/tenants/{id}/burst/sessions/{sid}/approve" | "/tenants/{id}/burst/sessions/{sid}/reject") => admin_in_tenant,
        ("put", "/tenants/{id}" | "/tenants/{id}/quota") | ("delete", "/tenants/{id}") => admin_in_tenant,
        ("post", "/tenants") => admin,
        ("get" | "put", "/observability/config") | ("post", "/observability/grafana/sync") => admin,
        ("get", "/workers" | "/workers/{id}" | "/principals" | "/principals/{id}" | "/audit")
        | ("post", "/principals" | "/pools" | "/pools/{id}/join-token" | "/pools/{id}/scale" | "/pools/{id}/scaling/policies" | "/workers/{id}/drain")
        | ("put" | "delete", "/pools/{id}" | "/pools/{id}/scaling/policies/{pid}")
        | ("put", "/principals/{id}/roles" | "/cost-rates") => admin,
        ("get", "/whoami" | "/tokens") | ("post", "/tokens") => anyone,
        // The token is the researcher's: its own, or an admin's business.
        ("delete", "/tokens/{id}") => row([NotFound, NotFound, Allowed, NotFound, Allowed]),
        _ => return None,
    })
}

fn class(status: u16) -> Want {
    match status {
        401 => Unauthorized,
        403 => Forbidden,
        404 => NotFound,
        _ => Allowed,
    }
}

async fn call(srv: &Server, token: Option<&str>, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let m: Method = method.to_uppercase().parse().unwrap();
    let mut r = srv.http_client.request(m, format!("{}/api/v1{path}", srv.http));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn admin(srv: &Server, method: &str, path: &str, body: Value) -> Value {
    let (s, v) = call(srv, Some(&srv.token), method, path, Some(&body)).await;
    assert!((200..300).contains(&s), "{method} {path} as admin: {s} {v}");
    v
}

/// A principal with one binding and a token for it: (principal id, secret).
async fn principal(srv: &Server, name: &str, role: &str, scope: &str) -> (String, String) {
    let p = admin(srv, "post", "/principals", json!({"name": name, "kind": "user", "role_bindings": [{"role": role, "scope": scope}]})).await;
    let id = p["id"].as_str().unwrap().to_owned();
    let t = admin(srv, "post", "/tokens", json!({"name": format!("{name}-token"), "principal_id": id})).await;
    (id, t["secret"].as_str().unwrap().to_owned())
}

async fn held_job(srv: &Server, token: &str) -> String {
    let (s, v) = call(srv, Some(token), "post", "/jobs", Some(&json!({"command": ["true"], "tenant_id": "alpha", "hold": true}))).await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_operation_answers_as_the_permission_table_says() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__WORKERS", "1")], 0, None);
    for t in ["alpha", "beta"] {
        admin(&srv, "post", "/tenants", json!({"id": t, "name": t})).await;
    }
    let (_, other) = principal(&srv, "bea", "researcher", "tenant:beta").await;
    let (_, viewer) = principal(&srv, "vic", "viewer", "tenant:alpha").await;
    let (researcher_id, researcher) = principal(&srv, "rita", "researcher", "tenant:alpha").await;
    let (_, pi) = principal(&srv, "pia", "pi", "tenant:alpha").await;
    let (_, revoked) = principal(&srv, "rex", "researcher", "tenant:alpha").await;
    let (s, me) = call(&srv, Some(&revoked), "get", "/whoami", None).await;
    assert_eq!((s, me["name"].as_str()), (200, Some("rex")), "{me}");
    let (_, page) = call(&srv, Some(&revoked), "get", "/tokens", None).await;
    let revoked_id = page["items"][0]["id"].as_str().unwrap().to_owned();
    let (s, _) = call(&srv, Some(&revoked), "delete", &format!("/tokens/{revoked_id}"), None).await;
    assert_eq!(s, 204, "a principal revokes its own token");
    let (s, _) = call(&srv, Some(&revoked), "get", "/whoami", None).await;
    assert_eq!(s, 401, "a revoked token is refused on the very next request");
    let tokens: [Option<&str>; 8] =
        [None, Some("hodei_0000000000000000000000000000bad0"), Some(&revoked), Some(&other), Some(&viewer), Some(&researcher), Some(&pi), Some(&srv.token)];

    // Fixtures, all in tenant alpha: the researcher's own job (and one more that nobody
    // touches, so the tenant always has a live job), a burst session, a worker.
    let job = held_job(&srv, &researcher).await;
    // An alert of tenant alpha: a budget its first job's second of run time overspends.
    admin(&srv, "post", "/budgets", json!({"tenant_id": "alpha", "amount": "0.000001"})).await;
    admin(&srv, "post", "/jobs", json!({"command": ["true"], "tenant_id": "alpha"})).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let alert = loop {
        let (_, page) = call(&srv, Some(&srv.token), "get", "/alerts?tenant_id=alpha", None).await;
        if let Some(id) = page["items"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no alert was raised: {page}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    held_job(&srv, &srv.token).await;
    let session = admin(&srv, "post", "/tenants/alpha/burst", json!({"requested_cpu_m": 100, "reason": "matrix"})).await;
    let sid = session["id"].as_str().unwrap().to_owned();
    let worker = admin(&srv, "get", "/workers", json!(null)).await["items"][0]["id"].as_str().unwrap().to_owned();
    admin(&srv, "post", "/pools", json!({"id": "matrix-pool", "worker_template": {"cpu_m": 1000, "memory_mb": 512, "slots": 1}})).await;

    let doc: Value = srv.http_client.get(format!("{}/api/openapi.json", srv.http)).send().await.unwrap().json().await.unwrap();
    let paths = doc["paths"].as_object().expect("paths");
    let mut checked = 0;
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    for (full, ops) in paths {
        let Some(path) = full.strip_prefix("/api/v1") else { continue };
        let path = path.to_owned();
        for method in ops.as_object().unwrap().keys().filter(|m| ["get", "post", "put", "delete", "patch"].contains(&m.as_str())) {
            let Some(want) = expected(method, &path) else {
                missing.push(format!("{} {path}", method.to_uppercase()));
                continue;
            };
            for (i, token) in tokens.iter().enumerate() {
                // Each call gets what it needs fresh, so one caller's success cannot change
                // what the next one finds.
                let id = match path.split('/').nth(1) {
                    // Policies of a pool made through the API (the config's pools answer 409),
                    // the policy put back before each call.
                    Some("pools") if path.contains("/scaling/policies") => {
                        call(
                            &srv,
                            Some(&srv.token),
                            "post",
                            "/pools/matrix-pool/scaling/policies",
                            Some(&json!({"name": "p1", "trigger": "queue_depth > 1", "action": "scale_up"})),
                        )
                        .await;
                        "matrix-pool".to_owned()
                    }
                    Some("jobs") => job.clone(),
                    Some("workers") => worker.clone(),
                    Some("principals") => researcher_id.clone(),
                    Some("pools") => "local".to_owned(),
                    Some("metrics") if path.starts_with("/metrics/pools/") => "local".to_owned(),
                    Some("tokens") => {
                        let t = admin(&srv, "post", "/tokens", json!({"name": "spare", "principal_id": researcher_id})).await;
                        t["id"].as_str().unwrap().to_owned()
                    }
                    Some("alerts") => alert.clone(),
                    Some("cost-optimization") => {
                        let r = admin(&srv, "post", "/cost-optimization/reports", json!({"tenant_id": "alpha"})).await;
                        r["id"].as_str().unwrap().to_owned()
                    }
                    // A fresh budget of tenant alpha each time (a delete may have taken the last).
                    Some("budgets") => {
                        let b = admin(&srv, "post", "/budgets", json!({"tenant_id": "alpha", "amount": "100"})).await;
                        b["id"].as_str().unwrap().to_owned()
                    }
                    _ => "alpha".to_owned(),
                };
                let url = path.replace("{id}", &id).replace("{sid}", &sid).replace("{pid}", "p1");
                let body = match (method.as_str(), path.as_str()) {
                    ("post", "/jobs") => Some(json!({"command": ["true"], "tenant_id": "alpha", "hold": true})),
                    ("post", "/jobs/batch") => Some(json!({"jobs": [{"command": ["true"], "tenant_id": "alpha", "hold": true}]})),
                    ("post", "/tenants") => Some(json!({"id": format!("made-{checked}-{i}"), "name": "made"})),
                    ("put", "/tenants/{id}") => Some(json!({"name": "alpha"})),
                    ("put", "/tenants/{id}/quota") => Some(json!({"max_queued_jobs": 1000})),
                    ("post", "/tenants/{id}/burst") => Some(json!({"requested_cpu_m": 100, "reason": "matrix"})),
                    ("post", "/principals") => Some(json!({"name": format!("made-{checked}-{i}"), "kind": "service"})),
                    ("put", "/principals/{id}/roles") => Some(json!({"role_bindings": [{"role": "researcher", "scope": "tenant:alpha"}]})),
                    ("post", "/tokens") => Some(json!({"name": "made"})),
                    ("post", "/pools") => Some(json!({"id": format!("made-{checked}-{i}"), "worker_template": {"cpu_m": 1000, "memory_mb": 512, "slots": 1}})),
                    ("put", "/pools/{id}") => Some(json!({"max_size": 2})),
                    ("put", "/cost-rates") => Some(json!({"hourly_rate_cpu": "0.05"})),
                    ("put", "/observability/config") => Some(json!({"observability": {"grafana": {"folder": "Matrix"}}})),
                    ("post", "/budgets") => Some(json!({"tenant_id": "alpha", "amount": "10"})),
                    ("post", "/cost-optimization/reports") => Some(json!({"tenant_id": "alpha", "period": "last_week"})),
                    ("put", "/budgets/{id}") => Some(json!({"amount": "20"})),
                    ("post", "/pools/{id}/scale") => Some(json!({"target_size": 1, "reason": "matrix"})),
                    ("post", "/pools/{id}/scaling/policies") => {
                        Some(json!({"name": format!("made {checked} {i}"), "trigger": "queue_depth > 1", "action": "scale_up"}))
                    }
                    ("put", "/pools/{id}/scaling/policies/{pid}") => Some(json!({"name": "p1", "trigger": "queue_depth > 2", "action": "scale_up"})),
                    _ => None,
                };
                let (status, answer) = call(&srv, *token, method, &url, body.as_ref()).await;
                if class(status) != want[i] {
                    wrong.push(format!("{} {url} as {}: {status}, expected {:?} ({answer})", method.to_uppercase(), CALLERS[i], want[i]));
                }
                if status >= 500 {
                    wrong.push(format!("{} {url} as {}: {status} ({answer})", method.to_uppercase(), CALLERS[i]));
                }
            }
            checked += 1;
        }
    }
    assert!(missing.is_empty(), "operations without a row in the permission table: {missing:?}");
    assert!(wrong.is_empty(), "{} answers differ from the permission table:\n{}", wrong.len(), wrong.join("\n"));
    assert!(checked >= 40, "only {checked} operations in the OpenAPI document");

    // Lists never show another tenant's rows.
    let (_, jobs) = call(&srv, Some(&other), "get", "/jobs?limit=500", None).await;
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0), "{jobs}");
    let (_, jobs) = call(&srv, Some(&other), "get", "/jobs?tenant_id=alpha", None).await;
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0), "a filter on a foreign tenant finds nothing: {jobs}");
    let (_, tenants) = call(&srv, Some(&other), "get", "/tenants", None).await;
    let ids: Vec<&str> = tenants["items"].as_array().unwrap().iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, ["beta"]);
    let (_, queue) = call(&srv, Some(&other), "get", "/queue", None).await;
    assert_eq!(queue["totals"]["held"], 0, "queue totals count only the caller's tenants: {queue}");
    let (_, queue) = call(&srv, Some(&viewer), "get", "/queue", None).await;
    assert!(queue["totals"]["held"].as_u64().unwrap() >= 2, "{queue}");
    let (_, sessions) = call(&srv, Some(&other), "get", "/burst/sessions", None).await;
    assert_eq!(sessions["items"].as_array().map(Vec::len), Some(0));

    // A researcher controls its own jobs only; a pi anyone's in its tenant.
    let admins_job = held_job(&srv, &srv.token).await;
    let (s, v) = call(&srv, Some(&researcher), "post", &format!("/jobs/{admins_job}/cancel"), None).await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = call(&srv, Some(&pi), "post", &format!("/jobs/{admins_job}/cancel"), None).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("cancelled")), "{v}");
    let (_, mine) = call(&srv, Some(&researcher), "get", &format!("/jobs/{job}"), None).await;
    assert_eq!(mine["submitted_by"].as_str(), Some(researcher_id.as_str()), "{mine}");
}

#[tokio::test]
async fn tokens_and_roles_through_the_cli_take_effect_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__WORKERS", "1")], 0, None);
    let out = srv.cli(&["tenants", "create", "Lab", "--id", "lab"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = srv.cli(&["principals", "create", "ada", "--role", "viewer=tenant:lab", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ada: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ada_id = ada["id"].as_str().unwrap();
    let out = srv.cli(&["tokens", "create", "laptop", "--principal", ada_id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(secret.starts_with("hodei_") && secret.len() == 38, "{secret:?}");

    let as_ada = |args: &[&str]| std::process::Command::new(BIN).args(args).env("HODEI_SERVER", &srv.http).env("HODEI_TOKEN", &secret).output().unwrap();
    let out = as_ada(&["whoami", "-o", "json"]);
    let me: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((me["name"].as_str(), me["role_bindings"][0]["scope"].as_str()), (Some("ada"), Some("tenant:lab")), "{me}");
    let out = as_ada(&["submit", "--", "true"]);
    assert_eq!(out.status.code(), Some(1), "a viewer cannot submit");
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"), "{}", String::from_utf8_lossy(&out.stderr));

    // A new role counts from the next request on: no cache delay.
    let out = srv.cli(&["principals", "roles", ada_id, "--role", "researcher=tenant:lab"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = as_ada(&["submit", "--wait", "--", "echo", "hi from ada"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi from ada");

    // The listing shows the prefix, never the secret; revoking refuses the next request.
    let out = as_ada(&["tokens", "ls", "-o", "json"]);
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = &page["items"][0];
    assert_eq!(listed["prefix"].as_str(), Some(&secret[..12]));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&secret), "a listing never holds a secret");
    let out = srv.cli(&["tokens", "revoke", listed["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = as_ada(&["whoami"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{}", String::from_utf8_lossy(&out.stderr));

    // Every admin write is in the audit log, with who did it, and never a secret.
    let (s, log) = srv.call(Method::GET, "/audit?limit=500", None).await;
    assert_eq!(s, 200, "{log}");
    let actions: Vec<(&str, &str)> = log["items"].as_array().unwrap().iter().map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap())).collect();
    for want in ["tenant.create", "principal.create", "token.create", "principal.roles", "token.revoke"] {
        assert!(actions.contains(&("admin", want)), "{want} by admin missing from {actions:?}");
    }
    let roles = log["items"].as_array().unwrap().iter().find(|e| e["action"] == "principal.roles").unwrap();
    assert_eq!(
        (roles["before"]["role_bindings"][0]["role"].as_str(), roles["after"]["role_bindings"][0]["role"].as_str()),
        (Some("viewer"), Some("researcher"))
    );
    assert!(!log.to_string().contains(&secret), "the audit log never holds a secret");
    let (s, _) = srv.call(Method::GET, "/audit?since=yesterday", None).await;
    assert_eq!(s, 400);

    // The data dir is the server user's alone; only the hash of a secret is stored.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777, 0o700, "the data dir is private");
    for f in ["hodei.db", "hodei.db-wal", "admin.token", "pool-local.token"] {
        let mode = std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f} is private");
    }
    let db = std::fs::read(dir.path().join("hodei.db")).unwrap();
    let wal = std::fs::read(dir.path().join("hodei.db-wal")).unwrap_or_default();
    let holds = |bytes: &[u8]| bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
    assert!(!holds(&db) && !holds(&wal), "the secret itself never reaches the database");
}

/// `hodei login` checks a token and saves it as the current context (0600); later commands use
/// it with no flag or variable, `--context` and `HODEI_TOKEN` override it, and a 401 says which
/// token was refused and where it came from.
#[tokio::test]
async fn cli_contexts_log_in_switch_and_say_which_token_was_refused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__WORKERS", "0")], 0, None);
    let (_, ada) = principal(&srv, "ada", "viewer", "tenant:default").await;
    let home = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let cli = |args: &[&str], env: &[(&str, &str)], stdin: &str| {
        use std::io::Write;
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(args).current_dir(elsewhere.path()).env_remove("HODEI_SERVER").env_remove("HODEI_TOKEN").env_remove("HODEI_DATA_DIR");
        cmd.env("HOME", home.path()).env_remove("XDG_CONFIG_HOME").envs(env.iter().copied());
        let mut child = cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let file = home.path().join(".config/hodei/config.yaml");

    // A wrong token is refused at login and nothing is saved.
    let (code, _, err) = cli(&["login", "--server", &srv.http, "--name", "lab"], &[], "hodei_wrongwrongwrongwrongwrongwrongwr\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("401") && !file.exists(), "{err}");
    // The token read from stdin is checked with whoami and saved as the current context.
    let (code, _, err) = cli(&["login", "--server", &srv.http, "--name", "lab"], &[], &format!("{ada}\n"));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("as ada") && err.contains("\"lab\""), "{err}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let (code, out, err) = cli(&["whoami", "-o", "json"], &[], "");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["name"], "ada");
    // A second context; `context use` switches, `--context` picks one for a single command.
    let (code, _, err) = cli(&["login", "--server", &srv.http, "--name", "root", "--token", &srv.token], &[], "");
    assert_eq!(code, Some(0), "{err}");
    let (_, out, _) = cli(&["context", "ls"], &[], "");
    let current: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with('*')).collect();
    assert!(current.len() == 1 && current[0].contains("root"), "{out}");
    assert!(!out.contains(&srv.token) && !out.contains(&ada), "a listing never shows a token: {out}");
    let (_, out, _) = cli(&["whoami", "-o", "json", "--context", "lab"], &[], "");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["name"], "ada");
    let (code, _, _) = cli(&["context", "use", "lab"], &[], "");
    assert_eq!(code, Some(0));
    let (_, out, _) = cli(&["whoami", "-o", "json"], &[], "");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["name"], "ada");
    let (code, _, err) = cli(&["context", "use", "nope"], &[], "");
    assert!(code == Some(1) && err.contains("no context \"nope\""), "{err}");

    // HODEI_TOKEN overrides the context; a refused token is named with its source.
    let (code, _, err) = cli(&["whoami"], &[("HODEI_TOKEN", "hodei_notatokennotatokennotatokennota")], "");
    assert_eq!(code, Some(1));
    assert!(err.contains("refused the token hodei_nota") && err.contains("HODEI_TOKEN"), "{err}");
    // Revoked behind the context's back: the 401 names the context.
    let (_, list) = call(&srv, Some(&ada), "GET", "/tokens", None).await;
    let id = list["items"][0]["id"].as_str().unwrap().to_owned();
    let (s, _) = call(&srv, Some(&srv.token), "DELETE", &format!("/tokens/{id}"), None).await;
    assert_eq!(s, 204);
    let (code, _, err) = cli(&["whoami"], &[], "");
    assert_eq!(code, Some(1));
    assert!(err.contains("context \"lab\""), "{err}");
    // Without any context or token, and no data dir here: the 401 says what to do.
    let (code, _, _) = cli(&["context", "rm", "lab"], &[], "");
    assert_eq!(code, Some(0));
    let (code, _, err) = cli(&["whoami", "--server", &srv.http], &[], "");
    assert_eq!(code, Some(1));
    assert!(err.contains("no token was sent") && err.contains("hodei login"), "{err}");
}

/// A registered worker of the pool sends output for an attempt it was never assigned (another
/// worker's, of another job): the chunks are refused and counted, and the job's output is what
/// its own worker sent.
#[tokio::test]
async fn a_worker_cannot_speak_for_another_workers_attempt() {
    use hodei_proto::v1 as pb;
    use pb::worker_service_client::WorkerServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__WORKERS", "1")], 0, None);
    let job = srv.submit(json!({"command": ["sh", "-c", "echo real; sleep 2"]})).await;
    let id = job["id"].as_str().unwrap();
    let running = srv.wait_for(id, 30, |s| s == "running").await;
    let attempt = running["current_attempt_id"].as_str().unwrap().to_owned();

    // The rogue joins the same pool with the real join token, too small to be given the job.
    let mut client = WorkerServiceClient::connect(srv.grpc.clone()).await.unwrap();
    let reg = client
        .register_worker(pb::RegisterWorkerRequest {
            instance_name: "rogue".into(),
            pool_id: "local".into(),
            version: "test".into(),
            capabilities: vec!["process".into()],
            resources: Some(pb::Resources { cpu_m: 1, memory_mb: 1, gpu: 0 }),
            slots: 1,
            labels: Default::default(),
            join_token: srv.join_token("local"),
        })
        .await
        .unwrap()
        .into_inner();
    // Without the token nothing registers, and a pool that does not exist answers the same.
    for (pool, token) in [("local", "hodei_wrongwrongwrongwrongwrongwrongwr".to_owned()), ("no-such-pool", srv.join_token("local"))] {
        let r = client
            .register_worker(pb::RegisterWorkerRequest {
                pool_id: pool.into(),
                join_token: token,
                resources: Some(pb::Resources { cpu_m: 1, memory_mb: 1, gpu: 0 }),
                slots: 1,
                ..Default::default()
            })
            .await;
        let status = r.expect_err("registered without the pool's token");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{pool}: {status:?}");
        assert!(status.message().contains("or no such pool"), "{status:?}");
    }
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let msg = |m: pb::worker_message::Msg| pb::WorkerMessage { msg: Some(m) };
    tx.send(msg(pb::worker_message::Msg::Hello(pb::Hello {
        worker_id: reg.worker_id.clone(),
        session_token: reg.session_token.clone(),
        running: vec![],
        unacked_results: vec![],
    })))
    .await
    .unwrap();
    let _stream = client.job_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap();
    for offset in [5, 0] {
        let chunk = pb::LogChunk { attempt_id: attempt.clone(), stream: pb::LogStream::Stdout as i32, offset, data: b"forged\n".to_vec() };
        tx.send(msg(pb::worker_message::Msg::Log(chunk))).await.unwrap();
    }
    // It also claims to have started the attempt and reports it failed.
    tx.send(msg(pb::worker_message::Msg::Accepted(pb::Accepted { attempt_id: attempt.clone(), started_at_ms: 1 }))).await.unwrap();
    let forged = pb::Result {
        attempt_id: attempt.clone(),
        outcome: pb::Outcome::Failed as i32,
        exit_code: Some(7),
        failure_reason: "nonzero_exit".into(),
        started_at_ms: 1,
        finished_at_ms: 2,
        ..Default::default()
    };
    tx.send(msg(pb::worker_message::Msg::Result(forged))).await.unwrap();

    // Every forged message is refused (counted), whatever the order they arrive in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = srv.http_client.get(format!("{}/metrics", srv.http)).send().await.unwrap().text().await.unwrap();
        let refused = |kind: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("hodei_worker_messages_refused_total{{kind=\"{kind}\"}}")))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let counts = [refused("log"), refused("accepted"), refused("result")];
        if counts == [2.0, 1.0, 1.0] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the forged messages were not refused (log, accepted, result: {counts:?})");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let text = srv.http_client.get(format!("{}/metrics", srv.http)).send().await.unwrap().text().await.unwrap();
    assert!(text.lines().any(|l| l == "hodei_scheduler_leader 1"), "the engine holds the scheduler lock and says so");
    let done = srv.wait_ended(id, 30).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let (_, logs) = srv.call(Method::GET, &format!("/jobs/{id}/logs"), None).await;
    let out: String = logs["chunks"].as_array().unwrap().iter().filter(|c| c["stream"] == "stdout").filter_map(|c| c["data"].as_str()).collect();
    assert_eq!(out, "real\n", "the job's output is its own worker's: {logs}");
}

/// An admin rotates a pool's join token: the old token stops registering workers at once, the
/// new one (shown once, kept 0600 in the data dir) registers, workers already registered keep
/// running, and a local worker started after the rotation joins with the new token.
#[tokio::test]
async fn a_rotated_join_token_replaces_the_old_one_at_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__WORKERS", "1")], 0, None);
    let old = srv.join_token("local");
    let before = register_with(&srv.grpc, "local", &old).await.expect("the token the server made registers");

    let (_, viewer) = principal(&srv, "vic", "viewer", "tenant:default").await;
    let (s, problem) = call(&srv, Some(&viewer), "post", "/pools/local/join-token", None).await;
    assert_eq!((s, problem["code"].as_str()), (403, Some("forbidden")), "{problem}");
    assert_eq!(srv.join_token("local"), old, "a refused rotation changes nothing");
    let (s, problem) = call(&srv, Some(&srv.token), "post", "/pools/nope/join-token", None).await;
    assert_eq!(s, 404, "{problem}");
    let (s, problem) = call(&srv, Some(&srv.token), "post", "/pools/local/join-token", Some(&json!({"token": "mine"}))).await;
    assert_eq!((s, problem["code"].as_str()), (400, Some("validation_failed")), "{problem}");
    assert_eq!(srv.join_token("local"), old, "a refused rotation changes nothing");

    let out = srv.cli(&["pools", "rotate-token", "local"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(new.starts_with("hodei_") && new.len() == 38 && new != old, "{new:?}");
    assert_eq!(srv.join_token("local"), new, "the data dir holds the new token");
    let mode = std::fs::metadata(dir.path().join("pool-local.token")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let refused = register_with(&srv.grpc, "local", &old).await.expect_err("the old token still registers");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let after = register_with(&srv.grpc, "local", &new).await.expect("the new token registers");
    assert_ne!(before, after);

    let (_, log) = srv.call(Method::GET, "/audit?limit=100", None).await;
    let entry = log["items"].as_array().unwrap().iter().find(|e| e["action"] == "pool.join_token.rotate").expect("the rotation is audited");
    assert_eq!((entry["actor"].as_str(), entry["target"].as_str()), (Some("admin"), Some("pool:local")), "{entry}");
    assert!(!log.to_string().contains(&new), "the audit log never holds the token");

    // The local worker registered before the rotation still runs jobs; killed after losing its
    // spooled identity (a replacement keeping it would not register at all), it is replaced
    // by one that registers with the new token and runs them too.
    let job = srv.submit(json!({"command": ["true"]})).await;
    assert_eq!(srv.wait_ended(job["id"].as_str().unwrap(), 30).await["state"], "succeeded");
    let pids: Vec<i32> = local_agents(dir.path()).into_iter().map(|(pid, _)| pid).collect();
    assert_eq!(pids.len(), 1, "one local worker: {pids:?}");
    std::fs::remove_file(dir.path().join("workers/local-0/identity")).unwrap();
    unsafe { libc::kill(pids[0], libc::SIGKILL) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, workers) = srv.call(Method::GET, "/workers?limit=100", None).await;
        let registered = workers["items"].as_array().unwrap().iter().filter(|w| w["instance_name"] == "local-0").count();
        if registered == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no replacement local worker registered: {workers}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let job = srv.submit(json!({"command": ["true"]})).await;
    let done = srv.wait_ended(job["id"].as_str().unwrap(), 60).await;
    assert_eq!(done["state"], "succeeded", "{done}");

    // A pool whose token the configuration file sets is rotated there, not through the API.
    drop(srv);
    let dir = tempfile::tempdir().unwrap();
    let yaml = "resource_pools:\n  pools:\n    - id: fixed\n      join_token: hodei_fixedfixedfixedfixedfixedfixedfi\n      worker_template: { cpu_m: 1000, memory_mb: 512, slots: 1 }\n      min_size: 0\n      max_size: 1\n";
    let srv = Server::start(dir.path(), &[], 0, Some(yaml));
    let (s, problem) = call(&srv, Some(&srv.token), "post", "/pools/fixed/join-token", None).await;
    assert_eq!((s, problem["code"].as_str()), (409, Some("conflict")), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("configuration file"), "{problem}");
    register_with(&srv.grpc, "fixed", "hodei_fixedfixedfixedfixedfixedfixedfi").await.expect("the configured token still registers");
}

/// A throwaway CA, a server certificate for 127.0.0.1 and a worker's client certificate, as PEM
/// files in `dir`: `ca.pem`, `server.pem`/`server.key`, `worker.pem`/`worker.key`.
fn make_certs(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, sans) in [("server", vec!["localhost".to_owned(), "127.0.0.1".to_owned()]), ("worker", vec!["worker-1".to_owned()])] {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(sans).unwrap().signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

fn tls_env(certs: &std::path::Path, client_ca: bool) -> Vec<(&'static str, String)> {
    let p = |f: &str| certs.join(f).to_string_lossy().into_owned();
    let mut env = vec![("HODEI_SERVER__TLS__CERT_FILE", p("server.pem")), ("HODEI_SERVER__TLS__KEY_FILE", p("server.key"))];
    if client_ca {
        env.push(("HODEI_SERVER__TLS__CLIENT_CA_FILE", p("ca.pem")));
    }
    env
}

/// `server.tls`: REST and gRPC over TLS with a generated CA. The CLI submits and waits over
/// https with `--ca-file`; a remote worker with a client certificate runs the job; a worker
/// without one, a client that does not trust the CA, and plaintext to the TLS ports all fail.
#[tokio::test]
async fn rest_and_grpc_are_served_over_tls_and_workers_need_a_client_certificate() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let dir = tempfile::tempdir().unwrap();
    let env = tls_env(certs.path(), true);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let srv = Server::start(dir.path(), &env, 0, Some(REMOTE_POOL));
    let https = srv.http.replace("http://", "https://");
    let grpcs = srv.grpc.replace("http://", "https://");
    let ca = certs.path().join("ca.pem");
    let ca_arg = ca.as_os_str();
    let (cert, key) = (certs.path().join("worker.pem"), certs.path().join("worker.key"));
    let _worker = WorkerProc::start_with(
        &grpcs,
        "remote",
        &srv.join_token("remote"),
        2,
        &[],
        &["--ca-file".as_ref(), ca_arg, "--cert-file".as_ref(), cert.as_os_str(), "--key-file".as_ref(), key.as_os_str()],
    );
    let cli = |srv: &Server, server: &str, ca: Option<&std::path::Path>, args: &[&str]| {
        let mut c = std::process::Command::new(BIN);
        c.args(args).env("HODEI_SERVER", server).env("HODEI_TOKEN", &srv.token).env_remove("HODEI_CA_FILE");
        if let Some(ca) = ca {
            c.env("HODEI_CA_FILE", ca);
        }
        c.output().unwrap()
    };
    let out = cli(&srv, &https, Some(&ca), &["submit", "--wait", "--", "echo", "over tls"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls\n");

    // Not trusting the CA, or speaking plaintext to the TLS port, fails and says so.
    let out = cli(&srv, &https, None, &["jobs", "ls"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the server"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&srv, &srv.http, None, &["jobs", "ls"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the server"), "{}", String::from_utf8_lossy(&out.stderr));

    // gRPC: without a client certificate, or in plaintext, a worker never registers.
    use hodei_proto::v1 as pb;
    let register = |ep: tonic::transport::Endpoint| {
        let token = srv.join_token("remote");
        async move {
            let channel = ep.connect().await?;
            let mut c = pb::worker_service_client::WorkerServiceClient::new(channel);
            let req = pb::RegisterWorkerRequest {
                pool_id: "remote".into(),
                join_token: token,
                resources: Some(pb::Resources { cpu_m: 1, memory_mb: 1, gpu: 0 }),
                slots: 1,
                ..Default::default()
            };
            c.register_worker(req).await.map(|_| ()).map_err(anyhow::Error::from)
        }
    };
    let ca_pem = std::fs::read(&ca).unwrap();
    let no_cert = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem));
    let ep = tonic::transport::Endpoint::from_shared(grpcs.clone()).unwrap().tls_config(no_cert).unwrap();
    assert!(register(ep).await.is_err(), "registered without a client certificate");
    let ep = tonic::transport::Endpoint::from_shared(srv.grpc.clone()).unwrap();
    assert!(register(ep).await.is_err(), "registered in plaintext");
    let identity = tonic::transport::Identity::from_pem(std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    let with_cert = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem)).identity(identity);
    let ep = tonic::transport::Endpoint::from_shared(grpcs).unwrap().tls_config(with_cert).unwrap();
    register(ep).await.expect("a worker with a client certificate registers");
    drop(srv);

    // The built-in pool's workers reach a TLS server too (Server::start waits for them), and
    // run jobs submitted over https.
    let dir = tempfile::tempdir().unwrap();
    let env = tls_env(certs.path(), false);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__WORKERS", "1"));
    let srv = Server::start(dir.path(), &env, 0, None);
    let out = cli(&srv, &srv.http.replace("http://", "https://"), Some(&ca), &["submit", "--wait", "--", "echo", "local"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "local\n");
}

/// A TLS setting the server cannot act on stops it with the key's path, never a plaintext start.
#[test]
fn a_server_whose_tls_files_are_missing_refuses_to_start_rather_than_serve_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, std::path::PathBuf)]| {
        let mut c = std::process::Command::new(BIN);
        c.args(["server", "--data-dir"]).arg(dir.path()).args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"]);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let cert = ("HODEI_SERVER__TLS__CERT_FILE", dir.path().join("cert.pem"));
    let key = ("HODEI_SERVER__TLS__KEY_FILE", dir.path().join("key.pem"));
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    for (env, want) in [
        (vec![cert.clone(), key.clone()], "server.tls.cert_file: cannot read"),
        (vec![cert.clone()], "server.tls: cert_file and key_file go together"),
        (vec![("HODEI_SERVER__TLS__CLIENT_CA_FILE", dir.path().join("ca.pem"))], "server.tls.client_ca_file: needs"),
    ] {
        let out = run(&env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "the server started: {stderr}");
        assert!(stderr.contains(want), "{want}: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"), "it never said ready");
    }
}

/// A job of the built-in pool sees neither the server's environment nor its data dir: it runs in
/// a scratch directory outside the data dir with the documented base environment only, and —
/// the server running as root, as in CI — as `nobody`, so not even an absolute path reaches the
/// admin token, the join tokens, the database, its WAL or another tenant's log files.
#[tokio::test]
async fn a_job_runs_outside_the_data_dir_without_the_servers_environment() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("HODEI_RESOURCE_POOLS__BUILTIN_LOCAL__WORKERS", "1"), ("SERVER_ONLY_CANARY", "s3cret")], 0, None);
    let data_dir = std::fs::canonicalize(dir.path()).unwrap();
    // Another tenant's job leaves output in the data dir's log files.
    admin(&srv, "POST", "/tenants", json!({"id": "other", "name": "Other"})).await;
    let theirs = srv.submit(json!({"tenant_id": "other", "command": ["echo", "other-tenants-secret-output"]})).await;
    assert_eq!(srv.wait_ended(theirs["id"].as_str().unwrap(), 30).await["state"], "succeeded");
    let script = "id -u; pwd; env | cut -d= -f1 | sort | tr '\\n' ' '; echo; \
                  for f in admin.token pool-local.token hodei.db; do \
                  for up in . .. ../.. ../../.. ../../../..; do cat $up/$f >/dev/null 2>&1 && echo READ $up/$f; done; done; \
                  for f in admin.token pool-local.token hodei.db hodei.db-wal; do cat \"$1/$f\" >/dev/null 2>&1 && echo READ $1/$f; done; \
                  grep -rl other-tenants-secret-output \"$1\" 2>/dev/null | sed 's/^/READ /'; true";
    let job = srv.submit(json!({"command": ["sh", "-c", script, "probe", data_dir], "env": {"MINE": "1"}})).await;
    let id = job["id"].as_str().unwrap();
    let done = srv.wait_ended(id, 30).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let (_, logs) = srv.call(Method::GET, &format!("/jobs/{id}/logs"), None).await;
    let out: String = logs["chunks"].as_array().unwrap().iter().filter(|c| c["stream"] == "stdout").filter_map(|c| c["data"].as_str()).collect();
    let mut lines = out.lines();
    let uid: u32 = lines.next().unwrap().parse().unwrap();
    let cwd = lines.next().unwrap();
    assert!(!std::path::Path::new(cwd).starts_with(&data_dir), "the job ran inside the data dir: {cwd}");
    let vars: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert!(!vars.contains(&"SERVER_ONLY_CANARY"), "the server's environment leaked into the job: {vars:?}");
    assert!(vars.iter().all(|v| ["PATH", "HOME", "LANG", "TMPDIR", "MINE", "PWD", "SHLVL", "_"].contains(v) || v.starts_with("HODEI_")), "{vars:?}");
    assert!(vars.contains(&"MINE") && vars.contains(&"PATH"), "{vars:?}");
    let reads: Vec<&str> = out.lines().filter(|l| l.starts_with("READ ")).collect();
    let relative: Vec<&&str> = reads.iter().filter(|l| !l.contains(data_dir.to_str().unwrap())).collect();
    assert!(relative.is_empty(), "the job reached the server's files by relative path: {relative:?}");
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(uid, 65534, "a root server runs jobs as nobody by default");
        assert!(reads.is_empty(), "the job read the server's files: {reads:?}");
    } else {
        // Without root there is no other user to switch to: the job runs as the server's user.
        eprintln!("not root: jobs run as this user, so the absolute-path reads are not asserted");
        assert_eq!(uid, unsafe { libc::geteuid() });
    }
}

/// `/metrics` names every tenant and pool; with `metrics.prometheus.bearer_token` set, both the
/// metrics port and the API port's `/metrics` answer only a scraper that sends it.
#[tokio::test]
async fn metrics_need_the_configured_bearer_token_on_both_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let secret = "scrape-secret-0123456789";
    let srv = Server::start(dir.path(), &[("HODEI_METRICS__PROMETHEUS__PORT", &port), ("HODEI_METRICS__PROMETHEUS__BEARER_TOKEN", secret)], 0, None);
    assert_ne!(srv.metrics, srv.http, "a metrics listener of its own");
    for base in [&srv.http, &srv.metrics] {
        let get = |auth: Option<String>| {
            let mut r = srv.http_client.get(format!("{base}/metrics"));
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            r.send()
        };
        for auth in [None, Some("Bearer wrong".to_owned()), Some(format!("Bearer {}", srv.token))] {
            let r = get(auth.clone()).await.unwrap();
            assert_eq!(r.status(), 401, "{base} with {auth:?}");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            assert!(r.text().await.unwrap().contains("metrics.prometheus.bearer_token"));
        }
        let r = get(Some(format!("bearer {secret}"))).await.unwrap();
        assert_eq!(r.status(), 200, "{base}");
        assert!(r.text().await.unwrap().contains("hodei_jobs_submitted_total"), "{base}");
    }
}
