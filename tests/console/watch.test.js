// Never silently deaf (issue 17): the watch banner and trouble tone when the stream is cut, the
// receiver stopped or the session ending; recovery without a reload; the session warning and
// its one-click extension; the remembered sound choice. Real Chromium, real receiver (short
// session lengths and keep-alive from its configuration file). Run by tests/console/run.
'use strict';
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { Receiver, repo } = require('./lib/receiver');
const { Agent } = require('./lib/agent');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PASSWORD = 'a long test password 4 officers';
const KEEP_ALIVE_S = 2;
const CONFIG = `[console]
keep_alive = "${KEEP_ALIVE_S}s"
`;
// Lifetime 12 s, warned 8 s before the end, extensible up to 30 s after sign-in.
const SHORT_SESSIONS = `${CONFIG}session_lifetime = "12s"
session_warning = "8s"
session_max = "30s"
`;

let browser;
let rx;
let token;

// Records every Web Audio oscillator started on the page (type and frequency): how the test
// hears the alarm and the trouble tone.
function hearTones() {
  window.__tones = [];
  const proto = (window.BaseAudioContext || window.AudioContext).prototype;
  const create = proto.createOscillator;
  proto.createOscillator = function createOscillator() {
    const o = create.call(this);
    const start = o.start.bind(o);
    o.start = (...a) => {
      window.__tones.push({ type: o.type, freq: o.frequency.value, at: Date.now() });
      return start(...a);
    };
    return o;
  };
}

async function newContext() {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(10_000);
  await context.addInitScript(hearTones);
  return context;
}

async function signIn(context, receiver, username) {
  const page = await context.newPage();
  await page.goto(receiver.url + '/login');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(receiver.url + '/');
  await page.locator('html[data-stream="live"]').waitFor({ timeout: 5000 });
  return page;
}

async function troubleTones(page) {
  return page.evaluate(() => window.__tones.filter((t) => t.type === 'triangle' && t.freq === 392).length);
}

// Screenshots this file adds to docs/screenshots (docs/console.md shows them).
async function shot(page, name) {
  const dir = path.join(repo, 'docs', 'screenshots');
  fs.mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: path.join(dir, name) });
}

function card(page, label) {
  return page.locator('li.incident', { has: page.locator('.location-label', { hasText: label }) });
}

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  rx = await Receiver.start([], { config: CONFIG });
  rx.addUser('olivia', 'officer', PASSWORD);
  rx.addUser('ada', 'admin', PASSWORD);
  token = rx.createToken();
});

after(async () => {
  if (browser) await browser.close();
  if (rx) await rx.stop();
});

