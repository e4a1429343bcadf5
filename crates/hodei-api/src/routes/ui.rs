//! The web dashboard at `/ui/`: a handful of static files compiled into the binary, a client of
//! the same `/api/v1` every other client uses (it has no endpoint of its own).
//!
//! Every page path under `/ui/` answers the same `index.html`; the script reads the path. Assets
//! live under `/ui/assets/<version>/`, the version a digest of all of them, so a browser may keep
//! them for a year and a new binary's files are new URLs. The token never reaches the server in a
//! URL: `/ui/#token=…` is a fragment, which browsers do not send.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::ApiState;
use crate::error::ApiError;

/// One embedded file: its name under `assets/<version>/`, its bytes and its media type.
struct Asset {
    name: &'static str,
    bytes: &'static [u8],
    media_type: &'static str,
}

macro_rules! asset {
    ($name:literal, $media:expr) => {
        Asset { name: $name, bytes: include_bytes!(concat!("../../ui/", $name)), media_type: $media }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("charts.js", JS),
    asset!("overview.js", JS),
    asset!("jobs.js", JS),
    asset!("tenants.js", JS),
    asset!("pools.js", JS),
    asset!("costs.js", JS),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
];

const INDEX: &str = include_str!("../../ui/index.html");

/// The first 12 hex digits of a SHA-256 over every asset's name and bytes.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut h = Sha256::new();
    for a in ASSETS {
        h.update(a.name.as_bytes());
        h.update((a.bytes.len() as u64).to_le_bytes());
        h.update(a.bytes);
    }
    hex::encode(h.finalize())[..12].to_owned()
});

static PAGE: LazyLock<String> = LazyLock::new(|| INDEX.replace("{{version}}", &VERSION));

/// Scripts and styles only from this origin (no inline script or style, no `eval`), requests
/// only to this origin, no framing, no plugins, no `<base>` rewriting, no form posts elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(page))
        .route("/ui/assets/{version}/{name}", get(asset))
        .route("/ui/{*path}", get(page))
}

fn secured(mut resp: Response, cache: &'static str) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

async fn page() -> Response {
    let resp = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE.as_str()).into_response();
    // Always asked again (it is small): it names the assets of the binary now serving.
    secured(resp, "no-cache")
}

async fn asset(Path((version, name)): Path<(String, String)>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) if version == *VERSION => secured(([(header::CONTENT_TYPE, a.media_type)], a.bytes).into_response(), "public, max-age=31536000, immutable"),
        // An asset of another version: a page loaded from an earlier binary; it reloads.
        _ => ApiError::not_found(format!("dashboard file {version}/{name}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_assets_that_exist() {
        let page = PAGE.as_str();
        assert!(!page.contains("{{"), "a placeholder left in index.html");
        let prefix = format!("/ui/assets/{}/", *VERSION);
        let named: Vec<&str> = page.split(&prefix).skip(1).map(|rest| rest.split('"').next().unwrap_or("")).collect();
        assert!(!named.is_empty());
        for n in named {
            assert!(ASSETS.iter().any(|a| a.name == n), "index.html names {n}, which is not embedded");
        }
    }

    #[test]
    fn every_module_a_script_imports_is_embedded() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.bytes).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let module = line.rsplit("from ").next().unwrap().trim_matches(|c| c == '\'' || c == '"' || c == ';' || c == ' ');
                let module = module.strip_prefix("./").unwrap_or_else(|| panic!("{}: import of {module}: only ./ modules are served", a.name));
                assert!(ASSETS.iter().any(|x| x.name == module), "{} imports {module}, which is not embedded", a.name);
            }
        }
    }

    #[test]
    fn no_script_writes_html_from_strings() {
        // Every text a page shows goes through text nodes (dom.js `h`): job names, labels and
        // log lines are anyone's text.
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.bytes).unwrap();
            for bad in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
                assert!(!text.contains(bad), "{} uses {bad}", a.name);
            }
        }
    }
}
