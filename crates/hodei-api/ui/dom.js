// Building the page. Every text goes in as a text node, never as markup: job names, labels,
// commands and log lines are anyone's text, so nothing here parses HTML from a string.

/** `h('a', {href, class, onclick}, child…)`: an element; children are nodes, strings or arrays. */
export function h(tag, attrs, ...children) {
  const svg = tag.startsWith('svg:');
  const el = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', Array.isArray(v) ? v.filter(Boolean).join(' ') : v);
    else if (k === 'value' && 'value' in el) el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces what `el` holds. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A table: `cols` are `[heading, row => cell]`; `empty` is shown when there are no rows. */
export function table(cols, rows, { empty = 'Nothing here.', caption, rowClass } = {}) {
  if (!rows.length) return h('p', { class: 'muted' }, empty);
  return h('div', { class: 'scroll' },
    h('table', {},
      caption ? h('caption', {}, caption) : null,
      h('thead', {}, h('tr', {}, cols.map(([t]) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows.map((r) => h('tr', { class: rowClass ? rowClass(r) : null }, cols.map(([, f]) => h('td', {}, f(r))))))));
}

/** A definition list of `[term, value]` pairs, skipping empty values. */
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== '').map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

export function card(title, ...body) {
  return h('section', { class: 'card' }, h('h2', {}, title), ...body);
}

export function badge(state) {
  return h('span', { class: `badge s-${String(state).replace(/[^a-z_]/g, '')}` }, String(state).replace(/_/g, ' '));
}

/** A tile on the overview: a big number and what it counts. */
export function stat(label, value, { warn = false, href } = {}) {
  const body = [h('span', { class: 'stat-value' }, value), h('span', { class: 'stat-label' }, label)];
  return href ? h('a', { class: ['stat', warn && 'warn'], href }, body) : h('div', { class: ['stat', warn && 'warn'] }, body);
}

export function link(href, text) {
  return h('a', { href }, text);
}

export const fmt = {
  time(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
  },
  ago(iso) {
    if (!iso) return '—';
    return fmt.dur(Date.now() - new Date(iso).getTime()) + ' ago';
  },
  dur(ms) {
    if (ms === null || ms === undefined) return '—';
    if (ms < 1000) return `${Math.round(ms)} ms`;
    let s = Math.round(ms / 1000);
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    s %= 60;
    if (m < 60) return `${m} min ${s} s`;
    const hr = Math.floor(m / 60);
    if (hr < 48) return `${hr} h ${m % 60} min`;
    return `${Math.floor(hr / 24)} d ${hr % 24} h`;
  },
  cpu(m) {
    if (m < 1000) return `${m} m`;
    return m === 1000 ? '1 core' : `${(m / 1000).toFixed(m % 1000 ? 2 : 0)} cores`;
  },
  mem(mb) {
    return mb >= 1024 ? `${(mb / 1024).toFixed(1)} GiB` : `${mb} MiB`;
  },
  bytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${i ? n.toFixed(1) : n} ${units[i]}`;
  },
  pct(ratio) {
    return ratio === null || ratio === undefined ? '—' : `${(ratio * 100).toFixed(ratio < 0.1 && ratio > 0 ? 1 : 0)} %`;
  },
  /** Micro-units of money as an amount with two decimals (the API's strings carry six). */
  money(micros, currency = '') {
    const v = micros / 1e6;
    const s = Math.abs(v) < 0.01 && v !== 0 ? v.toFixed(6) : v.toFixed(2);
    return currency ? `${s} ${currency}` : s;
  },
  short(id) {
    return String(id).slice(-8);
  },
};

/**
 * A bar showing `ratio` of something (0–1, clamped), with its text for screen readers; red from
 * 90 % unless `warn` is false (a share at its fair value is not a warning).
 */
export function meter(ratio, label, { warn = true } = {}) {
  const r = Math.max(0, Math.min(1, ratio || 0));
  const bar = h('span', { class: ['meter-fill', warn && r >= 0.9 && 'hot'] });
  bar.style.width = `${(r * 100).toFixed(1)}%`;
  return h('span', { class: 'meter', role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': Math.round(r * 100), 'aria-label': label }, bar);
}
