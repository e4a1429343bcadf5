// The overview: what is queued and running, against what capacity, what is late, what fires,
// and what it costs — five API calls a refresh.

import { api, apiAll, query } from './api.js';
import { h, fill, card, stat, table, fmt, badge, meter } from './dom.js';
import { lineChart, bars } from './charts.js';

export async function overview(view, _params, ctx) {
  ctx.title('Overview');
  const tiles = h('div', { class: 'stats' });
  const queue = card('Queue', h('p', { class: 'muted' }, 'Loading…'));
  const trend = card('Jobs, last hour', h('p', { class: 'muted' }, 'Loading…'));
  const alerts = card('Alerts firing', h('p', { class: 'muted' }, 'Loading…'));
  const tenants = card('Tenants waiting', h('p', { class: 'muted' }, 'Loading…'));
  fill(view, h('h1', {}, 'Overview'), tiles, h('div', { class: 'grid' }, queue, trend, tenants, alerts));

  await ctx.every(5000, async () => {
    const since = new Date(Date.now() - 3600e3).toISOString();
    const [q, pools, firing, money, hist] = await Promise.all([
      api('/queue', { signal: ctx.signal }),
      apiAll('/pools', { signal: ctx.signal }),
      api(`/alerts${query({ state: 'firing', limit: 20 })}`, { signal: ctx.signal }),
      api('/metrics/costs', { signal: ctx.signal }),
      api(`/metrics/historical${query({ metric: 'jobs_pending,jobs_running', start: since })}`, { signal: ctx.signal }),
    ]);
    const slots = pools.items.filter((p) => p.state === 'active').reduce((n, p) => n + p.desired_size * p.worker_slots, 0);
    const t = q.totals;
    fill(tiles,
      stat('pending', t.pending, { href: '/ui/jobs?state=pending' }),
      stat('held', t.held, { href: '/ui/jobs?state=held' }),
      stat('running', t.running, { href: '/ui/jobs?state=running' }),
      stat('slots in use', slots ? fmt.pct((t.running + t.scheduled) / slots) : '—'),
      stat('oldest wait', fmt.dur(q.oldest_wait_ms), { warn: q.oldest_wait_ms > 600e3 }),
      stat('SLA at risk', q.sla.at_risk + q.sla.critical, { warn: q.sla.critical > 0 }),
      stat('SLA breached, waiting', q.sla.breached_waiting, { warn: q.sla.breached_waiting > 0 }),
      stat('cost today', money.today, {}),
      stat('month forecast', money.forecast_month, {}));

    fill(queue,
      h('h2', {}, 'Queue'),
      h('h3', {}, 'Jobs by state'),
      bars([
        { label: 'pending', value: t.pending, href: '/ui/jobs?state=pending' },
        { label: 'held', value: t.held, href: '/ui/jobs?state=held' },
        { label: 'scheduled', value: t.scheduled, href: '/ui/jobs?state=scheduled' },
        { label: 'running', value: t.running, href: '/ui/jobs?state=running' },
      ], { label: 'jobs by state' }),
      h('h3', {}, 'Running against capacity'),
      h('p', {}, meter(slots ? (t.running + t.scheduled) / slots : 0, 'slots in use'), ` ${t.running + t.scheduled} of ${slots} slots in ${pools.items.length} pool${pools.items.length === 1 ? '' : 's'}`),
      h('h3', {}, 'Waiting by priority'),
      bars(Object.entries(q.by_priority).map(([label, value]) => ({ label, value })), { label: 'waiting jobs by priority' }));

    const series = hist.series.map((s) => ({ name: s.metric.replace('jobs_', ''), points: s.points }));
    fill(trend, h('h2', {}, 'Jobs, last hour'), lineChart(series, { label: 'pending and running jobs over the last hour', format: (v) => v.toFixed(v < 10 && v % 1 ? 1 : 0) }));

    fill(tenants, h('h2', {}, 'Tenants waiting'),
      table([
        ['Tenant', (r) => h('a', { href: `/ui/tenants/${encodeURIComponent(r.tenant_id)}` }, r.tenant_id)],
        ['Weight', (r) => r.weight],
        ['Pending', (r) => r.pending],
        ['Running', (r) => r.running],
        ['Share, actual of fair', (r) => h('span', {}, meter(r.fair_share ? r.actual_share / r.fair_share : 0, `actual share of ${r.tenant_id} against its fair share`, { warn: false }), ` ${fmt.pct(r.actual_share)} of ${fmt.pct(r.fair_share)}`)],
      ], q.tenants.slice(0, 20), { empty: 'No tenant has jobs waiting or running.' }));

    fill(alerts, h('h2', {}, 'Alerts firing'),
      table([
        ['Severity', (a) => badge(a.severity)],
        ['Alert', (a) => a.message],
        ['Tenant', (a) => a.tenant_id || '—'],
        ['Since', (a) => fmt.ago(a.fired_at)],
      ], firing.items, { empty: 'No alert is firing.' }));
  });
}
