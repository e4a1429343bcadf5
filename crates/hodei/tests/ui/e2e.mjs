// The dashboard's end-to-end steps in headless Chromium (run by crates/hodei/tests/ui.rs, which
// starts the server and passes its address, tokens and ids in the environment).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const URL = env('HODEI_URL');
const ADMIN = env('HODEI_TOKEN');
const VIEWER = env('VIEWER_TOKEN');
const OTHER_JOB = env('OTHER_JOB');
const SHOTS = env('SHOTS');
const T = 30_000; // the longest any step waits

/** Submits through the real CLI, as a user would; answers the job id it prints. */
function submit(...args) {
  const out = execFileSync(env('HODEI_BIN'), ['submit', ...args], { encoding: 'utf8' });
  const id = out.trim().split(/\s+/)[0];
  assert.match(id, /^[0-9a-f-]{36}$/, `hodei submit printed ${out}`);
  return id;
}

async function job(id) {
  const resp = await fetch(`${URL}/api/v1/jobs/${id}`, { headers: { Authorization: `Bearer ${ADMIN}` } });
  return resp.json();
}

/** Until the page's first round of calls has answered (nothing says "Loading…"), and a moment. */
async function settled(p) {
  await p.waitForFunction(() => !document.querySelector('main').textContent.includes('Loading…'), null, { timeout: T });
  await p.waitForTimeout(400);
}

/** Text whose colour against its background is under WCAG AA (4.5:1, 3:1 for large text). */
function lowContrast() {
  const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const bad = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('svg') || el.disabled || !el.offsetParent) continue;
    const text = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join('').trim();
    if (!text) continue;
    const st = getComputedStyle(el);
    const [a, b] = [lum(rgb(st.color)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(st.fontSize), bold = Number(st.fontWeight) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < need) bad.push(`${text.slice(0, 30)}: ${ratio.toFixed(2)} < ${need}`);
  }
  return bad;
}

async function step(name, f) {
  const t0 = Date.now();
  await f();
  console.log(`ok   ${name} (${Date.now() - t0} ms)`);
}

