#!/usr/bin/env python3
"""Writes the five Grafana dashboards of Hodei Jobs into deploy/grafana/dashboards/.

    python3 deploy/grafana/dashboards.py           # (re)write the JSON files
    python3 deploy/grafana/dashboards.py --check   # exit 1 if a file differs from this source

The JSON files are what ships (provision them as-is, or let the server push them with
`POST /api/v1/observability/grafana/sync`); this script is their source, so a panel is changed
here and the files regenerated. Every query uses only metrics the server exports; the test
suite runs each one through a real Prometheus scraping a real server.
"""
import json
import pathlib
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


def datasource_var():
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "options": []}


def label_var(name, metric, label):
    q = f"label_values({metric}, {label})"
    return {"name": name, "label": label.capitalize(), "type": "query", "datasource": DS, "definition": q,
            "query": {"query": q, "refId": f"{name}-values"}, "refresh": 2, "multi": True, "includeAll": True,
            "allValue": ".*", "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1, "hide": 0}


class Dashboard:
    def __init__(self, uid, title, description, variables=()):
        self.uid, self.title, self.description = uid, title, description
        self.variables = [datasource_var(), *variables]
        self.panels, self.x, self.y, self.row_h = [], 0, 0, 0

    def panel(self, kind, title, targets, unit="short", w=12, h=8, description="", **extra):
        if self.x + w > 24:
            self.x, self.y = 0, self.y + self.row_h
            self.row_h = 0
        p = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": e, "legendFormat": legend, "range": True}
                        for i, (e, legend) in enumerate(targets)],
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {},
        }
        thresholds = extra.pop("thresholds", None)
        if thresholds:
            p["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": [
                {"color": c, "value": v} for v, c in thresholds]}
            if kind == "timeseries":
                p["fieldConfig"]["defaults"]["custom"] = {"thresholdsStyle": {"mode": "line"}}
        p.update(extra)
        self.panels.append(p)
        self.x += w
        self.row_h = max(self.row_h, h)
        return self

    def json(self):
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["hodei"],
            "editable": True,
            "schemaVersion": 38,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "timezone": "browser",
            "graphTooltip": 1,
            "templating": {"list": self.variables},
            "annotations": {"list": []},
            "links": [{"title": "Hodei dashboards", "type": "dashboards", "tags": ["hodei"], "asDropdown": True}],
            "panels": self.panels,
        }


def q(quantile, metric, by="", sel=""):
    by_clause = f"{by}, le" if by else "le"
    return f"histogram_quantile({quantile}, sum by ({by_clause}) (rate({metric}_bucket{sel}[{RATE}])))"


