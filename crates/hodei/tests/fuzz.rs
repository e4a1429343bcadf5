//! Schemathesis (PyPI) against the server's own OpenAPI document: thousands of generated
//! requests across every operation, as an admin and as a researcher, against a server whose
//! pool has no workers (generated commands are stored, never run). Zero 5xx, and every answer's
//! status, content type and body as the document says; the server still answers afterwards.
//!
//! The fuzzer is `$HODEI_SCHEMATHESIS`, else `target/ci-venv/bin/schemathesis` (where `.ci/run`
//! installs it), else `schemathesis` on PATH; without one the test is skipped, except under
//! `CI=true`, where a missing fuzzer fails it.

mod common;

use common::*;
use serde_json::json;

fn schemathesis() -> Option<std::path::PathBuf> {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let on_path = std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join("schemathesis")).find(|f| f.exists()));
    let found = std::env::var_os("HODEI_SCHEMATHESIS")
        .map(std::path::PathBuf::from)
        .or_else(|| Some(workspace.join("target/ci-venv/bin/schemathesis")))
        .filter(|p| p.exists())
        .or(on_path);
    if found.is_none() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: schemathesis is required (.ci/run installs it in target/ci-venv)");
        eprintln!("SKIPPED: schemathesis not found (pip install schemathesis, or set HODEI_SCHEMATHESIS to its path)");
    }
    found
}

/// Runs the fuzzer with `token`; the number of cases it generated.
fn fuzz(st: &std::path::Path, srv: &Server, token: &str, report: &std::path::Path) -> u64 {
    let out = std::process::Command::new(st)
        .args(["run", &format!("{}/api/openapi.json", srv.http)])
        .args(["--checks", "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"])
        .args(["--max-examples", "20", "--seed", "20261204", "--no-color", "--report-dir"])
        .arg(report)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        // Its cache (.schemathesis/) goes with the report, not into the source tree.
        .current_dir(report.parent().unwrap())
        .output()
        .expect("run schemathesis");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    text.lines()
        .find_map(|l| l.trim().split_once(" generated, ").and_then(|(n, _)| n.parse::<u64>().ok()))
        .unwrap_or_else(|| panic!("no case count in schemathesis' summary:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_requests_never_get_a_5xx_or_an_undocumented_answer() {
    let Some(st) = schemathesis() else { return };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], 0, Some(REMOTE_POOL));
    let (s, p) = srv
        .call(
            reqwest::Method::POST,
            "/principals",
            Some(json!({"name": "rita", "kind": "user", "role_bindings": [{"role": "researcher", "scope": "tenant:default"}]})),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let (s, t) = srv.call(reqwest::Method::POST, "/tokens", Some(json!({"name": "fuzz", "principal_id": p["id"]}))).await;
    assert_eq!(s, 201, "{t}");
    let researcher = t["secret"].as_str().unwrap().to_owned();

    let admin_cases = tokio::task::block_in_place(|| fuzz(&st, &srv, &srv.token, &dir.path().join("report-admin")));
    let researcher_cases = tokio::task::block_in_place(|| fuzz(&st, &srv, &researcher, &dir.path().join("report-researcher")));
    assert!(admin_cases >= 2000 && researcher_cases >= 2000, "too few cases: admin {admin_cases}, researcher {researcher_cases}");

    let health = srv.http_client.get(format!("{}/health", srv.http)).send().await.unwrap();
    assert_eq!(health.status(), 200, "the server answers after the fuzzing");
    let (s, _) = srv.call(reqwest::Method::GET, "/whoami", None).await;
    assert_eq!(s, 200);
}
