// Phones on patrol (issue 17, item 3): at phone width (360×740, touch) no console page scrolls
// sideways and its controls are big enough to hit; an incident shows its location and Claim
// first; the console is installable (manifest, icons, under the console's CSP); and browser
// notifications: one per new incident from the live stream, none for a repeat press, a
// self-test, a cancel, an update or a reconnect's replay. Real Chromium, real receiver, real
// signed presses. Run by tests/console/run.
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
const PHONE = { width: 360, height: 740 };
const ARTIFACTS = path.join(repo, 'artifacts', 'console');
const SCREENSHOTS = path.join(repo, 'docs', 'screenshots');
// WCAG 2.5.5 (target size, enhanced) and the platforms' own guidance.
const TOUCH_PX = 44;

// Real content, long on purpose: labels that wrap over several lines, one unbroken word longer
// than the screen is wide, long host names.
const LOCATIONS = [
  { label: 'Bldg A, Floor 2, Room 214 (Financial Aid front desk)', country: 'US', A1: 'MN', A3: 'Saint Paul', RD: 'University Ave', HNO: '700', PC: '55106', BLD: 'A', FLR: '2', ROOM: '214' },
  { label: 'Bldg Q (Quadrangle Hall), Floor 14, Room 1402-B (Interdisciplinary Humanities Graduate Advising Suite, reception)', country: 'US', A1: 'MN', A3: 'Saint Paul', RD: 'Summit Avenue North Frontage Road', HNO: '2115', PC: '55105', BLD: 'Q', FLR: '14', ROOM: '1402-B' },
  { label: 'Bldg-R-Floor-3-Room-318-StudentAccountsAndBursarServicesAnnexWestWing', BLD: 'R', FLR: '3', ROOM: '318' },
  { label: 'Bldg H, Floor 1, Health Services triage', country: 'US', A1: 'MN', A3: 'Saint Paul', RD: 'E 7th St', HNO: '350', PC: '55101', BLD: 'H', FLR: '1', ROOM: '112' },
];
const HOSTS = [
  { hostname: 'fa-desk-01', user: 'mgarcia' },
  { hostname: 'quadrangle-hall-humanities-advising-reception-workstation-01.campus.example.edu', user: 'a.very.long.username.from.the.directory' },
  { hostname: 'bursar-annex-02', user: 'tnguyen', os: 'Windows 11 Enterprise 24H2 (build 26100.2314, domain-joined, BitLocker on)' },
  { hostname: 'hs-triage-02', user: 'jlee' },
];

let browser;
let rx;
let token;
const agents = [];
const incidents = [];

function launchArgs() {
  return ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'];
}

/** A phone-sized, touch browser context (its own cookies, like an officer's phone). */
async function phoneContext(options = {}) {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true, viewport: PHONE, isMobile: true, hasTouch: true, deviceScaleFactor: 1, ...options,
  });
  context.setDefaultTimeout(10_000);
  return context;
}

async function signIn(context, username) {
  const page = await context.newPage();
  await page.goto(rx.url + '/login');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(rx.url + '/');
  await page.locator('html[data-stream="live"]').waitFor({ timeout: 5000 });
  return page;
}

/**
 * How wide the page is against the screen: `scrollWidth` of the document against the window's
 * and the layout viewport's width (with a touch screen's overlay scrollbars they are equal),
 * and against the phone's width itself: a phone browser zooms out to show a page wider than
 * the screen, and `innerWidth` then grows with it.
 */
function measureWidth(page) {
  return page.evaluate((screenWidth) => ({
    scrollWidth: document.documentElement.scrollWidth,
    clientWidth: document.documentElement.clientWidth,
    innerWidth: window.innerWidth,
    // The widest element's right edge, to say what overflows when something does.
    culprit: (() => {
      let worst = null;
      for (const el of document.querySelectorAll('body *')) {
        const r = el.getBoundingClientRect();
        if (r.width > 0 && r.right > screenWidth + 0.5 && (!worst || r.right > worst.right)) {
          worst = { right: Math.round(r.right), tag: el.tagName.toLowerCase(), cls: el.className && String(el.className), text: (el.textContent || '').trim().slice(0, 60) };
        }
      }
      return worst;
    })(),
  }), PHONE.width);
}

async function assertNoSidewaysScroll(page, what) {
  const m = await measureWidth(page);
  assert.ok(m.scrollWidth <= m.innerWidth && m.scrollWidth <= m.clientWidth && m.innerWidth === PHONE.width,
    `${what}: scrollWidth ${m.scrollWidth}, window ${m.innerWidth}, layout ${m.clientWidth}, screen ${PHONE.width}; widest: ${JSON.stringify(m.culprit)}`);
  return m;
}