const browser = await chromium.launch({
  executablePath: env('CHROMIUM'),
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const problems = [];
function watch(page, who) {
  page.on('pageerror', (e) => problems.push(`${who}: page error: ${e.message}`));
  page.on('console', (m) => {
    // A 404 or 403 the page asked for on purpose shows as a console error too; these do not.
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) problems.push(`${who}: console: ${m.text()}`);
  });
  page.on('dialog', (d) => { problems.push(`${who}: a dialog opened: ${d.message()}`); d.dismiss(); });
}

const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
const page = await ctx.newPage();
watch(page, 'admin');
const badgeOf = (p) => p.locator('h1 .badge');

try {
  await step('the page is served with a strict Content-Security-Policy', async () => {
    const resp = await page.goto(`${URL}/ui/`);
    const csp = resp.headers()['content-security-policy'];
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.equal(resp.headers()['set-cookie'], undefined, 'no cookies');
  });

  await step('a wrong token is refused, the right one signs in', async () => {
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await page.screenshot({ path: join(SHOTS, 'signin.png') });
    await page.getByLabel('API token').fill('hodei_not-a-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'refused' }).waitFor({ timeout: T });
    await page.getByLabel('API token').fill(ADMIN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#who').getByText('admin').first().waitFor({ timeout: T });
    await page.getByRole('heading', { name: 'Overview' }).waitFor({ timeout: T });
    const cookies = await ctx.cookies();
    assert.equal(cookies.length, 0, 'the dashboard sets no cookie');
  });

  let watched;
  await step('a job submitted from the CLI appears on the jobs page and finishes there', async () => {
    await page.getByRole('link', { name: 'Jobs', exact: true }).click();
    await page.getByRole('heading', { name: 'Jobs' }).waitFor();
    // A bad filter says what the server said, and a good one clears it.
    await page.getByLabel('Labels').fill('=ml');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.locator('.load-error', { hasText: 'label' }).waitFor({ timeout: T });
    await page.getByLabel('Labels').fill('');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.locator('.load-error').waitFor({ state: 'detached', timeout: T });
    watched = submit('--name', 'watched', '--', 'sh', '-c', 'sleep 2; echo done');
    const row = page.locator('tr', { has: page.getByRole('link', { name: 'watched', exact: true }) });
    await row.waitFor({ timeout: T });
    await row.locator('.badge', { hasText: /pending|scheduled|running/ }).waitFor({ timeout: T });
    await row.locator('.badge', { hasText: 'succeeded' }).waitFor({ timeout: T });
  });

  let printer;
  await step('its live logs show lines as the job prints them; filter and download work', async () => {
    printer = submit('--name', 'printer', '--', 'sh', '-c', 'for i in $(seq 1 60); do echo line $i; sleep 0.1; done; echo oops >&2');
    await page.goto(`${URL}/ui/jobs/${printer}`);
    const log = page.locator('pre.log');
    await log.getByText('line 1', { exact: true }).waitFor({ timeout: T });
    const early = await log.textContent();
    assert.ok(!early.includes('line 60'), 'the first line arrived while the job was still printing');
    await page.getByText(/^Live/).waitFor({ timeout: T });
    await log.getByText('line 60', { exact: true }).waitFor({ timeout: T });
    await page.getByText('Ended · succeeded · exit 0').waitFor({ timeout: T });
    await badgeOf(page).filter({ hasText: 'succeeded' }).waitFor({ timeout: T });
    await log.locator('.stderr', { hasText: 'oops' }).waitFor();

    await page.getByPlaceholder('Filter lines').fill('line 5');
    const shown = (await log.textContent()).trim().split('\n');
    assert.deepEqual(shown, ['line 5', ...Array.from({ length: 10 }, (_, i) => `line ${50 + i}`)]);
    await page.getByPlaceholder('Filter lines').fill('');

    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download' }).click()]);
    const text = readFileSync(await download.path(), 'utf8');
    const lines = Array.from({ length: 60 }, (_, i) => `line ${i + 1}\n`).join('');
    assert.equal(text.replace('oops\n', ''), lines, 'the download is the whole output');
    await page.screenshot({ path: join(SHOTS, 'job.png'), fullPage: true });
  });

  await step('cancel a running job from its page', async () => {
    const sleeper = submit('--name', 'sleeper', '--', 'sleep', '60');
    await page.goto(`${URL}/ui/jobs/${sleeper}`);
    await badgeOf(page).filter({ hasText: 'running' }).waitFor({ timeout: T });
    await page.getByRole('button', { name: 'Cancel' }).click();
    await badgeOf(page).filter({ hasText: 'cancelled' }).waitFor({ timeout: T });
    assert.equal((await job(sleeper)).state, 'cancelled');
    assert.equal(await page.getByRole('button', { name: 'Cancel' }).count(), 0, 'no cancel button on a cancelled job');
    await page.getByRole('button', { name: 'Retry' }).waitFor();
  });

  await step('a held job says why it waits; Release starts it', async () => {
    const held = submit('--name', 'waiting', '--hold', '--', 'true');
    await page.goto(`${URL}/ui/jobs/${held}`);
    await badgeOf(page).filter({ hasText: 'held' }).waitFor({ timeout: T });
    await page.locator('.reasons code', { hasText: 'user_hold' }).waitFor({ timeout: T });
    await page.getByText('Estimated start').waitFor();
    await page.getByRole('button', { name: 'Release' }).click();
    await badgeOf(page).filter({ hasText: 'succeeded' }).waitFor({ timeout: T });
    await page.getByText('It has ended: succeeded.').waitFor({ timeout: T });
  });

  await step('attacker-controlled text renders as text', async () => {
    const xss = submit('--name', 'escaping', '-l', 'note=<img src=x onerror=window.__pwned=1>', '--', 'sh', '-c', 'echo "<script>window.__pwned=2</script>"; echo "<b>bold</b>" >&2');
    await page.goto(`${URL}/ui/jobs/${xss}`);
    await page.locator('pre.log').getByText('<script>window.__pwned=2</script>').waitFor({ timeout: T });
    await page.getByText('note=<img src=x onerror=window.__pwned=1>').waitFor();
    await page.locator('pre.log').getByText('<b>bold</b>').waitFor({ timeout: T });
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
    assert.equal(await page.locator('img[src="x"], pre.log b, pre.log script').count(), 0);
  });

  const calls = [];
  page.on('request', (r) => { if (r.url().includes('/api/v1/')) calls.push(new globalThis.URL(r.url()).pathname); });
  const pages = [
    ['overview', '/ui/', 'Overview'],
    ['jobs', '/ui/jobs', 'Jobs'],
    ['job', `/ui/jobs/${printer}`, 'printer'],
    ['tenants', '/ui/tenants', 'Tenants'],
    ['tenant', '/ui/tenants/default', 'default'],
    ['pools', '/ui/pools', 'Pools'],
    ['pool', '/ui/pools/local', 'local'],
    ['costs', '/ui/costs', 'Costs'],
  ];
  await step('every page loads with a handful of API calls, labelled inputs, and a screenshot', async () => {
    for (const [name, path, heading] of pages) {
      calls.length = 0;
      const t0 = Date.now();
      await page.goto(`${URL}${path}`);
      await page.getByRole('heading', { name: heading }).first().waitFor({ timeout: T });
      await settled(page);
      // whoami once per document, then the page's own calls (the job page's log stream too).
      const own = calls.filter((c) => c !== '/api/v1/whoami');
      assert.ok(own.length <= 6, `${name} made ${own.length} API calls: ${own.join(' ')}`);
      if (await page.locator('.load-error').count()) assert.fail(`${name} shows an error: ${await page.locator('.load-error').first().textContent()}`);
      const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
        .filter((e) => !e.labels?.length && !e.getAttribute('aria-label')).map((e) => e.outerHTML));
      assert.deepEqual(unlabelled, [], `${name}: form fields without a label`);
      assert.deepEqual(await page.evaluate(lowContrast), [], `${name}: text under WCAG AA contrast`);
      await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
      console.log(`     ${name}: ${own.length} API calls (${Date.now() - t0} ms)`);
      if (name === 'pool') {
        assert.ok(await page.getByRole('button', { name: 'Scale' }).count(), 'an admin sees the manual scale of a pool');
        for (const what of ['CPU allocated', 'Memory allocated']) {
          const text = await page.locator('dt', { hasText: what }).locator('xpath=following-sibling::dd[1]').textContent();
          const pct = Number(text.match(/([\d.]+) %/)[1]);
          assert.ok(pct >= 0 && pct <= 100, `${what}: ${text}`);
        }
      }
    }
  });

  await step('first contentful paint of the overview', async () => {
    await page.goto(`${URL}/ui/`);
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    const fcp = await page.evaluate(() => new Promise((resolve) => {
      new PerformanceObserver((list, obs) => {
        const e = list.getEntries().find((x) => x.name === 'first-contentful-paint');
        if (e) { obs.disconnect(); resolve(e.startTime); }
      }).observe({ type: 'paint', buffered: true });
    }));
    assert.ok(fcp > 0);
    console.log(`     first contentful paint: ${fcp.toFixed(0)} ms`);
  });

  await step('keyboard: the first Tab reaches "Skip to content", links are reachable', async () => {
    await page.goto(`${URL}/ui/`);
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Jobs');
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Jobs' }).waitFor();
  });

  await step('the narrow layout has no sideways scroll', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    for (const path of ['/ui/', '/ui/jobs', `/ui/jobs/${printer}`, '/ui/costs']) {
      await page.goto(`${URL}${path}`);
      await page.locator('main h1').first().waitFor();
      await settled(page);
      const [scroll, width] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
      assert.ok(scroll <= width, `${path}: ${scroll} px wide in a ${width} px window`);
    }
    await page.goto(`${URL}/ui/`);
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    await settled(page);
    await page.screenshot({ path: join(SHOTS, 'overview-narrow.png'), fullPage: true });
  });

  await step('a viewer signs in by link, sees no buttons it may not use, and not other tenants', async () => {
    const running = submit('--name', 'viewed', '--', 'sleep', '60');
    const vctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const vpage = await vctx.newPage();
    watch(vpage, 'viewer');
    // `hodei ui PAGE --print`: the link that opens the page signed in.
    const link = execFileSync(env('HODEI_BIN'), ['ui', `jobs/${running}`, '--print', '--token', VIEWER], { encoding: 'utf8' }).trim();
    assert.equal(link, `${URL}/ui/jobs/${running}#token=${VIEWER}`);
    await vpage.goto(link);
    await vpage.locator('#who').getByText('vera').waitFor({ timeout: T });
    assert.ok(!vpage.url().includes('token'), `the token left the address bar: ${vpage.url()}`);
    await badgeOf(vpage).filter({ hasText: 'running' }).waitFor({ timeout: T });
    await vpage.getByRole('heading', { name: 'Why is it where it is' }).waitFor();
    assert.equal(await vpage.locator('[data-action]').count(), 0, 'a viewer sees no job controls');
    await vpage.goto(`${URL}/ui/jobs/${OTHER_JOB}`);
    await vpage.getByRole('heading', { name: 'Job not found' }).waitFor({ timeout: T });
    await vpage.goto(`${URL}/ui/pools/local`);
    await vpage.getByRole('heading', { name: 'local' }).waitFor({ timeout: T });
    assert.equal(await vpage.getByRole('button', { name: 'Scale' }).count(), 0, 'a viewer sees no scale form');
    await vpage.goto(`${URL}/ui/jobs`);
    await vpage.getByRole('link', { name: 'viewed', exact: true }).waitFor({ timeout: T });
    assert.equal(await vpage.getByRole('link', { name: 'theirs', exact: true }).count(), 0, "another tenant's jobs are not listed");
    await vctx.close();
    await fetch(`${URL}/api/v1/jobs/${running}/cancel`, { method: 'POST', headers: { Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json' }, body: '{}' });
  });

  await step('signing out forgets the token', async () => {
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.goto(`${URL}/ui/`);
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    await page.reload();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  });

  assert.deepEqual(problems, [], 'errors in the browser');
  console.log('all dashboard steps passed');
} catch (e) {
  await page.screenshot({ path: join(SHOTS, 'failure.png'), fullPage: true }).catch(() => {});
  console.error(problems.join('\n'));
  throw e;
} finally {
  await browser.close();
}
