//! `hodei whoami`, `hodei tokens …`, `hodei principals …`: identity over the REST API.

use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{s, table};
use crate::{ClientOpts, print_json};

#[derive(Subcommand)]
pub enum TokensCmd {
    /// Create an API token; its secret is printed once (alone on stdout, so it can be captured).
    Create {
        name: String,
        /// Whose token (admins only; default: yours).
        #[arg(long)]
        principal: Option<String>,
        /// Expires after this many days (default: the server's auth.token_default_ttl_days).
        #[arg(long)]
        expires_in_days: Option<i64>,
    },
    /// Your tokens (admins: anyone's with --principal).
    Ls {
        #[arg(long)]
        principal: Option<String>,
    },
    /// Revoke a token: the next request with it is refused.
    Revoke { id: String },
}

#[derive(Subcommand)]
pub enum PrincipalsCmd {
    /// Create a user or service principal (admins only).
    Create {
        name: String,
        /// user|service
        #[arg(long, default_value = "user")]
        kind: String,
        /// ROLE=SCOPE, e.g. researcher=tenant:team-a or admin=global; repeatable.
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    Ls,
    Get {
        id: String,
    },
    /// Replace a principal's role bindings (ROLE=SCOPE, repeatable; none removes all).
    Roles {
        id: String,
        #[arg(long = "role")]
        roles: Vec<String>,
    },
}

fn bindings(roles: &[String]) -> anyhow::Result<Value> {
    let mut out = Vec::new();
    for r in roles {
        let Some((role, scope)) = r.split_once('=') else {
            return Err(crate::client::fail_usage(&format!("--role {r:?}: expected ROLE=SCOPE, e.g. researcher=tenant:team-a")));
        };
        out.push(json!({"role": role, "scope": scope}));
    }
    Ok(Value::Array(out))
}

fn roles_text(p: &Value) -> String {
    p["role_bindings"].as_array().map(|bs| bs.iter().map(|b| format!("{}={}", s(b, "role"), s(b, "scope"))).collect::<Vec<_>>().join(",")).unwrap_or_default()
}

fn show(c: &ClientOpts, v: &Value, headers: &[&str], row: impl Fn(&Value) -> Vec<String>) {
    if c.output.structured() {
        print_json(v);
    } else if let Some(items) = v["items"].as_array() {
        table(headers, items.iter().map(&row).collect());
    } else {
        table(headers, vec![row(v)]);
    }
}

pub async fn whoami(c: ClientOpts) -> anyhow::Result<i32> {
    let v = c.client()?.get("/whoami").await?;
    show(&c, &v, &["PRINCIPAL", "NAME", "KIND", "ROLES"], |p| vec![s(p, "principal_id"), s(p, "name"), s(p, "kind"), roles_text(p)]);
    Ok(0)
}

pub async fn tokens(c: ClientOpts, cmd: TokensCmd) -> anyhow::Result<i32> {
    let cl = c.client()?;
    let row = |t: &Value| vec![s(t, "id"), s(t, "name"), s(t, "prefix"), s(t, "principal_id"), s(t, "expires_at"), s(t, "last_used_at")];
    let headers = ["ID", "NAME", "PREFIX", "PRINCIPAL", "EXPIRES", "LAST USED"];
    match cmd {
        TokensCmd::Create { name, principal, expires_in_days } => {
            let mut body = json!({"name": name});
            if let Some(p) = principal {
                body["principal_id"] = json!(p);
            }
            if let Some(d) = expires_in_days {
                body["expires_in_days"] = json!(d);
            }
            let t = cl.post("/tokens", &body).await?;
            if c.output.structured() {
                print_json(&t);
            } else {
                println!("{}", s(&t, "secret"));
                eprintln!("token {} created; the secret above is shown only once", s(&t, "id"));
            }
        }
        TokensCmd::Ls { principal } => {
            let path = match principal {
                Some(p) => format!("/tokens?principal_id={p}&limit=500"),
                None => "/tokens?limit=500".to_owned(),
            };
            show(&c, &cl.get(&path).await?, &headers, row);
        }
        TokensCmd::Revoke { id } => {
            cl.delete(&format!("/tokens/{id}")).await?;
            eprintln!("token {id} revoked");
        }
    }
    Ok(0)
}

pub async fn principals(c: ClientOpts, cmd: PrincipalsCmd) -> anyhow::Result<i32> {
    let cl = c.client()?;
    let row = |p: &Value| vec![s(p, "id"), s(p, "name"), s(p, "kind"), roles_text(p)];
    let headers = ["ID", "NAME", "KIND", "ROLES"];
    let v = match cmd {
        PrincipalsCmd::Create { name, kind, roles } => cl.post("/principals", &json!({"name": name, "kind": kind, "role_bindings": bindings(&roles)?})).await?,
        PrincipalsCmd::Ls => cl.get("/principals?limit=500").await?,
        PrincipalsCmd::Get { id } => cl.get(&format!("/principals/{id}")).await?,
        PrincipalsCmd::Roles { id, roles } => cl.put(&format!("/principals/{id}/roles"), &json!({"role_bindings": bindings(&roles)?})).await?,
    };
    show(&c, &v, &headers, row);
    Ok(0)
}

/// `hodei ui [PAGE]`: the dashboard signed in with this CLI's token. The token travels in the
/// link's fragment (`#token=…`), which the browser keeps to itself and the page moves to the
/// tab's session storage; the link is a secret, so it is printed only with `--print` or when
/// no browser can be started.
pub async fn ui(c: ClientOpts, page: Option<String>, print: bool) -> anyhow::Result<i32> {
    let cl = c.client()?;
    let who = cl.get("/whoami").await?;
    let token = cl.token().ok_or_else(|| anyhow::anyhow!("no token to sign in with: give --token, HODEI_TOKEN or `hodei login`"))?;
    let page = page.as_deref().unwrap_or("").trim_start_matches('/').trim_start_matches("ui/");
    let link = format!("{}/ui/{page}#token={}", cl.base.trim_end_matches('/'), fragment_encode(token));
    if !print && open_browser(&link) {
        eprintln!("opened the dashboard signed in as {}", s(&who, "name"));
        return Ok(0);
    }
    eprintln!("the dashboard, signed in as {} (this link holds your token: do not share it):", s(&who, "name"));
    println!("{link}");
    Ok(0)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn fragment_encode(v: &str) -> String {
    v.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// `$BROWSER`, else the desktop's opener; false when none could be started.
fn open_browser(link: &str) -> bool {
    let mut candidates: Vec<String> = std::env::var("BROWSER").ok().into_iter().flat_map(|b| b.split(':').map(str::to_owned).collect::<Vec<_>>()).collect();
    candidates.extend([if cfg!(target_os = "macos") { "open" } else { "xdg-open" }.to_owned()]);
    candidates.iter().filter(|c| !c.is_empty()).any(|cmd| {
        std::process::Command::new(cmd)
            .arg(link)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|st| st.success())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_token_survives_the_fragment() {
        assert_eq!(super::fragment_encode("hodei_Ab-9._~"), "hodei_Ab-9._~");
        assert_eq!(super::fragment_encode("a b/c#d%"), "a%20b%2Fc%23d%25");
    }
}
