// Response work (issue 17): bulk resolve through the page, same-room grouping with the policy
// on, and the reports page's response-time charts. Real Chromium, real receiver started with
// `[incidents] group_same_room = true` in its configuration file. Run by tests/console/run.
'use strict';
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { chromium } = require('playwright-core');
const { Receiver } = require('./lib/receiver');
const { Agent } = require('./lib/agent');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PASSWORD = 'a long test password 4 officers';
const CONFIG = `[incidents]
group_same_room = true
`;

let browser;
let rx;
let token;

function place(label, room) {
  return { label, country: 'US', A3: 'Saint Paul', BLD: 'R', FLR: '1', ROOM: room };
}

async function signIn(context, username) {
  const page = await context.newPage();
  await page.goto(rx.url + '/login');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(rx.url + '/');
  return page;
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
  token = rx.createToken();
});

after(async () => {
  if (browser) await browser.close();
  if (rx) await rx.stop();
});

describe('response work', () => {
  test('two stations of one room pressing at once: one incident listing both', async () => {
    const a = await new Agent(rx, { location: place('Room 101 (Group test)', '101') }).enroll(token);
    const b = await new Agent(rx, { location: place('Room 101 (Group test)', '101') }).enroll(token);
    const [ra, rb] = await Promise.all([a.press(), b.press()]);
    assert.equal(ra.incident_id, rb.incident_id, 'one incident for one room');
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    context.setDefaultTimeout(10_000);
    const page = await signIn(context, 'olivia');
    await page.locator('li.incident', { hasText: 'Group test' }).locator('.stations-pressed', { hasText: 'from 2 stations' }).waitFor();
    await page.goto(`${rx.url}/incidents/${ra.incident_id}`);
    const listed = page.locator('.stations-pressed');
    await listed.waitFor();
    const text = await listed.textContent();
    assert.match(text, /Pressed at 2 stations in this room/);
    assert.ok(text.includes(a.deviceId) && text.includes(b.deviceId), text);
    await context.close();
  });

  test('bulk resolve through the page, then the reports page shows both distributions', async () => {
    const c = await new Agent(rx, { location: place('Room 201 (Bulk test one)', '201') }).enroll(token);
    const d = await new Agent(rx, { location: place('Room 202 (Bulk test two)', '202') }).enroll(token);
    const keep = await new Agent(rx, { location: place('Room 203 (Kept open)', '203') }).enroll(token);
    const ids = [(await c.press()).incident_id, (await d.press()).incident_id];
    const kept = (await keep.press()).incident_id;
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    context.setDefaultTimeout(10_000);
    const page = await signIn(context, 'olivia');
    // One claimed first, so the time-to-claim chart has a value.
    await page.locator('li.incident', { hasText: 'Bulk test one' }).getByRole('button', { name: 'Claim' }).click();
    await page.waitForURL(rx.url + '/');
    page.on('dialog', (dialog) => dialog.accept());
    await page.getByRole('link', { name: 'Resolve several…' }).click();
    await page.waitForURL(rx.url + '/incidents/resolve-several');
    for (const id of ids) await page.locator(`#pick-${id}`).check();
    assert.equal(await page.locator(`#pick-${kept}`).isChecked(), false);
    await page.getByLabel('Disposition').selectOption('test');
    await page.getByLabel('Follow-up note (for every incident)').fill('drill, all fine');
    await page.getByRole('button', { name: 'Resolve ticked incidents' }).click();
    await page.locator('.bulk-result').waitFor();
    assert.equal(await page.locator('.bulk-resolved-count').textContent(), '2');
    assert.equal(await page.locator('.bulk-skipped-count').textContent(), '0');
    assert.equal(await page.locator('tr.bulk-resolved').count(), 2);

    await page.goto(rx.url + '/');
    await page.locator('li.incident', { hasText: 'Kept open' }).waitFor();
    assert.equal(await page.locator('li.incident', { hasText: 'Bulk test' }).count(), 0, 'resolved ones left the board');

    await page.goto(rx.url + '/reports');
    for (const key of ['claim', 'resolve']) {
      const figure = page.locator(`#distribution-${key}`);
      await figure.locator('svg.histogram').waitFor();
      assert.equal(await figure.locator('svg.histogram rect.bar').count(), 10);
      assert.equal(await figure.locator('table.distribution-table tbody tr').count(), 10);
      const caption = await figure.locator('figcaption').textContent();
      assert.match(caption, /p50 .+, p90 .+, max .+\./);
    }
    const resolveCaption = await page.locator('#distribution-resolve figcaption').textContent();
    assert.match(resolveCaption, /Time to resolve, 2 incident\(s\)/);
    const claimCaption = await page.locator('#distribution-claim figcaption').textContent();
    assert.match(claimCaption, /Time to claim, 1 incident\(s\)/);
    const bars = await page.locator('#distribution-resolve rect.bar').evaluateAll((r) => r.map((e) => Number(e.dataset.count)));
    assert.equal(bars.reduce((x, y) => x + y, 0), 2);
    await context.close();
  });
});
