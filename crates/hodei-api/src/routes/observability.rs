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
    /// Keys set through `PUT /observability/config`, over the configuration file and the
    /// environment, with their values.
    #[schema(value_type = Object)]
    pub overrides: serde_json::Map<String, Value>,
    /// The keys of `overrides`.
    pub overridden_keys: Vec<String>,
    /// Keys whose stored value is not the one the server runs with: they take effect at the
    /// next start.
    pub restart_required: Vec<String>,
}

/// What a key of `PUT /observability/config` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Takes {
    Bool,
    Port,
    UrlPath,
    Url,
    Dir,
    Text,
}

/// The keys `PUT /observability/config` may set. Secrets (`metrics.prometheus.bearer_token`,
/// `observability.grafana.api_key`) are not among them: they stay in the configuration file or
/// its environment, never in the database.
const OVERRIDABLE: &[(&str, Takes)] = &[
    ("metrics.prometheus.enabled", Takes::Bool),
    ("metrics.prometheus.port", Takes::Port),
    ("metrics.prometheus.path", Takes::UrlPath),
    ("observability.grafana.enabled", Takes::Bool),
    ("observability.grafana.url", Takes::Url),
    ("observability.grafana.dashboards_dir", Takes::Dir),
    ("observability.grafana.folder", Takes::Text),
    ("observability.alerting.enabled", Takes::Bool),
    ("observability.alerting.prometheus_alerts_dir", Takes::Dir),
    ("observability.alerting.alertmanager_url", Takes::Url),
];
const SECRETS: &[&str] = &["metrics.prometheus.bearer_token", "observability.grafana.api_key"];

/// Key paths and values of a nested JSON object (`{"a": {"b": 1}}` → `a.b = 1`).
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                flatten(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out);
            }
        }
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

/// Checks one key's value: `None` when it is what the key takes.
fn wrong(takes: Takes, v: &Value) -> Option<&'static str> {
    let ok = match takes {
        Takes::Bool => v.is_boolean(),
        Takes::Port => v.as_u64().is_some_and(|p| p <= u64::from(u16::MAX)),
        Takes::UrlPath => v.as_str().is_some_and(|p| p.starts_with('/') && !p.contains(char::is_whitespace)),
        Takes::Url => v.as_str().is_some_and(|u| (u.starts_with("http://") || u.starts_with("https://")) && !u.contains(char::is_whitespace)),
        Takes::Dir => v.as_str().is_some_and(|d| d.starts_with('/')),
        Takes::Text => v.as_str().is_some_and(|t| !t.trim().is_empty()),
    };
    (!ok).then_some(match takes {
        Takes::Bool => "true or false",
        Takes::Port => "a port number, 0 to 65535",
        Takes::UrlPath => "a path starting with /",
        Takes::Url => "an http:// or https:// URL",
        Takes::Dir => "an absolute directory path",
        Takes::Text => "a non-empty string",
    })
}

/// The value at a key path of the running view.
fn running<'a>(view: &'a ObservabilityView, key: &str) -> Option<&'a Value> {
    let (first, rest) = key.split_once('.')?;
    let root = match first {
        "metrics" => &view.metrics,
        "observability" => &view.observability,
        _ => return None,
    };
    rest.split('.').try_fold(root, |v, k| v.get(k))
}

async fn stored(s: &ApiState) -> ApiResult<serde_json::Map<String, Value>> {
    match s.store.setting_overrides().await? {
        None => Ok(Default::default()),
        Some(body) => serde_json::from_str(&body).map_err(|e| ApiError::new(ErrorCode::Internal, format!("stored settings overrides are not JSON: {e}"))),
    }
}

async fn view(s: &ApiState) -> ApiResult<ObservabilityView> {
    let mut v = s.cfg.observability.clone();
    let overrides = stored(s).await?;
    v.restart_required = overrides.iter().filter(|(k, val)| running(&v, k) != Some(val)).map(|(k, _)| k.clone()).collect();
    v.overridden_keys = overrides.keys().cloned().collect();
    v.overrides = overrides;
    Ok(v)
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
    view(&s).await.map(Json)
}