/** Every visible control smaller than a fingertip: buttons, links styled as buttons, fields, nav. */
function smallTargets(page) {
  return page.evaluate((min) => {
    const sel = 'button, a.btn, select, summary, input:not([type="hidden"]):not([type="checkbox"]):not([type="radio"]), .topbar nav a';
    return [...document.querySelectorAll(sel)]
      .filter((el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden')
      .map((el) => ({ el, r: el.getBoundingClientRect() }))
      .filter(({ r }) => r.width > 0 && (r.height < min - 0.5 || r.width < min - 0.5))
      .map(({ el, r }) => `${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''} "${(el.textContent || el.name || '').trim().slice(0, 30)}" ${Math.round(r.width)}×${Math.round(r.height)}`);
  }, TOUCH_PX);
}

async function shot(page, name) {
  const file = path.join(ARTIFACTS, name);
  await page.screenshot({ path: file });
  fs.mkdirSync(SCREENSHOTS, { recursive: true });
  fs.copyFileSync(file, path.join(SCREENSHOTS, name));
}

function card(page, label) {
  return page.locator('li.incident', { has: page.locator('.location-label', { hasText: label }) });
}

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: launchArgs() });
  rx = await Receiver.start();
  rx.addUser('olivia', 'officer', PASSWORD);
  rx.addUser('oscar', 'officer', PASSWORD);
  rx.addUser('ada', 'admin', PASSWORD);
  token = rx.createToken();
  for (let i = 0; i < LOCATIONS.length; i++) {
    const a = await new Agent(rx, { location: LOCATIONS[i], host: HOSTS[i] }).enroll(token);
    agents.push(a);
  }
  // A few more stations, one with its chord taken, one never heard from.
  for (const [n, hotkey] of [[1, undefined], [2, { state: 'unavailable', reason: 'chord taken by another application' }]]) {
    const a = await new Agent(rx, { host: { hostname: `lib-circ-0${n}`, user: 'kpatel' } }).enroll(token);
    await a.heartbeat(hotkey);
  }
  await new Agent(rx, { host: { hostname: 'adm-front-01', user: 'kpatel' } }).enroll(token);
  for (const a of agents) await a.heartbeat();
  await agents[3].press('test');
  for (const a of agents) incidents.push((await a.press()).incident_id);
});

after(async () => {
  if (browser) await browser.close();
  if (rx) await rx.stop();
});

