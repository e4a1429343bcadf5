// Jobs: the filterable list, and a job's page — spec, explain, attempts, events, usage, cost,
// live logs, and the controls the caller's role allows.

import { api, apiAll, query, events, ApiError } from './api.js';
import { h, fill, card, table, facts, fmt, badge } from './dom.js';
import { lineChart } from './charts.js';

const STATES = ['pending', 'held', 'scheduled', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out'];
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled', 'timed_out']);

export const jobLink = (j) => h('a', { href: `/ui/jobs/${encodeURIComponent(j.id)}` }, j.name || fmt.short(j.id));

function elapsed(j) {
  if (j.run_time_ms !== null && j.run_time_ms !== undefined) return fmt.dur(j.run_time_ms);
  if (j.started_at) return fmt.dur(Date.now() - new Date(j.started_at).getTime());
  return '—';
}

export async function jobList(view, _params, ctx) {
  ctx.title('Jobs');
  const q = ctx.query;
  const filters = { state: q.get('state') || '', tenant_id: q.get('tenant_id') || '', label: q.get('label') || '' };
  const cursors = []; // cursors of the pages before this one
  let cursor = q.get('cursor') || '';

  const stateSel = h('select', { id: 'f-state', name: 'state' }, h('option', { value: '' }, 'any state'), STATES.map((s) => h('option', { value: s }, s.replace('_', ' '))));
  stateSel.value = filters.state;
  const tenantSel = h('select', { id: 'f-tenant', name: 'tenant_id' }, h('option', { value: '' }, 'any tenant'));
  const labelIn = h('input', { id: 'f-label', name: 'label', type: 'search', placeholder: 'team=ml,env!=prod', value: filters.label });
  const apply = () => {
    filters.state = stateSel.value;
    filters.tenant_id = tenantSel.value;
    filters.label = labelIn.value.trim();
    cursors.length = 0;
    cursor = '';
    ctx.setQuery(Object.fromEntries(Object.entries(filters).filter(([, v]) => v)));
    ctx.run(load);
  };
  const form = h('form', { class: 'filters', role: 'search', onsubmit: (e) => { e.preventDefault(); apply(); } },
    h('label', { for: 'f-state' }, 'State'), stateSel,
    h('label', { for: 'f-tenant' }, 'Tenant'), tenantSel,
    h('label', { for: 'f-label' }, 'Labels'), labelIn,
    h('button', { type: 'submit' }, 'Filter'));
  stateSel.addEventListener('change', apply);
  tenantSel.addEventListener('change', apply);
  const list = h('div', { 'aria-live': 'polite' });
  const newer = h('button', { type: 'button', disabled: true, onclick: () => { cursor = cursors.pop() || ''; ctx.run(load); } }, '← Newer');
  const older = h('button', { type: 'button', disabled: true }, 'Older →');
  fill(view, h('h1', {}, 'Jobs'), form, list, h('div', { class: 'pager' }, newer, older));

  const tenants = ctx.me.admin ? (await apiAll('/tenants', { signal: ctx.signal })).items.map((t) => t.id) : ctx.me.tenants();
  for (const t of tenants) tenantSel.append(h('option', { value: t }, t));
  tenantSel.value = filters.tenant_id;

  let next = null;
  older.addEventListener('click', () => {
    if (!next) return;
    cursors.push(cursor);
    cursor = next;
    ctx.run(load);
  });
  async function load() {
    const page = await api(`/jobs${query({ ...filters, cursor, limit: 50 })}`, { signal: ctx.signal });
    next = page.next_cursor;
    older.disabled = !next;
    newer.disabled = !cursors.length;
    fill(list, table([
      ['Name', jobLink],
      ['Id', (j) => h('code', { title: j.id }, fmt.short(j.id))],
      ['Tenant', (j) => j.tenant_id],
      ['State', (j) => badge(j.state)],
      ['Priority', (j) => j.priority],
      ['Submitted', (j) => h('time', { datetime: j.submitted_at, title: fmt.time(j.submitted_at) }, fmt.ago(j.submitted_at))],
      ['Waited', (j) => fmt.dur(j.queue_wait_ms)],
      ['Ran', elapsed],
      ['Exit', (j) => (j.exit_code === null ? '—' : j.exit_code)],
      ['Cost', (j) => j.cost],
    ], page.items, { empty: 'No job matches.', caption: 'Newest first' }));
  }
  // Only the first page follows new jobs; an older page stays where it is.
  await ctx.every(2000, () => (cursor ? undefined : load()));
}

/** The buttons the caller's role allows for the job's state. */
function controls(job, ctx, done) {
  if (!ctx.me.mayControl(job)) return null;
  const act = (verb, label, cls) => h('button', { type: 'button', class: cls, 'data-action': verb, onclick: async (e) => {
    const b = e.currentTarget;
    b.disabled = true;
    try {
      await api(`/jobs/${encodeURIComponent(job.id)}/${verb}`, { method: 'POST', body: {} });
      await done(verb);
    } catch (err) {
      b.disabled = false;
      b.after(h('span', { class: 'error', role: 'alert' }, ` ${err.message}`));
    }
  } }, label);
  const s = job.state;
  return h('div', { class: 'actions' },
    !TERMINAL.has(s) ? act('cancel', 'Cancel', 'danger') : null,
    s === 'pending' ? act('hold', 'Hold') : null,
    s === 'held' ? act('release', 'Release') : null,
    s === 'failed' || s === 'cancelled' || s === 'timed_out' ? act('retry', 'Retry') : null);
}

function explainCard(x) {
  const waiting = x.state === 'pending' || x.state === 'held';
  if (!waiting) {
    const said = { running: 'It is running.', scheduled: 'A worker is starting it.' }[x.state] || `It has ended: ${x.state.replace('_', ' ')}.`;
    return card('Why is it where it is', h('p', {}, said));
  }
  const reasons = x.blocking_reasons.length
    ? h('ul', { class: 'reasons' }, x.blocking_reasons.map((r) => h('li', {}, h('code', {}, r.code), ' ', r.message)))
    : h('p', {}, 'Nothing blocks it: it starts at the next scheduling round.');
  return card('Why is it where it is',
    reasons,
    facts([
      ['Estimated start', x.estimated_start_at ? fmt.time(x.estimated_start_at) : 'not known (nothing free can run it)'],
      ['Place in its tenant', x.position.in_tenant ?? null],
      ['Jobs dispatched before it', x.position.global ?? null],
      ['Tenants ahead (fair share)', x.fair_share ? x.fair_share.tenants_ahead : null],
      ['Weight', x.fair_share ? x.fair_share.weight : null],
      ['Budget factor', x.fair_share ? x.fair_share.budget_factor.toFixed(2) : null],
    ]),
    x.candidate_pools.length ? table([['Pool', (p) => p.pool_id], ['Eligible', (p) => (p.eligible ? 'yes' : 'no')], ['Why', (p) => p.reason]], x.candidate_pools) : null);
}

function usageCard(u) {
  const a = u.attempts[u.attempts.length - 1];
  if (!a) return card('Usage', h('p', { class: 'muted' }, 'No usage yet: the job has not started.'));
  const t = (p) => Math.floor(new Date(p.at).getTime() / 1000);
  const s = a.summary;
  return card(`Usage of attempt ${a.number}`,
    lineChart([{ name: 'cpu (m)', points: a.points.map((p) => [t(p), p.cpu_m]) }], { label: 'cpu used', format: (v) => `${Math.round(v)} m` }),
    lineChart([{ name: 'memory (MiB)', points: a.points.map((p) => [t(p), p.memory_mb]) }], { label: 'memory used', format: (v) => `${Math.round(v)} MiB` }),
    s ? facts([
      ['CPU average / p95 / peak', `${s.cpu_avg_m} / ${s.cpu_p95_m} / ${s.cpu_peak_m} m of ${a.requested_cpu_m} m`],
      ['Memory average / p95 / peak', `${s.memory_avg_mb} / ${s.memory_p95_mb} / ${s.memory_peak_mb} MiB of ${a.requested_memory_mb} MiB`],
      ['CPU time', fmt.dur(s.cpu_time_ms)],
      ['IO read / written', `${fmt.bytes(s.io_read_bytes)} / ${fmt.bytes(s.io_write_bytes)}`],
    ]) : null);
}

/** Live output: follows the SSE stream, filters lines, downloads the whole output. */
function logPanel(job, ctx) {
  const MAX_LINES = 20000;
  const pre = h('pre', { class: 'log', tabindex: 0, 'aria-label': 'job output', 'aria-live': 'off' });
  const lines = []; // {stream, text}
  const partial = { stdout: '', stderr: '' };
  const status = h('span', { class: 'muted', 'aria-live': 'polite' }, 'Connecting…');
  const follow = h('input', { type: 'checkbox', id: 'log-follow', checked: true });
  const search = h('input', { type: 'search', id: 'log-search', placeholder: 'Filter lines' });
  const matches = (l) => !search.value || l.text.toLowerCase().includes(search.value.toLowerCase());
  const line = (l) => h('span', { class: l.stream === 'stderr' ? 'stderr' : null }, `${l.text}\n`);
  const scroll = () => { if (follow.checked) pre.scrollTop = pre.scrollHeight; };
  const redraw = () => { fill(pre, lines.filter(matches).map(line)); scroll(); };
  search.addEventListener('input', redraw);
  follow.addEventListener('change', scroll);
  const add = (stream, text) => {
    const parts = (partial[stream] + text).split('\n');
    partial[stream] = parts.pop();
    const fresh = parts.map((t) => ({ stream, text: t }));
    lines.push(...fresh);
    if (lines.length > MAX_LINES) {
      lines.splice(0, lines.length - MAX_LINES);
      redraw();
      return;
    }
    pre.append(...fresh.filter(matches).map(line));
    scroll();
  };
  const flush = () => {
    for (const s of ['stdout', 'stderr']) if (partial[s]) { add(s, '\n'); }
  };
  const download = h('button', { type: 'button', onclick: async (e) => {
    const b = e.currentTarget;
    b.disabled = true;
    try {
      const out = [];
      let offset = 0, stderrOffset = 0;
      for (;;) {
        const page = await api(`/jobs/${encodeURIComponent(job.id)}/logs${query({ offset, stderr_offset: stderrOffset, limit_bytes: 1048576 })}`);
        for (const c of page.chunks) out.push(c.data);
        if (page.eof || (page.next_offset === offset && page.next_stderr_offset === stderrOffset)) break;
        offset = page.next_offset;
        stderrOffset = page.next_stderr_offset;
      }
      const a = h('a', { href: URL.createObjectURL(new Blob(out, { type: 'text/plain' })), download: `${job.name || job.id}.log` });
      document.body.append(a);
      a.click();
      a.remove();
    } catch (err) {
      status.textContent = `Download failed: ${err.message}`;
    } finally {
      b.disabled = false;
    }
  } }, 'Download');
  events(`/jobs/${encodeURIComponent(job.id)}/logs?follow=true`, (event, data) => {
    const d = JSON.parse(data);
    if (event === 'log') add(d.stream, d.data);
    else if (event === 'state') status.textContent = d.state === 'running' ? `Live · attempt ${d.attempt}` : `Waiting · ${d.state.replace('_', ' ')}`;
    else if (event === 'end') {
      flush();
      status.textContent = `Ended · ${d.state.replace('_', ' ')}${d.exit_code === null ? '' : ` · exit ${d.exit_code}`}`;
    }
  }, ctx.signal).catch((e) => { status.textContent = e instanceof ApiError ? e.message : `Stream lost: ${e.message}`; });
  return card('Logs',
    h('div', { class: 'log-tools' },
      status,
      h('label', { for: 'log-search', class: 'sr-only' }, 'Filter lines'), search,
      h('label', { for: 'log-follow' }, follow, ' Follow'),
      download),
    pre);
}

export async function jobPage(view, [id], ctx) {
  ctx.title(`Job ${fmt.short(id)}`);
  let job;
  try {
    job = await api(`/jobs/${encodeURIComponent(id)}`, { signal: ctx.signal });
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 400)) {
      fill(view, h('h1', {}, 'Job not found'), h('p', {}, 'No job ', h('code', {}, id), ' that you can see. ', h('a', { href: '/ui/jobs' }, 'All jobs')));
      return;
    }
    throw e;
  }
  ctx.title(job.name || `Job ${fmt.short(id)}`);
  const head = h('div');
  const body = h('div', { class: 'grid' });
  const logs = logPanel(job, ctx);
  fill(view, head, body, logs);

  let first = job; // the first round uses the read that found the job
  const refresh = async () => {
    const enc = encodeURIComponent(id);
    const fresh = first;
    first = null;
    const [j, attempts, evs, x, usage] = await Promise.all([
      fresh || api(`/jobs/${enc}`, { signal: ctx.signal }),
      api(`/jobs/${enc}/attempts?limit=100`, { signal: ctx.signal }),
      api(`/jobs/${enc}/events?limit=200`, { signal: ctx.signal }),
      api(`/jobs/${enc}/explain`, { signal: ctx.signal }),
      api(`/jobs/${enc}/usage`, { signal: ctx.signal }),
    ]);
    job = j;
    ctx.title(j.name || `Job ${fmt.short(id)}`);
    fill(head,
      h('p', { class: 'crumbs' }, h('a', { href: '/ui/jobs' }, 'Jobs'), ' / ', h('code', {}, j.id)),
      h('h1', {}, j.name || fmt.short(j.id), ' ', badge(j.state)),
      controls(j, ctx, after));
    const r = j.resources;
    fill(body,
      card('Job',
        facts([
          ['Tenant', h('a', { href: `/ui/tenants/${encodeURIComponent(j.tenant_id)}` }, j.tenant_id)],
          ['Command', h('code', { class: 'cmd' }, j.command.join(' '))],
          ['Working directory', j.working_dir],
          ['Resources', `${fmt.cpu(r.cpu_m)}, ${fmt.mem(r.memory_mb)}${r.gpu ? `, ${r.gpu} GPU` : ''}`],
          ['Priority · SLA', `${j.priority} · ${j.sla} (${j.sla_status.replace('_', ' ')})`],
          ['Labels', Object.keys(j.labels).length ? h('span', {}, Object.entries(j.labels).map(([k, v]) => h('code', { class: 'label' }, `${k}=${v}`))) : null],
          ['State reason', j.state_reason],
          ['Failure', j.failure_reason],
          ['Exit code', j.exit_code],
          ['Submitted', fmt.time(j.submitted_at)],
          ['Started', j.started_at ? fmt.time(j.started_at) : null],
          ['Finished', j.finished_at ? fmt.time(j.finished_at) : null],
          ['Waited · ran', `${fmt.dur(j.queue_wait_ms)} · ${elapsed(j)}`],
          ['Pool · worker', j.pool_id ? `${j.pool_id} · ${fmt.short(j.worker_id || '')}` : null],
          ['Attempts', `${j.attempt_count} (${j.retries_left} retries left)`],
          ['Cost', j.cost],
        ])),
      explainCard(x),
      usageCard(usage),
      card('Attempts', table([
        ['#', (a) => a.number],
        ['State', (a) => badge(a.state)],
        ['Pool', (a) => a.pool_id],
        ['Started', (a) => fmt.time(a.started_at)],
        ['Ran', (a) => (a.started_at && a.finished_at ? fmt.dur(new Date(a.finished_at) - new Date(a.started_at)) : '—')],
        ['Exit', (a) => (a.exit_code ?? (a.signal ? `signal ${a.signal}` : '—'))],
        ['Max RSS', (a) => (a.max_rss_mb === null || !a.finished_at ? '—' : fmt.mem(a.max_rss_mb))],
        ['Billed', (a) => (a.billed_seconds === null || !a.finished_at ? '—' : `${a.billed_seconds} s`)],
        ['Cost', (a) => (a.finished_at ? a.cost : '—')],
      ], attempts.items, { empty: 'Not started yet.' })),
      card('Events', h('ol', { class: 'timeline' }, evs.items.map((e) => h('li', {},
        h('time', { datetime: e.at }, fmt.time(e.at)), ' ',
        e.from ? [badge(e.from), ' → '] : null, badge(e.to),
        h('span', { class: 'muted' }, ` by ${e.actor}`), e.reason ? ` — ${e.reason}` : null)))));
    // Follow until it ends; the log stream goes on by itself.
    return TERMINAL.has(j.state) ? false : undefined;
  };
  let following = false;
  const follow = () => {
    if (following) return undefined;
    following = true;
    return ctx.every(2000, async () => {
      const again = await refresh();
      if (again === false) following = false;
      return again;
    });
  };
  // A retried job has a new attempt and new output: the page starts over.
  const after = (verb) => (verb === 'retry' ? ctx.go(location.pathname) : refresh().then(follow));
  await follow();
}
