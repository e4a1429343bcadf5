// The REST client: every call goes to /api/v1 with the token as a Bearer header. The token
// lives in this tab's session storage only; there are no cookies a cross-site request could use.

const KEY = 'hodei.token';

export function token() {
  return sessionStorage.getItem(KEY);
}

export function signIn(secret) {
  sessionStorage.setItem(KEY, secret.trim());
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

/** A refused call: `status`, and the problem document's `detail` as the message. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Calls once for every 401: the page shows the sign-in form. */
let onUnauthorized = () => {};
export function whenUnauthorized(f) {
  onUnauthorized = f;
}

/** Counts the calls made, for the tests' "a handful of calls per refresh". */
export const stats = { calls: 0 };

function headers(extra) {
  const h = { Accept: 'application/json', ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

/** `api('/jobs?state=running')` → the parsed JSON; a problem answer throws ApiError. */
export async function api(path, { method = 'GET', body, signal } = {}) {
  stats.calls += 1;
  const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }), signal, credentials: 'omit', cache: 'no-store' };
  if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(`/api/v1${path}`, init);
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!resp.ok) {
    if (resp.status === 401) onUnauthorized();
    throw new ApiError(resp.status, json);
  }
  return json;
}

/**
 * Every page of a list (`/tenants`, `/pools`, `/budgets`), 500 items a call, as one
 * `{items, next_cursor}`; stops after `max` items (then `next_cursor` is set).
 */
export async function apiAll(path, { signal, max = 5000 } = {}) {
  const sep = path.includes('?') ? '&' : '?';
  const items = [];
  let cursor = null;
  do {
    const page = await api(`${path}${sep}limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, { signal });
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return { items, next_cursor: cursor };
}

/** A query string of the defined, non-empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

/**
 * Server-sent events of `path`, read with fetch (EventSource cannot send a Bearer header):
 * calls `on(event, data, id)` for each; resumes with Last-Event-ID after a dropped connection
 * until `end` arrives or `signal` aborts.
 */
export async function events(path, on, signal) {
  let last = null;
  for (let tries = 0; !signal.aborted; tries += 1) {
    let ended = false;
    try {
      stats.calls += 1;
      const extra = { Accept: 'text/event-stream' };
      if (last) extra['Last-Event-ID'] = last;
      const resp = await fetch(`/api/v1${path}`, { headers: headers(extra), signal, credentials: 'omit', cache: 'no-store' });
      if (!resp.ok) {
        const text = await resp.text();
        let problem = null;
        try { problem = JSON.parse(text); } catch { problem = null; }
        if (resp.status === 401) onUnauthorized();
        throw new ApiError(resp.status, problem);
      }
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n?/g, '\n');
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let event = 'message', data = [], id = null;
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const i = line.indexOf(':');
            const field = i < 0 ? line : line.slice(0, i);
            const val = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
            if (field === 'event') event = val;
            else if (field === 'data') data.push(val);
            else if (field === 'id') id = val;
          }
          if (id) last = id;
          if (!data.length) continue;
          on(event, data.join('\n'), id);
          if (event === 'end') ended = true;
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.status < 500) throw e;
    }
    if (ended) return;
    await new Promise((r) => setTimeout(r, Math.min(5000, 500 * (tries + 1))));
  }
}
