// Local accounts in a real browser (issue 17): TOTP enrolment and sign-in with the code, the
// user's password change, and an admin's reset. Codes are computed by otplib (an independent
// RFC 6238 implementation) from the secret the enrolment page shows.
// Run by tests/console/run, against the real `duress-receiver serve` binary.
'use strict';
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { chromium } = require('playwright-core');
const { authenticator } = require('otplib');
const { Receiver } = require('./lib/receiver');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PASSWORD = 'a long test password 4 officers';
const NEW_PASSWORD = 'another long password, changed';

let browser;
let receiver;

async function newContext() {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(10_000);
  return context;
}

/** The password step only; resolves the page wherever it went. */
async function enterPassword(context, username, password = PASSWORD) {
  const page = await context.newPage();
  // The admin pages' buttons ask "are you sure?" with window.confirm.
  page.on('dialog', (d) => d.accept());
  await page.goto(receiver.url + '/login');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForLoadState();
  return page;
}

async function signIn(context, username, password = PASSWORD) {
  const page = await enterPassword(context, username, password);
  await page.waitForURL(receiver.url + '/');
  return page;
}

/** The code of the authenticator for `secret` at `offset` seconds from now. */
function codeAt(secret, offset) {
  authenticator.options = { epoch: Date.now() + offset * 1000 };
  const code = authenticator.generate(secret);
  authenticator.resetOptions();
  return code;
}

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  receiver = await Receiver.start();
  receiver.addUser('tess', 'officer', PASSWORD);
  receiver.addUser('pam', 'officer', PASSWORD);
  receiver.addUser('rita', 'officer', PASSWORD);
  receiver.addUser('ada', 'admin', PASSWORD);
});

after(async () => {
  if (browser) await browser.close();
  if (receiver) await receiver.stop();
});

