// Pools: size against desired, workers and their state, utilisation, the scaling history with
// its triggers, and a manual scale for admins.

import { api, apiAll, query, ApiError } from './api.js';
import { h, fill, card, table, facts, fmt, badge, meter } from './dom.js';
import { lineChart } from './charts.js';

/** Workers that exist now (not offline, not terminated). */
const LIVE = 'registering,idle,busy,draining';

const poolLink = (id) => h('a', { href: `/ui/pools/${encodeURIComponent(id)}` }, id);

export async function poolList(view, _params, ctx) {
  ctx.title('Pools');
  const list = h('div');
  fill(view, h('h1', {}, 'Pools'), list);
  await ctx.every(5000, async () => {
    const pools = await apiAll('/pools', { signal: ctx.signal });
    fill(list, table([
      ['Pool', (p) => poolLink(p.id)],
      ['State', (p) => badge(p.state)],
      ['Type', (p) => `${p.type} · ${p.provider}`],
      ['Desired', (p) => p.desired_size],
      ['Min–max', (p) => `${p.min_size}–${p.max_size}`],
      ['Worker', (p) => `${fmt.cpu(p.worker_template.cpu_m)}, ${fmt.mem(p.worker_template.memory_mb)}${p.worker_template.gpu ? `, ${p.worker_template.gpu} GPU` : ''}, ${p.worker_slots} slots`],
      ['Autoscaling', (p) => (p.auto_scaling_enabled ? `${p.scaling_policies.length} polic${p.scaling_policies.length === 1 ? 'y' : 'ies'}` : 'off')],
    ], pools.items, { empty: 'No pool.' }));
  });
}

function scaleForm(status, id, refresh) {
  const input = h('input', { id: 'scale-to', name: 'target_size', type: 'number', min: status.min_size, max: status.max_size, required: true, value: status.desired_size });
  const reason = h('input', { id: 'scale-reason', name: 'reason', type: 'text', placeholder: 'why (kept in the history)' });
  const out = h('span', { role: 'status' });
  return h('form', { class: 'inline', onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api(`/pools/${encodeURIComponent(id)}/scale`, { method: 'POST', body: { target_size: Number(input.value), reason: reason.value || undefined } });
      out.textContent = ` Scaling to ${input.value}.`;
      await refresh();
    } catch (err) {
      out.textContent = ` ${err.message}`;
    }
  } },
  h('label', { for: 'scale-to' }, `Desired size (${status.min_size}–${status.max_size})`), input,
  h('label', { for: 'scale-reason', class: 'sr-only' }, 'Reason'), reason,
  h('button', { type: 'submit' }, 'Scale'), out);
}

