//! Jobs (SPEC §4.4): submit one or many, list, read, and the state commands.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hodei_core::idempotency::{IdempotencyRecord, Submitted};
use hodei_core::sched::{CancelOutcome, Scheduler, apply_admission};
use hodei_core::spec::{ArrayInput, FieldError, JobSpec, JobSpecInput};
use hodei_core::{Access, Action, ArrayId, Job, JobId, JobState, Priority, Tenant, TenantId, TenantStatus};
use hodei_store::JobFilter;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::{PageQuery, page_limit, page_of, parse_id};
use crate::auth::{Who, check};
use crate::dto::{
    ArraySubmitted, AttemptView, BatchItem, BatchResult, BatchSubmit, CostEstimate, DryRunView, EventView, ExplainView, JobSubmit, JobView, Page, ProblemItem,
};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::json::KeyedJson;
use crate::{ApiState, ArrayAdmitted, Idempotent, IdempotentCall};

/// The submit as the core's input. `batch`: the ids of a batch's earlier items (`None` where an
/// item was refused), which `depends_on[].index` names; `None` for a single submit.
fn spec_input(b: JobSubmit, batch: Option<&[Option<JobId>]>) -> (JobSpecInput, Option<String>) {
    let (pool, pool_labels) = b.pool_selector.map(|p| (p.pool, p.labels)).unwrap_or_default();
    // An index that names no earlier stored item becomes a value the validation refuses, so
    // that the error names the field like any other.
    let depends_on = b
        .depends_on
        .into_iter()
        .map(|d| {
            let job = match (d.job_id, d.index) {
                (Some(id), None) => id,
                (None, Some(i)) => match batch.map(|b| b.get(i)) {
                    Some(Some(Some(id))) => id.to_string(),
                    Some(_) => format!("index {i}: not an earlier, valid item of this batch"),
                    None => format!("index {i}: index is for batch items; give job_id"),
                },
                _ => "give exactly one of job_id and index".to_owned(),
            };
            (job, d.condition)
        })
        .collect();
    let input = JobSpecInput {
        name: b.name,
        command: b.command,
        env: b.env,
        working_dir: b.working_dir,
        image: b.image,
        cpu_m: b.resources.cpu_m,
        memory_mb: b.resources.memory_mb,
        gpu: b.resources.gpu,
        timeout_ms: b.timeout_ms,
        expected_duration_ms: b.expected_duration_ms,
        max_retries: b.max_retries,
        retry_backoff_ms: b.retry_backoff_ms,
        priority: b.priority,
        sla: b.sla,
        preemptible: b.preemptible,
        hold: b.hold,
        labels: b.labels,
        pool,
        pool_labels,
        array: b.array.map(|a| ArrayInput { start: a.start, end: a.end, step: a.step, max_parallel: a.max_parallel }),
        depends_on,
    };
    (input, b.tenant_id)
}

/// Tenant context (SPEC §1.3): body `tenant_id` › `X-Hodei-Tenant` › the caller's only tenant
/// › the default tenant (admins); a caller with several tenants must say which.
fn tenant_id_for(s: &ApiState, who: &Who, body: Option<&str>, headers: &HeaderMap, prefix: &str) -> ApiResult<TenantId> {
    let field = || format!("{prefix}/tenant_id");
    let header = headers.get("x-hodei-tenant").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let (raw, field) = match (body, header) {
        (Some(b), _) => (b.to_owned(), field()),
        (None, Some(h)) => (h, "X-Hodei-Tenant".to_owned()),
        (None, None) if who.is_admin() => return Ok(s.cfg.default_tenant.clone()),
        (None, None) => {
            return who.only_tenant().ok_or_else(|| {
                ApiError::field(&field(), "which tenant? you have roles in several tenants, or none", "the tenant_id to submit to (or X-Hodei-Tenant)", None)
            });
        }
    };
    TenantId::parse(&raw).map_err(|e| ApiError::field(&field, e.to_string(), "a tenant id (slug)", Some(raw)))
}

