//! CLI contexts, like kubectl's: `~/.config/hodei/config.yaml` (0600) names servers with their
//! token and CA file, one of them current. `hodei login` adds one, `hodei context use|ls|rm`
//! manage them; flags and `HODEI_SERVER` / `HODEI_TOKEN` / `HODEI_CA_FILE` override the context.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use serde::{Deserialize, Serialize};

use crate::client::{Client, TokenSource, table};

/// The server a CLI without any setting talks to.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Context {
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ContextFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// `$XDG_CONFIG_HOME/hodei/config.yaml`, else `$HOME/.config/hodei/config.yaml`.
pub fn path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("hodei").join("config.yaml"))
}

impl ContextFile {
    /// The file at `path`; a missing file is an empty one.
    pub fn load(path: &Path) -> anyhow::Result<ContextFile> {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => Ok(ContextFile::default()),
            Ok(text) => serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not a valid contexts file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ContextFile::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the file 0600 (its directory 0700) through a temporary file and a rename.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = path.parent().context("a contexts file needs a directory")?;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = path.with_extension("yaml.tmp");
        let text = serde_yaml_ng::to_string(self)?;
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }
}

/// What a client command was told on its command line or in its environment.
pub struct Overrides<'a> {
    pub server: Option<&'a str>,
    pub token: Option<&'a str>,
    pub ca_file: Option<&'a Path>,
    pub context: Option<&'a str>,
}

/// The client for a command: flags and environment over the context (`--context`, else the
/// current one) over the defaults (the loopback server and, on loopback, the data dir's admin
/// token).
pub fn client(o: Overrides<'_>) -> anyhow::Result<Client> {
    let file = match path() {
        Some(p) => ContextFile::load(&p)?,
        None => ContextFile::default(),
    };
    let name = o.context.map(str::to_owned).or(file.current_context.clone());
    let ctx = match &name {
        Some(n) => Some(file.contexts.get(n).with_context(|| format!("no context {n:?} (hodei context ls lists them)"))?),
        None => None,
    };
    let server = o.server.map(str::to_owned).or_else(|| ctx.map(|c| c.server.clone())).unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let token = match (o.token, ctx.and_then(|c| c.token.as_ref())) {
        (Some(t), _) => Some((t.to_owned(), TokenSource::Given)),
        (None, Some(t)) => Some((t.clone(), TokenSource::Context(name.clone().unwrap_or_default()))),
        (None, None) => None,
    };
    let ca_file = o.ca_file.map(Path::to_owned).or_else(|| ctx.and_then(|c| c.ca_file.clone()));
    Client::new(&server, token, ca_file.as_deref())
}

#[derive(Subcommand)]
pub enum ContextCmd {
    /// The contexts, the current one marked with `*`.
    Ls,
    /// Make a context the current one.
    Use { name: String },
    /// Forget a context (its token stays valid on the server: `hodei tokens revoke` ends it).
    Rm { name: String },
}

fn file_path() -> anyhow::Result<PathBuf> {
    path().context("neither XDG_CONFIG_HOME nor HOME is set: there is nowhere to keep contexts")
}

pub fn context(cmd: ContextCmd) -> anyhow::Result<i32> {
    let p = file_path()?;
    let mut f = ContextFile::load(&p)?;
    match cmd {
        ContextCmd::Ls => {
            let rows = f
                .contexts
                .iter()
                .map(|(n, c)| {
                    let current = if f.current_context.as_deref() == Some(n) { "*" } else { "" };
                    let ca = c.ca_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
                    vec![current.to_owned(), n.clone(), c.server.clone(), if c.token.is_some() { "yes" } else { "no" }.to_owned(), ca]
                })
                .collect();
            table(&["CURRENT", "NAME", "SERVER", "TOKEN", "CA FILE"], rows);
        }
        ContextCmd::Use { name } => {
            anyhow::ensure!(f.contexts.contains_key(&name), "no context {name:?} (hodei context ls lists them)");
            f.current_context = Some(name.clone());
            f.save(&p)?;
            eprintln!("switched to context {name:?}");
        }
        ContextCmd::Rm { name } => {
            anyhow::ensure!(f.contexts.remove(&name).is_some(), "no context {name:?} (hodei context ls lists them)");
            if f.current_context.as_deref() == Some(&name) {
                f.current_context = None;
            }
            f.save(&p)?;
            eprintln!("context {name:?} removed");
        }
    }
    Ok(0)
}

/// `hodei login`: checks the token against the server (`whoami`), then saves it as a context
/// and makes that context current.
pub async fn login(server: &str, token: Option<String>, ca_file: Option<PathBuf>, name: Option<String>) -> anyhow::Result<i32> {
    let token = match token {
        Some(t) => t,
        None => {
            eprint!("API token for {server}: ");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("reading the token from stdin")?;
            line.trim().to_owned()
        }
    };
    anyhow::ensure!(!token.is_empty(), "no token given (--token, HODEI_TOKEN or one line on stdin)");
    let who = Client::new(server, Some((token.clone(), TokenSource::Given)), ca_file.as_deref())?.get("/whoami").await?;
    let name = name.unwrap_or_else(|| default_name(server));
    let p = file_path()?;
    let mut f = ContextFile::load(&p)?;
    f.contexts.insert(name.clone(), Context { server: server.trim_end_matches('/').to_owned(), token: Some(token), ca_file });
    f.current_context = Some(name.clone());
    f.save(&p)?;
    let principal = who.get("name").and_then(|v| v.as_str()).unwrap_or("?");
    eprintln!("logged in to {server} as {principal}; context {name:?} is current ({})", p.display());
    Ok(0)
}

/// A context name from a server URL: its host and port.
fn default_name(server: &str) -> String {
    let rest = server.split_once("://").map_or(server, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_file_loads_back_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hodei").join("config.yaml");
        assert_eq!(ContextFile::load(&p).unwrap(), ContextFile::default());
        let mut f = ContextFile { current_context: Some("prod".into()), ..Default::default() };
        f.contexts.insert("prod".into(), Context { server: "https://h:8080".into(), token: Some("hodei_x".into()), ca_file: Some("/ca.pem".into()) });
        f.save(&p).unwrap();
        assert_eq!(ContextFile::load(&p).unwrap(), f);
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(p.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::write(&p, "contexts: {a: {server: x, colour: red}}\n").unwrap();
        assert!(format!("{:#}", ContextFile::load(&p).unwrap_err()).contains("unknown field"));
    }

    #[test]
    fn context_names_default_to_host_and_port() {
        assert_eq!(default_name("https://hodei.example.com:8443/"), "hodei.example.com:8443");
        assert_eq!(default_name("127.0.0.1:8080"), "127.0.0.1:8080");
    }
}