describe('local accounts', () => {
  test('TOTP: enrol with the QR code page, then sign-in asks for the code; an admin removes it', async () => {
    const context = await newContext();
    const page = await signIn(context, 'tess');
    await page.getByRole('link', { name: 'Account' }).click();
    await page.getByRole('link', { name: /Two-step sign-in/ }).click();
    await page.getByRole('heading', { name: 'Two-step sign-in is off' }).waitFor();
    await page.getByRole('button', { name: 'Set up two-step sign-in' }).click();
    await page.locator('.totp-qr svg').waitFor();
    const secret = (await page.locator('#totp-secret').textContent()).trim();
    const uri = (await page.locator('#totp-uri').textContent()).trim();
    assert.match(secret, /^[A-Z2-7]{32}$/, '160 bits in base32');
    assert.ok(uri.startsWith('otpauth://totp/') && uri.includes(`secret=${secret}`), uri);
    const box = await page.locator('.totp-qr svg').boundingBox();
    assert.ok(box.width >= 150 && box.height >= 150, `a scannable QR code (${box.width}×${box.height})`);

    await page.getByLabel('Code from the app').fill('000000');
    await page.getByRole('button', { name: 'Switch on' }).click();
    await page.getByText('Wrong code').waitFor();
    await page.getByLabel('Code from the app').fill(codeAt(secret, 0));
    await page.getByRole('button', { name: 'Switch on' }).click();
    await page.getByRole('heading', { name: 'Two-step sign-in is on' }).waitFor();
    assert.equal(await page.getByText(secret).count(), 0, 'the secret is not shown any more');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL(/\/login$/);
    await context.close();

    // Sign-in now needs the code after the password; nothing is reachable before it.
    const again = await newContext();
    const step = await enterPassword(again, 'tess');
    await step.waitForURL(/\/login\/code$/);
    await step.goto(receiver.url + '/');
    assert.match(step.url(), /\/login$/, 'no page before the code');
    await step.goto(receiver.url + '/login/code');
    await step.getByLabel('Code from your authenticator app').fill('000000');
    await step.getByRole('button', { name: 'Continue' }).click();
    await step.getByText('Wrong code').waitFor();
    // The code that switched it on is used up: the next step's code (±1 step tolerance).
    await step.getByLabel('Code from your authenticator app').fill(codeAt(secret, 30));
    await step.getByRole('button', { name: 'Continue' }).click();
    await step.waitForURL(receiver.url + '/');
    await step.locator('html[data-stream="live"]').waitFor({ timeout: 5000 });
    await again.close();

    // Lost phone: an admin removes it; the password alone signs in again.
    const admin = await newContext();
    const users = await signIn(admin, 'ada');
    await users.goto(receiver.url + '/admin/users');
    const row = users.locator('tr', { has: users.getByRole('cell', { name: 'tess', exact: true }) });
    await row.getByRole('cell', { name: 'on', exact: true }).waitFor();
    await row.getByRole('button', { name: 'Remove two-step' }).click();
    await users.waitForURL(receiver.url + '/admin/users');
    await row.getByRole('cell', { name: 'off', exact: true }).waitFor();
    await admin.close();
    const plain = await newContext();
    await signIn(plain, 'tess');
    await plain.close();
  });

  test('password change: the current password is needed, the other sessions end', async () => {
    const here = await newContext();
    const elsewhere = await newContext();
    const page = await signIn(here, 'pam');
    const other = await signIn(elsewhere, 'pam');
    await page.getByRole('link', { name: 'Account' }).click();
    await page.getByRole('heading', { name: 'Change password' }).waitFor();
    await page.getByLabel('Current password').fill('not the password at all');
    await page.getByLabel('New password (at least 12 characters)').fill(NEW_PASSWORD);
    await page.getByLabel('New password again').fill(NEW_PASSWORD);
    await page.getByRole('button', { name: 'Change password' }).click();
    await page.getByText('The current password is wrong.').waitFor();

    await page.getByLabel('Current password').fill(PASSWORD);
    await page.getByLabel('New password (at least 12 characters)').fill(NEW_PASSWORD);
    await page.getByLabel('New password again').fill(NEW_PASSWORD);
    await page.getByRole('button', { name: 'Change password' }).click();
    await page.getByText('Your one other session was ended.').waitFor();
    await page.goto(receiver.url + '/');
    assert.equal(page.url(), receiver.url + '/', 'this session stays');
    await other.reload();
    assert.match(other.url(), /\/login$/, 'the other browser is signed out');
    await here.close();
    await elsewhere.close();

    const fresh = await newContext();
    const refused = await enterPassword(fresh, 'pam', PASSWORD);
    await refused.getByText('Wrong username or password.').waitFor();
    await signIn(fresh, 'pam', NEW_PASSWORD);
    await fresh.close();
  });

  test('admin reset: a temporary password shown once; the user must choose a new one first', async () => {
    const user = await newContext();
    const before = await signIn(user, 'rita');
    const admin = await newContext();
    const page = await signIn(admin, 'ada');
    await page.goto(receiver.url + '/admin/users');
    const row = page.locator('tr', { has: page.getByRole('cell', { name: 'rita', exact: true }) });
    await row.getByRole('button', { name: 'Reset password' }).click();
    await page.getByRole('heading', { name: 'Temporary password for rita' }).waitFor();
    const temporary = (await page.locator('#temporary-password').textContent()).trim();
    assert.equal(temporary.length, 20);
    await page.goto(receiver.url + '/admin/users');
    assert.equal(await page.getByText(temporary).count(), 0, 'shown once');
    await before.reload();
    assert.match(before.url(), /\/login$/, 'her session ended at the reset');
    await user.close();

    const next = await newContext();
    const step = await enterPassword(next, 'rita', temporary);
    await step.waitForURL(/\/login\/new-password$/);
    await step.goto(receiver.url + '/stations');
    assert.match(step.url(), /\/login$/, 'no page before the new password');
    await step.goto(receiver.url + '/login/new-password');
    await step.getByLabel('New password', { exact: true }).fill(NEW_PASSWORD);
    await step.getByLabel('New password again').fill(NEW_PASSWORD);
    await step.getByRole('button', { name: 'Set password and sign in' }).click();
    await step.waitForURL(receiver.url + '/');
    await next.close();

    const later = await newContext();
    const old = await enterPassword(later, 'rita', temporary);
    await old.getByText('Wrong username or password.').waitFor();
    await signIn(later, 'rita', NEW_PASSWORD);
    await later.close();
    await admin.close();

    const audit = receiver.auditVerify();
    assert.equal(audit.status, 0, audit.stdout + audit.stderr);
  });
});
