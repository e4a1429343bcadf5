//! The web dashboard in a real headless Chromium (Debian's `chromium`), driven by playwright-core
//! from npm (`crates/hodei/tests/ui/`, installed by `.ci/run`): sign-in, a CLI-submitted job
//! appearing and finishing, live logs, cancel, role-scoped buttons, tenant isolation, escaping,
//! accessibility basics, the narrow layout, and a screenshot of every page
//! (`target/ui-screenshots/`). The browser steps are in `ui/e2e.mjs`; this test starts the real
//! server and the principals they need. Without Chromium or the npm packages it says SKIPPED,
//! and fails under `CI=true`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Server, free_port};
use reqwest::Method;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Chromium and the test's npm packages, or `None` (SKIPPED outside CI).
fn browser() -> Option<PathBuf> {
    let chromium = ["chromium", "chromium-browser"]
        .iter()
        .find_map(|n| std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(n)).find(|p| p.is_file())));
    let npm = repo().join("crates/hodei/tests/ui/node_modules/playwright-core");
    let node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let missing = match (&chromium, npm.is_dir(), node) {
        (None, _, _) => Some("chromium (Debian: apt-get install chromium)"),
        (_, _, false) => Some("node (Debian: apt-get install nodejs npm)"),
        (_, false, _) => Some("playwright-core (npm ci --prefix crates/hodei/tests/ui)"),
        _ => None,
    };
    if let Some(what) = missing {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: {what} is required (.ci/run installs it)");
        eprintln!("SKIPPED: {what} not found");
        return None;
    }
    chromium
}

async fn admin(srv: &Server, method: Method, path: &str, body: Value) -> Value {
    let (status, v) = srv.call(method, path, Some(body)).await;
    assert!((200..300).contains(&status), "{path}: {status} {v}");
    v
}

/// A principal with one role and a token of its own.
async fn principal(srv: &Server, name: &str, role: &str, scope: &str) -> String {
    let p = admin(srv, Method::POST, "/principals", json!({"name": name, "kind": "user", "role_bindings": [{"role": role, "scope": scope}]})).await;
    let t = admin(srv, Method::POST, "/tokens", json!({"name": format!("{name}-token"), "principal_id": p["id"]})).await;
    t["secret"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_in_a_real_browser() {
    let Some(chromium) = browser() else { return };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], free_port(), None);
    admin(&srv, Method::POST, "/tenants", json!({"id": "other", "name": "Other lab"})).await;
    let viewer = principal(&srv, "vera", "viewer", "tenant:default").await;
    let other = srv.submit(json!({"tenant_id": "other", "name": "theirs", "command": ["true"]})).await;
    let shots = repo().join("target/ui-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let work = tempfile::tempdir().unwrap();

    let out = Command::new("node")
        .arg(repo().join("crates/hodei/tests/ui/e2e.mjs"))
        .current_dir(work.path())
        .env("HODEI_URL", &srv.http)
        .env("HODEI_BIN", common::BIN)
        .env("HODEI_SERVER", &srv.http)
        .env("HODEI_TOKEN", &srv.token)
        .env("XDG_CONFIG_HOME", dir.path().join("no-cli-config"))
        .env("VIEWER_TOKEN", &viewer)
        .env("OTHER_JOB", other["id"].as_str().unwrap())
        .env("CHROMIUM", &chromium)
        .env("SHOTS", &shots)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "the browser steps failed (above)");
    for page in ["overview", "jobs", "job", "tenants", "tenant", "pools", "pool", "costs", "signin", "overview-narrow"] {
        assert!(shots.join(format!("{page}.png")).is_file(), "no screenshot of {page}");
    }
}