describe('phones on patrol', () => {
  test('the width check itself catches a page wider than the screen', async () => {
    const context = await phoneContext();
    const page = await signIn(context, 'olivia');
    await page.evaluate(() => {
      const wide = document.createElement('div');
      wide.style.width = '500px';
      wide.style.height = '10px';
      document.querySelector('main').append(wide);
    });
    const m = await measureWidth(page);
    assert.ok(m.scrollWidth > PHONE.width, `a 500 px element makes the page ${m.scrollWidth} px wide`);
    await assert.rejects(assertNoSidewaysScroll(page, 'board with a 500 px element'), /scrollWidth 5\d\d/);
    await context.close();
  });

  test('at 360×740 no console page scrolls sideways, and every control is at least 44 px', async () => {
    const officer = await phoneContext();
    const page = await signIn(officer, 'olivia');
    await card(page, 'Interdisciplinary Humanities').waitFor();
    // The board with four open incidents: sound is off (its banner shows), as after a sign-in.
    const seen = [];
    const check = async (p, what) => {
      await p.waitForLoadState('load');
      const m = await assertNoSidewaysScroll(p, what);
      const small = await smallTargets(p);
      assert.deepEqual(small, [], `${what}: controls under ${TOUCH_PX} px`);
      seen.push(`${what} ${m.scrollWidth}/${m.innerWidth}`);
    };
    await check(page, 'board');
    await shot(page, 'mobile-board.png');
    for (const id of incidents) {
      await page.goto(`${rx.url}/incidents/${id}`);
      await check(page, `incident ${id}`);
    }
    for (const p of ['/stations', '/reports', `/incidents/${incidents[1]}/print`]) {
      await page.goto(rx.url + p);
      await check(page, p);
    }
    await page.goto(rx.url + '/stations');
    await page.locator('tr.station', { hasText: 'lib-circ-02' }).waitFor();
    await shot(page, 'mobile-stations.png');
    await page.goto(rx.url + '/incidents/00000000-0000-7000-8000-000000000000');
    await check(page, 'not found');

    // An admin's pages: wider tables and more forms (every admin link in the header).
    const admin = await phoneContext();
    const adminPage = await signIn(admin, 'ada');
    for (const p of ['/', '/stations', '/reports', '/audit', '/admin/users', '/admin/cameras', '/admin/subnets',
      '/admin/apikeys', '/admin/phones', '/admin/channels', '/admin/cluster', '/admin/displays']) {
      await adminPage.goto(rx.url + p);
      await check(adminPage, `admin ${p}`);
    }
    // The station's admin forms opened (edit location, resolve open incidents).
    await adminPage.goto(rx.url + '/stations');
    for (const s of await adminPage.locator('tr.station details summary').all()) await s.click();
    await check(adminPage, 'admin /stations, forms open');

    // The header's navigation scrolls inside its own box, not the page.
    const nav = await adminPage.evaluate(() => {
      const n = document.querySelector('.topbar nav');
      return { scroll: n.scrollWidth, client: n.clientWidth, overflow: getComputedStyle(n).overflowX };
    });
    assert.ok(nav.scroll > nav.client, 'an admin has more links than fit');
    assert.equal(nav.overflow, 'auto');

    // Signed out: the sign-in page and a duty display's pairing page.
    const anon = await phoneContext();
    const anonPage = await anon.newPage();
    await anonPage.goto(rx.url + '/login');
    await check(anonPage, 'sign-in');
    await anonPage.goto(rx.url + '/display');
    await check(anonPage, 'display pairing');
    await anonPage.getByRole('button', { name: 'Show a pairing code' }).click();
    await anonPage.locator('#pair-code').waitFor();
    await check(anonPage, 'display pairing code');
    console.log(`widths (scrollWidth/innerWidth): ${seen.join('; ')}`);
    await anon.close();
    await admin.close();
    await officer.close();
  });

  test('on an incident at 360×740 the location and the Claim button are on the first screen', async () => {
    const context = await phoneContext();
    const page = await signIn(context, 'oscar');
    for (const [i, id] of incidents.entries()) {
      await page.goto(`${rx.url}/incidents/${id}`);
      // Worst case: sound off (its banner) and other unclaimed alarms (the alarm banner).
      await page.locator('#alarm-banner:not([hidden])').waitFor();
      assert.equal(await page.evaluate(() => window.scrollY), 0);
      const claim = page.getByRole('button', { name: 'Claim: I am handling this' });
      const where = await claim.boundingBox();
      assert.ok(where && where.y >= 0 && where.y + where.height <= PHONE.height,
        `incident ${i}: Claim at ${JSON.stringify(where)}, screen ${PHONE.height} px tall`);
      const label = await page.locator('h1.location-label').boundingBox();
      assert.ok(label.y >= 0 && label.y + label.height <= where.y, `incident ${i}: the location is above Claim`);
      assert.equal((await page.locator('h1.location-label').innerText()).trim(), LOCATIONS[i].label);
      // Nothing but the header, the banners, the badges and the location comes before Claim.
      const before = await page.evaluate(() => {
        const claimCard = document.querySelector('.claim-card').getBoundingClientRect().top;
        return [...document.querySelectorAll('.live-root > *, .incident-head > *')]
          .filter((el) => el.getBoundingClientRect().top < claimCard && el.getBoundingClientRect().height > 0)
          .map((el) => el.className || el.tagName.toLowerCase());
      });
      assert.deepEqual(before.filter((c) => c !== 'incident-head'), ['incident-state', 'location-label big'], `incident ${i}`);
      if (i === 1) await shot(page, 'mobile-incident.png');
    }
    await context.close();
  });

  test('installable: the manifest is served under the console CSP, parses, and its icons load as images', async () => {
    const context = await phoneContext();
    const page = await context.newPage();
    await page.goto(rx.url + '/login');
    const manifestHref = await page.locator('link[rel="manifest"]').getAttribute('href');
    assert.equal(manifestHref, '/manifest.webmanifest');
    assert.equal(await page.locator('meta[name="theme-color"]').getAttribute('content'), '#14202e');
    const appleIcon = await page.locator('link[rel="apple-touch-icon"]').getAttribute('href');

    const r = await context.request.get(rx.url + manifestHref);
    assert.equal(r.status(), 200);
    const h = r.headers();
    assert.match(h['content-type'], /^application\/manifest\+json/);
    // The console's security headers; the CSP lets the page load its own manifest
    // (`manifest-src` falls back to `default-src 'self'`).
    assert.match(h['content-security-policy'], /default-src 'self'/);
    assert.ok(!/manifest-src/.test(h['content-security-policy']) || /manifest-src 'self'/.test(h['content-security-policy']));
    assert.equal(h['x-content-type-options'], 'nosniff');
    assert.equal(h['x-frame-options'], 'DENY');
    const m = JSON.parse(await r.text());
    assert.equal(m.name, 'Duress console');
    assert.ok(m.short_name && m.short_name.length <= 12, m.short_name);
    assert.equal(m.start_url, '/');
    assert.equal(m.scope, '/');
    assert.equal(m.display, 'standalone');
    assert.match(m.theme_color, /^#[0-9a-f]{6}$/i);
    assert.match(m.background_color, /^#[0-9a-f]{6}$/i);

    const icons = [...m.icons, { src: appleIcon, sizes: '180x180', type: 'image/png', purpose: 'any' }];
    for (const icon of icons) {
      const ir = await context.request.get(rx.url + icon.src);
      assert.equal(ir.status(), 200, icon.src);
      const type = ir.headers()['content-type'];
      assert.match(type, /^image\//, icon.src);
      assert.equal(type, icon.type, icon.src);
      const bytes = await ir.body();
      if (icon.type === 'image/png') {
        assert.equal(bytes.subarray(0, 8).toString('hex'), '89504e470d0a1a0a', `${icon.src} is a PNG`);
        assert.equal(`${bytes.readUInt32BE(16)}x${bytes.readUInt32BE(20)}`, icon.sizes, icon.src);
      } else {
        assert.match(bytes.toString('utf8'), /^<svg /, icon.src);
      }
      // And it decodes in the browser.
      const decoded = await page.evaluate(async (src) => {
        const img = new Image();
        img.src = src;
        await img.decode();
        return [img.naturalWidth, img.naturalHeight];
      }, icon.src);
      assert.ok(decoded[0] > 0 && decoded[1] > 0, icon.src);
    }
    const purposes = m.icons.map((i) => `${i.sizes} ${i.purpose}`);
    for (const wanted of ['192x192 any', '512x512 any', '512x512 maskable', 'any any']) {
      assert.ok(purposes.includes(wanted), `${wanted} in ${purposes}`);
    }

    // The browser itself loads it from a signed-in page, with no error (the CSP allowed it).
    const officer = await phoneContext();
    const board = await signIn(officer, 'olivia');
    const cdp = await officer.newCDPSession(board);
    const loaded = await cdp.send('Page.getAppManifest');
    assert.equal(loaded.url, rx.url + '/manifest.webmanifest');
    assert.deepEqual(loaded.errors, []);
    assert.equal(JSON.parse(loaded.data).name, 'Duress console');
    await officer.close();
    await context.close();
  });

  test('notifications: the permission is asked for only from a click, and its state is shown', async () => {
    const context = await phoneContext();
    await context.addInitScript(() => {
      window.__permissionRequests = 0;
      const ask = Notification.requestPermission.bind(Notification);
      Notification.requestPermission = (...a) => { window.__permissionRequests += 1; return ask(...a); };
    });
    const page = await signIn(context, 'olivia');
    const gate = page.locator('#notify-gate');
    await gate.waitFor();
    assert.equal(await gate.innerText(), 'Enable notifications');
    assert.equal(await page.locator('html').getAttribute('data-notify'), 'off');
    await page.waitForTimeout(300);
    assert.equal(await page.evaluate(() => window.__permissionRequests), 0, 'never asked without a click');
    await gate.click();
    await page.waitForFunction(() => window.__permissionRequests === 1);
    // Headless Chromium answers an ungranted prompt itself; whatever it answered is shown.
    const permission = await page.evaluate(() => Notification.permission);
    const expected = { granted: 'Notifications on', denied: 'Notifications blocked by the browser', default: 'Enable notifications' }[permission];
    await page.locator('#notify-gate', { hasText: expected }).waitFor();

    // Granted in the browser's settings: "on".
    await context.grantPermissions(['notifications'], { origin: rx.url });
    await page.reload();
    await page.locator('#notify-gate', { hasText: 'Notifications on' }).waitFor();
    assert.equal(await page.locator('html').getAttribute('data-notify'), 'on');
    await context.close();
  });

  test('notifications: one per new incident from the live stream (tag, body, requireInteraction), none for repeats, tests, cancels, updates or a replay; a click opens the incident', async () => {
    const context = await phoneContext();
    await context.grantPermissions(['notifications'], { origin: rx.url });
    // Records every Notification the page constructs, and still shows the real one.
    await context.addInitScript(() => {
      const Real = window.Notification;
      window.__notifications = [];
      class Recorded extends Real {
        constructor(title, options) {
          super(title, options);
          window.__notifications.push({ title, body: options.body, tag: options.tag, requireInteraction: options.requireInteraction, icon: options.icon, object: this });
        }
      }
      Object.defineProperty(Recorded, 'permission', { get: () => Real.permission });
      Recorded.requestPermission = Real.requestPermission.bind(Real);
      window.Notification = Recorded;
    });
    const page = await signIn(context, 'olivia');
    await page.locator('html[data-notify="on"]').waitFor();
    const shown = () => page.evaluate(() => window.__notifications.map(({ object, ...n }) => n));
    // Open incidents from before this page: nothing.
    await page.waitForTimeout(500);
    assert.deepEqual(await shown(), [], 'incidents open before the page are not notified');

    const a = await new Agent(rx, { location: { label: 'Bldg S, Floor 2, Room 207 (Scholarships office)', BLD: 'S', FLR: '2', ROOM: '207' } }).enroll(token);
    const { incident_id: idA } = await a.press();
    await page.waitForFunction(() => window.__notifications.length === 1, null, { timeout: 3000 });
    assert.deepEqual(await shown(), [{ title: 'Duress alarm', body: 'Bldg S, Floor 2, Room 207 (Scholarships office)', tag: idA, requireInteraction: true, icon: '/static/icon-192.png' }]);

    // The same incident pressed again, claimed elsewhere, noted; a self-test; a cancel: nothing.
    assert.equal((await a.press()).incident_id, idA);
    const other = await phoneContext();
    const otherPage = await signIn(other, 'oscar');
    await otherPage.goto(`${rx.url}/incidents/${idA}`);
    await otherPage.getByRole('button', { name: 'Claim: I am handling this' }).click();
    await otherPage.locator('.claim-state', { hasText: 'Claimed by oscar' }).waitFor();
    await a.press('test');
    await a.press('cancel', { cancel_pin: 'ok' });
    await card(page, 'Scholarships office').getByText('Staff pressed cancel').waitFor({ timeout: 3000 });

    // A registered station: the notification names the registered room, as the board does.
    const b = await new Agent(rx, { location: { label: 'Bldg T, Floor 1, Room 999', BLD: 'T', FLR: '1', ROOM: '999' }, host: { hostname: 'tutoring-desk-05' } }).enroll(token);
    const csv = path.join(rx.dataDir, 'stations-mobile.csv');
    fs.writeFileSync(csv, 'station,label,BLD,FLR,ROOM\ntutoring-desk-05,"Bldg T, Floor 1, Room 105 (Tutoring center)",T,1,105\n');
    const imported = rx.cli(['stations', 'import', '--csv', csv]);
    assert.equal(imported.status, 0, imported.stderr);
    const { incident_id: idB } = await b.press();
    await page.waitForFunction(() => window.__notifications.length === 2, null, { timeout: 3000 });
    await page.waitForTimeout(1000);
    const after = await shown();
    assert.equal(after.length, 2, JSON.stringify(after));
    assert.deepEqual(after[1], { title: 'Duress alarm', body: 'Bldg T, Floor 1, Room 105 (Tutoring center)', tag: idB, requireInteraction: true, icon: '/static/icon-192.png' });

    // A press while this phone is offline is replayed when it reconnects: it shows on the
    // board, and sounds, but pops up no stale notification.
    await context.setOffline(true);
    await page.locator('html[data-stream="down"]').waitFor({ timeout: 5000 });
    const c = await new Agent(rx, { location: { label: 'Bldg U, Floor 3, Room 330 (Career services)', BLD: 'U' } }).enroll(token);
    await c.press();
    await context.setOffline(false);
    await card(page, 'Career services').waitFor({ timeout: 8000 });
    await page.locator('html[data-stream="live"]').waitFor({ timeout: 5000 });
    // Then, live again, a new incident is notified as before.
    const d = await new Agent(rx, { location: { label: 'Bldg V, Floor 1, Room 110 (Veterans center)', BLD: 'V' } }).enroll(token);
    const { incident_id: idD } = await d.press();
    await page.waitForFunction(() => window.__notifications.length === 3, null, { timeout: 3000 });
    const final = await shown();
    assert.deepEqual(final.map((n) => n.tag), [idA, idB, idD], 'none for the replayed incident');
    assert.equal(final[2].body, 'Bldg V, Floor 1, Room 110 (Veterans center)');

    // A click on the notification (as the system dispatches it) opens that incident in the tab.
    await Promise.all([
      page.waitForURL(`${rx.url}/incidents/${idB}`),
      page.evaluate(() => window.__notifications[1].object.dispatchEvent(new Event('click'))),
    ]);
    await page.locator('h1.location-label', { hasText: 'Tutoring center' }).waitFor();
    await other.close();
    await context.close();
  });
});
