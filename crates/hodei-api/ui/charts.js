// Small SVG charts: a line chart of time series and horizontal bars. Colours come from the
// stylesheet (classes c0…c3), so the charts follow its contrast.

import { h } from './dom.js';

const W = 640, H = 180, L = 48, R = 12, T = 10, B = 24;

/** The least of 1, 2, 4, 5 × 10^k at or above `v` (so the middle line is a round number too). */
function nice(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 4, 5, 10].map((m) => m * p).find((x) => x >= v * 0.999999);
}

/**
 * `series`: `[{name, points: [[unix_s, value], …]}]`. Options: `format` for the y labels and
 * legend, `max` to fix the top of the y axis (e.g. 1 for ratios), `label` for screen readers.
 */
export function lineChart(series, { format = (v) => String(v), max, label = 'chart' } = {}) {
  const all = series.flatMap((s) => s.points);
  if (!all.length) return h('p', { class: 'muted chart-empty' }, 'No samples yet for this window.');
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  const top = max ?? nice(Math.max(...all.map((p) => p[1]), 0) * 1.1);
  const x = (t) => L + (t1 === t0 ? (W - L - R) / 2 : ((t - t0) / (t1 - t0)) * (W - L - R));
  const y = (v) => T + (1 - Math.min(v, top) / top) * (H - T - B);
  const grid = [0, 0.5, 1].map((f) => [
    h('svg:line', { x1: L, x2: W - R, y1: y(top * f), y2: y(top * f), class: 'grid' }),
    h('svg:text', { x: L - 6, y: y(top * f) + 4, class: 'axis', 'text-anchor': 'end' }, format(top * f)),
  ]);
  const when = (t) => new Date(t * 1000).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  const xs = [
    h('svg:text', { x: L, y: H - 6, class: 'axis' }, when(t0)),
    h('svg:text', { x: W - R, y: H - 6, class: 'axis', 'text-anchor': 'end' }, when(t1)),
  ];
  const lines = series.map((s, i) => {
    if (!s.points.length) return null;
    if (s.points.length === 1) return h('svg:circle', { cx: x(s.points[0][0]), cy: y(s.points[0][1]), r: 3, class: `dot c${i % 4}` });
    const d = s.points.map((p, j) => `${j ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join('');
    return h('svg:path', { d, class: `line c${i % 4}` });
  });
  const latest = series.map((s) => `${s.name} ${s.points.length ? format(s.points[s.points.length - 1][1]) : 'no data'}`).join(', ');
  return h('figure', { class: 'chart' },
    h('svg:svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${label}: ${latest}` }, grid, xs, lines),
    h('figcaption', { class: 'legend' }, series.map((s, i) => h('span', {}, h('span', { class: `key c${i % 4}` }), `${s.name} `, h('strong', {}, s.points.length ? format(s.points[s.points.length - 1][1]) : '—')))));
}

/** Horizontal bars: `items` `[{label, value, href?}]`, scaled to the largest. */
export function bars(items, { format = (v) => String(v), label = 'bars' } = {}) {
  if (!items.length) return h('p', { class: 'muted' }, 'Nothing yet.');
  const top = Math.max(...items.map((i) => i.value), 0) || 1;
  return h('ul', { class: 'bars', 'aria-label': label }, items.map((it, n) => {
    const fill = h('span', { class: `bar-fill c${n % 4}` });
    fill.style.width = `${Math.max(0.5, (it.value / top) * 100).toFixed(1)}%`;
    return h('li', {},
      h('span', { class: 'bar-label' }, it.href ? h('a', { href: it.href }, it.label) : it.label),
      h('span', { class: 'bar-track' }, fill),
      h('span', { class: 'bar-value' }, format(it.value)));
  }));
}
