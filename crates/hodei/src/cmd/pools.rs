//! `hodei pools` and `hodei workers`: their subcommands.

#[allow(unused_imports)]
use crate::*;

#[derive(Subcommand)]
pub(crate) enum WorkersCmd {
    /// Drain a worker (admins): it takes no new jobs, its running jobs finish, then it stops.
    Drain { id: String },
}

#[derive(Subcommand)]
pub(crate) enum PoolsCmd {
    /// Draw a new join token for a pool (admins); it is printed once, alone on stdout. The old
    /// token stops registering workers at once; workers already registered keep running.
    RotateToken { id: String },
    /// A pool's size now: live workers by state, slots in use, the size it is kept at, its last
    /// scaling decision.
    Status { id: String },
    /// Create a pool (admins): its workers join with its token, printed once alone on stdout,
    /// or (`--provider local`) the server starts them on its machine.
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// Millicores one worker offers.
        #[arg(long)]
        cpu_m: u32,
        /// MiB one worker offers.
        #[arg(long)]
        memory_mb: u32,
        #[arg(long, default_value_t = 0)]
        gpu: u32,
        /// Jobs one worker runs at once.
        #[arg(long)]
        slots: u32,
        #[arg(long, default_value_t = 0)]
        min_size: u32,
        #[arg(long)]
        max_size: Option<u32>,
        /// external (workers join with the token) or local (the server starts them).
        #[arg(long, default_value = "external")]
        provider: String,
        /// static or dynamic (idle workers above min_size dropped after --idle-timeout-s).
        #[arg(long = "type", default_value = "static")]
        pool_type: String,
        #[arg(long)]
        idle_timeout_s: Option<u64>,
        /// k=v, repeatable: labels its workers carry, selected by `submit --pool-label`.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Repeatable: only these tenants' jobs run there (default: every tenant's).
        #[arg(long = "allowed-tenant")]
        allowed_tenants: Vec<String>,
    },
    /// Delete a pool created through the API, once it has no workers and no job waits for it.
    Delete { id: String },
    /// Set the size a pool is kept at, within its min and max (admins); recorded in its history.
    Scale {
        id: String,
        target_size: u32,
        #[arg(long)]
        reason: Option<String>,
    },
    /// A pool's scaling decisions, newest first: executed and skipped, with trigger and reason.
    History {
        id: String,
        /// executed|suppressed_cooldown|clamped|failed.
        #[arg(long)]
        decision: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

pub(crate) async fn workers(c: ClientOpts, cmd: Option<WorkersCmd>, all: bool, selector: Option<String>) -> anyhow::Result<i32> {
    match cmd {
        Some(WorkersCmd::Drain { id }) => {
            let v = c.client()?.post(&format!("/workers/{id}/drain"), &json!({})).await?;
            if c.output.structured() {
                print_json(&v);
            } else {
                let state = s(&v, "state");
                let then = if state == "terminated" { "it ran nothing and has stopped" } else { "it stops once its running jobs have ended" };
                println!("worker {id} is {state}: {then}");
            }
            Ok(0)
        }
        None => {
            let states = (!all).then(|| "registering,idle,busy,draining".to_owned());
            listing_all(
                c,
                &format!("/workers{}", query(&[("state", states), ("label", selector)])),
                &["ID", "POOL", "INSTANCE", "STATE", "SLOTS", "LAST HEARTBEAT"],
                &["id", "pool_id", "instance_name", "state", "slots", "last_heartbeat_at"],
            )
            .await
        }
    }
}

pub(crate) async fn pools(c: ClientOpts, cmd: Option<PoolsCmd>) -> anyhow::Result<i32> {
    match cmd {
        Some(PoolsCmd::RotateToken { id }) => {
            let v = c.client()?.post(&format!("/pools/{id}/join-token"), &json!({})).await?;
            if c.output.structured() {
                print_json(&v);
            } else {
                println!("{}", s(&v, "join_token"));
                eprintln!("pool {id} has a new join token; the token above is shown only once");
            }
            Ok(0)
        }
        Some(PoolsCmd::Create { id, name, cpu_m, memory_mb, gpu, slots, min_size, max_size, provider, pool_type, idle_timeout_s, labels, allowed_tenants }) => {
            let mut body = json!({"id": id, "worker_template": {"cpu_m": cpu_m, "memory_mb": memory_mb, "gpu": gpu, "slots": slots}, "min_size": min_size,
                "provider": provider, "type": pool_type, "labels": kv(&labels, "--label")?, "allowed_tenants": allowed_tenants});
            if let Some(t) = idle_timeout_s {
                body["idle_timeout_s"] = json!(t);
            }
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(m) = max_size {
                body["max_size"] = json!(m);
            }
            let v = c.client()?.post("/pools", &body).await?;
            if c.output.structured() {
                print_json(&v);
            } else if provider == "local" {
                eprintln!("pool {id} created; the server starts its workers (min {min_size}, scaled with `hodei pools scale {id} N`)");
            } else {
                println!("{}", s(&v, "join_token"));
                eprintln!("pool {id} created; workers join it with the token above (shown only once): hodei worker --pool {id}");
            }
            Ok(0)
        }
        Some(PoolsCmd::Scale { id, target_size, reason }) => {
            let v = c.client()?.post(&format!("/pools/{id}/scale"), &json!({"target_size": target_size, "reason": reason})).await?;
            if c.output.structured() {
                print_json(&v);
            } else {
                eprintln!("pool {id}: desired size {} → {}", v["from_size"], v["to_size"]);
            }
            Ok(0)
        }
        Some(PoolsCmd::History { id, decision, limit }) => {
            let mut path = format!("/pools/{id}/scaling/history?limit={limit}");
            if let Some(d) = decision {
                path.push_str(&format!("&decision={d}"));
            }
            listing(c, &path, &["AT", "SOURCE", "FROM", "TO", "DECISION", "REASON"], &["at", "source", "from_size", "to_size", "decision", "reason"]).await
        }
        Some(PoolsCmd::Delete { id }) => {
            c.client()?.delete(&format!("/pools/{id}")).await?;
            eprintln!("pool {id} deleted");
            Ok(0)
        }
        Some(PoolsCmd::Status { id }) => {
            let v = c.client()?.get(&format!("/pools/{id}/status")).await?;
            if c.output.structured() {
                print_json(&v);
            } else {
                let by_state: Vec<String> = v["workers_by_state"].as_object().map(|m| m.iter().map(|(k, n)| format!("{k} {n}")).collect()).unwrap_or_default();
                println!(
                    "pool {id}: {}, {} workers (desired {}, min {}, max {}); {}; slots {}/{} in use",
                    s(&v, "state"),
                    v["current_size"],
                    v["desired_size"],
                    v["min_size"],
                    v["max_size"],
                    if by_state.is_empty() { "no workers".to_owned() } else { by_state.join(", ") },
                    v["slots_used"],
                    v["slots"]
                );
                if v["last_event"].is_object() {
                    let e = &v["last_event"];
                    println!("last scaling decision {}: {} {} → {} ({})", s(e, "at"), s(e, "decision"), e["from_size"], e["to_size"], s(e, "reason"));
                }
            }
            Ok(0)
        }
        None => {
            listing_all(
                c,
                "/pools",
                &["ID", "TYPE", "PROVIDER", "MIN", "DESIRED", "MAX", "SLOTS/WORKER", "STATE"],
                &["id", "type", "provider", "min_size", "desired_size", "max_size", "worker_slots", "state"],
            )
            .await
        }
    }
}
