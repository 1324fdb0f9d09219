#!/usr/bin/env node
// Drives herd's admin dashboard in headless Chromium (Debian's /usr/bin/chromium, through
// playwright-core: no browser download).
//
//   node tests/browser/dashboard.mjs <admin-base-url> <screenshot-path> [token]
//
// Loads the page (with a token: checks that the token form appears, types the token), fails on
// any console error or uncaught page error, checks that every app and instance id that
// GET /cluster/status lists is shown, scales the first app to 3 with the Scale button, waits
// (bounded) until <app>-3 is in the table, and saves a full-page screenshot (also on failure).
// Exit 0 on success; 1 with a message on failure; 2 on bad usage or a missing browser.
// HERD_DASHBOARD_RANGE=1m|5m|15m picks that chart window with its button before the screenshot.
//
// Run by crates/herd/tests/dashboard.rs; `scripts/test.sh` installs chromium and node_modules.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const USAGE = 'usage: node dashboard.mjs <admin-base-url> <screenshot-path> [token]';
const CHROMIUM = process.env.HERD_CHROMIUM || '/usr/bin/chromium';
const TOTAL_TIMEOUT_MS = Number(process.env.HERD_BROWSER_TIMEOUT_MS || 120000);
const RANGE = process.env.HERD_DASHBOARD_RANGE || '';

const [baseArg, shotPath, token] = process.argv.slice(2);
if (!baseArg || !shotPath) {
  console.error(USAGE);
  process.exit(2);
}
const base = baseArg.replace(/\/+$/, '');

if (!fs.existsSync(CHROMIUM)) {
  console.error(`dashboard test: ${CHROMIUM} not found; run scripts/test.sh (it installs Debian's chromium)`);
  process.exit(2);
}
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  console.error(`dashboard test: playwright-core is not installed (${e.message}); run scripts/test.sh (npm ci --prefix tests/browser)`);
  process.exit(2);
}

const step = (msg) => console.log(`[dashboard] ${msg}`);

// ---- console policy: any console error fails the test, except what a browser itself logs for
// HTTP answers the page expects and handles: 404 from the endpoints older herds lack, and 401
// from the API while the token has not been typed in yet.
const OPTIONAL_ENDPOINTS = ['/telemetry', '/telemetry/stream'];
let tokenPhase = Boolean(token);
const problems = [];
const allowed = [];

function expectedNetworkError(msg) {
  const m = /^Failed to load resource: the server responded with a status of (\d{3})/.exec(msg.text());
  if (!m) return false;
  const status = Number(m[1]);
  let p = '';
  try {
    p = new URL(msg.location().url).pathname;
  } catch (_) {
    return false;
  }
  if (status === 404 && OPTIONAL_ENDPOINTS.includes(p)) return true;
  if (status === 401 && tokenPhase && p !== '/' && !p.startsWith('/assets/')) return true;
  return false;
}

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'herd-dashboard-'));
let context;
let page;

async function screenshot() {
  if (!page) return;
  fs.mkdirSync(path.dirname(path.resolve(shotPath)), { recursive: true });
  await page.screenshot({ path: shotPath, fullPage: true });
  step(`screenshot: ${shotPath}`);
}

async function cleanup() {
  try {
    if (context) await context.close();
  } catch (_) {
    /* browser already gone */
  }
  fs.rmSync(userDataDir, { recursive: true, force: true });
}

async function fail(msg) {
  console.error(`dashboard test FAILED: ${msg}`);
  for (const p of problems) console.error(`  - ${p}`);
  try {
    await screenshot();
  } catch (_) {
    /* keep the first error */
  }
  await cleanup();
  process.exit(1);
}

const watchdog = setTimeout(() => {
  fail(`timed out after ${TOTAL_TIMEOUT_MS} ms`);
}, TOTAL_TIMEOUT_MS);

async function api(pathname, init = {}) {
  const headers = Object.assign({ Accept: 'application/json' }, init.headers);
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(base + pathname, Object.assign({}, init, { headers }));
  const text = await res.text();
  if (!res.ok) throw new Error(`${init.method || 'GET'} ${pathname}: HTTP ${res.status}: ${text}`);
  return JSON.parse(text);
}

