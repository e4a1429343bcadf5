// Loads each dashboard page `runs` times, each in a new browser context (a cold cache), and
// prints p50 / p90 / max of the first contentful paint and of "data on screen" (the page no
// longer says "Loading…"), both from the page's own clock (performance.now()).
//   node bench/ui-load.mjs URL TOKEN RUNS     (bench/ui.sh starts the server and calls this)

import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const { chromium } = await import(join(here, '../crates/hodei/tests/ui/node_modules/playwright-core/index.mjs'));
const [url, token, runs] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];
for (const path of ['/ui/', '/ui/jobs', '/ui/costs']) {
  const fcp = [], data = [];
  for (let i = 0; i < Number(runs); i += 1) {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await ctx.newPage();
    let calls = 0;
    page.on('request', (r) => { if (r.url().includes('/api/v1/')) calls += 1; });
    await page.goto(`${url}${path}#token=${token}`);
    await page.waitForFunction(() => document.querySelector('main h1') && !document.querySelector('main').textContent.includes('Loading…'), null, { timeout: 30000 });
    const now = await page.evaluate(() => performance.now());
    const paint = await page.evaluate(() => new Promise((resolve) => {
      new PerformanceObserver((list, obs) => {
        const e = list.getEntries().find((x) => x.name === 'first-contentful-paint');
        if (e) { obs.disconnect(); resolve(e.startTime); }
      }).observe({ type: 'paint', buffered: true });
    }));
    fcp.push(paint);
    data.push(now);
    if (i === 0) console.log(`${path}: ${calls} API calls on load`);
    await ctx.close();
  }
  const f = (xs) => `p50 ${pct(xs, 0.5).toFixed(0)} ms, p90 ${pct(xs, 0.9).toFixed(0)} ms, max ${Math.max(...xs).toFixed(0)} ms`;
  console.log(`${path}: first contentful paint ${f(fcp)}; data on screen ${f(data)} (${runs} cold loads)`);
}
await browser.close();
