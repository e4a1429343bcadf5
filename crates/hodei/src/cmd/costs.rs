//! Costs, budgets, alerts and reports: the options and printing of `hodei costs`, `budgets`,
//! `alerts`, `reports`.

#[allow(unused_imports)]
use crate::*;

#[derive(Subcommand)]
pub(crate) enum AlertsCmd {
    /// Acknowledge a firing alert (its tenant's PI or an admin).
    Ack { id: String },
}

/// The period and scope of a breakdown or a report.
#[derive(Args)]
pub(crate) struct CostScope {
    /// last_day|last_week|last_month|month_to_date|custom (with --start and --end).
    #[arg(long, default_value = "month_to_date")]
    pub(crate) period: String,
    /// RFC 3339, with --period custom.
    #[arg(long)]
    pub(crate) start: Option<String>,
    /// RFC 3339, with --period custom (at most 366 days after --start).
    #[arg(long)]
    pub(crate) end: Option<String>,
    /// Only this tenant's jobs.
    #[arg(long)]
    pub(crate) tenant: Option<String>,
    /// Only what ran in this pool.
    #[arg(long)]
    pub(crate) pool: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum ReportsCmd {
    /// Make a report: totals, breakdowns, top jobs, a forecast to the month's end and the
    /// recommendations of the moment.
    Create {
        #[command(flatten)]
        scope: CostScope,
    },
    Get {
        id: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum BudgetsCmd {
    /// Give a tenant a budget (its PI or an admin).
    Create {
        #[arg(long)]
        tenant: String,
        /// A decimal amount of the currency, e.g. 250.00.
        #[arg(long)]
        amount: String,
        /// daily|weekly|monthly|total.
        #[arg(long, default_value = "monthly")]
        period: String,
        /// hold (new and pending jobs wait) or reject (submits are refused with 402).
        #[arg(long, default_value = "hold")]
        on_exhausted: String,
    },
    /// Change a budget's amount.
    Set {
        id: String,
        amount: String,
    },
    Delete {
        id: String,
    },
}

/// A cost report as text: totals, its breakdowns, top jobs and recommendations.
pub(crate) fn print_report(r: &Value) {
    println!("report {} ({}, {} to {})", s(r, "id"), s(r, "period"), s(r, "start"), s(r, "end"));
    println!("total:    {}", s(r, "total_cost"));
    println!("forecast: {} by the end of the month", s(r, "forecast_period_end"));
    if let Some(idle) = r["idle_cost"].as_str() {
        println!("idle:     {idle} (workers waiting for jobs)");
    }
    for (title, key) in [("TENANT", "by_tenant"), ("POOL", "by_pool"), ("DAY", "by_day")] {
        let rows: Vec<Vec<String>> = r["breakdown"][key]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .map(|g| vec![s(g, "key"), s(g, "cost"), g["attempts"].to_string()])
            .collect();
        println!();
        table(&[title, "COST", "ATTEMPTS"], rows);
    }
    let jobs: Vec<Vec<String>> = r["top_jobs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|j| vec![s(j, "job_id"), s(j, "name"), s(j, "tenant_id"), s(j, "cost")])
        .collect();
    println!();
    table(&["TOP JOB", "NAME", "TENANT", "COST"], jobs);
    let recs: Vec<Vec<String>> = r["recommendations"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|i| vec![s(i, "kind"), s(i, "target"), format!("{} → {} {}", i["current"], i["suggested"], s(i, "unit")), s(i, "estimated_monthly_savings")])
        .collect();
    if !recs.is_empty() {
        println!();
        table(&["RECOMMENDATION", "TARGET", "CHANGE", "SAVING/MONTH"], recs);
    }
    println!("potential savings: {} a month", s(r, "potential_savings"));
}

pub(crate) async fn costs(c: ClientOpts, group_by: String, scope: CostScope) -> anyhow::Result<i32> {
    let CostScope { period, start, end, tenant, pool } = scope;
    let q = query(&[("group_by", Some(group_by)), ("period", Some(period)), ("start", start), ("end", end), ("tenant_id", tenant), ("pool_id", pool)]);
    let b = c.client()?.get(&format!("/cost-optimization/breakdown{q}")).await?;
    if c.output.structured() {
        print_json(&b);
    } else {
        let head = ["key", "cost", "attempts", "cpu_m_seconds", "memory_mb_seconds", "gpu_seconds"];
        let mut rows: Vec<Vec<String>> =
            b["groups"].as_array().map(Vec::as_slice).unwrap_or(&[]).iter().map(|g| head.iter().map(|k| s(g, k)).collect()).collect();
        rows.push(vec!["TOTAL".into(), s(&b, "total_cost"), String::new(), String::new(), String::new(), String::new()]);
        table(&[&s(&b, "group_by").to_uppercase(), "COST", "ATTEMPTS", "CPU_M_SECONDS", "MEMORY_MB_SECONDS", "GPU_SECONDS"], rows);
        eprintln!("{} to {} (whole UTC days)", s(&b, "start"), s(&b, "end"));
    }
    Ok(0)
}

pub(crate) async fn recommendations(c: ClientOpts, tenant: Option<String>, pool: Option<String>, kind: Option<String>) -> anyhow::Result<i32> {
    let q = query(&[("tenant_id", tenant), ("pool_id", pool), ("kind", kind)]);
    let r = c.client()?.get(&format!("/cost-optimization/recommendations{q}")).await?;
    if c.output.structured() {
        print_json(&r);
    } else {
        let items = r["items"].as_array().cloned().unwrap_or_default();
        let change = |i: &Value| format!("{} → {} {}", i["current"], i["suggested"], s(i, "unit"));
        table(
            &["KIND", "TARGET", "CHANGE", "SAVING/MONTH", "RUNS", "WHY"],
            items
                .iter()
                .map(|i| vec![s(i, "kind"), s(i, "target"), change(i), s(i, "estimated_monthly_savings"), i["evidence"]["runs"].to_string(), s(i, "rationale")])
                .collect(),
        );
        // Pools' advice (admins): from their metric history, not from runs.
        let pools = r["pools"].as_array().cloned().unwrap_or_default();
        if !pools.is_empty() {
            println!();
            table(
                &["KIND", "TARGET", "CHANGE", "SAVING/MONTH", "HOURS", "WHY"],
                pools
                    .iter()
                    .map(|i| {
                        vec![s(i, "kind"), s(i, "target"), change(i), s(i, "estimated_monthly_savings"), i["evidence"]["hours"].to_string(), s(i, "rationale")]
                    })
                    .collect(),
            );
        }
        eprintln!("potential savings: {} a month", s(&r, "potential_savings"));
    }
    Ok(0)
}

pub(crate) async fn alerts(c: ClientOpts, cmd: Option<AlertsCmd>, state: Option<String>, tenant: Option<String>) -> anyhow::Result<i32> {
    match cmd {
        Some(AlertsCmd::Ack { id }) => {
            let v = c.client()?.post(&format!("/alerts/{id}/ack"), &json!({})).await?;
            if c.output.structured() {
                print_json(&v);
            } else {
                eprintln!("alert {id} acknowledged: {}", s(&v, "message"));
            }
            Ok(0)
        }
        None => {
            listing(
                c,
                &format!("/alerts{}", query(&[("state", state), ("tenant_id", tenant), ("limit", Some("500".into()))])),
                &["ID", "KIND", "SEVERITY", "TENANT", "STATE", "FIRED", "MESSAGE"],
                &["id", "kind", "severity", "tenant_id", "state", "fired_at", "message"],
            )
            .await
        }
    }
}

pub(crate) async fn reports(c: ClientOpts, cmd: Option<ReportsCmd>, tenant: Option<String>) -> anyhow::Result<i32> {
    match cmd {
        None => {
            listing(
                c,
                &format!("/cost-optimization/reports{}", query(&[("tenant_id", tenant), ("limit", Some("100".into()))])),
                &["ID", "CREATED", "PERIOD", "TENANT", "TOTAL", "FORECAST", "SAVINGS"],
                &["id", "created_at", "period", "tenant_id", "total_cost", "forecast_period_end", "potential_savings"],
            )
            .await
        }
        Some(cmd) => {
            let cl = c.client()?;
            let r = match cmd {
                ReportsCmd::Create { scope: CostScope { period, start, end, tenant, pool } } => {
                    cl.post("/cost-optimization/reports", &json!({"period": period, "start": start, "end": end, "tenant_id": tenant, "pool_id": pool})).await?
                }
                ReportsCmd::Get { id } => cl.get(&format!("/cost-optimization/reports/{id}")).await?,
            };
            if c.output.structured() {
                print_json(&r);
            } else {
                print_report(&r);
            }
            Ok(0)
        }
    }
}

pub(crate) async fn budgets(c: ClientOpts, cmd: Option<BudgetsCmd>) -> anyhow::Result<i32> {
    match cmd {
        None => {
            listing_all(
                c,
                "/budgets",
                &["ID", "TENANT", "PERIOD", "AMOUNT", "SPENT", "STATE", "ON EXHAUSTED"],
                &["id", "tenant_id", "period", "amount", "spent", "state", "on_exhausted"],
            )
            .await
        }
        Some(cmd) => {
            let cl = c.client()?;
            let v = match cmd {
                BudgetsCmd::Create { tenant, amount, period, on_exhausted } => {
                    cl.post("/budgets", &json!({"tenant_id": tenant, "amount": amount, "period": period, "on_exhausted": on_exhausted})).await?
                }
                BudgetsCmd::Set { id, amount } => cl.put(&format!("/budgets/{id}"), &json!({"amount": amount})).await?,
                BudgetsCmd::Delete { id } => {
                    cl.delete(&format!("/budgets/{id}")).await?;
                    eprintln!("budget {id} deleted");
                    return Ok(0);
                }
            };
            if c.output.structured() {
                print_json(&v);
            } else {
                println!("{}", s(&v, "id"));
                eprintln!("{} budget of tenant {}: {} spent of {} ({})", s(&v, "period"), s(&v, "tenant_id"), s(&v, "spent"), s(&v, "amount"), s(&v, "state"));
            }
            Ok(0)
        }
    }
}
