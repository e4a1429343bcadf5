//! `hodei tenants`, `hodei sla` and `hodei burst`.

#[allow(unused_imports)]
use crate::*;

#[derive(Subcommand)]
pub(crate) enum TenantsCmd {
    Ls,
    Get {
        id: String,
    },
    Create {
        name: String,
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        tier: Option<String>,
        #[arg(long)]
        weight: Option<i64>,
        #[arg(long)]
        email: Option<String>,
    },
    Delete {
        id: String,
    },
    /// Show a tenant's quota and usage; with any limit flag, set it.
    Quota {
        id: String,
        #[arg(long)]
        cpu_m: Option<i64>,
        #[arg(long)]
        memory_mb: Option<i64>,
        #[arg(long)]
        gpu: Option<i64>,
        #[arg(long)]
        max_concurrent_jobs: Option<i64>,
        #[arg(long)]
        max_queued_jobs: Option<i64>,
    },
}

#[derive(Subcommand)]
pub(crate) enum SlaCmd {
    /// Jobs that breached their SLA, most recent first.
    Breaches {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        level: Option<String>,
        /// RFC 3339.
        #[arg(long)]
        since: Option<String>,
    },
    /// Waiting jobs past 70 % of their maximum wait, nearest deadline first.
    AtRisk {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        level: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum BurstCmd {
    /// Open a session for TENANT (active at once unless approval is required).
    Request {
        tenant: String,
        #[arg(long)]
        cpu_m: Option<i64>,
        #[arg(long)]
        memory_mb: Option<i64>,
        #[arg(long)]
        gpu: Option<i64>,
        #[arg(long)]
        concurrent_jobs: Option<i64>,
        /// Default: burst_capacity.burst_duration_minutes.
        #[arg(long)]
        duration_minutes: Option<i64>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List sessions, newest first.
    Ls {
        #[arg(long)]
        tenant: Option<String>,
        /// pending_approval|active|rejected|expired|ended|revoked (comma-separated)
        #[arg(long)]
        state: Option<String>,
    },
    Get {
        tenant: String,
        session: String,
    },
    Approve {
        tenant: String,
        session: String,
    },
    Reject {
        tenant: String,
        session: String,
    },
    /// End an active session early (or withdraw a pending request).
    End {
        tenant: String,
        session: String,
    },
}

pub(crate) async fn tenants(c: ClientOpts, cmd: Option<TenantsCmd>) -> anyhow::Result<i32> {
    let cl = c.client()?;
    let rows =
        |items: &[Value]| items.iter().map(|t| vec![s(t, "id"), s(t, "name"), s(t, "tier"), s(t, "effective_weight"), s(t, "status")]).collect::<Vec<_>>();
    let headers = ["ID", "NAME", "TIER", "WEIGHT", "STATUS"];
    let v = match cmd.unwrap_or(TenantsCmd::Ls) {
        TenantsCmd::Ls => return listing_all(c, "/tenants", &headers, &["id", "name", "tier", "effective_weight", "status"]).await,
        TenantsCmd::Get { id } => cl.get(&format!("/tenants/{id}")).await?,
        TenantsCmd::Create { name, id, tier, weight, email } => {
            let mut body = json!({"name": name});
            for (k, v) in [("id", json!(id)), ("tier", json!(tier)), ("weight", json!(weight)), ("email", json!(email))] {
                if !v.is_null() {
                    body[k] = v;
                }
            }
            cl.post("/tenants", &body).await?
        }
        TenantsCmd::Delete { id } => {
            cl.delete(&format!("/tenants/{id}")).await?;
            return Ok(0);
        }
        TenantsCmd::Quota { id, cpu_m, memory_mb, gpu, max_concurrent_jobs, max_queued_jobs } => {
            let set: serde_json::Map<String, Value> =
                [("cpu_m", cpu_m), ("memory_mb", memory_mb), ("gpu", gpu), ("max_concurrent_jobs", max_concurrent_jobs), ("max_queued_jobs", max_queued_jobs)]
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), json!(v))))
                    .collect();
            let path = format!("/tenants/{id}/quota");
            let q = if set.is_empty() { cl.get(&path).await? } else { cl.put(&path, &Value::Object(set)).await? };
            if c.output.structured() {
                print_json(&q);
            } else {
                let u = &q["current_usage"];
                let ce = &q["ceiling"];
                table(
                    &["LIMIT", "QUOTA", "CEILING", "USAGE"],
                    vec![
                        vec!["cpu_m".into(), s(&q, "cpu_m"), s(ce, "cpu_m"), s(u, "cpu_m")],
                        vec!["memory_mb".into(), s(&q, "memory_mb"), s(ce, "memory_mb"), s(u, "memory_mb")],
                        vec!["gpu".into(), s(&q, "gpu"), s(ce, "gpu"), s(u, "gpu")],
                        vec!["concurrent jobs".into(), s(&q, "max_concurrent_jobs"), s(ce, "max_concurrent_jobs"), s(u, "active_jobs")],
                        vec!["queued jobs".into(), s(&q, "max_queued_jobs"), s(&q, "max_queued_jobs"), s(u, "queued_jobs")],
                    ],
                );
            }
            return Ok(0);
        }
    };
    if c.output.structured() {
        print_json(&v);
    } else {
        table(&headers, rows(std::slice::from_ref(&v)));
    }
    Ok(0)
}