/// Sets keys of `metrics.prometheus`, `observability.grafana` and `observability.alerting`
/// over the configuration file (a `null` removes a key's override); they are stored and take
/// effect at the next start, which `restart_required` lists. Secrets are refused: they stay in
/// the configuration file or its environment (admins only).
#[utoipa::path(
    put,
    path = "/observability/config",
    request_body(content = Object, description = "the keys to set, shaped as in the configuration file, e.g. {\"observability\": {\"grafana\": {\"folder\": \"Ops\"}}}"),
    responses((status = 200, body = ObservabilityView), (status = 400, body = crate::error::Problem), (status = 403, body = crate::error::Problem)),
    tag = "observability"
)]
pub async fn put_config(State(s): State<ApiState>, who: Who, crate::json::ApiJson(body): crate::json::ApiJson<Value>) -> ApiResult<Json<ObservabilityView>> {
    who.must_be_admin("changing the observability configuration (admins only)")?;
    if !body.is_object() {
        return Err(ApiError::field("/", "not an object", "an object shaped as the configuration file", None));
    }
    let mut keys = Vec::new();
    flatten("", &body, &mut keys);
    let mut errors = Vec::new();
    let mut overrides = stored(&s).await?;
    for (key, value) in keys {
        let pointer = format!("/{}", key.replace('.', "/"));
        if SECRETS.contains(&key.as_str()) {
            errors.push(hodei_core::spec::FieldError::new(
                &pointer,
                "a secret is not stored in the database",
                "set it in the configuration file or its environment",
                None,
            ));
            continue;
        }
        let Some((_, takes)) = OVERRIDABLE.iter().find(|(k, _)| *k == key) else {
            let known = OVERRIDABLE.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ");
            errors.push(hodei_core::spec::FieldError::new(&pointer, "not a key that can be set here", format!("one of {known}"), None));
            continue;
        };
        if value.is_null() {
            overrides.remove(&key);
        } else if let Some(expected) = wrong(*takes, &value) {
            errors.push(hodei_core::spec::FieldError::new(&pointer, "bad value", expected, Some(value.to_string())));
        } else {
            overrides.insert(key, value);
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    // Grafana on needs a URL, from the override or the file.
    let mut probe = s.cfg.observability.clone();
    probe.overrides = overrides.clone();
    let effective = |k: &str| probe.overrides.get(k).or_else(|| running(&probe, k)).cloned().unwrap_or(Value::Null);
    if effective("observability.grafana.enabled") == Value::Bool(true) && !effective("observability.grafana.url").is_string() {
        return Err(ApiError::field("/observability/grafana/url", "Grafana needs a URL", "an http:// or https:// URL", None));
    }
    let text = Value::Object(overrides).to_string();
    s.store.put_setting_overrides(&text, s.clock.now()).await?;
    view(&s).await.map(Json)
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
    // A JSON answer, or Grafana named as what failed.
    let json_of = |r: reqwest::RequestBuilder| async move {
        let resp = r.send().await.and_then(|r| r.error_for_status()).map_err(|e| unreachable(g, e))?;
        resp.json::<Value>().await.map_err(|e| unreachable(g, e))
    };
    // The folder, found by title or made.
    let folders = json_of(auth(client.get(format!("{base}/api/folders")))).await?;
    let existing = folders.as_array().and_then(|f| f.iter().find(|f| f["title"] == g.folder.as_str())).and_then(|f| f["uid"].as_str()).map(String::from);
    let folder_uid = match existing {
        Some(uid) => uid,
        None => {
            let made = json_of(auth(client.post(format!("{base}/api/folders"))).json(&json!({"title": g.folder}))).await?;
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