def overview():
    d = Dashboard("hodei-overview", "Hodei · Cluster Overview",
                  "Jobs, queue, dispatch latency, workers, API and scheduler health of the whole cluster.")
    d.panel("timeseries", "Jobs ended by state", [(f"sum by (state) (rate(hodei_jobs_completed_total[{RATE}]))", "{{state}}")],
            "ops", description="Jobs reaching a final state, per second.")
    d.panel("timeseries", "Jobs submitted and placed", [
        (f"sum(rate(hodei_jobs_submitted_total[{RATE}]))", "submitted"),
        (f"sum(rate(hodei_jobs_scheduled_total[{RATE}]))", "placed")], "ops")
    d.panel("timeseries", "Queued vs running", [
        ('sum(hodei_jobs_queued{state="pending"})', "pending"),
        ('sum(hodei_jobs_queued{state="held"})', "held"),
        ("sum(hodei_jobs_running)", "running")], "short")
    d.panel("timeseries", "Dispatch latency (eligible → started)", [
        (q(0.5, "hodei_dispatch_latency_seconds"), "p50"),
        (q(0.99, "hodei_dispatch_latency_seconds"), "p99")], "s")
    d.panel("timeseries", "Workers by state", [("sum by (state) (hodei_workers)", "{{state}}")], "short", w=8)
    d.panel("timeseries", "API requests by route", [(f"sum by (route) (rate(hodei_http_requests_total[{RATE}]))", "{{route}}")],
            "reqps", w=8)
    d.panel("timeseries", "API 5xx ratio", [
        (f'(sum(rate(hodei_http_requests_total{{status=~"5.."}}[{RATE}])) or vector(0))'
         f" / sum(rate(hodei_http_requests_total[{RATE}]))", "5xx")],
            "percentunit", w=8, thresholds=[(None, "green"), (0.05, "red")])
    d.panel("timeseries", "API latency p95", [(q(0.95, "hodei_http_request_duration_seconds"), "p95")], "s", w=8,
            thresholds=[(None, "green"), (0.2, "red")])
    d.panel("stat", "Scheduler leader", [("max(hodei_scheduler_leader)", "leader")], "none", w=4,
            description="1: a server holds the scheduler lock.", thresholds=[(None, "red"), (1, "green")])
    d.panel("timeseries", "Scheduler loop lag", [("max(hodei_scheduler_loop_lag_seconds)", "lag")], "s", w=4,
            thresholds=[(None, "green"), (5, "red")])
    d.panel("timeseries", "Database", [
        (f"sum by (op) (rate(hodei_db_errors_total[{RATE}]))", "errors {{op}}"),
        (q(0.99, "hodei_db_query_duration_seconds", "op"), "p99 {{op}}")], "short", w=8)
    d.panel("table", "Alerts firing", [("sum by (kind, severity) (hodei_alerts_firing) > 0", "{{kind}} {{severity}}")], "short",
            w=8, description="Alerts the server raised itself (budget thresholds).")
    d.panel("stat", "Version", [("hodei_build_info", "{{version}}")], "none", w=8, options={"textMode": "name"})
    return d


def tenants():
    t = 'tenant=~"$tenant"'
    d = Dashboard("hodei-tenants", "Hodei · Tenants: Fair Share & Quotas",
                  "Per tenant: fair share against actual share, weights, quota use, queue, rejections and bursts.",
                  [label_var("tenant", "hodei_tenant_weight", "tenant")])
    d.panel("timeseries", "Fair vs actual share", [
        (f"hodei_tenant_fair_share{{{t}}}", "{{tenant}} fair"),
        (f"hodei_tenant_actual_share{{{t}}}", "{{tenant}} actual")], "percentunit",
        description="Fair: the share the tenant's weight entitles it to among tenants with work. Actual: what it uses.")
    d.panel("bargauge", "Weights", [(f"hodei_tenant_weight{{{t}}}", "{{tenant}}")], "short",
            description="Fair-share weight (tier weight, lowered while a tenant spends ahead of its budget).")
    d.panel("timeseries", "Quota use", [(f"hodei_tenant_quota_utilization{{{t}}}", "{{tenant}} {{resource}}")], "percentunit",
            thresholds=[(None, "green"), (0.9, "orange"), (1, "red")])
    d.panel("timeseries", "Resources in use", [
        (f"hodei_tenant_cpu_m{{{t}}} / 1000", "{{tenant}} cores"),
        (f"hodei_tenant_memory_mb{{{t}}} / 1024", "{{tenant}} GiB"),
        (f"hodei_tenant_gpu{{{t}}}", "{{tenant}} GPUs")], "short")
    d.panel("timeseries", "Queued and running", [
        (f'sum by (tenant) (hodei_jobs_queued{{state="pending",{t}}})', "{{tenant}} pending"),
        (f"sum by (tenant) (hodei_jobs_running{{{t}}})", "{{tenant}} running")], "short")
    d.panel("timeseries", "Submits", [(f"sum by (tenant) (rate(hodei_jobs_submitted_total{{{t}}}[{RATE}]))", "{{tenant}}")], "ops")
    d.panel("timeseries", "Rejected submits", [
        (f"sum by (tenant, code) (increase(hodei_submissions_rejected_total{{{t}}}[{RATE}]))", "{{tenant}} {{code}}")], "short", w=8)
    d.panel("timeseries", "Quota violations (warn policy)", [
        (f"sum by (tenant, resource) (increase(hodei_quota_violations_total{{{t}}}[{RATE}]))", "{{tenant}} {{resource}}")], "short", w=8)
    d.panel("timeseries", "Bursts", [
        (f"hodei_tenant_burst_active{{{t}}}", "{{tenant}} active"),
        (f"hodei_tenant_burst_utilization_ratio{{{t}}}", "{{tenant}} grant used")], "short", w=8)
    return d


