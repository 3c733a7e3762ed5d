// Never silently deaf (issue 17): the watch banner and trouble tone when the stream is cut, the
// receiver stopped or the session ending; recovery without a reload; the session warning and
// its one-click extension; the remembered sound choice. Real Chromium, real receiver (short
// session lengths and keep-alive from its configuration file). Run by tests/console/run.
'use strict';
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { chromium } = require('playwright-core');
const { Receiver } = require('./lib/receiver');
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