/// A job's dependencies as the store has them: each must be a job of `tenant` (else the field
/// is named); the outcome of those already ended goes to the scheduler with the submit. Jobs
/// of the same batch (`batch`) are live by then.
/// An array's id stands for each of its jobs (as Slurm's `afterok:ARRAY`), up to the most
/// dependencies a job may have: the dependencies are given back with arrays expanded.
async fn dependencies(s: &ApiState, tenant: &TenantId, spec: &mut JobSpec, prefix: &str, batch: &[(JobId, TenantId)]) -> ApiResult<Vec<(JobId, JobState)>> {
    let mut ended = Vec::new();
    let mut errors = Vec::new();
    let mut expanded = Vec::with_capacity(spec.depends_on.len());
    for (i, d) in spec.depends_on.iter().enumerate() {
        let in_batch = batch.iter().find(|(id, _)| *id == d.job).map(|(_, t)| t == tenant);
        let stored = match in_batch {
            Some(true) => {
                expanded.push(*d);
                continue;
            }
            Some(false) => None,
            None => s.store.get_job(d.job).await?,
        };
        let field = format!("{prefix}/depends_on/{i}/job_id");
        let mut members = Vec::new();
        match stored {
            Some(j) if j.tenant == *tenant => members.push(j),
            Some(_) => {}
            None => {
                let room = hodei_core::spec::MAX_DEPENDENCIES.saturating_sub(spec.depends_on.len() - 1);
                let filter =
                    JobFilter { tenant: Some(tenant.clone()), array: Some(ArrayId::from_uuid(d.job.as_uuid())), limit: room as u32 + 1, ..Default::default() };
                members = s.store.list_jobs(&filter).await?;
                if members.len() > room {
                    errors.push(FieldError::new(
                        &field,
                        "an array with more jobs than a job may depend on",
                        format!("an array of at most {room} jobs here, or its jobs by id"),
                        Some(d.job.to_string()),
                    ));
                    continue;
                }
            }
        }
        if members.is_empty() {
            errors.push(FieldError::new(
                &field,
                "no such job or array in this tenant",
                format!("the id of a job or array of tenant {tenant}"),
                Some(d.job.to_string()),
            ));
        }
        for j in members {
            if j.is_terminal() {
                ended.push((j.id, j.state));
            }
            expanded.push(hodei_core::spec::Dependency { job: j.id, condition: d.condition });
        }
    }
    if expanded.len() > hodei_core::spec::MAX_DEPENDENCIES && errors.is_empty() {
        let max = hodei_core::spec::MAX_DEPENDENCIES;
        errors.push(FieldError::new(
            format!("{prefix}/depends_on"),
            "too many dependencies once arrays are counted by their jobs",
            format!("at most {max}"),
            Some(expanded.len().to_string()),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    spec.depends_on = expanded;
    Ok(ended)
}

/// The tenant a submit goes to, if the caller may submit there.
async fn tenant_for(s: &ApiState, who: &Who, body: Option<&str>, headers: &HeaderMap, prefix: &str) -> ApiResult<Tenant> {
    let id = tenant_id_for(s, who, body, headers, prefix)?;
    if who.access(Action::Read, &id) == Access::Invisible {
        return Err(ApiError::not_found(format!("tenant {id}")));
    }
    let t = s.tenants.get(s.store.as_ref(), &id).await?.ok_or_else(|| ApiError::not_found(format!("tenant {id}")))?;
    who.may(Action::Submit, &id, "submitting jobs (researcher or above)")?;
    if t.status == TenantStatus::Suspended {
        return Err(ApiError::new(ErrorCode::TenantSuspended, format!("tenant {id} is suspended; submits are refused")));
    }
    if let Some(why) = s.budget_refusals.read().ok().and_then(|r| r.get(&id).cloned()) {
        return Err(ApiError::new(ErrorCode::BudgetExhausted, format!("{why}; submits are refused until a new period or a larger amount")));
    }
    Ok(t)
}

/// A job no pool could ever run is refused now rather than left pending forever, naming the
/// nearest pool and what it lacks (the core's placement checks, as the scheduler asks them).
fn unschedulable(s: &ApiState, tenant: &TenantId, spec: &JobSpec, prefix: &str) -> Option<FieldError> {
    use hodei_core::placement::{Misfit, pool_misfit};
    let pools = s.pools.read().ok()?;
    let misfits: Vec<(&hodei_core::Pool, Misfit)> = pools.iter().map(|p| pool_misfit(p, tenant, spec).map(|m| (p, m))).collect::<Option<_>>()?;
    // The nearest: a pool the job selects, lacking a capability rather than size or slots,
    // rather than labels, rather than running the tenant's jobs at all.
    let rank = |m: &Misfit| match m {
        Misfit::NotSelected => 5,
        Misfit::NotAllowed => 4,
        Misfit::LacksLabel(_) => 3,
        Misfit::NoSlots => 2,
        Misfit::TooSmall { .. } => 1,
        Misfit::LacksCapability(_) => 0,
    };
    let Some((pool, misfit)) = misfits.iter().filter(|(_, m)| *m != Misfit::NotSelected).min_by_key(|(_, m)| rank(m)) else {
        return Some(FieldError::new(format!("{prefix}/pool_selector/pool"), "no pool of that id exists", "an existing pool", None));
    };
    let (field, expected) = match misfit {
        Misfit::LacksCapability(c) => ("image", format!("no image: no pool's workers have the capability `{c}` (they run processes)")),
        Misfit::NotAllowed => ("tenant_id", format!("a tenant that pool {} runs jobs of", pool.id)),
        Misfit::LacksLabel(_) => {
            let labels: Vec<String> = misfits
                .iter()
                .filter(|(_, m)| *m != Misfit::NotSelected)
                .map(|(p, _)| format!("{}: {}", p.id, p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")))
                .collect();
            ("pool_selector/labels", format!("labels a pool's workers carry ({})", labels.join("; ")))
        }
        _ => {
            let shapes: Vec<String> =
                misfits.iter().filter(|(_, m)| *m != Misfit::NotSelected).map(|(p, _)| format!("{}: {}", p.id, p.worker_resources)).collect();
            ("resources", format!("resources within a pool's worker shape ({})", shapes.join("; ")))
        }
    };
    Some(FieldError::new(format!("{prefix}/{field}"), format!("no pool can ever run this job: nearest is pool {}, where {misfit}", pool.id), expected, None))
}

fn unschedulable_error(e: FieldError) -> ApiError {
    let mut err = ApiError::validation(vec![e]);
    err.code = ErrorCode::Unschedulable;
    err
}

fn new_job(s: &ApiState, tenant: &Tenant, spec: JobSpec) -> Job {
    Job::new(JobId::from_uuid(Uuid::now_v7()), tenant.id.clone(), spec, s.clock.now())
}

/// A validated spec, stamped with its submitter.
fn validated(s: &ApiState, who: &Who, input: JobSpecInput, prefix: &str) -> ApiResult<JobSpec> {
    let mut spec = input.validate(&s.cfg.limits, prefix).map_err(ApiError::validation)?;
    spec.submitted_by = Some(who.principal);
    Ok(spec)
}

fn count_rejected(tenant: &TenantId, code: &'static str) {
    metrics::counter!("hodei_submissions_rejected_total", "tenant" => tenant.to_string(), "code" => code).increment(1);
}

fn count_submitted(jobs: &[Job]) {
    for j in jobs {
        metrics::counter!("hodei_jobs_submitted_total", "tenant" => j.tenant.to_string(), "priority" => j.spec.priority.as_str()).increment(1);
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SubmitQuery {
    /// Answer "would it be admitted, where, and when" without storing anything.
    #[serde(default)]
    pub dry_run: bool,
}

/// A 201 for `body`, at `location`; a repeat answered from its idempotency record says so.
fn created(location: &str, body: impl serde::Serialize, replayed: bool) -> Response {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    if replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    (StatusCode::CREATED, h, Json(body)).into_response()
}

fn gone(r: &IdempotencyRecord) -> ApiError {
    ApiError::new(ErrorCode::Conflict, format!("what Idempotency-Key {:?} stored is no longer there; use a new key", r.key))
}

/// A repeat of a single-job POST: the job its first call stored, as it is now.
async fn replayed_job(s: &ApiState, r: &IdempotencyRecord) -> ApiResult<Response> {
    let Submitted::Jobs(ids) = &r.submitted else { return Err(gone(r)) };
    let Some(Some(id)) = ids.first() else { return Err(gone(r)) };
    let job = s.store.get_job(*id).await?.ok_or_else(|| gone(r))?;
    Ok(created(&format!("/api/v1/jobs/{id}"), view(s, &job).await?, true))
}

/// Submit a job. 201 once it is durably stored; 429 `quota_exceeded` when its tenant's quota
/// refuses it (SPEC §2.4). With `array`, one job per index, all or none, and the 201 body is
/// an `ArraySubmitted`. With `dry_run=true`, 200 and a [`DryRunView`]; nothing is stored.
/// With an `Idempotency-Key`, a repeat within 24 h answers with what the first call stored
/// (header `Idempotent-Replayed: true`) and stores nothing; another request under the same key
/// is 409 `conflict`.
#[utoipa::path(post, path = "/jobs", params(SubmitQuery, ("Idempotency-Key" = Option<String>, Header, description = "makes the POST safe to repeat for 24 h")), request_body = JobSubmit, responses((status = 201, body = JobView, description = "the job; with `array`, an ArraySubmitted"), (status = 200, body = DryRunView), (status = 400, body = crate::error::Problem), (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem, description = "the Idempotency-Key was used for another body"), (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)), tag = "jobs")]
pub async fn submit_job(
    State(s): State<ApiState>,
    who: Who,
    Query(q): Query<SubmitQuery>,
    headers: HeaderMap,
    KeyedJson { body, key }: KeyedJson<JobSubmit>,
) -> ApiResult<Response> {
    let _gate = s.tenant_gate.read().await;
    let (input, tenant) = spec_input(body, None);
    let tenant = tenant_for(&s, &who, tenant.as_deref(), &headers, "").await?;
    crate::ctx::record("tenant", &tenant.id);
    let spec = validated(&s, &who, input, "")?;
    let never = unschedulable(&s, &tenant.id, &spec, "");
    if q.dry_run {
        return Ok(dry_run(&s, new_job(&s, &tenant, spec), never).await?.into_response());
    }
    if let Some(e) = never {
        return Err(unschedulable_error(e));
    }
    // Dependencies are checked (bad input changes nothing) before the rate is charged.
    let mut spec = spec;
    let ended = dependencies(&s, &tenant.id, &mut spec, "", &[]).await?;
    let count = spec.array.map_or(1, |a| a.count());
    let wants = [(tenant.id.clone(), count)];
    s.submit_rate.admit(&wants, s.clock.now())?;
    let key = key.map(|request| IdempotentCall { tenant: tenant.id.clone(), request });
    if let Some(array) = spec.array {
        return submit_array(&s, &tenant, spec, array, key, ended).await;
    }
    let mut job = new_job(&s, &tenant, spec);
    crate::ctx::record("job_id", &job.id);
    let admitted = match s.control.submit(vec![job.clone()], true, key, ended).await? {
        Idempotent::New(mut a) => a.pop().ok_or_else(|| ApiError::new(ErrorCode::Internal, "no admission"))?,
        Idempotent::Replayed(r) => {
            s.submit_rate.give_back(&wants);
            return replayed_job(&s, &r).await;
        }
    };
    match admitted {
        Ok(a) => apply_admission(&mut job, &a),
        Err(r) => {
            count_rejected(&tenant.id, "quota_exceeded");
            return Err(r.into());
        }
    }
    count_submitted(std::slice::from_ref(&job));
    // Its dependencies decided its state as it was stored (held, queued or cancelled): answer
    // with the stored job.
    if !job.spec.depends_on.is_empty()
        && let Some(stored) = s.store.get_job(job.id).await?
    {
        job = stored;
    }
    // Nothing of a job just stored has run: it has cost nothing.
    Ok(created(&format!("/api/v1/jobs/{}", job.id), JobView::of(&job, &s.cfg, 0), false))
}

/// An array job: one job per index, sharing one spec, admitted all or none in one transaction.
async fn submit_array(
    s: &ApiState,
    tenant: &Tenant,
    spec: JobSpec,
    array: hodei_core::spec::ArraySpec,
    key: Option<IdempotentCall>,
    ended: Vec<(JobId, JobState)>,
) -> ApiResult<Response> {
    let array_id = ArrayId::from_uuid(Uuid::now_v7());
    let count = array.count();
    let priority = spec.priority;
    // The engine makes the members (one copy of this template per index) as it takes them.
    let template = Job::new(JobId::from_uuid(array_id.as_uuid()), tenant.id.clone(), spec, s.clock.now());
    let ArrayAdmitted { admitted, ids } = match s.control.submit_array(template, array_id, key, ended).await? {
        Idempotent::New(a) => a,
        Idempotent::Replayed(r) => {
            s.submit_rate.give_back(&[(tenant.id.clone(), count)]);
            let Submitted::Array { array, first, last, count } = r.submitted else { return Err(gone(&r)) };
            let body = ArraySubmitted { array_id: array.to_string(), count, first_job_id: first.to_string(), last_job_id: last.to_string() };
            return Ok(created(&format!("/api/v1/jobs?array_id={array}"), body, true));
        }
    };
    if let Some(r) = admitted.iter().find_map(|a| a.as_ref().err()) {
        count_rejected(&tenant.id, "quota_exceeded");
        let refused = admitted.iter().filter(|a| a.is_err()).count();
        let mut err = ApiError::from(*r);
        err.detail = format!("{refused} of {count} jobs of the array refused by quota: {}; nothing was stored", err.detail);
        return Err(err);
    }
    let Some((first, last)) = ids else { return Err(ApiError::new(ErrorCode::Internal, "the scheduler stored an array without members")) };
    metrics::counter!("hodei_jobs_submitted_total", "tenant" => tenant.id.to_string(), "priority" => priority.as_str()).increment(u64::from(count));
    let body = ArraySubmitted { array_id: array_id.to_string(), count, first_job_id: first.to_string(), last_job_id: last.to_string() };
    Ok(created(&format!("/api/v1/jobs?array_id={array_id}"), body, false))
}

/// What a submit of `job` would do now: admission, state, blockers, candidate pools, ETA and
/// cost, from a copy of the scheduler's state. Nothing is stored.
async fn dry_run(s: &ApiState, job: Job, never: Option<FieldError>) -> ApiResult<Json<DryRunView>> {
    let horizon = s.cfg.eta_horizon;
    let probe = job.clone();
    // Admission is read in place (it is what a submit would meet now); the forward run works on
    // a shared copy, as explain's does.
    let (admission, expected, now) =
        crate::read(s.control.as_ref(), move |sched, now| (sched.admission(&probe, now), sched.expected_duration(&probe), now)).await?;
    let sim = match admission {
        Ok(_) if never.is_none() => s.snapshots.get(s.control.as_ref(), |_| true).await?,
        _ => None,
    };
    let mut problems = Vec::new();
    if let Some(e) = &never {
        problems.push(ProblemItem { code: "unschedulable".into(), message: format!("{}; expected {}", e.message, e.expected) });
    }
    let mut admitted = job.clone();
    match &admission {
        Ok(a) => apply_admission(&mut admitted, a),
        Err(r) => problems.push(ProblemItem { code: "quota_exceeded".into(), message: ApiError::from(*r).detail }),
    }
    let explained = match sim {
        Some(snap) => {
            let _turn = s.snapshots.simulation().await;
            let (id, j, now) = (job.id, job.clone(), now.max(snap.now));
            tokio::task::spawn_blocking(move || {
                let mut sim = Scheduler::clone(&snap.sched);
                let _ = sim.submit(j, now);
                sim.explain(id, now, horizon)
            })
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("dry run failed: {e}")))?
        }
        None => None,
    };
    let view = ExplainView::new(&admitted, explained.as_ref(), 0);
    let res = &job.spec.resources;
    let rates = s.current_rates();
    let cost = |d: std::time::Duration| hodei_core::cost::cost_micros(hodei_core::cost::billed_seconds(d.as_millis() as u64), res, &rates);
    let admissible = problems.is_empty();
    Ok(Json(DryRunView {
        admissible,
        would_be_state: admissible.then(|| admitted.state.to_string()),
        problems,
        blocking_reasons: view.blocking_reasons,
        candidate_pools: view.candidate_pools,
        estimated_start_at: view.estimated_start_at,
        estimated_cost_micros: CostEstimate { expected: cost(expected), max: cost(job.spec.timeout) },
        warnings: admitted.warnings,
    }))
}

/// Submit up to `jobs.max_batch_size` jobs in one call, in one transaction. An
/// `Idempotency-Key` (scoped to the request's tenant: `X-Hodei-Tenant` or the default) works as
/// for `POST /jobs`: a repeat answers with the ids the first call stored.
#[utoipa::path(post, path = "/jobs/batch", params(("Idempotency-Key" = Option<String>, Header, description = "makes the POST safe to repeat for 24 h")), request_body = BatchSubmit, responses((status = 201, body = BatchResult), (status = 400, description = "a malformed body or an atomic batch with a bad job (a problem), or a non-atomic batch none of whose jobs was stored (each item's error)", content((crate::error::Problem = "application/problem+json"), (BatchResult = "application/json"))), (status = 409, body = crate::error::Problem, description = "the Idempotency-Key was used for another body"), (status = 413, body = crate::error::Problem)), tag = "jobs")]
pub async fn submit_batch(State(s): State<ApiState>, who: Who, headers: HeaderMap, KeyedJson { body, key }: KeyedJson<BatchSubmit>) -> ApiResult<Response> {
    let t0 = std::time::Instant::now();
    let _gate = s.tenant_gate.read().await;
    let n = body.jobs.len();
    if n == 0 {
        return Err(ApiError::field("/jobs", "no jobs", "at least one job", Some("0".into())));
    }
    if n > s.cfg.max_batch_size {
        return Err(ApiError::new(ErrorCode::PayloadTooLarge, format!("{n} jobs in one batch; at most {} (jobs.max_batch_size)", s.cfg.max_batch_size)));
    }
    let mut tenants: Vec<Tenant> = Vec::new();
    let mut jobs = Vec::with_capacity(n);
    let mut items = Vec::with_capacity(n);
    let mut errors: Vec<FieldError> = Vec::new();
    // A batch none of whose jobs the caller may submit is refused as a whole with that answer.
    let mut refused: Option<ApiError> = None;
    let mut refusals = 0;
    // Each item's id (None: refused), for `depends_on[].index`; the valid ones with their tenant.
    let mut ids: Vec<Option<JobId>> = Vec::with_capacity(n);
    let mut earlier: Vec<(JobId, TenantId)> = Vec::new();
    let mut ended: Vec<(JobId, JobState)> = Vec::new();
    for (i, b) in body.jobs.into_iter().enumerate() {
        let prefix = format!("/jobs/{i}");
        let (input, tid) = spec_input(b, Some(&ids));
        let parsed = match tenant_id_for(&s, &who, tid.as_deref(), &headers, &prefix) {
            Ok(id) => match tenants.iter().find(|t| t.id == id) {
                Some(t) => Ok((input, t.clone())),
                None => tenant_for(&s, &who, Some(id.as_str()), &headers, &prefix).await.inspect(|t| tenants.push(t.clone())).map(|t| (input, t)),
            },
            Err(e) => Err(e),
        };
        let outcome = parsed.and_then(|(input, t)| {
            let spec = validated(&s, &who, input, &prefix)?;
            if let Some(e) = unschedulable(&s, &t.id, &spec, &prefix) {
                return Err(unschedulable_error(e));
            }
            Ok(new_job(&s, &t, spec))
        });
        let outcome = match outcome {
            Ok(mut job) if !job.spec.depends_on.is_empty() => {
                let tenant = job.tenant.clone();
                match dependencies(&s, &tenant, std::sync::Arc::make_mut(&mut job.spec), &prefix, &earlier).await {
                    Ok(done) => {
                        ended.extend(done);
                        Ok(job)
                    }
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        ids.push(outcome.as_ref().ok().map(|j| j.id));
        match outcome {
            Ok(job) => {
                earlier.push((job.id, job.tenant.clone()));
                items.push(BatchItem { index: i, job_id: Some(job.id.to_string()), error: None });
                jobs.push(job);
            }
            Err(e) => {
                if matches!(e.code, ErrorCode::NotFound | ErrorCode::Forbidden) {
                    refusals += 1;
                    if refused.as_ref().is_none_or(|r| r.code == e.code) {
                        refused = Some(ApiError::new(e.code, format!("nothing was stored: {}", e.detail)));
                    }
                }
                let (_, code, _) = e.code.parts();
                let fields: Vec<_> =
                    e.errors.iter().map(|f| serde_json::json!({"field": f.field, "message": f.message, "expected": f.expected, "value": f.value})).collect();
                items.push(BatchItem { index: i, job_id: None, error: Some(serde_json::json!({"code": code, "detail": e.detail, "errors": fields})) });
                errors.extend(e.errors);
            }
        }
    }
    if refusals == n
        && let Some(e) = refused
    {
        return Err(e);
    }
    if body.atomic && jobs.len() < n {
        let mut err = ApiError::validation(errors);
        err.detail = format!("{} of {n} jobs are invalid; nothing was stored (atomic batch)", n - jobs.len());
        return Err(err);
    }
    let validated = t0.elapsed();
    let mut per_tenant: Vec<(TenantId, u32)> = Vec::new();
    for j in &jobs {
        match per_tenant.iter_mut().find(|(t, _)| *t == j.tenant) {
            Some((_, n)) => *n += 1,
            None => per_tenant.push((j.tenant.clone(), 1)),
        }
    }
    let key = match key {
        Some(request) => Some(IdempotentCall { tenant: tenant_id_for(&s, &who, None, &headers, "")?, request }),
        None => None,
    };
    s.submit_rate.admit(&per_tenant, s.clock.now())?;
    if !jobs.is_empty() {
        let who: Vec<(TenantId, Priority)> = jobs.iter().map(|j| (j.tenant.clone(), j.spec.priority)).collect();
        let admitted = match s.control.submit(jobs, body.atomic, key, ended).await? {
            Idempotent::New(a) => a,
            Idempotent::Replayed(r) => {
                s.submit_rate.give_back(&per_tenant);
                return replayed_batch(items, &r);
            }
        };
        if body.atomic
            && let Some((i, r)) = admitted.iter().enumerate().find_map(|(i, a)| a.as_ref().err().map(|r| (i, *r)))
        {
            let refused = admitted.iter().filter(|a| a.is_err()).count();
            count_rejected(&who[i].0, "quota_exceeded");
            let index = items.iter().filter(|it| it.job_id.is_some()).nth(i).map_or(i, |it| it.index);
            let mut err = ApiError::from(r);
            err.detail = format!("{refused} of {n} jobs refused by quota, the first at /jobs/{index}: {}; nothing was stored (atomic batch)", err.detail);
            return Err(err.with("index", index.into()));
        }
        // Items that passed validation, in order, line up with `admitted`.
        let mut results = admitted.into_iter().zip(who);
        for item in items.iter_mut().filter(|i| i.job_id.is_some()) {
            let Some((a, (tenant, priority))) = results.next() else { break };
            match a {
                Ok(_) => {
                    metrics::counter!("hodei_jobs_submitted_total", "tenant" => tenant.to_string(), "priority" => priority.as_str()).increment(1);
                }
                Err(r) => {
                    count_rejected(&tenant, "quota_exceeded");
                    let e = ApiError::from(r);
                    item.job_id = None;
                    item.error =
                        Some(serde_json::json!({"code": "quota_exceeded", "detail": e.detail, "limit": r.breach.limit.as_str(), "retryable": r.retryable}));
                }
            }
        }
    }
    tracing::debug!(n, validate_ms = validated.as_millis() as u64, commit_ms = (t0.elapsed() - validated).as_millis() as u64, "batch submitted");
    let status = if items.iter().any(|i| i.job_id.is_some()) { StatusCode::CREATED } else { StatusCode::BAD_REQUEST };
    Ok((status, Json(BatchResult { items })).into_response())
}

/// A repeat of a batch: the same body validates to the same items, and those that reached the
/// scheduler get the ids (or the quota refusals) of the first call.
fn replayed_batch(mut items: Vec<BatchItem>, r: &IdempotencyRecord) -> ApiResult<Response> {
    let Submitted::Jobs(ids) = &r.submitted else { return Err(gone(r)) };
    let valid: Vec<&mut BatchItem> = items.iter_mut().filter(|i| i.job_id.is_some()).collect();
    if valid.len() != ids.len() {
        return Err(gone(r));
    }
    for (item, id) in valid.into_iter().zip(ids) {
        match id {
            Some(id) => item.job_id = Some(id.to_string()),
            None => {
                item.job_id = None;
                item.error = Some(serde_json::json!({"code": "quota_exceeded", "detail": "refused by quota when this key was first used", "retryable": true}));
            }
        }
    }
    let mut h = HeaderMap::new();
    h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok((StatusCode::CREATED, h, Json(BatchResult { items })).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    pub tenant_id: Option<String>,
    /// Comma-separated states.
    #[param(
        pattern = "^(pending|held|scheduled|running|succeeded|failed|cancelled|timed_out)(,(pending|held|scheduled|running|succeeded|failed|cancelled|timed_out))*$"
    )]
    pub state: Option<String>,
    /// A label selector, terms comma-separated, all of which hold: `k=v`, `k!=v` (also jobs
    /// without `k`), `k` (has the label), `!k` (has not). E.g. `team=ml,env!=prod`.
    pub label: Option<String>,
    /// The jobs of one array job.
    pub array_id: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// List jobs, newest first, with cursor pagination.
#[utoipa::path(get, path = "/jobs", params(JobQuery), responses((status = 200, body = Page<JobView>), (status = 400, body = crate::error::Problem)), tag = "jobs")]
pub async fn list_jobs(State(s): State<ApiState>, who: Who, Query(q): Query<JobQuery>) -> ApiResult<Json<Page<JobView>>> {
    let limit = page_limit(q.limit)?;
    let tenant = q
        .tenant_id
        .as_deref()
        .map(|t| TenantId::parse(t).map_err(|e| ApiError::field("tenant_id", e.to_string(), "a tenant id", Some(t.to_owned()))))
        .transpose()?;
    let mut states = Vec::new();
    for st in q.state.as_deref().unwrap_or("").split(',').filter(|x| !x.is_empty()) {
        states.push(st.parse::<JobState>().map_err(|()| ApiError::field("state", "unknown job state", JobState::expected(), Some(st.to_owned())))?);
    }
    let labels = hodei_store::LabelTerm::parse_selector(q.label.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::field("label", e, "a label selector: comma-separated k=v, k!=v, k or !k", q.label.clone()))?;
    let before = q
        .cursor
        .as_deref()
        .map(|c| c.parse::<JobId>().map_err(|_| ApiError::new(ErrorCode::BadRequest, format!("cursor {c:?} is not one this API returned"))))
        .transpose()?;
    let array = q
        .array_id
        .as_deref()
        .map(|a| {
            a.parse::<ArrayId>().map_err(|_| ApiError::field("array_id", "not an array id", "the array_id a submit returned (a UUID)", Some(a.to_owned())))
        })
        .transpose()?;
    let visible = who.visibility().into_filter();
    let jobs = s.store.list_jobs(&JobFilter { tenant, visible, states, labels, array, before, limit }).await?;
    let next_cursor = (jobs.len() == limit as usize).then(|| jobs.last().map(|j| j.id.to_string())).flatten();
    let costs: std::collections::HashMap<JobId, i64> = s.store.job_costs(&jobs.iter().map(|j| j.id).collect::<Vec<_>>()).await?.into_iter().collect();
    Ok(Json(Page { items: jobs.iter().map(|j| JobView::of(j, &s.cfg, costs.get(&j.id).copied().unwrap_or(0))).collect(), next_cursor }))
}

/// A job the caller sees; another tenant's is "not found" exactly like a missing one (one
/// store read either way).
pub(crate) async fn load(s: &ApiState, who: &Who, id: &str) -> ApiResult<Job> {
    let jid: JobId = parse_id("job", id)?;
    match s.store.get_job(jid).await? {
        Some(job) if who.access(Action::Read, &job.tenant) != Access::Invisible => {
            crate::ctx::record("job_id", &job.id);
            crate::ctx::record("tenant", &job.tenant);
            Ok(job)
        }
        _ => Err(ApiError::not_found(format!("job {id}"))),
    }
}

/// A job the caller may cancel, retry, hold or release: its own (researcher and above) or
/// anyone's in a tenant where it is pi.
async fn load_to_control(s: &ApiState, who: &Who, id: &str) -> ApiResult<Job> {
    let job = load(s, who, id).await?;
    check(who.access_job_control(&job.tenant, job.spec.submitted_by), format!("job {id}"), "changing this job (your own jobs as researcher, any as pi)")?;
    Ok(job)
}

/// One job, with its attempts.
#[utoipa::path(get, path = "/jobs/{id}", responses((status = 200, body = JobView), (status = 404, body = crate::error::Problem)), tag = "jobs")]
pub async fn get_job(State(s): State<ApiState>, who: Who, Path(id): Path<String>) -> ApiResult<Json<JobView>> {
    let job = load(&s, &who, &id).await?;
    let attempts = s.store.list_attempts(job.id).await?;
    let mut view = JobView::of(&job, &s.cfg, attempts.iter().map(|a| a.cost_micros).sum());
    view.attempts = Some(attempt_views(&s, &attempts).await?);
    Ok(Json(view))
}

/// The views of `attempts`, with the usage summary of those that ended.
async fn attempt_views(s: &ApiState, attempts: &[hodei_core::Attempt]) -> ApiResult<Vec<AttemptView>> {
    let ended: Vec<hodei_core::AttemptId> = attempts.iter().filter(|a| a.started_at.is_some() && a.finished_at.is_some()).map(|a| a.id).collect();
    let usage = if ended.is_empty() { Vec::new() } else { s.store.attempt_usage(&ended).await? };
    Ok(attempts
        .iter()
        .map(|a| AttemptView {
            usage: usage.iter().find(|u| u.attempt == a.id).and_then(|u| u.summary.as_ref()).map(Into::into),
            ..AttemptView::of(a, &s.cfg.currency)
        })
        .collect())
}

/// A job's attempts, oldest first.
#[utoipa::path(get, path = "/jobs/{id}/attempts", params(PageQuery), responses((status = 200, body = Page<AttemptView>), (status = 400, body = crate::error::Problem), (status = 404, body = crate::error::Problem)), tag = "jobs")]
pub async fn list_attempts(State(s): State<ApiState>, who: Who, Path(id): Path<String>, Query(q): Query<PageQuery>) -> ApiResult<Json<Page<AttemptView>>> {
    let job = load(&s, &who, &id).await?;
    let page = page_of(&s.store.list_attempts(job.id).await?, q.limit, q.cursor.as_deref(), |a| a.clone())?;
    Ok(Json(Page { items: attempt_views(&s, &page.items).await?, next_cursor: page.next_cursor }))
}

/// A job's state transitions, oldest first.
#[utoipa::path(get, path = "/jobs/{id}/events", params(PageQuery), responses((status = 200, body = Page<EventView>), (status = 400, body = crate::error::Problem), (status = 404, body = crate::error::Problem)), tag = "jobs")]
pub async fn list_events(State(s): State<ApiState>, who: Who, Path(id): Path<String>, Query(q): Query<PageQuery>) -> ApiResult<Json<Page<EventView>>> {
    let job = load(&s, &who, &id).await?;
    Ok(Json(page_of(&s.store.list_events(job.id).await?, q.limit, q.cursor.as_deref(), |e| EventView::from(e))?))
}

async fn reread(s: &ApiState, id: JobId) -> ApiResult<Json<JobView>> {
    let job = s.store.get_job(id).await?.ok_or_else(|| ApiError::not_found(format!("job {id}")))?;
    Ok(Json(view(s, &job).await?))
}

/// A job's view with its cost so far.
async fn view(s: &ApiState, job: &Job) -> ApiResult<JobView> {
    let cost = s.store.job_costs(&[job.id]).await?.first().map_or(0, |c| c.1);
    Ok(JobView::of(job, &s.cfg, cost))
}

/// Cancel: 200 when the job is cancelled now, 202 when a running job's kill was requested.
#[utoipa::path(post, path = "/jobs/{id}/cancel", responses((status = 200, body = JobView), (status = 202, body = JobView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)), tag = "jobs")]
pub async fn cancel_job(State(s): State<ApiState>, who: Who, Path(id): Path<String>) -> ApiResult<(StatusCode, Json<JobView>)> {
    let job = load_to_control(&s, &who, &id).await?;
    let status = match s.control.cancel(job.id, who.principal).await? {
        CancelOutcome::Cancelled => StatusCode::OK,
        CancelOutcome::Requested => StatusCode::ACCEPTED,
    };
    Ok((status, reread(&s, job.id).await?))
}

/// Retry an ended job (failed, cancelled, timed out) with its retry budget reset.
#[utoipa::path(post, path = "/jobs/{id}/retry", responses((status = 200, body = JobView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)), tag = "jobs")]
pub async fn retry_job(State(s): State<ApiState>, who: Who, Path(id): Path<String>) -> ApiResult<Json<JobView>> {
    let job = load_to_control(&s, &who, &id).await?;
    s.control.retry(job.id, who.principal).await?;
    reread(&s, job.id).await
}

/// Hold a pending job.
#[utoipa::path(post, path = "/jobs/{id}/hold", responses((status = 200, body = JobView), (status = 409, body = crate::error::Problem)), tag = "jobs")]
pub async fn hold_job(State(s): State<ApiState>, who: Who, Path(id): Path<String>) -> ApiResult<Json<JobView>> {
    let job = load_to_control(&s, &who, &id).await?;
    s.control.hold(job.id, who.principal).await?;
    reread(&s, job.id).await
}

/// Release a held job.
#[utoipa::path(post, path = "/jobs/{id}/release", responses((status = 200, body = JobView), (status = 409, body = crate::error::Problem)), tag = "jobs")]
pub async fn release_job(State(s): State<ApiState>, who: Who, Path(id): Path<String>) -> ApiResult<Json<JobView>> {
    let job = load_to_control(&s, &who, &id).await?;
    s.control.release(job.id, who.principal).await?;
    reread(&s, job.id).await
}

/// Why a job is not running, and when it is expected to start (SPEC §4.4).
#[utoipa::path(get, path = "/jobs/{id}/explain", responses((status = 200, body = ExplainView), (status = 404, body = crate::error::Problem)), tag = "jobs")]
pub async fn explain_job(State(s): State<ApiState>, who: Who, Path(id): Path<String>) -> ApiResult<Json<ExplainView>> {
    let job = load(&s, &who, &id).await?;
    let horizon = s.cfg.eta_horizon;
    let (jid, state) = (job.id, job.state);
    // The forward run works on a shared copy, off the engine's thread, one that has the job as
    // the store has it; a job the scheduler no longer holds, or a live set too large to copy,
    // is explained in place (and the latter without an ETA).
    let snap = s.snapshots.get(s.control.as_ref(), move |sched| sched.job(&jid).is_some_and(|j| j.state == state)).await?;
    let explained = match snap {
        Some(snap) if snap.sched.job(&jid).is_some() => {
            let _turn = s.snapshots.simulation().await;
            let now = s.clock.now().max(snap.now);
            tokio::task::spawn_blocking(move || (snap.sched.explain(jid, now, horizon), snap.sched.virtual_time()))
                .await
                .map_err(|e| ApiError::new(ErrorCode::Internal, format!("explain failed: {e}")))?
        }
        _ => crate::read(s.control.as_ref(), move |sched, now| (sched.explain(jid, now, horizon), sched.virtual_time())).await?,
    };
    Ok(Json(ExplainView::new(&job, explained.0.as_ref(), explained.1)))
}