def pools():
    p = 'pool=~"$pool"'
    d = Dashboard("hodei-pools", "Hodei · Pools & Autoscaling",
                  "Per pool: size against desired, min and max; workers; utilization; queue; allocation latency; scaling.",
                  [label_var("pool", "hodei_pool_size", "pool")])
    d.panel("timeseries", "Size vs desired, min, max", [
        (f"hodei_pool_size{{{p}}}", "{{pool}} size"),
        (f"hodei_pool_desired_size{{{p}}}", "{{pool}} desired"),
        (f"hodei_pool_min_size{{{p}}}", "{{pool}} min"),
        (f"hodei_pool_max_size{{{p}}}", "{{pool}} max")], "short")
    d.panel("timeseries", "Workers by state", [(f"sum by (pool, state) (hodei_workers{{{p}}})", "{{pool}} {{state}}")], "short")
    d.panel("timeseries", "Utilization", [
        (f"hodei_pool_cpu_utilization_ratio{{{p}}}", "{{pool}} cpu"),
        (f"hodei_pool_memory_utilization_ratio{{{p}}}", "{{pool}} memory")], "percentunit", w=8)
    d.panel("timeseries", "Busy slots", [(f"hodei_pool_busy_ratio{{{p}}}", "{{pool}}")], "percentunit", w=8)
    d.panel("timeseries", "Queue depth", [(f"hodei_pool_queue_depth{{{p}}}", "{{pool}}")], "short", w=8)
    d.panel("timeseries", "Allocation latency p95 (placed → started)", [
        (q(0.95, "hodei_worker_allocation_latency_seconds", "pool", f"{{{p}}}"), "{{pool}}")], "s",
        thresholds=[(None, "green"), (1, "red")])
    d.panel("timeseries", "Scaling decisions", [
        (f"sum by (pool, action, decision) (increase(hodei_autoscaler_decisions_total{{{p}}}[{RATE}]))", "{{pool}} {{action}} {{decision}}")],
        "short")
    d.panel("timeseries", "Provisioning failures and lost workers", [
        (f"sum by (pool) (increase(hodei_pool_provisioning_failures_total{{{p}}}[{RATE}]))", "{{pool}} provisioning failed"),
        (f"sum by (pool) (increase(hodei_workers_lost_total{{{p}}}[{RATE}]))", "{{pool}} workers lost"),
        (f"hodei_workers_unhealthy{{{p}}}", "{{pool}} unhealthy")], "short")
    d.panel("table", "Pool state", [(f"hodei_pool_state{{{p}}} == 1", "{{pool}} {{state}}")], "short", options={"showHeader": True})
    return d


