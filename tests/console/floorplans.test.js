// Floor plans (issue 17, item 4) in a real Chromium against a real receiver: an admin uploads a
// plan on /admin/floorplans (a hostile SVG first, refused through the same page), places a
// room by clicking on the plan; an alarm from a station in that room then shows the marker at
// the clicked position on the board (arriving live) and on the incident page. Run by
// tests/console/run (also --backend postgres).
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
const ROOM_LABEL = 'Room 114 on floor plan of Main Hall floor 1';
// Where the admin clicks, as fractions of the plan's width and height: room 114's number
// (the seventh room of the top row, drawn at 1275, 240 of 1600 × 1000 px).
const CLICK = { x: 1275 / 1600, y: 240 / 1000 };

let browser;
let rx;
let token;

async function newContext() {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
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
  return page;
}

// A floor plan drawn by the browser itself (a canvas exported as PNG): a corridor and rooms
// 101–116 with their numbers, 1600 × 1000 px.
async function drawPlan(page) {
  const dataUrl = await page.evaluate(() => {
    const c = document.createElement('canvas');
    c.width = 1600;
    c.height = 1000;
    const g = c.getContext('2d');
    g.fillStyle = '#ffffff';
    g.fillRect(0, 0, c.width, c.height);
    g.strokeStyle = '#222222';
    g.lineWidth = 8;
    g.strokeRect(40, 40, 1520, 920);
    g.fillStyle = '#f2f2f2';
    g.fillRect(44, 440, 1512, 120);
    g.font = 'bold 44px sans-serif';
    g.textAlign = 'center';
    g.textBaseline = 'middle';
    for (let i = 0; i < 8; i += 1) {
      const x = 40 + i * 190;
      g.strokeRect(x, 40, 190, 400);
      g.strokeRect(x, 560, 190, 400);
      g.fillStyle = '#333333';
      g.fillText(String(102 + i * 2), x + 95, 240); // 102, 104, … 116 along the top
      g.fillText(String(101 + i * 2), x + 95, 760); // 101, 103, … 115 along the bottom
    }
    g.fillStyle = '#555555';
    g.font = '36px sans-serif';
    g.fillText('Corridor', 800, 500);
    g.fillText('Main Hall · Floor 1', 800, 990);
    return c.toDataURL('image/png');
  });
  return Buffer.from(dataUrl.split(',')[1], 'base64');
}

// The marker's centre as fractions of the plan image on screen.
async function markerFraction(figure) {
  const svg = await figure.locator('svg.floor-plan-image').boundingBox();
  const dot = await figure.locator('circle.floor-plan-marker').boundingBox();
  return {
    x: (dot.x + dot.width / 2 - svg.x) / svg.width,
    y: (dot.y + dot.height / 2 - svg.y) / svg.height,
  };
}

function near(actual, expected, what) {
  assert.ok(Math.abs(actual.x - expected.x) < 0.01 && Math.abs(actual.y - expected.y) < 0.01,
    `${what}: marker at ${JSON.stringify(actual)}, placed at ${JSON.stringify(expected)}`);
}

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  rx = await Receiver.start([]);
  rx.addUser('olivia', 'officer', PASSWORD);
  rx.addUser('ada', 'admin', PASSWORD);
  token = rx.createToken();
});

after(async () => {
  if (browser) await browser.close();
  if (rx) await rx.stop();
});

