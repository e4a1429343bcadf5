//! The configuration reference, generated from the configuration's own types: every key with
//! what it is written as, its default and its documentation comment. `docs/configuration.md`
//! is this text (`hodei config reference`), and a test keeps the two equal, so the reference
//! cannot drift from what the server reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde_yaml_ng::Value;

use crate::config::{
    AuthMode, Config, DurationStr, LogFormat, Micros, OnExhausted, PolicyMode, PoolConfig, PoolTypeName, PriorityName, RoutingStrategy, ScaleAction,
    ScalingPolicyConfig, Secret, SqliteSync, TierName, ViolationPolicy,
};

/// One key of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// `section.key`; `[]` marks the items of a list (`resource_pools.pools[].id`).
    pub path: String,
    /// What its value is written as.
    pub kind: String,
    pub doc: String,
}

/// A type the configuration holds: a value (`keys` adds nothing) or a section of keys.
pub trait Describe {
    fn kind() -> String;

    /// Adds the keys under `prefix` (ending in `.`) and says whether there were any.
    fn keys(_prefix: &str, _out: &mut Vec<Key>) -> bool {
        false
    }
}

macro_rules! value {
    ($($t:ty => $kind:expr),* $(,)?) => {
        $(impl Describe for $t {
            fn kind() -> String {
                $kind.into()
            }
        })*
    };
}

value! {
    u16 => "integer", u32 => "integer", u64 => "integer", f64 => "number", bool => "boolean", String => "string", PathBuf => "path",
    Secret => "secret (never printed)", Micros => "decimal amount (at most 6 decimals)", DurationStr => "duration (`<int>ms|s|m|h|d`)",
    BTreeMap<String, String> => "map of strings", BTreeMap<String, Value> => "map",
    LogFormat => "`text` or `json`", SqliteSync => "`full` or `normal`", AuthMode => "`token` or `none`",
    PriorityName => "`critical`, `high`, `normal`, `low` or `batch`", PoolTypeName => "`static` or `dynamic`",
    ViolationPolicy => "`reject`, `queue` or `warn`", TierName => "`free`, `standard`, `premium` or `enterprise`",
    OnExhausted => "`hold` or `reject`", PolicyMode => "`threshold` or `forecast`", ScaleAction => "`scale_up` or `scale_down`",
    RoutingStrategy => "`manual`, `least_loaded`, `cheapest`, `data_locality` or `affinity`",
}

impl<T: Describe> Describe for Option<T> {
    fn kind() -> String {
        T::kind()
    }

    fn keys(prefix: &str, out: &mut Vec<Key>) -> bool {
        T::keys(prefix, out)
    }
}

impl<T: Describe> Describe for Vec<T> {
    fn kind() -> String {
        format!("list of {}", T::kind())
    }

    fn keys(prefix: &str, out: &mut Vec<Key>) -> bool {
        T::keys(&format!("{}[].", prefix.trim_end_matches('.')), out)
    }
}

/// Keys of a struct that is not a `section!` (its defaults are serde's), each as
/// `name: Type = "doc"`.
macro_rules! keys_of {
    ($t:ty { $($name:literal : $ty:ty = $doc:literal),* $(,)? }) => {
        impl Describe for $t {
            fn kind() -> String {
                "section".into()
            }

            fn keys(prefix: &str, out: &mut Vec<Key>) -> bool {
                $(
                    let path = format!("{prefix}{}", $name);
                    if !<$ty as Describe>::keys(&format!("{path}."), out) {
                        out.push(Key { path, kind: <$ty as Describe>::kind(), doc: $doc.into() });
                    }
                )*
                true
            }
        }
    };
}