async function waitFor(what, limitMs, fn) {
  const deadline = Date.now() + limitMs;
  let last;
  for (;;) {
    try {
      if (await fn()) return;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      await fail(`timed out after ${limitMs} ms waiting for ${what}${last ? ` (${last.message})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

function checkProblems(when) {
  if (problems.length) return fail(`console or page errors ${when}`);
  return null;
}

try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1440, height: 900 },
    deviceScaleFactor: 1,
    timeout: 30000,
  });
  page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(15000);
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    if (expectedNetworkError(msg)) {
      allowed.push(msg.text());
      return;
    }
    const loc = msg.location();
    problems.push(`console error: ${msg.text()}${loc && loc.url ? ` (${loc.url}:${loc.lineNumber})` : ''}`);
  });
  page.on('pageerror', (err) => problems.push(`uncaught page error: ${err.message}`));

  // ---- load
  step(`loading ${base}/`);
  const resp = await page.goto(`${base}/`, { waitUntil: 'load' });
  if (!resp || resp.status() !== 200) await fail(`GET / answered ${resp ? resp.status() : 'nothing'}`);
  const csp = resp.headers()['content-security-policy'] || '';
  if (!csp.includes("script-src 'self'")) await fail(`GET / has no strict Content-Security-Policy (got ${JSON.stringify(csp)})`);

  // ---- token flow
  if (token) {
    step('expecting the token form (the API answers 401 without a token)');
    await page.locator('#login').waitFor({ state: 'visible', timeout: 10000 });
    if ((await page.locator('[data-app]').count()) !== 0) await fail('app data shown before a token was given');
    await page.locator('#token-input').fill(token);
    await page.locator('#token-submit').click();
    await page.locator('#login').waitFor({ state: 'hidden', timeout: 10000 });
    // Requests already in flight may still answer 401 for a moment.
    await new Promise((r) => setTimeout(r, 300));
    tokenPhase = false;
    const kept = await page.evaluate(() => sessionStorage.getItem('herd.adminToken'));
    if (kept !== token) await fail('the token was not kept in sessionStorage');
    step('token accepted and kept in sessionStorage');
  } else if (await page.locator('#login').isVisible()) {
    await fail('the token form appeared although herd has no admin token');
  }

  // ---- apps and instance ids
  const status = await api('/cluster/status');
  const apps = status.apps || [];
  if (!apps.length) await fail('GET /cluster/status lists no app');
  for (const app of apps) {
    const card = page.locator(`section.card[data-app="${app.name}"]`);
    await card.waitFor({ state: 'visible', timeout: 15000 }).catch(() => fail(`no card for app ${app.name}`));
    const title = (await card.locator('h2').textContent()) || '';
    if (title.trim() !== app.name) await fail(`card title is ${JSON.stringify(title)}, expected ${app.name}`);
    for (const inst of app.instances || []) {
      await card
        .locator(`tr[data-instance="${inst.id}"] td.id`)
        .filter({ hasText: inst.id })
        .waitFor({ state: 'visible', timeout: 15000 })
        .catch(() => fail(`instance ${inst.id} of ${app.name} is not shown`));
    }
    step(`app ${app.name}: ${(app.instances || []).map((i) => i.id).join(', ')} shown`);
  }
  await checkProblems('after loading');

  // ---- scale to 3 with the button
  const app = apps[0].name;
  const target = `${app}-3`;
  const card = page.locator(`section.card[data-app="${app}"]`);
  step(`scaling ${app} to 3 with the Scale button`);
  await card.locator('input[name="instances"]').fill('3');
  await card.locator('input[name="reason"]').fill('browser test');
  await card.getByRole('button', { name: 'Scale', exact: true }).click();
  await card
    .locator(`tr[data-instance="${target}"]`)
    .waitFor({ state: 'visible', timeout: 30000 })
    .catch(() => fail(`${target} did not appear in the table within 30 s of scaling`));
  step(`${target} appeared`);
  const after = await api('/cluster/status');
  const desired = (after.apps.find((a) => a.name === app) || {}).desired;
  if (desired !== 3) await fail(`the API reports desired=${desired} for ${app} after scaling, expected 3`);
  // For the screenshot: let the new instance become ready and the charts gather a few points.
  await waitFor(`${target} to be ready on the page`, 30000, async () => {
    const badge = await card.locator(`tr[data-instance="${target}"] .badge`).textContent();
    return badge && badge.trim() === 'ready';
  });
  const mode = await page.locator('#conn').getAttribute('data-mode');
  if (mode !== 'live' && mode !== 'polling') await fail(`the connection indicator says ${mode}, expected live or polling`);
  step(`data mode: ${mode}`);
  if (RANGE) {
    await page.locator(`#range button[data-range="${RANGE}"]`).click();
    const want = { '1m': '1 min', '5m': '5 min', '15m': '15 min' }[RANGE];
    await waitFor(`the charts to show the ${RANGE} window`, 5000, async () => {
      const shown = await card.locator('.chart-range').first().textContent();
      return shown === want;
    });
    step(`chart window: ${RANGE}`);
  }
  await new Promise((r) => setTimeout(r, 2500));
  await checkProblems('after scaling');

  await screenshot();
  clearTimeout(watchdog);
  if (allowed.length) step(`browser-logged HTTP answers the page expects: ${[...new Set(allowed)].join(' | ')}`);
  await cleanup();
  step('PASS');
  process.exit(0);
} catch (e) {
  await fail(e && e.stack ? e.stack : String(e));
}