describe('never silently deaf', () => {
  test('stream cut: banner within the keep-alive, trouble tone, then the board catches up without a reload', async () => {
    const context = await newContext();
    const page = await signIn(context, rx, 'olivia');
    await page.getByRole('button', { name: 'Click to enable sound' }).click();
    await page.locator('html[data-sound="on"]').waitFor();
    let reloaded = false;
    page.on('framenavigated', () => { reloaded = true; });
    // A proxy that cuts the stream and refuses it from now on.
    await page.route('**/events*', (r) => r.abort());
    await page.evaluate(() => window.duressConsole.dropStream());
    const t0 = Date.now();
    await page.locator('#watch-banner', { hasText: 'Live updates are down' }).waitFor({ timeout: KEEP_ALIVE_S * 1000 + 2000 });
    const shown = Date.now() - t0;
    await page.waitForFunction(() => window.__tones.some((t) => t.type === 'triangle' && t.freq === 392), null, { timeout: 2000 });
    await shot(page, 'console-watch-banner.png');
    // An alarm raised while the board cannot hear the stream.
    const agent = await new Agent(rx, { location: { label: 'Bldg W, Floor 1, Room 101 (Watch test)', BLD: 'W' } }).enroll(token);
    await agent.press();
    await page.waitForTimeout(500);
    await page.unroute('**/events*');
    await card(page, 'Watch test').waitFor({ timeout: 8000 });
    await page.locator('html[data-stream="live"]').waitFor();
    await page.locator('#watch-banner').waitFor({ state: 'hidden' });
    assert.equal(reloaded, false, 'caught up without a reload');
    console.log(`stream cut: banner after ${shown} ms`);
    await context.close();
  });

  test('receiver stopped: banner and trouble tone; restarted: reconnects by itself and shows new alarms', async () => {
    const context = await newContext();
    const page = await signIn(context, rx, 'olivia');
    await page.getByRole('button', { name: 'Click to enable sound' }).click();
    let reloaded = false;
    page.on('framenavigated', () => { reloaded = true; });
    const before = await troubleTones(page);
    await rx.kill();
    const t0 = Date.now();
    await page.locator('#watch-banner', { hasText: /cannot be reached|Live updates are down/ }).waitFor({ timeout: KEEP_ALIVE_S * 1000 + 3000 });
    const shown = Date.now() - t0;
    await page.waitForFunction((n) => window.__tones.filter((t) => t.type === 'triangle' && t.freq === 392).length > n, before, { timeout: 2000 });
    await rx.restart();
    await page.locator('html[data-stream="live"]').waitFor({ timeout: 10_000 });
    await page.locator('#watch-banner').waitFor({ state: 'hidden' });
    const agent = await new Agent(rx, { location: { label: 'Bldg W, Floor 2, Room 202 (After restart)', BLD: 'W' } }).enroll(token);
    await agent.press();
    await card(page, 'After restart').waitFor({ timeout: 3000 });
    assert.equal(reloaded, false, 'no reload');
    console.log(`receiver stopped: banner after ${shown} ms`);
    await context.close();
  });

  test('session: warned before it ends, one click extends it on the server, then it ends with a banner and the trouble tone', async () => {
    const short = await Receiver.start([], { config: SHORT_SESSIONS });
    try {
    short.addUser('olivia', 'officer', PASSWORD);
    const context = await newContext();
    const page = await signIn(context, short, 'olivia');
    await page.getByRole('button', { name: 'Click to enable sound' }).click();
    // 12 s lifetime, warned 8 s before: the warning comes about 4 s after sign-in.
    const extend = page.getByRole('button', { name: 'Stay signed in' });
    await extend.waitFor({ timeout: 8000 });
    await page.locator('#watch-banner', { hasText: /Your session ends in 0:0\d/ }).waitFor();
    const toned = await troubleTones(page);
    assert.ok(toned >= 1, 'the warning sounds the trouble tone');
    await extend.click();
    await page.locator('#watch-banner').waitFor({ state: 'hidden', timeout: 3000 });
    const log = short.cli(['audit', 'verify']);
    assert.equal(log.status, 0, String(log.stderr));
    // The extension is real: the server now keeps the session past its first 12 s.
    await page.locator('html[data-watch="session-ending"]').waitFor({ timeout: 10_000 });
    const alarm = await page.evaluate(async () => (await fetch('/api/alarm')).status);
    assert.equal(alarm, 200);
    // Not extended again: it ends; the page says so (no silent return to the sign-in page).
    await page.locator('#watch-banner', { hasText: 'Your session has ended' }).waitFor({ timeout: 14_000 });
    await page.getByRole('link', { name: 'Sign in again' }).waitFor();
    assert.match(page.url(), /\/$/, 'still on the board, not redirected');
    // The server ended it too (the page counts down from what the server said, so never first).
    const ended = await page.evaluate(async () => (await fetch('/api/alarm')).status);
    assert.equal(ended, 401, 'the server ended it too');
    assert.ok(await troubleTones(page) > toned, 'the trouble tone sounds for the ended session');
    const extended = short.tamper("SELECT 'n=' || count(*) FROM audit_log WHERE action = 'session.extend' AND actor = 'olivia'");
    assert.equal(extended.status, 0, String(extended.stderr));
    assert.match(extended.stdout, /n=1\b/, 'the extension is audited');
    await context.close();
    } finally {
      await short.stop();
    }
  });

  test('sound choice is remembered; while off a banner says so and one click turns it on', async () => {
    const context = await newContext();
    const page = await signIn(context, rx, 'ada');
    await page.locator('#sound-banner', { hasText: 'Sound is off — click to enable' }).waitFor();
    await page.locator('#sound-banner').click();
    await page.locator('html[data-sound="on"]').waitFor();
    await page.locator('#sound-banner').waitFor({ state: 'hidden' });
    assert.equal(await page.evaluate(() => localStorage.getItem('duress.sound')), 'on');
    await page.reload();
    await page.locator('html[data-stream="live"]').waitFor();
    // The browser's autoplay rule may hold sound until a click: any click then turns it on.
    if (await page.locator('html[data-sound="off"]').count()) {
      await page.locator('#sound-banner').waitFor();
      await page.locator('main').click({ position: { x: 5, y: 5 } });
    }
    await page.locator('html[data-sound="on"]').waitFor();
    await page.locator('#sound-banner').waitFor({ state: 'hidden' });
    await context.close();
  });
});