pub(crate) async fn sla(c: ClientOpts, cmd: Option<SlaCmd>, tenant: Option<String>, window_hours: Option<u32>) -> anyhow::Result<i32> {
    let cl = c.client()?;
    let jobs = |page: &Value| {
        let rows = page["items"].as_array().map(Vec::as_slice).unwrap_or(&[]).iter();
        let cols = ["job_id", "tenant_id", "level", "status", "state", "wait_ms", "max_wait_ms", "dominant_blocking_reason"];
        rows.map(|j| cols.iter().map(|k| s(j, k)).collect()).collect::<Vec<Vec<String>>>()
    };
    let headers = ["JOB", "TENANT", "LEVEL", "STATUS", "STATE", "WAIT_MS", "MAX_WAIT_MS", "BLOCKED_BY"];
    let page = match cmd {
        Some(SlaCmd::Breaches { tenant, level, since }) => {
            cl.get(&format!("/sla/breaches{}", query(&[("tenant_id", tenant), ("level", level), ("since", since)]))).await?
        }
        Some(SlaCmd::AtRisk { tenant, level }) => cl.get(&format!("/sla/at-risk{}", query(&[("tenant_id", tenant), ("level", level)]))).await?,
        None => {
            let path = match &tenant {
                Some(t) => format!("/tenants/{t}/sla"),
                None => "/sla".to_owned(),
            };
            let r = cl.get(&format!("{path}{}", query(&[("window_hours", window_hours.map(|h| h.to_string()))]))).await?;
            if c.output.structured() {
                print_json(&r);
            } else {
                let cols = ["level", "started", "met", "breached", "compliance_ratio", "wait_p50_ms", "wait_p95_ms", "at_risk", "critical", "breached_waiting"];
                let row = |tenant: &str, l: &Value| std::iter::once(tenant.to_owned()).chain(cols.iter().map(|k| s(l, k))).collect::<Vec<_>>();
                let mut rows: Vec<Vec<String>> = vec![];
                for l in r["levels"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    rows.push(row("(all)", l));
                }
                for t in r["tenants"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    for l in t["levels"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                        rows.push(row(&s(t, "tenant_id"), l));
                    }
                }
                let h =
                    ["TENANT", "LEVEL", "STARTED", "MET", "BREACHED", "COMPLIANCE", "WAIT_P50_MS", "WAIT_P95_MS", "AT_RISK", "CRITICAL", "BREACHED_WAITING"];
                table(&h, rows);
            }
            return Ok(0);
        }
    };
    if c.output.structured() {
        print_json(&page);
    } else {
        table(&headers, jobs(&page));
    }
    Ok(0)
}

pub(crate) async fn burst(c: ClientOpts, cmd: BurstCmd) -> anyhow::Result<i32> {
    let cl = c.client()?;
    let headers = ["ID", "TENANT", "STATE", "CPU_M", "MEMORY_MB", "GPU", "JOBS", "EXPIRES_AT"];
    let row = |b: &Value| {
        let cols = ["id", "tenant_id", "state", "requested_cpu_m", "requested_memory_mb", "requested_gpu", "requested_concurrent_jobs", "expires_at"];
        cols.iter().map(|k| s(b, k)).collect::<Vec<_>>()
    };
    let session = |tenant: &str, sid: &str, action: &str| format!("/tenants/{tenant}/burst/sessions/{sid}{action}");
    let v = match cmd {
        BurstCmd::Request { tenant, cpu_m, memory_mb, gpu, concurrent_jobs, duration_minutes, reason } => {
            let mut body = json!({"reason": reason});
            let fields = [
                ("requested_cpu_m", cpu_m),
                ("requested_memory_mb", memory_mb),
                ("requested_gpu", gpu),
                ("requested_concurrent_jobs", concurrent_jobs),
                ("duration_minutes", duration_minutes),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            cl.post(&format!("/tenants/{tenant}/burst"), &body).await?
        }
        BurstCmd::Ls { tenant, state } => {
            let page = cl.get(&format!("/burst/sessions{}", query(&[("tenant_id", tenant), ("state", state)]))).await?;
            if !c.output.structured() {
                table(&headers, page["items"].as_array().map(Vec::as_slice).unwrap_or(&[]).iter().map(row).collect());
                return Ok(0);
            }
            page
        }
        BurstCmd::Get { tenant, session: sid } => cl.get(&session(&tenant, &sid, "")).await?,
        BurstCmd::Approve { tenant, session: sid } => cl.post(&session(&tenant, &sid, "/approve"), &json!({})).await?,
        BurstCmd::Reject { tenant, session: sid } => cl.post(&session(&tenant, &sid, "/reject"), &json!({})).await?,
        BurstCmd::End { tenant, session: sid } => cl.post(&session(&tenant, &sid, "/end"), &json!({})).await?,
    };
    if c.output.structured() {
        print_json(&v);
    } else {
        table(&headers, vec![row(&v)]);
    }
    Ok(0)
}