keys_of!(PoolConfig {
    "id": String = "The pool's id (`[a-z0-9-]`), what jobs name in `pool_selector.pool`. Required.",
    "name": Option<String> = "A display name.",
    "type": PoolTypeName = "`static`: kept at its size. `dynamic`: grows with its queue up to `max_size` and drops idle workers above `min_size` after `idle_timeout_s`.",
    "provider": String = "Who starts its workers: `local` (the server, on its own machine) or `kubernetes` (pods). Workers of any pool may also join from elsewhere with its join token.",
    "provider_config": BTreeMap<String, Value> = "The provider's settings (`kubernetes`: namespace, image, API server and credentials).",
    "labels": BTreeMap<String, String> = "Labels every worker of the pool carries, selected by a job's `pool_selector.labels`.",
    "worker_template": crate::config::WorkerTemplateConfig = "",
    "min_size": u32 = "Workers kept running even when idle.",
    "max_size": u32 = "The most workers the pool grows to.",
    "auto_scaling_enabled": bool = "Let its `scaling_policies` (and a dynamic pool's queue) change its size.",
    "idle_timeout_s": u64 = "A dynamic pool drops a worker idle this long (above `min_size`).",
    "allowed_tenants": Vec<String> = "Only these tenants' jobs run here (empty: every tenant's).",
    "cost_rates": crate::config::CostRatesConfig = "",
    "cluster": Option<String> = "Not supported yet: refused unless left unset.",
    "join_token": Option<Secret> = "The token its remote workers join with (default: one drawn at creation, written to `{data_dir}/pool-<id>.token`).",
    "scaling_policies": Vec<ScalingPolicyConfig> = "",
});

keys_of!(ScalingPolicyConfig {
    "name": String = "The policy's name, shown in the pool's scaling history. Required.",
    "mode": PolicyMode = "`threshold`: act when `trigger` holds over `window`. `forecast`: act on the queue's expected growth.",
    "trigger": Option<String> = "A threshold policy's condition, e.g. `queue_depth > 10` or `utilization < 0.2`.",
    "action": ScaleAction = "What it does when it fires. Required.",
    "step": u32 = "Workers added or removed each time.",
    "cooldown": Option<DurationStr> = "The least time between two of its actions (default: `autoscaling.default_scale_up_cooldown_s` or `…_down_…`).",
    "window": Option<DurationStr> = "How long the trigger must hold (default: `autoscaling.default_window_s`).",
    "hysteresis_pct": u32 = "How far back past its threshold a metric must go before the policy may fire again.",
    "enabled": bool = "Off: kept but never evaluated.",
});

/// Every key, in file order.
pub fn keys() -> Vec<Key> {
    let mut out = Vec::new();
    Config::keys("", &mut out);
    out
}

/// The defaults as a file would hold them: the default configuration, with one pool holding
/// one scaling policy at their own defaults.
fn defaults() -> Value {
    let mut v = serde_yaml_ng::to_value(Config::default()).expect("the default configuration serializes");
    let pool: PoolConfig = serde_yaml_ng::from_str("id: ''").expect("a pool with only an id");
    let policy: ScalingPolicyConfig = serde_yaml_ng::from_str("{name: '', action: scale_up}").expect("a policy with only its required keys");
    let mut pool = serde_yaml_ng::to_value(pool).expect("a pool serializes");
    pool["scaling_policies"] = Value::Sequence(vec![serde_yaml_ng::to_value(policy).expect("a policy serializes")]);
    v["resource_pools"]["pools"] = Value::Sequence(vec![pool]);
    v
}

/// The value at `path` of `v`, `[]` taking a list's first item.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, part| match part.strip_suffix("[]") {
        Some(list) => v.get(list)?.get(0),
        None => v.get(part),
    })
}

fn default_text(v: Option<&Value>) -> String {
    fn plain(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Sequence(items) => format!("[{}]", items.iter().map(plain).collect::<Vec<_>>().join(", ")),
            Value::Mapping(m) if m.is_empty() => "{}".into(),
            other => serde_yaml_ng::to_string(other).unwrap_or_default().trim().replace('\n', " "),
        }
    }
    match v {
        None | Some(Value::Null) => "—".into(),
        Some(Value::String(s)) if s.is_empty() => "—".into(),
        Some(v) => format!("`{}`", plain(v)),
    }
}

/// `docs/configuration.md`.
pub fn reference() -> String {
    let defaults = defaults();
    let mut out = String::from(INTRO);
    let mut section = String::new();
    for k in keys() {
        let top = k.path.split('.').next().unwrap_or("");
        if top != section {
            section = top.to_owned();
            let _ = write!(out, "\n## `{section}`\n\n| Key | Value | Default | Meaning |\n|---|---|---|---|\n");
        }
        let default = if k.path.starts_with("resource_pools.pools[].")
            && ["id", "name", "scaling_policies[].name", "scaling_policies[].action"].iter().any(|r| k.path.ends_with(r))
        {
            "—".to_owned()
        } else {
            default_text(at(&defaults, &k.path))
        };
        let _ = writeln!(out, "| `{}` | {} | {} | {} |", k.path, k.kind.replace('|', "\\|"), default, k.doc.replace('|', "\\|"));
    }
    out
}

