// The dashboard's shell: sign-in, the signed-in principal, and the router that gives each page
// its part of the screen. Pages live in their own modules and only call the public REST API.

import { api, signIn, signOut, token, whenUnauthorized, ApiError } from './api.js';
import { h, fill } from './dom.js';
import { overview } from './overview.js';
import { jobList, jobPage } from './jobs.js';
import { tenantList, tenantPage } from './tenants.js';
import { poolList, poolPage } from './pools.js';
import { costs } from './costs.js';

const ROUTES = [
  [/^\/ui\/?$/, overview, 'overview'],
  [/^\/ui\/jobs\/?$/, jobList, 'jobs'],
  [/^\/ui\/jobs\/([^/]+)$/, jobPage, 'jobs'],
  [/^\/ui\/tenants\/?$/, tenantList, 'tenants'],
  [/^\/ui\/tenants\/([^/]+)$/, tenantPage, 'tenants'],
  [/^\/ui\/pools\/?$/, poolList, 'pools'],
  [/^\/ui\/pools\/([^/]+)$/, poolPage, 'pools'],
  [/^\/ui\/costs\/?$/, costs, 'costs'],
];

const RANK = { admin: 0, pi: 1, researcher: 2, viewer: 3 };

/**
 * What the signed-in principal may do, by the API's permission table: a role bound to a
 * tenant, or admin everywhere. Buttons the API would answer 403 are not shown.
 */
class Me {
  constructor(w) {
    this.id = w.principal_id;
    this.name = w.name;
    this.bindings = w.role_bindings;
    this.admin = w.role_bindings.some((b) => b.role === 'admin');
  }

  roleIn(tenant) {
    if (this.admin) return 'admin';
    const mine = this.bindings.filter((b) => b.scope === `tenant:${tenant}`).map((b) => b.role);
    return mine.sort((a, b) => RANK[a] - RANK[b])[0] || null;
  }

  /** Cancel, retry, hold, release: one's own jobs from researcher up, others' from pi up. */
  mayControl(job) {
    const role = this.roleIn(job.tenant_id);
    if (!role) return false;
    const least = job.submitted_by === this.id ? 'researcher' : 'pi';
    return RANK[role] <= RANK[least];
  }

  tenants() {
    return [...new Set(this.bindings.filter((b) => b.scope.startsWith('tenant:')).map((b) => b.scope.slice(7)))].sort();
  }

  roles() {
    return this.bindings.map((b) => (b.scope === 'global' ? b.role : `${b.role} in ${b.scope.slice(7)}`)).join(', ');
  }
}

let me = null;
let current = null; // the AbortController of the page on screen

const main = () => document.getElementById('main');

/** `/ui/#token=…` signs in and leaves the address bar without the secret. */
function takeTokenFromFragment() {
  const m = location.hash.match(/^#token=(.+)$/);
  if (!m) return;
  signIn(decodeURIComponent(m[1]));
  history.replaceState(history.state, '', location.pathname + location.search);
}

function showSignIn(message) {
  stopPage();
  me = null;
  fill(document.getElementById('who'));
  document.title = 'Sign in · Hodei Jobs';
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false', 'aria-describedby': 'token-help' });
  const form = h('form', { class: 'card signin', onsubmit: async (e) => {
    e.preventDefault();
    signIn(input.value);
    await start();
  } },
  h('h1', {}, 'Sign in'),
  message ? h('p', { class: 'error', role: 'alert' }, message) : null,
  h('label', { for: 'token' }, 'API token'),
  input,
  h('p', { id: 'token-help', class: 'muted' }, 'An API token (hodei_…) or the admin token. It stays in this browser tab only. ', h('code', {}, 'hodei ui'), ' opens this page signed in.'),
  h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  fill(main(), form);
  input.focus();
}

function showWho() {
  fill(document.getElementById('who'),
    h('span', { title: me.roles() }, `${me.name} · `, h('span', { class: 'muted' }, me.roles())),
    h('button', { type: 'button', class: 'link', onclick: () => { signOut(); showSignIn('Signed out.'); } }, 'Sign out'));
}

function stopPage() {
  if (current) current.abort();
  current = null;
}

/** Renders the page of the address bar. */
async function render() {
  if (!me) return;
  stopPage();
  const controller = new AbortController();
  current = controller;
  const path = location.pathname;
  const route = ROUTES.find(([re]) => re.test(path));
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (route && a.dataset.nav === route[2]) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const view = h('div', { class: 'page' });
  fill(main(), view);
  if (!route) {
    fill(view, h('h1', {}, 'Not found'), h('p', {}, 'No such page. ', h('a', { href: '/ui/' }, 'Back to the overview.')));
    return;
  }
  const params = route[0].exec(path).slice(1).map(decodeURIComponent);
  const ctx = {
    me,
    signal: controller.signal,
    query: new URLSearchParams(location.search),
    title: (t) => { document.title = `${t} · Hodei Jobs`; },
    /** Runs `f` now and every `ms` until the page is left or `f` answers false; a failure shows and retries. */
    every(ms, f) {
      let timer = null;
      const tick = async () => {
        if (controller.signal.aborted) return;
        let again = true;
        try {
          again = (await f()) !== false;
          view.querySelector(':scope > .load-error')?.remove();
        } catch (e) {
          if (controller.signal.aborted) return;
          if (!(e instanceof ApiError) || e.status !== 401) showError(view, e);
        }
        if (again && !controller.signal.aborted && ms) timer = setTimeout(tick, ms);
      };
      controller.signal.addEventListener('abort', () => clearTimeout(timer));
      return tick();
    },
    /** Runs a load the user asked for (a filter, a page): its error shows like a refresh's. */
    run(f) {
      return f().then(
        () => view.querySelector(':scope > .load-error')?.remove(),
        (e) => { if (!controller.signal.aborted && !(e instanceof ApiError && e.status === 401)) showError(view, e); },
      );
    },
    /** Goes to `url` inside the dashboard. */
    go: navigate,
    /** Replaces the query string without a new history entry. */
    setQuery(params) {
      const q = new URLSearchParams(params).toString();
      history.replaceState(history.state, '', `${location.pathname}${q ? `?${q}` : ''}`);
    },
  };
  try {
    await route[1](view, params, ctx);
  } catch (e) {
    if (!controller.signal.aborted) showError(view, e);
  }
}

function showError(view, e) {
  view.querySelector(':scope > .load-error')?.remove();
  view.prepend(h('p', { class: 'error load-error', role: 'alert' }, e instanceof ApiError ? `The server said: ${e.message}` : `Could not reach the server (${e.message}); retrying.`));
}

export function navigate(url) {
  history.pushState(null, '', url);
  render().then(() => main().focus({ preventScroll: true }));
  window.scrollTo(0, 0);
}

// Links inside the dashboard change the page without loading the document again.
document.addEventListener('click', (e) => {
  const a = e.target.closest('a[href]');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith('/ui/') || url.pathname.startsWith('/ui/assets/')) return;
  if (url.hash && url.pathname === location.pathname && url.search === location.search) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener('popstate', () => render());
// A `#token=…` link opened in a tab that already shows the dashboard.
window.addEventListener('hashchange', () => { if (location.hash.startsWith('#token=')) start(); });
whenUnauthorized(() => { signOut(); showSignIn('The server refused this token (expired, revoked or mistyped). Sign in again.'); });

async function start() {
  takeTokenFromFragment();
  if (!token()) {
    showSignIn();
    return;
  }
  try {
    me = new Me(await api('/whoami'));
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) showSignIn(`Could not reach the server: ${e.message}`);
    return;
  }
  showWho();
  await render();
}

start();