describe('floor plans', () => {
  test('a hostile upload is refused in the page; a plan uploaded and a room placed by clicking shows the marker on the board and the incident page', async () => {
    const adminContext = await newContext();
    const admin = await signIn(adminContext, 'ada');
    const plan = await drawPlan(admin);
    await admin.goto(rx.url + '/admin/floorplans');

    // Hostile first: an SVG carrying a script, named and typed as a PNG.
    await admin.getByLabel('Building (BLD)').fill('Main Hall');
    await admin.getByLabel('Floor (FLR)').fill('1');
    await admin.getByLabel('Image').setInputFiles({
      name: 'plan.png',
      mimeType: 'image/png',
      buffer: Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>'),
    });
    await admin.getByRole('button', { name: 'Upload floor plan' }).click();
    const alert = admin.locator('.floor-plan-upload-error');
    await alert.waitFor();
    assert.match(await alert.textContent(), /SVG and other markup files are not accepted/);
    assert.equal(await admin.locator('tr.floor-plan-row').count(), 0, 'nothing stored');

    // The real plan.
    await admin.getByLabel('Image').setInputFiles({ name: 'main-hall-1.png', mimeType: 'image/png', buffer: plan });
    await admin.getByRole('button', { name: 'Upload floor plan' }).click();
    await admin.waitForURL(/\/admin\/floorplans\?plan=\d+$/);
    await admin.getByRole('heading', { name: 'Floor plan: Main Hall floor 1' }).waitFor();

    // Click on room 114, name it, place it.
    const canvas = admin.locator('#fp-canvas');
    const box = await canvas.boundingBox();
    await canvas.click({ position: { x: box.width * CLICK.x, y: box.height * CLICK.y } });
    assert.equal(await admin.locator('#fp-pending').getAttribute('visibility'), 'visible');
    await admin.getByLabel('Room', { exact: true }).fill('114');
    await admin.getByRole('button', { name: 'Place room' }).click();
    const row = admin.locator('tr.placed-room[data-room="114"]');
    await row.waitFor();
    const across = Number(await row.locator('td').nth(1).textContent());
    const down = Number(await row.locator('td').nth(2).textContent());
    near({ x: across, y: down }, CLICK, 'stored placement');

    // An officer's board is open before the alarm: the marked card arrives live.
    const officerContext = await newContext();
    const board = await signIn(officerContext, 'olivia');
    await board.locator('html[data-stream="live"]').waitFor({ timeout: 5000 });
    const agent = await new Agent(rx, {
      location: { label: 'Main Hall, Floor 1, Room 114', BLD: 'Main Hall', FLR: '1', ROOM: '114' },
      host: { hostname: 'mh-114-desk' },
    }).enroll(token);
    const ack = await agent.press();
    const boardPlan = board.locator('li.incident figure.floor-plan', { has: board.locator(`svg[aria-label="${ROOM_LABEL}"]`) });
    await boardPlan.waitFor({ timeout: 8000 });
    near(await markerFraction(boardPlan), { x: across, y: down }, 'board');
    assert.equal(await boardPlan.locator('figcaption').textContent(), ROOM_LABEL);

    // The incident page.
    await board.goto(`${rx.url}/incidents/${ack.incident_id}`);
    const card = board.locator('section.floor-plan-card');
    await card.locator(`svg[aria-label="${ROOM_LABEL}"]`).waitFor();
    near(await markerFraction(card), { x: across, y: down }, 'incident page');
    const image = await board.evaluate(async () => {
      const href = document.querySelector('.floor-plan-card image').getAttribute('href');
      const r = await fetch(href);
      return { status: r.status, type: r.headers.get('content-type'), cache: r.headers.get('cache-control'), nosniff: r.headers.get('x-content-type-options') };
    });
    assert.deepEqual(image, { status: 200, type: 'image/png', cache: 'private, max-age=86400', nosniff: 'nosniff' });
    const dir = path.join(repo, 'docs', 'screenshots');
    fs.mkdirSync(dir, { recursive: true });
    await board.screenshot({ path: path.join(dir, 'floor-plan.png'), fullPage: true });

    // A station in a room with no position says so in words.
    const elsewhere = await new Agent(rx, {
      location: { label: 'Main Hall, Floor 1, Room 115', BLD: 'Main Hall', FLR: '1', ROOM: '115' },
    }).enroll(token);
    const other = await elsewhere.press();
    await board.goto(`${rx.url}/incidents/${other.incident_id}`);
    await board.locator('.floor-plan-card figcaption', { hasText: 'No floor plan position for this room (Room 115).' }).waitFor();

    const audit = rx.cli(['audit', 'verify']);
    assert.equal(audit.status, 0, audit.stderr);
    await officerContext.close();
    await adminContext.close();
  });
});