def sla():
    t = 'tenant=~"$tenant"'
    d = Dashboard("hodei-sla", "Hodei · SLA & Queue Wait",
                  "SLA compliance against 99.9 %, jobs at risk, breaches, queue wait by priority and the oldest wait.",
                  [label_var("tenant", "hodei_tenant_weight", "tenant")])
    d.panel("timeseries", "SLA compliance", [(f"hodei_sla_compliance_ratio{{{t}}}", "{{tenant}} {{level}}")], "percentunit",
            thresholds=[(None, "red"), (0.999, "green")], description="Jobs started within their SLA over jobs started, over the compliance window.")
    d.panel("timeseries", "Waiting jobs at risk and critical", [
        (f"sum by (level, status) (hodei_sla_jobs{{{t}}})", "{{level}} {{status}}")], "short")
    d.panel("timeseries", "Breaches", [(f"sum by (tenant, level) (increase(hodei_sla_breaches_total{{{t}}}[{RATE}]))", "{{tenant}} {{level}}")],
            "short", w=8)
    d.panel("timeseries", "Queue wait by priority", [
        (q(0.5, "hodei_queue_wait_seconds", "priority", f"{{{t}}}"), "p50 {{priority}}"),
        (q(0.95, "hodei_queue_wait_seconds", "priority", f"{{{t}}}"), "p95 {{priority}}"),
        (q(0.99, "hodei_queue_wait_seconds", "priority", f"{{{t}}}"), "p99 {{priority}}")], "s", w=16)
    d.panel("timeseries", "Oldest wait", [(f"hodei_queue_oldest_wait_seconds{{{t}}}", "{{tenant}}")], "s",
            thresholds=[(None, "green"), (3600, "red")])
    d.panel("timeseries", "Jobs past their timeout", [("hodei_jobs_overdue", "{{pool}}")], "short")
    return d


def cost():
    t = 'tenant=~"$tenant"'
    usd_h = "* 3600 / 1e6"
    seconds_left = "scalar(days_in_month() - day_of_month() + 1) * 86400 - scalar(hour() * 3600 + minute() * 60)"
    d = Dashboard("hodei-cost", "Hodei · Cost",
                  "What jobs cost (requested resources × billed seconds × rates), by tenant and pool; budgets; month-end forecast.",
                  [label_var("tenant", "hodei_tenant_weight", "tenant")])
    d.panel("timeseries", "Cost rate by tenant", [
        (f"sum by (tenant) (rate(hodei_tenant_cost_micros_total{{{t}}}[{RATE}])) {usd_h}", "{{tenant}}")], "currencyUSD",
        description="US dollars per hour accrued by running jobs.")
    d.panel("timeseries", "Cost rate by pool", [(f"sum by (pool) (rate(hodei_pool_cost_micros_total[{RATE}])) {usd_h}", "{{pool}}")],
            "currencyUSD")
    d.panel("bargauge", "Month to date by tenant", [
        (f"sum by (tenant) (increase(hodei_tenant_cost_micros_total{{{t}}}[$__range])) / 1e6", "{{tenant}}")], "currencyUSD",
        w=8, timeFrom="now/M", description="Spend since the first of the month.")
    d.panel("bargauge", "Budgets used", [(f"hodei_budget_utilization_ratio{{{t}}}", "{{tenant}} {{project}}")], "percentunit", w=8,
            thresholds=[(None, "green"), (0.8, "yellow"), (0.9, "orange"), (1, "red")])
    d.panel("bargauge", "Month-end forecast by tenant", [
        (f"(sum by (tenant) (increase(hodei_tenant_cost_micros_total{{{t}}}[$__range])) + "
         f"(predict_linear(sum by (tenant) (hodei_tenant_cost_micros_total{{{t}}})[1d:10m], {seconds_left}) "
         f"- sum by (tenant) (hodei_tenant_cost_micros_total{{{t}}}))) / 1e6", "{{tenant}}")], "currencyUSD", w=8, timeFrom="now/M",
        description="Month to date plus the last day's trend (predict_linear) carried to the end of the month.")
    d.panel("timeseries", "Idle capacity by pool", [
        ("1 - hodei_pool_cpu_utilization_ratio", "{{pool}} cpu idle"),
        ("1 - hodei_pool_busy_ratio", "{{pool}} slots idle")], "percentunit", w=24,
        description="Share of each pool's workers not allocated to jobs: capacity that is paid for and not used.")
    return d


DASHBOARDS = [overview, tenants, pools, sla, cost]


def main():
    out = pathlib.Path(__file__).resolve().parent / "dashboards"
    check = "--check" in sys.argv[1:]
    stale = []
    for make in DASHBOARDS:
        d = make()
        path = out / f"{d.uid}.json"
        text = json.dumps(d.json(), indent=2) + "\n"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    if stale:
        print("out of date (run python3 deploy/grafana/dashboards.py): " + ", ".join(stale), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
