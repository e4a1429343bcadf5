//! Observability settings (SPEC §4.7): the effective `metrics.prometheus` and `observability`
//! configuration (secrets as whether they are set), and pushing the dashboards to a Grafana
//! over its HTTP API.

use std::path::PathBuf;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Who;
use crate::error::{ApiError, ApiResult, ErrorCode};

/// `observability.grafana`, when enabled.
#[derive(Clone, Debug)]
pub struct GrafanaSettings {
    pub url: String,
    pub api_key: Option<String>,
    /// `None`: the built-in dashboards.
    pub dashboards_dir: Option<PathBuf>,
    pub folder: String,
}

/// What `GET /observability/config` shows: the effective settings, secrets as whether they
/// are set.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct ObservabilityView {
    #[schema(value_type = Object)]
    pub metrics: Value,
    #[schema(value_type = Object)]
    pub observability: Value,
    /// Keys set through the API over the configuration file (none: overrides are not
    /// supported yet, the file and environment decide everything).
    pub overridden_keys: Vec<String>,
}

/// The dashboards of `deploy/grafana/dashboards/`, built in.
pub const DASHBOARDS: [(&str, &str); 5] = [
    ("hodei-overview", include_str!("../../../../deploy/grafana/dashboards/hodei-overview.json")),
    ("hodei-tenants", include_str!("../../../../deploy/grafana/dashboards/hodei-tenants.json")),
    ("hodei-pools", include_str!("../../../../deploy/grafana/dashboards/hodei-pools.json")),
    ("hodei-sla", include_str!("../../../../deploy/grafana/dashboards/hodei-sla.json")),
    ("hodei-cost", include_str!("../../../../deploy/grafana/dashboards/hodei-cost.json")),
];

/// The effective observability configuration (admins only).
#[utoipa::path(get, path = "/observability/config", responses((status = 200, body = ObservabilityView), (status = 403, body = crate::error::Problem)), tag = "observability")]
pub async fn get_config(State(s): State<ApiState>, who: Who) -> ApiResult<Json<ObservabilityView>> {
    who.must_be_admin("reading the observability configuration (admins only)")?;
    Ok(Json(s.cfg.observability.clone()))
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SyncFailure {
    /// The dashboard's uid.
    pub dashboard: String,
    pub error: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SyncResult {
    /// Uids of the dashboards Grafana took.
    pub uploaded: Vec<String>,
    pub errors: Vec<SyncFailure>,
}

/// Pushes the dashboards (built in, or `observability.grafana.dashboards_dir`) to the
/// configured Grafana, into `observability.grafana.folder` (made if missing), replacing the
/// versions there (admins only).
#[utoipa::path(
    post,
    path = "/observability/grafana/sync",
    responses((status = 200, body = SyncResult), (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 502, body = crate::error::Problem)),
    tag = "observability"
)]
pub async fn grafana_sync(State(s): State<ApiState>, who: Who) -> ApiResult<Json<SyncResult>> {
    who.must_be_admin("pushing dashboards to Grafana (admins only)")?;
    let Some(g) = s.cfg.grafana.clone() else {
        return Err(ApiError::new(ErrorCode::Conflict, "Grafana is not configured (observability.grafana.enabled: false)"));
    };
    push_dashboards(&g).await.map(Json)
}

/// Pushes the dashboards to the Grafana of `g`: what it took and what it refused; an error
/// when Grafana cannot be reached or the dashboards cannot be read.
pub async fn push_dashboards(g: &GrafanaSettings) -> ApiResult<SyncResult> {
    let dashboards = dashboards(g)?;
    sync(g, dashboards).await
}

/// The dashboards to push: the built-in ones, or every `*.json` of the directory (by name).
fn dashboards(g: &GrafanaSettings) -> ApiResult<Vec<(String, Value)>> {
    let parse = |name: &str, text: &str| -> ApiResult<(String, Value)> {
        let v: Value = serde_json::from_str(text).map_err(|e| ApiError::new(ErrorCode::Conflict, format!("dashboard {name} is not JSON: {e}")))?;
        let uid = v["uid"].as_str().unwrap_or(name).to_owned();
        Ok((uid, v))
    };
    let Some(dir) = &g.dashboards_dir else {
        return DASHBOARDS.iter().map(|(name, text)| parse(name, text)).collect();
    };
    let unreadable = |e: std::io::Error| ApiError::new(ErrorCode::Conflict, format!("observability.grafana.dashboards_dir {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(unreadable)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
    files.sort();
    files.iter().map(|f| parse(&f.display().to_string(), &std::fs::read_to_string(f).map_err(unreadable)?)).collect()
}

async fn sync(g: &GrafanaSettings, dashboards: Vec<(String, Value)>) -> ApiResult<SyncResult> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().map_err(|e| unreachable(g, e))?;
    let base = g.url.trim_end_matches('/');
    let auth = |r: reqwest::RequestBuilder| match &g.api_key {
        Some(k) => r.bearer_auth(k),
        None => r,
    };
    // The folder, found by title or made.
    let folders: Value = auth(client.get(format!("{base}/api/folders")))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| unreachable(g, e))?
        .json()
        .await
        .map_err(|e| unreachable(g, e))?;
    let existing = folders.as_array().and_then(|f| f.iter().find(|f| f["title"] == g.folder.as_str())).and_then(|f| f["uid"].as_str()).map(String::from);
    let folder_uid = match existing {
        Some(uid) => uid,
        None => {
            let made: Value = auth(client.post(format!("{base}/api/folders")))
                .json(&json!({"title": g.folder}))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| unreachable(g, e))?
                .json()
                .await
                .map_err(|e| unreachable(g, e))?;
            made["uid"]
                .as_str()
                .map(String::from)
                .ok_or_else(|| ApiError::new(ErrorCode::BadGateway, format!("Grafana at {base} made folder {:?} without a uid", g.folder)))?
        }
    };
    let mut out = SyncResult { uploaded: Vec::new(), errors: Vec::new() };
    for (uid, mut dashboard) in dashboards {
        // Grafana matches by uid; an `id` from another instance would clash.
        dashboard["id"] = Value::Null;
        let body = json!({"dashboard": dashboard, "folderUid": folder_uid, "overwrite": true, "message": "pushed by hodei"});
        match auth(client.post(format!("{base}/api/dashboards/db"))).json(&body).send().await {
            Ok(r) if r.status().is_success() => out.uploaded.push(uid),
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                out.errors.push(SyncFailure { dashboard: uid, error: format!("{status}: {}", text.chars().take(300).collect::<String>()) });
            }
            Err(e) => out.errors.push(SyncFailure { dashboard: uid, error: e.to_string() }),
        }
    }
    Ok(out)
}

fn unreachable(g: &GrafanaSettings, e: reqwest::Error) -> ApiError {
    ApiError::new(ErrorCode::BadGateway, format!("Grafana at {}: {e}", g.url))
}
