// The security console in a real browser: Debian's Chromium, headless, driven by
// playwright-core, against the real `duress-receiver serve` binary and real signed events.
// Run by tests/console/run (which builds the receiver and installs playwright-core).
'use strict';
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { Receiver, repo } = require('./lib/receiver');
const { Agent } = require('./lib/agent');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PASSWORD = 'a long test password 4 officers';
const VIEWPORT = { width: 1280, height: 800 };
const ARTIFACTS = path.join(repo, 'artifacts', 'console');
const SCREENSHOTS = path.join(repo, 'docs', 'screenshots');

let browser;
let main; // the receiver most tests share (default 90 s escalation)
let token;

async function newContext() {
  // A fresh browser context: its own cookies and storage, like a second officer's browser.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: VIEWPORT });
  context.setDefaultTimeout(10_000);
  return context;
}

async function signIn(context, receiver, username) {
  const page = await context.newPage();
  await page.goto(receiver.url + '/');
  assert.match(page.url(), /\/login$/, 'anonymous visitors land on the sign-in page');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(receiver.url + '/');
  await page.locator('html[data-stream="live"]').waitFor({ timeout: 5000 });
  return page;
}

function card(page, label) {
  return page.locator('li.incident', { has: page.locator('.location-label', { hasText: label }) });
}

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // playwright-core gives every launch a fresh temporary --user-data-dir of its own.
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  main = await Receiver.start();
  main.addUser('olivia', 'officer', PASSWORD);
  main.addUser('oscar', 'officer', PASSWORD);
  main.addUser('ada', 'admin', PASSWORD);
  token = main.createToken();
});

after(async () => {
  if (browser) await browser.close();
  if (main) await main.stop();
});

