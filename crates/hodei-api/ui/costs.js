// Costs: spend by day, breakdowns by tenant and pool, budgets against their thresholds, and
// the right-sizing recommendations with their evidence.

import { api, apiAll, query, ApiError } from './api.js';
import { h, fill, card, table, fmt, badge, meter, stat } from './dom.js';
import { bars } from './charts.js';

const PERIODS = [['month_to_date', 'Month to date'], ['last_day', 'Last day'], ['last_week', 'Last week'], ['last_month', 'Last month']];

export async function costs(view, _params, ctx) {
  ctx.title('Costs');
  let period = ctx.query.get('period') || 'month_to_date';
  const sel = h('select', { id: 'period', name: 'period' }, PERIODS.map(([v, t]) => h('option', { value: v }, t)));
  sel.value = period;
  const tiles = h('div', { class: 'stats' });
  const body = h('div', { class: 'grid' });
  fill(view, h('h1', {}, 'Costs'), h('form', { class: 'filters' }, h('label', { for: 'period' }, 'Breakdown over'), sel), tiles, body);

  const load = async () => {
    const [m, byTenant, byPool, budgets, recs] = await Promise.all([
      api('/metrics/costs', { signal: ctx.signal }),
      api(`/cost-optimization/breakdown${query({ group_by: 'tenant', period })}`, { signal: ctx.signal }),
      // A server that keeps no costs by pool (cost_tracking.track_by_pool: false) refuses it.
      api(`/cost-optimization/breakdown${query({ group_by: 'pool', period })}`, { signal: ctx.signal })
        .catch((e) => (e instanceof ApiError && e.status === 400 ? { untracked: e.message } : Promise.reject(e))),
      apiAll('/budgets', { signal: ctx.signal }),
      api('/cost-optimization/recommendations', { signal: ctx.signal }),
    ]);
    const cur = m.currency;
    const money = (v) => fmt.money(v, cur);
    fill(tiles,
      stat('today', m.today),
      stat('month to date', m.month_to_date),
      stat('spending an hour', money(m.rate_micros_per_hour)),
      stat('month-end forecast', m.forecast_month),
      stat('possible monthly saving', recs.potential_savings, { warn: recs.potential_savings_micros > 0 }));
    fill(body,
      card('By day', bars(m.by_day.map((d) => ({ label: d.day, value: d.cost_micros })), { format: money, label: 'cost by day' })),
      card(`By tenant · ${byTenant.total_cost}`, bars(byTenant.groups.map((g) => ({ label: g.key, value: g.cost_micros, href: `/ui/tenants/${encodeURIComponent(g.key)}` })), { format: money, label: 'cost by tenant' })),
      byPool.untracked
        ? card('By pool', h('p', { class: 'muted' }, byPool.untracked))
        : card(`By pool · ${byPool.total_cost}`, bars(byPool.groups.map((g) => ({ label: g.key, value: g.cost_micros, href: `/ui/pools/${encodeURIComponent(g.key)}` })), { format: money, label: 'cost by pool' })),
      card('Budgets', table([
        ['Tenant', (b) => h('a', { href: `/ui/tenants/${encodeURIComponent(b.tenant_id)}` }, b.tenant_id)],
        ['Period', (b) => b.period],
        ['Spent', (b) => h('span', {}, meter(b.utilization_ratio, `budget of ${b.tenant_id} used`), ` ${b.spent} of ${b.amount} (${fmt.pct(b.utilization_ratio)})`)],
        ['Alerts at', (b) => b.thresholds_pct.map((p) => `${p} %`).join(', ')],
        ['When spent', (b) => b.on_exhausted],
        ['State', (b) => badge(b.state)],
      ], budgets.items, { empty: 'No budget.' })),
      card('Recommendations', table([
        ['Kind', (r) => r.kind.replace(/_/g, ' ')],
        ['Job name', (r) => r.job_name],
        ['Tenant', (r) => r.tenant_id],
        ['Change', (r) => `${r.current} → ${r.suggested} ${r.unit}`],
        ['Why', (r) => r.rationale],
        ['Saves a month', (r) => r.estimated_monthly_savings],
      ], recs.items, { empty: 'Nothing to change: requests match measured use.' }),
      recs.pools.length ? [h('h3', {}, 'Pools'), table([
        ['Kind', (r) => r.kind.replace(/_/g, ' ')],
        ['Pool', (r) => h('a', { href: `/ui/pools/${encodeURIComponent(r.pool_id)}` }, r.pool_id)],
        ['Change', (r) => `${r.current} → ${r.suggested} ${r.unit}`],
        ['Why', (r) => r.rationale],
        ['Saves a month', (r) => r.estimated_monthly_savings],
      ], recs.pools)] : null));
  };
  sel.addEventListener('change', () => {
    period = sel.value;
    ctx.setQuery(period === 'month_to_date' ? {} : { period });
    ctx.run(load);
  });
  await ctx.every(10000, load);
}