export async function poolPage(view, [id], ctx) {
  ctx.title(`Pool ${id}`);
  const enc = encodeURIComponent(id);
  const head = h('div'), body = h('div', { class: 'grid' });
  let form = null;
  fill(view, head, body);
  const refresh = async () => {
    const since = new Date(Date.now() - 6 * 3600e3).toISOString();
    let st;
    try {
      st = await api(`/pools/${enc}/status`, { signal: ctx.signal });
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        fill(view, h('h1', {}, 'Pool not found'), h('p', {}, 'No pool ', h('code', {}, id), '.'));
        return false;
      }
      throw e;
    }
    const [m, history, hist, triggers, workers] = await Promise.all([
      api(`/metrics/pools/${enc}`, { signal: ctx.signal }),
      api(`/pools/${enc}/scaling/history?limit=20`, { signal: ctx.signal }),
      api(`/metrics/historical${query({ pool_id: id, metric: 'size,desired_size,jobs_running', start: since })}`, { signal: ctx.signal }),
      api(`/pools/${enc}/scaling/triggers`, { signal: ctx.signal }),
      ctx.me.admin ? api(`/workers${query({ pool_id: id, state: LIVE, limit: 200 })}`, { signal: ctx.signal }) : null,
    ]);
    const now = m.now;
    if (ctx.me.admin && !form) form = scaleForm(st, id, refresh);
    fill(head,
      h('p', { class: 'crumbs' }, h('a', { href: '/ui/pools' }, 'Pools'), ' / ', id),
      h('h1', {}, id, ' ', badge(st.state)),
      st.state_reason ? h('p', { class: 'muted' }, st.state_reason) : null,
      form);
    const order = ['size', 'desired_size', 'jobs_running'];
    const series = order.map((k) => ({ name: k.replace('_', ' '), points: (hist.series.find((s) => s.metric === k) || { points: [] }).points }));
    fill(body,
      card('Now',
        facts([
          ['Size · desired', `${st.current_size} · ${st.desired_size} (min ${st.min_size}, max ${st.max_size})`],
          ['Workers', Object.entries(st.workers_by_state).map(([k, v]) => `${v} ${k}`).join(', ') || 'none'],
          ['Slots used', h('span', {}, meter(st.slots ? st.slots_used / st.slots : 0, 'slots used'), ` ${st.slots_used} of ${st.slots}`)],
          // The API gives these two in percent.
          ['CPU allocated', h('span', {}, meter(now.cpu_utilization / 100, 'cpu allocated'), ` ${fmt.pct(now.cpu_utilization / 100)}`)],
          ['Memory allocated', h('span', {}, meter(now.memory_utilization / 100, 'memory allocated'), ` ${fmt.pct(now.memory_utilization / 100)}`)],
          ['Queue depth · wait', `${now.queue_depth} · ${fmt.dur(now.queue_wait_seconds * 1000)}`],
          ['Running jobs', now.jobs_running],
          ['Cost rate', `${fmt.money(now.cost_rate_micros_per_hour)} an hour`],
          ['Cooldown', st.cooldown_until.up || st.cooldown_until.down ? `up until ${fmt.time(st.cooldown_until.up)}, down until ${fmt.time(st.cooldown_until.down)}` : null],
        ])),
      card('Size, last 6 hours', lineChart(series, { label: 'pool size, desired size and running jobs', format: (v) => v.toFixed(v % 1 ? 1 : 0) })),
      card('Scaling triggers now', table([
        ['Policy', (t) => t.policy_id],
        ['Trigger', (t) => t.trigger || '—'],
        ['Value', (t) => (Number.isInteger(t.value) ? t.value : t.value.toFixed(2))],
        ['Condition', (t) => (t.condition_met ? badge('met') : 'not met')],
        ['Cooldown', (t) => (t.cooldown_remaining_s ? fmt.dur(t.cooldown_remaining_s * 1000) : '—')],
      ], triggers, { empty: 'No scaling policy: the pool keeps the size it is given.' })),
      card('Scaling history', table([
        ['When', (e) => h('time', { datetime: e.at }, fmt.time(e.at))],
        ['Change', (e) => `${e.from_size} → ${e.to_size}`],
        ['Decision', (e) => badge(e.decision)],
        ['Source', (e) => e.source],
        ['Trigger', (e) => (e.trigger ? `${e.trigger}${e.observed_value === null ? '' : ` = ${e.observed_value}`}` : '—')],
        ['Why', (e) => e.reason],
        ['By', (e) => e.actor || '—'],
      ], history.items, { empty: 'No scaling event yet.' })),
      workers ? card('Workers now', table([
        ['Worker', (w) => h('code', { title: w.id }, w.instance_name || fmt.short(w.id))],
        ['State', (w) => badge(w.state)],
        ['Health', (w) => (w.health_reason ? `${w.health}: ${w.health_reason}` : w.health)],
        ['Resources', (w) => `${fmt.cpu(w.resources.cpu_m)}, ${fmt.mem(w.resources.memory_mb)}, ${w.slots} slots`],
        ['Last heartbeat', (w) => fmt.ago(w.last_heartbeat_at)],
        ['Version', (w) => w.version],
      ], workers.items, { empty: 'No worker.' })) : null);
    return undefined;
  };
  await ctx.every(5000, refresh);
}
