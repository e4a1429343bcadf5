// Tenants: quota use, fair share (weighted against actual, over time), burst sessions, SLA.

import { api, apiAll, query, ApiError } from './api.js';
import { h, fill, card, table, facts, fmt, badge, meter } from './dom.js';
import { lineChart } from './charts.js';

const tenantLink = (id) => h('a', { href: `/ui/tenants/${encodeURIComponent(id)}` }, id);

export async function tenantList(view, _params, ctx) {
  ctx.title('Tenants');
  const list = h('div');
  fill(view, h('h1', {}, 'Tenants'), list);
  await ctx.every(5000, async () => {
    const [tenants, q] = await Promise.all([apiAll('/tenants', { signal: ctx.signal }), api('/queue', { signal: ctx.signal })]);
    const shares = new Map(q.tenants.map((t) => [t.tenant_id, t]));
    fill(list, table([
      ['Tenant', (t) => tenantLink(t.id)],
      ['Status', (t) => badge(t.status)],
      ['Tier', (t) => t.tier],
      ['Weight', (t) => t.effective_weight],
      ['Quota', (t) => `${fmt.cpu(t.quota.cpu_m)}, ${fmt.mem(t.quota.memory_mb)}, ${t.quota.max_concurrent_jobs} jobs`],
      ['Pending', (t) => shares.get(t.id)?.pending ?? 0],
      ['Running', (t) => shares.get(t.id)?.running ?? 0],
      ['Fair share', (t) => fmt.pct(shares.get(t.id)?.fair_share ?? 0)],
      ['Actual share', (t) => fmt.pct(shares.get(t.id)?.actual_share ?? 0)],
    ], tenants.items, { empty: 'No tenant you can see.' }));
  });
}

function quotaRow(label, used, ceiling, format) {
  return h('tr', {},
    h('th', { scope: 'row' }, label),
    h('td', {}, meter(ceiling ? used / ceiling : 0, `${label} used`)),
    h('td', {}, `${format(used)} of ${format(ceiling)}`));
}

export async function tenantPage(view, [id], ctx) {
  ctx.title(`Tenant ${id}`);
  const enc = encodeURIComponent(id);
  const head = h('div'), body = h('div', { class: 'grid' });
  fill(view, head, body);
  await ctx.every(5000, async () => {
    const since = new Date(Date.now() - 6 * 3600e3).toISOString();
    let t;
    try {
      t = await api(`/tenants/${enc}`, { signal: ctx.signal });
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        fill(view, h('h1', {}, 'Tenant not found'), h('p', {}, 'No tenant ', h('code', {}, id), ' that you can see.'));
        return false;
      }
      throw e;
    }
    const [m, bursts, hist] = await Promise.all([
      api(`/metrics/tenants/${enc}`, { signal: ctx.signal }),
      api(`/tenants/${enc}/burst/sessions?limit=20`, { signal: ctx.signal }),
      api(`/metrics/historical${query({ tenant_id: id, metric: 'fair_share,actual_share', start: since })}`, { signal: ctx.signal }),
    ]);
    const u = m.quota.current_usage, c = m.quota.ceiling;
    fill(head,
      h('p', { class: 'crumbs' }, h('a', { href: '/ui/tenants' }, 'Tenants'), ' / ', id),
      h('h1', {}, t.name, ' ', badge(t.status)),
      h('p', {}, h('a', { href: `/ui/jobs?tenant_id=${enc}` }, `Jobs of ${id}`)));
    const order = ['fair_share', 'actual_share'];
    const series = order.map((k) => hist.series.find((s) => s.metric === k) || { metric: k, points: [] }).map((s) => ({ name: s.metric.replace('_', ' '), points: s.points }));
    fill(body,
      card('Quota use',
        h('table', { class: 'quota' }, h('tbody', {},
          quotaRow('CPU', u.cpu_m, c.cpu_m, fmt.cpu),
          quotaRow('Memory', u.memory_mb, c.memory_mb, fmt.mem),
          c.gpu ? quotaRow('GPU', u.gpu, c.gpu, String) : null,
          quotaRow('Running jobs', u.active_jobs, c.max_concurrent_jobs, String),
          quotaRow('Queued jobs', u.queued_jobs, m.quota.max_queued_jobs, String))),
        m.quota.burst ? h('p', {}, 'Burst capacity in force.') : null),
      card('Fair share, last 6 hours',
        lineChart(series, { max: 1, label: 'fair share and actual share', format: fmt.pct }),
        facts([
          ['Weight', m.shares.weight],
          ['Fair share now', fmt.pct(m.shares.fair_share)],
          ['Actual share now', fmt.pct(m.shares.actual_share)],
          ['Jobs pending · held · running', `${m.jobs.pending} · ${m.jobs.held} · ${m.jobs.running}`],
          ['Cost today · month to date', `${m.cost.today} · ${m.cost.month_to_date}`],
        ])),
      card('SLA, last 24 hours', table([
        ['Level', (l) => l.level],
        ['Started', (l) => l.started],
        ['Met', (l) => l.met],
        ['Breached', (l) => l.breached],
        ['Compliance', (l) => fmt.pct(l.compliance_ratio)],
        ['Wait p95', (l) => fmt.dur(l.wait_p95_ms)],
        ['At risk now', (l) => l.at_risk + l.critical],
      ], m.sla.levels.filter((l) => l.started || l.at_risk || l.critical || l.breached_waiting), { empty: 'No job started in the window.' })),
      card('Burst sessions', table([
        ['State', (b) => badge(b.state)],
        ['Asked', (b) => `${fmt.cpu(b.requested_cpu_m)}, ${fmt.mem(b.requested_memory_mb)}, ${b.requested_concurrent_jobs} jobs for ${b.duration_minutes} min`],
        ['Reason', (b) => b.reason],
        ['By', (b) => b.requested_by],
        ['Expires', (b) => (b.expires_at ? fmt.time(b.expires_at) : '—')],
      ], bursts.items, { empty: 'No burst session.' })));
    return undefined;
  });
}