describe('security console', () => {
  test('sign in; a new alarm appears on the board within 1 s without a reload, sounding', async () => {
    const context = await newContext();
    const page = await signIn(context, main, 'olivia');
    await page.getByRole('button', { name: 'Click to enable sound' }).click();
    const agent = await new Agent(main, { location: { label: 'Bldg B, Floor 1, Room 108 (Registrar)', BLD: 'B', FLR: '1', ROOM: '108' } }).enroll(token);
    let reloaded = false;
    page.on('framenavigated', () => { reloaded = true; });

    const answer = await agent.press();
    const t0 = Date.now();
    await card(page, 'Bldg B, Floor 1, Room 108').waitFor({ timeout: 1000 });
    const elapsed = Date.now() - t0;
    assert.ok(elapsed < 1000, `appeared ${elapsed} ms after the receiver's answer`);
    assert.equal(reloaded, false, 'no reload');
    assert.ok(answer.incident_id);
    const c = card(page, 'Bldg B, Floor 1, Room 108');
    await c.getByText('New · unclaimed').waitFor();
    await c.getByText('Registrar').waitFor();
    await page.locator('html[data-alarm="alarm"]').waitFor({ timeout: 2000 });
    await page.waitForFunction(() => document.title.startsWith('● DURESS — '), null, { timeout: 3000 });
    assert.equal(await page.getByRole('button', { name: 'Sound on' }).count(), 1, 'sound gate opened');
    await context.close();
  });

  test('a claim in one browser shows in another within 1 s', async () => {
    const a = await newContext();
    const b = await newContext();
    const pageA = await signIn(a, main, 'olivia');
    const pageB = await signIn(b, main, 'oscar');
    const agent = await new Agent(main, { location: { label: 'Bldg C, Floor 3, Room 301 (Counseling)', BLD: 'C', FLR: '3', ROOM: '301' } }).enroll(token);
    await agent.press();
    await card(pageA, 'Bldg C, Floor 3').waitFor({ timeout: 2000 });
    await card(pageB, 'Bldg C, Floor 3').waitFor({ timeout: 2000 });

    await Promise.all([
      pageA.waitForURL(main.url + '/'),
      card(pageA, 'Bldg C, Floor 3').getByRole('button', { name: 'Claim' }).click(),
    ]);
    const t0 = Date.now();
    await card(pageB, 'Bldg C, Floor 3').getByText('Claimed by olivia').waitFor({ timeout: 1000 });
    const elapsed = Date.now() - t0;
    assert.ok(elapsed < 1000, `claim visible in the other browser after ${elapsed} ms`);

    // Oscar opening the incident sees who has it and must take over explicitly.
    await card(pageB, 'Bldg C, Floor 3').getByRole('link', { name: 'Open incident' }).click();
    await pageB.locator('.claim-state', { hasText: 'Claimed by olivia' }).waitFor();
    assert.equal(await pageB.getByRole('button', { name: 'Claim: I am handling this' }).count(), 0);
    await pageB.getByRole('button', { name: 'Take over from olivia' }).waitFor();
    await a.close();
    await b.close();
  });

  test('a station registered in Room 101 raising an alarm that claims Room 214: one incident, registered location first, flagged on the board and the incident page', async () => {
    const context = await newContext();
    const page = await signIn(context, main, 'olivia');
    const agent = await new Agent(main, {
      location: { label: 'Bldg D, Floor 2, Room 214', BLD: 'D', FLR: '2', ROOM: '214' },
      host: { hostname: 'reg-station-101' },
    }).enroll(token);
    // Registered by hostname through the real CLI (`stations import`), beside the running receiver.
    const csv = path.join(main.dataDir, 'stations.csv');
    fs.writeFileSync(csv, 'station,label,BLD,FLR,ROOM\nreg-station-101,"Bldg D, Floor 1, Room 101",D,1,101\n');
    const r = main.cli(['stations', 'import', '--csv', csv]);
    assert.equal(r.status, 0, r.stderr);

    const answer = await agent.press();
    const c = card(page, 'Bldg D, Floor 1, Room 101');
    await c.waitFor({ timeout: 2000 });
    await c.locator('.claimed-differs', { hasText: 'Bldg D, Floor 2, Room 214' }).waitFor();
    assert.equal(await card(page, 'Bldg D, Floor 2, Room 214').count(), 0, 'shown at the registered room, not the claimed one');
    const incidents = JSON.parse(main.cli(['incidents', 'list', '--json']).stdout)
      .filter((i) => i.device_id === agent.deviceId);
    assert.equal(incidents.length, 1, 'one incident');
    assert.equal(incidents[0].incident_id, answer.incident_id);
    assert.equal(incidents[0].location_mismatch, true);
    assert.equal(incidents[0].registered_location.ROOM, '101');

    await c.locator('.location-label a').click();
    await page.locator('h1.location-label', { hasText: 'Bldg D, Floor 1, Room 101' }).waitFor();
    await page.locator('.claimed-differs', { hasText: 'Claimed location differs: Bldg D, Floor 2, Room 214' }).waitFor();
    await page.screenshot({ path: path.join(ARTIFACTS, 'claimed-location-differs.png') });
    await context.close();
  });

  test('notes, 911 time, resolve with disposition, reopen; then the audit chain verifies, and fails once a row is altered', async () => {
    const context = await newContext();
    const page = await signIn(context, main, 'olivia');
    const agent = await new Agent(main, { location: { label: 'Bldg D, Floor 1, Room 110 (Cashier)', BLD: 'D', FLR: '1', ROOM: '110', HNO: '700', RD: 'University Ave', A3: 'Saint Paul', A1: 'MN', PC: '55106', country: 'US' } }).enroll(token);
    const { incident_id: id } = await agent.press();
    await page.goto(`${main.url}/incidents/${id}`);
    await page.getByRole('button', { name: 'Claim: I am handling this' }).click();
    await page.locator('.claim-state', { hasText: 'Claimed by olivia' }).waitFor();
    await page.getByText('700 University Ave, Saint Paul, MN 55106, US').first().waitFor();

    await page.getByLabel('Note', { exact: true }).fill('Camera 2: visitor shouting at the cashier window. Patrol 12 en route.');
    await page.getByRole('button', { name: 'Add note' }).click();
    await page.locator('.tl-note', { hasText: 'Patrol 12 en route' }).waitFor();

    await page.getByLabel('Response level').selectOption('patrol + 911');
    await page.getByRole('button', { name: 'Set level' }).click();
    await page.locator('.tl-level', { hasText: 'patrol + 911' }).waitFor();

    await page.getByRole('button', { name: '911 called now' }).click();
    await page.locator('.called-911-time').waitFor();
    assert.match(await page.locator('.called-911').innerText(), /911 called/);

    await page.getByLabel('Disposition').selectOption('emergency');
    await page.getByLabel('Follow-up note').fill('Security to call the cashier tomorrow 9:00 to check on her.');
    await page.getByRole('button', { name: 'Resolve incident' }).click();
    await page.locator('.badge-resolved', { hasText: 'emergency' }).waitFor();
    await page.getByText('Security to call the cashier tomorrow').first().waitFor();

    await page.getByRole('button', { name: 'Reopen incident' }).click();
    await page.locator('.tl-reopen').waitFor();
    await page.getByRole('button', { name: 'Resolve incident' }).waitFor();

    const ok = main.auditVerify();
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /^audit chain ok: \d+ entries$/m);
    const n = Number(/(\d+) entries/.exec(ok.stdout)[1]);
    assert.ok(n >= 7, `${n} entries`);

    const altered = n - 2;
    // Altered and put back in place, whoever wrote the entry (a background escalation may have
    // slipped in between this test's own entries).
    const sql = main.tamper(`UPDATE audit_log SET actor = actor || '-tampered' WHERE id = ${altered};`);
    assert.equal(sql.status, 0, sql.stderr);
    const bad = main.auditVerify();
    assert.notEqual(bad.status, 0, 'tampering is detected');
    assert.match(bad.stderr, new RegExp(`entry ${altered}\\b`));
    // Put it back so later tests start from a sound chain.
    const restored = main.tamper(`UPDATE audit_log SET actor = substr(actor, 1, length(actor) - 9) WHERE id = ${altered};`);
    assert.equal(restored.status, 0, restored.stderr);
    assert.equal(main.auditVerify().status, 0, 'the chain verifies again once the row is put back');
    await context.close();
  });

  test('a live update while an officer is choosing a response level keeps the choice', async () => {
    const a = await newContext();
    const b = await newContext();
    const pageA = await signIn(a, main, 'olivia');
    const pageB = await signIn(b, main, 'oscar');
    const agent = await new Agent(main, { location: { label: 'Bldg M, Floor 2, Room 205 (Housing office)', BLD: 'M', FLR: '2', ROOM: '205' } }).enroll(token);
    const { incident_id: id } = await agent.press();
    await pageA.goto(`${main.url}/incidents/${id}`);
    await pageA.getByRole('button', { name: 'Claim: I am handling this' }).click();
    await pageA.locator('.claim-state', { hasText: 'Claimed by olivia' }).waitFor();

    // Olivia has picked a level but not yet pressed Set level when Oscar's note arrives live
    // and the response part of her page is re-rendered from the server.
    await pageA.getByLabel('Response level').selectOption('patrol + 911');
    await pageB.goto(`${main.url}/incidents/${id}`);
    await pageB.getByLabel('Note', { exact: true }).fill('Oscar: camera 4 shows the hallway is clear.');
    await pageB.getByRole('button', { name: 'Add note' }).click();
    await pageA.locator('.tl-note', { hasText: 'hallway is clear' }).waitFor({ timeout: 5000 });
    assert.equal(await pageA.getByLabel('Response level').inputValue(), 'patrol + 911', 'the choice survived the live update');

    await pageA.getByRole('button', { name: 'Set level' }).click();
    await pageA.locator('.tl-level', { hasText: 'patrol + 911' }).waitFor();
    await a.close();
    await b.close();
  });

  test('a hostile location label renders as text and raises no dialog', async () => {
    const context = await newContext();
    const page = await signIn(context, main, 'olivia');
    let dialogs = 0;
    page.on('dialog', async (d) => { dialogs += 1; await d.dismiss(); });
    const xss = '<img src=x onerror=alert(1)>';
    const agent = await new Agent(main, { location: { label: xss }, host: { hostname: '<script>alert(2)</script>', user: '"><svg onload=alert(3)>' } }).enroll(token);
    const { incident_id: id } = await agent.press();
    const c = card(page, xss);
    await c.waitFor({ timeout: 2000 });
    assert.equal(await c.locator('.location-label').innerText(), xss);
    assert.equal(await page.locator('img[src="x"], svg[onload], script:not([src])').count(), 0);
    await page.goto(`${main.url}/incidents/${id}`);
    assert.equal(await page.locator('h1.location-label').innerText(), xss);
    await page.getByLabel('Note', { exact: true }).fill('<img src=y onerror=alert(4)>');
    await page.getByRole('button', { name: 'Add note' }).click();
    await page.locator('.tl-note', { hasText: '<img src=y onerror=alert(4)>' }).waitFor();
    await page.waitForTimeout(500);
    assert.equal(dialogs, 0, 'no script ran');
    await context.close();
  });

  test('a POST without the CSRF token is refused; anonymous access to protected routes is refused', async () => {
    const context = await newContext();
    const page = await signIn(context, main, 'olivia');
    const agent = await new Agent(main, { location: { label: 'Bldg E, Floor 1, Lobby', BLD: 'E' } }).enroll(token);
    const { incident_id: id } = await agent.press();
    // Same browser, valid session cookie, but no token: refused, and nothing changed.
    const refused = await page.evaluate(async (path) => {
      const r = await fetch(path, { method: 'POST', body: new URLSearchParams({ takeover: '1' }) });
      return r.status;
    }, `/incidents/${id}/claim`);
    assert.equal(refused, 403);
    const wrong = await page.evaluate(async (path) => (await fetch(path, { method: 'POST', body: new URLSearchParams({ csrf: 'forged' }) })).status, `/incidents/${id}/claim`);
    assert.equal(wrong, 403);
    await page.goto(`${main.url}/incidents/${id}`);
    await page.getByText('Nobody has claimed this incident yet.').waitFor();

    const anon = await newContext();
    const pages = ['/', `/incidents/${id}`, `/incidents/${id}/print`, '/stations', '/reports', '/reports/incidents.csv', '/reports/chart.svg', '/audit', '/admin/users', '/admin/cameras'];
    for (const p of pages) {
      const r = await anon.request.get(main.url + p, { maxRedirects: 0 });
      assert.equal(r.status(), 303, p);
      assert.equal(r.headers().location, '/login', p);
    }
    for (const p of ['/events', '/api/board', '/api/alarm', `/api/incidents/${id}/live`]) {
      const r = await anon.request.get(main.url + p, { maxRedirects: 0 });
      assert.equal(r.status(), 401, p);
      assert.match(r.headers()['content-type'], /application\/problem\+json/);
    }
    for (const p of [`/incidents/${id}/claim`, `/incidents/${id}/notes`, `/incidents/${id}/resolve`, '/stations/tokens', '/admin/users', '/logout']) {
      const r = await anon.request.post(main.url + p, { maxRedirects: 0, form: { csrf: 'x' } });
      assert.equal(r.status(), 303, p);
    }
    const anonPage = await anon.newPage();
    await anonPage.goto(main.url + '/stations');
    assert.match(anonPage.url(), /\/login$/);
    await anon.close();
    await context.close();
  });

  test('the stream dropped and resumed: the incident created in between still appears', async () => {
    const context = await newContext();
    const page = await signIn(context, main, 'oscar');
    const agent = await new Agent(main, { location: { label: 'Bldg F, Floor 2, Room 220 (Library desk)', BLD: 'F' } }).enroll(token);
    await context.setOffline(true);
    await page.locator('html[data-stream="down"]').waitFor({ timeout: 5000 });
    await agent.press();
    await page.waitForTimeout(1500);
    assert.equal(await card(page, 'Bldg F, Floor 2').count(), 0, 'not delivered while the stream is down');
    await context.setOffline(false);
    await card(page, 'Bldg F, Floor 2').waitFor({ timeout: 5000 });
    await page.locator('html[data-stream="live"]').waitFor({ timeout: 5000 });
    await context.close();
  });

  test('escalation after a short configured timeout shows on the board', async () => {
    const esc = await Receiver.start(['--escalate-after', '3s']);
    try {
      esc.addUser('olivia', 'officer', PASSWORD);
      const context = await newContext();
      const page = await signIn(context, esc, 'olivia');
      const agent = await new Agent(esc, { location: { label: 'Bldg G, Floor 1, Room 104 (Clinic intake)', BLD: 'G' } }).enroll(esc.createToken());
      await agent.press();
      const c = card(page, 'Bldg G, Floor 1');
      await c.getByText('New · unclaimed').waitFor({ timeout: 2000 });
      await c.getByText('Escalated · unclaimed').waitFor({ timeout: 6000 });
      assert.match(await c.getAttribute('class'), /escalated/);
      await page.locator('html[data-alarm="escalated"]').waitFor({ timeout: 3000 });
      await context.close();
    } finally {
      await esc.stop();
    }
  });

  test('a cancel with the duress PIN is flagged live on the board card and the incident page, and silences nothing', async () => {
    const context = await newContext();
    const page = await signIn(context, main, 'olivia');
    const forced = await new Agent(main, { location: { label: 'Bldg K, Floor 1, Room 104 (Bursar)', BLD: 'K', FLR: '1', ROOM: '104' } }).enroll(token);
    const genuine = await new Agent(main, { location: { label: 'Bldg K, Floor 2, Room 210 (Writing center)', BLD: 'K', FLR: '2', ROOM: '210' } }).enroll(token);
    const { incident_id: forcedId } = await forced.press();
    await genuine.press();
    await card(page, 'Bursar').waitFor({ timeout: 2000 });
    await card(page, 'Writing center').waitFor({ timeout: 2000 });
    let reloaded = false;
    page.on('framenavigated', () => { reloaded = true; });

    // The signed claims say how the PIN was answered; the agent sends both cancels the same way.
    const answer = await forced.press('cancel', { cancel_pin: 'duress' });
    assert.equal(answer.incident_id, forcedId, 'the cancel joins the open incident');
    await genuine.press('cancel', { cancel_pin: 'ok' });
    const t0 = Date.now();
    await card(page, 'Bursar').locator('.badge-duress-pin', { hasText: 'Cancel with duress PIN' }).waitFor({ timeout: 2000 });
    const elapsed = Date.now() - t0;
    assert.equal(reloaded, false, 'no reload');
    await card(page, 'Writing center').getByText('Staff pressed cancel').waitFor({ timeout: 2000 });
    assert.equal(await card(page, 'Writing center').locator('.badge-duress-pin').count(), 0, 'a cancel with the right PIN is not flagged');
    assert.equal(await card(page, 'Bursar').getByText('Staff pressed cancel').count(), 0, 'never shown as a reassuring cancel');
    // Nothing was closed or silenced: both still unclaimed, the board still sounds.
    await card(page, 'Bursar').getByText('New · unclaimed').waitFor();
    await card(page, 'Writing center').getByText('New · unclaimed').waitFor();
    assert.equal(await page.locator('html').getAttribute('data-alarm'), 'alarm', 'still sounding');
    await page.screenshot({ path: path.join(ARTIFACTS, 'board-cancel-duress-pin.png') });

    await card(page, 'Bursar').getByRole('link', { name: 'Open incident' }).click();
    await page.locator('.incident-head .badge-duress-pin', { hasText: 'Cancel with duress PIN' }).waitFor();
    await page.locator('.tl-cancel-duress', { hasText: 'The duress PIN was typed' }).waitFor();
    await page.getByRole('button', { name: 'Claim: I am handling this' }).waitFor();
    await page.screenshot({ path: path.join(ARTIFACTS, 'incident-cancel-duress-pin.png'), fullPage: true });
    console.log(`duress-PIN flag on the board ${elapsed} ms after the cancel was acknowledged`);
    await context.close();
  });

  test('the stations page flags stations never self-tested or not self-tested within the period', async () => {
    const never = await new Agent(main, { host: { hostname: 'st-never-01' } }).enroll(token);
    const tested = await new Agent(main, { host: { hostname: 'st-tested-01' } }).enroll(token);
    const stale = await new Agent(main, { host: { hostname: 'st-stale-01' } }).enroll(token);
    for (const a of [never, tested, stale]) await a.heartbeat();
    await tested.press('test', { source: 'schedule' });
    await stale.press('test', { source: 'schedule' });
    // Its last test long ago, written directly (the receiver's clock cannot be moved).
    const t = main.tamper(`UPDATE devices SET last_self_test_at = '2020-01-06T10:00:00.000Z' WHERE device_id = '${stale.deviceId}'`);
    assert.equal(t.status, 0, String(t.stderr));

    const context = await newContext();
    const page = await signIn(context, main, 'olivia');
    await page.getByRole('link', { name: 'Stations' }).click();
    const row = (host) => page.locator('tr.station', { hasText: host });
    await row('st-never-01').getByText('Never self-tested').waitFor();
    await row('st-stale-01').getByText('Self-test overdue').waitFor();
    assert.equal(await row('st-tested-01').locator('.badge-selftest-due').count(), 0, 'tested this week: no flag');
    assert.equal(await row('st-tested-01').locator('td[data-self-test="ok"]').count(), 1);
    await page.screenshot({ path: path.join(ARTIFACTS, 'stations-self-test.png'), fullPage: true });

    // The header link lists exactly the flagged stations.
    await page.locator('a.selftest-flag').click();
    await page.waitForURL(/state=self-test/);
    await row('st-never-01').waitFor();
    await row('st-stale-01').waitFor();
    assert.equal(await row('st-tested-01').count(), 0);
    assert.equal(await page.locator('#f-state').inputValue(), 'self-test overdue');
    await context.close();
  });

  test('screenshots: the board with a live incident, the incident page and the stations page', async () => {
    const r = await Receiver.start();
    try {
      r.addUser('olivia', 'officer', PASSWORD);
      r.addUser('ada', 'admin', PASSWORD);
      const tok = r.createToken();
      const desk = await new Agent(r, { location: { label: 'Bldg A, Floor 2, Room 214 (Financial Aid front desk)', country: 'US', A1: 'MN', A3: 'Saint Paul', RD: 'University Ave', HNO: '700', PC: '55106', BLD: 'A', FLR: '2', ROOM: '214' } }).enroll(tok);
      const nurse = await new Agent(r, { location: { label: 'Bldg H, Floor 1, Health Services triage', country: 'US', A1: 'MN', A3: 'Saint Paul', RD: 'E 7th St', HNO: '350', PC: '55101', BLD: 'H', FLR: '1', ROOM: '112' }, host: { hostname: 'hs-triage-02', user: 'jlee', ips: ['10.40.1.22'] } }).enroll(tok);
      const lab = await new Agent(r, { location: { label: 'Bldg C, Floor 3, Room 318 (IT help desk)', BLD: 'C', FLR: '3', ROOM: '318', A3: 'Saint Paul', A1: 'MN', country: 'US' }, host: { hostname: 'it-help-03', user: 'pnguyen', os: 'Debian GNU/Linux 12' } }).enroll(tok);
      const silent = await new Agent(r, { location: { label: 'Bldg B, Floor 1, Admissions', BLD: 'B' }, host: { hostname: 'adm-front-01', user: 'kpatel' } }).enroll(tok);
      await desk.heartbeat();
      await nurse.heartbeat();
      await lab.heartbeat({ state: 'unavailable', reason: 'chord taken by another application' });

      const admin = await newContext();
      const adminPage = await signIn(admin, r, 'ada');
      // A camera mapping for building A, edited like an admin would.
      await adminPage.goto(r.url + '/admin/cameras');
      await adminPage.getByLabel('Match').selectOption('BLD');
      await adminPage.getByLabel('Value').fill('A');
      await adminPage.getByLabel('Name').fill('Bldg A, floor cameras');
      await adminPage.getByLabel('URL template').fill('https://vms.example.edu/live?building={BLD}&floor={FLR}&room={ROOM}');
      await adminPage.getByRole('button', { name: 'Add mapping' }).click();
      await adminPage.getByText('Bldg A, floor cameras').waitFor();

      const context = await newContext();
      const page = await signIn(context, r, 'olivia');
      // A self-test is shown apart, as a test, and never sounds.
      await lab.press('test');
      await page.locator('.selftest', { hasText: 'IT help desk' }).waitFor({ timeout: 2000 });
      await page.waitForTimeout(300);
      assert.equal(await page.locator('html').getAttribute('data-alarm'), 'quiet', 'a self-test never sounds');

      await nurse.press();
      await card(page, 'Health Services triage').waitFor({ timeout: 2000 });
      await card(page, 'Health Services triage').getByRole('button', { name: 'Claim' }).click();
      await card(page, 'Health Services triage').getByText('Claimed by olivia').waitFor();
      const { incident_id: id } = await desk.press();
      await desk.press();
      await card(page, 'Financial Aid front desk').getByText('2').first().waitFor({ timeout: 2000 });
      await page.locator('html[data-alarm="alarm"]').waitFor();
      await page.evaluate(() => window.scrollTo(0, 0));
      const shot = async (p, name, options = {}) => {
        const file = path.join(ARTIFACTS, name);
        await p.screenshot({ path: file, ...options });
        fs.mkdirSync(SCREENSHOTS, { recursive: true });
        fs.copyFileSync(file, path.join(SCREENSHOTS, name));
      };
      await shot(page, 'board.png');

      await page.goto(`${r.url}/incidents/${id}`);
      await page.getByRole('button', { name: 'Claim: I am handling this' }).click();
      await page.getByLabel('Note', { exact: true }).fill('Camera A2-east: one visitor at the desk, raised voice. Patrol 12 en route, ETA 2 min.');
      await page.getByRole('button', { name: 'Add note' }).click();
      await page.locator('.tl-note').waitFor();
      await page.getByLabel('Response level').selectOption('patrol');
      await page.getByRole('button', { name: 'Set level' }).click();
      await page.locator('.tl-level').waitFor();
      await page.getByRole('link', { name: 'Bldg A, floor cameras' }).waitFor();
      const href = await page.getByRole('link', { name: 'Bldg A, floor cameras' }).getAttribute('href');
      assert.equal(href, 'https://vms.example.edu/live?building=A&floor=2&room=214');
      await shot(page, 'incident.png', { fullPage: true });

      await adminPage.goto(r.url + '/stations');
      await adminPage.locator('tr.station', { hasText: 'adm-front-01' }).waitFor();
      await shot(adminPage, 'stations.png');
      assert.equal(await adminPage.locator('tr.station', { hasText: 'fa-desk-01' }).locator('.state-online').count(), 1);
      assert.equal(await adminPage.locator('tr.station', { hasText: 'adm-front-01' }).locator('.state-never-seen').count(), 1);
      await context.close();
      await admin.close();
      void silent;
    } finally {
      await r.stop();
    }
  });
  test('Location drift from a subnet map, shown on the Stations page', async () => {
    // Its own receiver: the subnet map it sets would flag the other tests' stations (every
    // test agent connects from 127.0.0.1).
    const r = await Receiver.start();
    try {
      r.addUser('olivia', 'officer', PASSWORD);
      r.addUser('ada', 'admin', PASSWORD);
      const t = r.cli(['token', 'create', '--uses', '1', '--expires', '1h', '--approve', 'manual']);
      assert.equal(t.status, 0, String(t.stderr));
      const manual = t.stdout.trim().split('\n').pop();
      // Claims Bldg A, Floor 2, Room 214 (the default location); waits for approval.
      const agent = await new Agent(r, { host: { hostname: 'st-drift-01' } }).enroll(manual);

      const admin = await newContext();
      const adminPage = await signIn(admin, r, 'ada');
      await adminPage.getByRole('link', { name: 'Stations' }).click();
      const row = (p) => p.locator('tr.station', { hasText: 'st-drift-01' });
      // The approval form starts from the claimed location; the approver corrects it.
      const approval = row(adminPage).locator('form.approve-form');
      assert.equal(await approval.locator('input[name="BLD"]').inputValue(), 'A');
      assert.equal(await approval.locator('input[name="ROOM"]').inputValue(), '214');
      await approval.locator('input[name="label"]').fill('Bldg A, Floor 1, Room 101');
      await approval.locator('input[name="FLR"]').fill('1');
      await approval.locator('input[name="ROOM"]').fill('101');
      await approval.getByRole('button', { name: 'Approve' }).click();
      await row(adminPage).locator('.station-registered', { hasText: 'Bldg A, Floor 1, Room 101' }).waitFor();
      await row(adminPage).locator('.status-active').waitFor();
      await row(adminPage).locator('.claimed-differs', { hasText: 'Room 214' }).waitFor();

      // The admin's edit form on the station's row.
      await row(adminPage).locator('details.edit-location summary').click();
      const edit = row(adminPage).locator('details.edit-location form');
      assert.equal(await edit.locator('input[name="ROOM"]').inputValue(), '101');
      await edit.locator('input[name="label"]').fill('Bldg A, Floor 1, Room 102');
      await edit.locator('input[name="ROOM"]').fill('102');
      await edit.getByRole('button', { name: 'Save location' }).click();
      await row(adminPage).locator('.station-registered', { hasText: 'Room 102' }).waitFor();

      // The subnet map: loopback (where this agent connects from) is building C.
      await adminPage.getByRole('link', { name: 'Subnets' }).click();
      await adminPage.getByLabel('Subnet (CIDR)').fill('127.0.0.0/8');
      await adminPage.getByLabel('BLD').fill('C');
      await adminPage.getByRole('button', { name: 'Add subnet' }).click();
      await adminPage.locator('tr.subnet[data-cidr="127.0.0.0/8"]').waitFor();
      await agent.heartbeat();

      // An officer sees the flag with its evidence, and the header link lists the station.
      const context = await newContext();
      const page = await signIn(context, r, 'olivia');
      await page.getByRole('link', { name: 'Stations' }).click();
      const flag = row(page).locator('.location-drift');
      await flag.waitFor();
      const text = await flag.textContent();
      assert.match(text, /address 127\.0\.0\.1 is in 127\.0\.0\.0\/8, mapped to Bldg C/);
      assert.match(text, /Room 102/, 'the expected place is the registered location');
      await page.screenshot({ path: path.join(ARTIFACTS, 'stations-location-drift.png'), fullPage: true });
      await page.locator('a.drift-flag').click();
      await page.waitForURL(/state=location\+drift/);
      await row(page).waitFor();

      // Removed from the map: the flag goes.
      await adminPage.locator('tr.subnet[data-cidr="127.0.0.0/8"]').getByRole('button', { name: 'Remove' }).click();
      await adminPage.getByText('No subnet mapped').waitFor();
      await page.goto(r.url + '/stations');
      await row(page).waitFor();
      assert.equal(await row(page).locator('.location-drift').count(), 0);
      const log = r.cli(['audit', 'verify']);
      assert.equal(log.status, 0, String(log.stderr));
      await context.close();
      await admin.close();
    } finally {
      await r.stop();
    }
  });
});