const INTRO: &str = "# Configuration reference

<!-- Generated by `hodei config reference` from the server's configuration types; a test
     keeps this file equal to that output. Edit the documentation comments in
     crates/hodei-server/src/config.rs, then run `hodei config reference > docs/configuration.md`. -->

`hodei server --config FILE` (or `HODEI_CONFIG_PATH`) reads one YAML file. Every key is
optional; a missing key takes its default. The rules:

- **Unknown keys and bad values stop the server** with the key's path, e.g.
  `error: scheduler.tick_ms: \"soon\" is not a non-negative integer (milliseconds)`.
- **Environment variables override the file**: `HODEI_<SECTION>__<KEY>` with `__` between
  levels, e.g. `HODEI_WORKERS__HEARTBEAT_TIMEOUT_MS=5000`; `HODEI_DATA_DIR` sets `server.data_dir`.
  Flags of `hodei server` (`--data-dir`, `--http-addr`, `--grpc-addr`, `--metrics-addr`,
  `--database-url`) override both.
- **`${VAR}` and `${VAR:-default}`** in the file are replaced by the environment's values.
- **Nothing is silently ignored**: a key whose feature is not built yet says so below (\"Not
  supported yet\"); set to anything but its default, the server refuses to start and names it.
- `hodei config check [--config FILE]` validates a file and prints the effective
  configuration as YAML (secrets as `***`) — itself a valid file.

Durations are written `<int>ms|s|m|h|d` (`90s`, `5m`); keys ending in `_ms`, `_s`, `_minutes`,
`_hours` or `_days` take a plain number in that unit. Money is a decimal with at most 6 decimals
(held exactly, as integer micro-units). CPU is in millicores (`cpu_m`: 1000 = one core), memory in
MiB (`memory_mb`).
";

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key path of a serialized value, down to the keys the reference lists as values.
    fn walk(v: &Value, prefix: &str, leaves: &[String], out: &mut Vec<String>) {
        let Value::Mapping(m) = v else { return };
        for (k, child) in m {
            let path = format!("{prefix}{}", k.as_str().unwrap());
            match child {
                Value::Sequence(items) if !leaves.contains(&path) => {
                    if let Some(first) = items.first() {
                        walk(first, &format!("{path}[]."), leaves, out)
                    }
                }
                Value::Mapping(_) if !leaves.contains(&path) => walk(child, &format!("{path}."), leaves, out),
                _ => out.push(path),
            }
        }
    }

    #[test]
    fn every_key_of_the_configuration_is_in_the_reference_and_nothing_else_is() {
        let listed: Vec<String> = keys().into_iter().map(|k| k.path).collect();
        let mut read = Vec::new();
        walk(&defaults(), "", &listed, &mut read);
        let missing: Vec<_> = read.iter().filter(|k| !listed.contains(k)).collect();
        let extra: Vec<_> = listed.iter().filter(|k| !read.contains(k)).collect();
        assert!(missing.is_empty(), "keys the server reads that the reference does not list: {missing:?}");
        assert!(extra.is_empty(), "keys the reference lists that the server does not read: {extra:?}");
        let undocumented: Vec<_> = keys().into_iter().filter(|k| k.doc.trim().is_empty()).map(|k| k.path).collect();
        assert!(undocumented.is_empty(), "keys without a documentation comment: {undocumented:?}");
    }

    #[test]
    fn the_reference_in_docs_is_the_generated_one() {
        let committed = include_str!("../../../docs/configuration.md");
        let generated = reference();
        if committed != generated {
            let at = committed.lines().zip(generated.lines()).position(|(a, b)| a != b);
            panic!(
                "docs/configuration.md is not the generated reference (first differing line: {at:?}); \
                 run `cargo run -q -p hodei -- config reference > docs/configuration.md`"
            );
        }
    }
}