describe('duty display', () => {
  test('paired by an admin with a code, it outlives officer sessions, hears alarms, cannot act; revoking ends its stream at once', async () => {
    // Officer sessions of 6 s (8 s at most); keep-alive 5 s, so "at once" is not the keep-alive.
    const d = await Receiver.start([], {
      config: '[console]\nkeep_alive = "5s"\nsession_lifetime = "6s"\nsession_warning = "3s"\nsession_max = "8s"\n',
    });
    try {
      d.addUser('ada', 'admin', PASSWORD);
      d.addUser('olivia', 'officer', PASSWORD);
      const wall = await newContext();
      const screen = await wall.newPage();
      await screen.goto(d.url + '/display');
      await screen.getByRole('button', { name: 'Show a pairing code' }).click();
      const code = (await screen.locator('#pair-code').innerText()).trim();
      assert.match(code, /^[A-Z2-9]{4}-[A-Z2-9]{4}$/);
      const cookies = await wall.cookies();
      const cookie = cookies.find((c) => c.name === '__Host-duress_display');
      assert.ok(cookie && cookie.httpOnly && cookie.secure && cookie.sameSite === 'Strict', 'device-bound cookie');
      // Not yet paired: nothing to see.
      const early = await screen.evaluate(async () => (await fetch('/api/alarm')).status);
      assert.equal(early, 401);

      const admin = await newContext();
      const adminPage = await signIn(admin, d, 'ada');
      await adminPage.getByRole('link', { name: 'Displays' }).click();
      await adminPage.getByLabel('Pairing code').fill('nope-nope');
      await adminPage.getByLabel('Name').fill('Wall');
      await adminPage.getByRole('button', { name: 'Pair display' }).click();
      await adminPage.getByText('No screen is waiting with this code').waitFor();
      await adminPage.getByLabel('Pairing code').fill(code.toLowerCase());
      await adminPage.getByLabel('Name').fill('Security office wall');
      await adminPage.getByRole('button', { name: 'Pair display' }).click();
      await adminPage.locator('tr.display', { hasText: 'Security office wall' }).locator('.status-active').waitFor();
      await shot(adminPage, 'console-displays.png');
      await admin.close();

      // The screen goes to the board by itself.
      await screen.waitForURL(d.url + '/', { timeout: 6000 });
      await screen.locator('html[data-stream="live"]').waitFor({ timeout: 5000 });
      await screen.getByText('Duty display · view only').waitFor();
      await screen.getByRole('button', { name: 'Click to enable sound' }).click();
      const officer = await newContext();
      const officerPage = await signIn(officer, d, 'olivia');

      // Past the longest officer session: the officer's page says it ended, the display is live.
      await officerPage.locator('#watch-banner', { hasText: 'Your session has ended' }).waitFor({ timeout: 15_000 });
      await screen.waitForTimeout(1000);
      assert.equal(await screen.locator('html').getAttribute('data-stream'), 'live');
      assert.equal(await screen.locator('#watch-banner').isHidden(), true, 'no banner on the display');
      const agent = await new Agent(d, { location: { label: 'Bldg D, Floor 1, Room 110 (Display test)', BLD: 'D' } }).enroll(d.createToken());
      const { incident_id: id } = await agent.press();
      await card(screen, 'Display test').waitFor({ timeout: 2000 });
      await screen.locator('html[data-alarm="alarm"]').waitFor({ timeout: 3000 });
      assert.ok(await screen.evaluate(() => window.__tones.some((t) => t.type === 'square' && t.freq === 880)), 'the alarm sounds');
      assert.equal(await card(screen, 'Display test').getByRole('button', { name: 'Claim' }).isVisible(), false, 'no claim button shown');

      // View and hear only: every action is refused, and officer-only pages too.
      const refused = await screen.evaluate(async (incident) => {
        const out = {};
        for (const [method, p] of [['POST', `/incidents/${incident}/claim`], ['POST', `/incidents/${incident}/notes`],
          ['POST', `/incidents/${incident}/resolve`], ['POST', '/session/extend'], ['POST', '/logout'],
          ['GET', '/stations'], ['GET', '/reports'], ['GET', '/admin/displays'], ['GET', '/audit']]) {
          const r = await fetch(p, { method, redirect: 'manual', headers: method === 'POST' ? { 'X-CSRF-Token': '' } : {} });
          out[`${method} ${p}`] = r.status;
        }
        return out;
      }, id);
      for (const [k, v] of Object.entries(refused)) assert.equal(v, 403, k);
      await screen.goto(`${d.url}/incidents/${id}`);
      await screen.getByText('Nobody has claimed this incident yet.').waitFor();
      assert.equal(await screen.getByRole('button', { name: 'Claim: I am handling this' }).isVisible(), false);
      await screen.goto(d.url + '/');
      await screen.locator('html[data-stream="live"]').waitFor({ timeout: 5000 });
      await screen.getByRole('button', { name: /enable sound|Sound on/ }).first().click();

      // Revoked: the stream ends at once (well inside the 5 s keep-alive), the display says so.
      const admin2 = await newContext();
      const adminPage2 = await signIn(admin2, d, 'ada');
      await adminPage2.goto(d.url + '/admin/displays');
      adminPage2.on('dialog', (dlg) => dlg.accept());
      await adminPage2.locator('tr.display', { hasText: 'Security office wall' }).getByRole('button', { name: 'Revoke' }).click();
      const t0 = Date.now();
      await screen.waitForFunction(() => document.documentElement.dataset.stream !== 'live', null, { timeout: 2000 });
      const ended = Date.now() - t0;
      await adminPage2.locator('tr.display', { hasText: 'Security office wall' }).getByText('revoked').waitFor();
      await screen.locator('#watch-banner', { hasText: 'no longer paired' }).waitFor({ timeout: 5000 });
      assert.equal(await screen.evaluate(async () => (await fetch('/api/alarm')).status), 401);
      const audit = d.tamper("SELECT 'n=' || count(*) FROM audit_log WHERE action IN ('display.pair', 'display.revoke') AND actor = 'ada'");
      assert.match(audit.stdout, /n=2\b/, 'pairing and revocation audited');
      const verify = d.cli(['audit', 'verify']);
      assert.equal(verify.status, 0, String(verify.stderr));
      console.log(`display stream ended ${ended} ms after the revoke`);
      await admin2.close();
      await officer.close();
      await wall.close();
    } finally {
      await d.stop();
    }
  });
});
