// Single sign-on (issue 17): the console against a standards-conforming OpenID Connect provider,
// panva's `oidc-provider` (npm, certified by the OpenID Foundation), started here on 127.0.0.1
// (http on loopback is what the issuer rule allows). Its development login form takes any
// login, which names the account; the accounts below give each one its claims. Headless
// Chromium drives the real receiver binary through the whole authorization-code flow.
// Run by tests/console/run (both backends in scripts/test).
'use strict';
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { Receiver } = require('./lib/receiver');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PASSWORD = 'a long test password 4 officers';
const CLIENT_ID = 'duress-console';
const CLIENT_SECRET = 'sso-test-client-secret-' + crypto.randomBytes(12).toString('hex');

// The provider's users. `groups` is the role claim; `userinfoOnly` puts the profile claims in
// the userinfo answer only (as a provider that keeps ID tokens small does), so both places the
// console reads claims from are exercised.
const ACCOUNTS = {
  'sso.officer': { groups: ['staff', 'security-officers'] },
  'sso.admin': { groups: ['security-admins'], userinfoOnly: true },
  'sso.visitor': { groups: ['staff', 'library'] },
  // Same name as a local (password) account created below.
  'ada.local': { groups: ['security-admins'] },
};

let browser;
let provider; // { server, issuer }
let receiver;
let plain; // a receiver without [oidc]
let issuerPort;
let receiverPort;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function startProvider(port, redirectUri) {
  const { default: Provider } = await import('oidc-provider');
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key-1', alg: 'RS256', use: 'sig' };
  const issuer = `http://127.0.0.1:${port}`;
  const oidc = new Provider(issuer, {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [jwk] },
    // PKCE for every client (S256 only, the provider's default method list).
    pkce: { required: () => true },
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'groups'],
      email: ['email', 'email_verified'],
    },
    // Claims of the granted scopes go into the ID token too (unless userinfoOnly, below).
    conformIdTokenClaims: false,
    cookies: { keys: [crypto.randomBytes(16).toString('hex')] },
    async findAccount(ctx, id) {
      const account = ACCOUNTS[id];
      if (!account) return undefined;
      return {
        accountId: id,
        async claims(use) {
          // The provider's subject is the account id (the login typed in its form).
          const claims = { sub: id };
          if (use === 'userinfo' || !account.userinfoOnly) {
            Object.assign(claims, {
              preferred_username: id, groups: account.groups,
              email: `${id}@campus.example.edu`, email_verified: true,
            });
          }
          return claims;
        },
      };
    },
  });
  const server = await new Promise((resolve) => {
    const s = oidc.listen(port, '127.0.0.1', () => resolve(s));
  });
  return { server, issuer };
}

function stopProvider() {
  if (!provider) return Promise.resolve();
  const { server } = provider;
  provider = null;
  return new Promise((resolve) => {
    server.closeAllConnections?.();
    server.close(() => resolve());
  });
}

async function newContext() {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(15_000);
  return context;
}

/** From the console's sign-in page through the provider's login and consent forms. */
async function atProvider(page, login) {
  await page.goto(receiver.url + '/login');
  await page.getByRole('link', { name: 'Sign in with single sign-on' }).click();
  await page.waitForURL((u) => u.origin === provider.issuer);
  await page.locator('input[name="login"]').fill(login);
  await page.locator('input[name="password"]').fill('anything');
  await page.getByRole('button', { name: 'Sign-in' }).click();
  // The consent form: a fresh browser context is a new session at the provider.
  await page.getByRole('button', { name: 'Continue' }).click();
}

/** … and back to the console. */
async function throughProvider(page, login) {
  await atProvider(page, login);
  await page.waitForURL((u) => u.origin === receiver.url);
}

/**
 * Starts a flow in `context` as the button does (the flow cookie lands in its jar) and returns
 * the provider URL the console redirects to, for a test to alter before following it.
 * (Playwright does not route requests that are redirects, so the URL is taken here.)
 */
async function startFlow(context) {
  const r = await context.request.get(receiver.url + '/login/oidc', { maxRedirects: 0 });
  assert.equal(r.status(), 303);
  return new URL(r.headers().location);
}

/** Through the provider's forms from `url`, back to the console. */
async function followAtProvider(page, url, login) {
  await page.goto(url.toString());
  await page.locator('input[name="login"]').fill(login);
  await page.locator('input[name="password"]').fill('anything');
  await page.getByRole('button', { name: 'Sign-in' }).click();
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.waitForURL((u) => u.origin === receiver.url);
}

async function signInWithSso(context, login) {
  const page = await context.newPage();
  await throughProvider(page, login);
  await page.waitForURL(receiver.url + '/');
  await page.locator('html[data-stream="live"]').waitFor();
  return page;
}

async function refusal(page) {
  const notice = page.locator('#sso-notice h1');
  await notice.waitFor();
  return notice.textContent();
}

function auditRows(action) {
  const r = receiver.tamper(`SELECT actor || ' ' || subject || ' ' || detail FROM audit_log WHERE action = '${action}' ORDER BY id`);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // The provider is plain http on loopback (as the issuer rule allows): never upgraded.
      '--disable-features=HttpsUpgrades'],
  });
  issuerPort = await freePort();
  receiverPort = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'duress-sso-'));
  const secretFile = path.join(dir, 'client-secret');
  fs.writeFileSync(secretFile, CLIENT_SECRET + '\n', { mode: 0o600 });
  // The provider is NOT running yet: the receiver must start anyway.
  receiver = await Receiver.start([], {
    listen: `127.0.0.1:${receiverPort}`,
    config: [
      '[oidc]',
      `issuer = "http://127.0.0.1:${issuerPort}"`,
      `client_id = "${CLIENT_ID}"`,
      `client_secret_file = ${JSON.stringify(secretFile)}`,
      'role_claim = "groups"',
      'officer_values = ["security-officers"]',
      'admin_values = ["security-admins"]',
      `redirect_url = "https://127.0.0.1:${receiverPort}/login/oidc/callback"`,
      '',
    ].join('\n'),
  });
  // The break-glass admin, and a local account whose name an SSO user also has.
  receiver.addUser('breakglass', 'admin', PASSWORD);
  receiver.addUser('ada.local', 'officer', PASSWORD);
  plain = await Receiver.start();
});

after(async () => {
  if (browser) await browser.close();
  await stopProvider();
  if (receiver) await receiver.stop();
  if (plain) await plain.stop();
});

describe('single sign-on (OpenID Connect)', () => {
  test('the button is shown only with [oidc]; a provider down at start says so, then works once it is up', async () => {
    const context = await newContext();
    const page = await context.newPage();
    await page.goto(plain.url + '/login');
    assert.equal(await page.getByRole('link', { name: 'Sign in with single sign-on' }).count(), 0);
    const none = await page.goto(plain.url + '/login/oidc');
    assert.equal(none.status(), 404);

    await page.goto(receiver.url + '/login');
    await page.getByRole('link', { name: 'Sign in with single sign-on' }).click();
    assert.equal(await refusal(page), 'Single sign-on unavailable');
    assert.match(await page.locator('#sso-notice').textContent(), /cannot be reached/);
    assert.equal(receiver.proc.exitCode, null, 'the receiver kept running');

    provider = await startProvider(issuerPort, `https://127.0.0.1:${receiverPort}/login/oidc/callback`);
    // Discovery is retried (in the background, and on a click at most every 5 s).
    const deadline = Date.now() + 30_000;
    for (;;) {
      const answer = await page.goto(receiver.url + '/login/oidc');
      if (new URL(page.url()).origin === provider.issuer) break;
      assert.equal(answer.status(), 503);
      assert.ok(Date.now() < deadline, 'discovery did not recover within 30 s');
      await page.waitForTimeout(1000);
    }
    await context.close();
  });

  test('an officer and an admin sign in end to end (PKCE S256, state, nonce); sessions as for passwords', async () => {
    const context = await newContext();
    const page = await context.newPage();
    // What the console sends to the provider.
    let authorize;
    page.on('request', (r) => {
      if (r.url().startsWith(provider.issuer + '/auth?')) authorize = new URL(r.url());
    });
    await throughProvider(page, 'sso.officer');
    await page.waitForURL(receiver.url + '/');
    await page.locator('html[data-stream="live"]').waitFor();
    const q = authorize.searchParams;
    assert.equal(q.get('response_type'), 'code');
    assert.equal(q.get('client_id'), CLIENT_ID);
    assert.equal(q.get('code_challenge_method'), 'S256');
    assert.match(q.get('code_challenge'), /^[A-Za-z0-9_-]{43}$/);
    assert.ok(q.get('state').length >= 16 && q.get('nonce').length >= 16);
    assert.match(q.get('scope'), /\bopenid\b/);
    assert.equal(q.get('redirect_uri'), `https://127.0.0.1:${receiverPort}/login/oidc/callback`);
    // An officer: the board, not the admin pages.
    const users = await page.goto(receiver.url + '/admin/users');
    assert.equal(users.status(), 403);
    // The session cookie is the password sign-in's; the flow cookie is gone.
    const cookies = await context.cookies(receiver.url);
    const session = cookies.find((c) => c.name === '__Host-duress_session');
    assert.ok(session && session.httpOnly && session.secure && session.sameSite === 'Strict');
    assert.equal(cookies.find((c) => c.name === '__Host-duress_oidc'), undefined);

    // Claims from the userinfo endpoint (this account's ID token carries none).
    const admins = await newContext();
    const adminPage = await signInWithSso(admins, 'sso.admin');
    const usersPage = await adminPage.goto(receiver.url + '/admin/users');
    assert.equal(usersPage.status(), 200);
    const listed = await adminPage.locator('body').textContent();
    assert.match(listed, /sso\.officer/);
    assert.match(listed, /sso\.admin/);
    // SSO accounts say so, and have no password to reset; local ones keep the button.
    const row = (name) => adminPage.locator('table.list tbody tr', { has: adminPage.locator('td', { hasText: new RegExp(`^${name.replace('.', '\\.')}$`) }) });
    assert.match(await row('sso.officer').textContent(), /single sign-on/);
    assert.equal(await row('sso.officer').getByRole('button', { name: 'Reset password' }).count(), 0);
    assert.match(await row('ada.local').textContent(), /password/);
    assert.equal(await row('ada.local').getByRole('button', { name: 'Reset password' }).count(), 1);
    // An admin creates an SSO account before its first sign-in (what provision = false needs).
    await adminPage.getByLabel('Username').fill('sso.precreated');
    await adminPage.getByLabel('Sign-in').selectOption('sso');
    await adminPage.getByRole('button', { name: 'Add user' }).click();
    await adminPage.getByText('Signs in with single sign-on: no password.').waitFor();
    assert.equal(await adminPage.locator('code.token').count(), 0, 'no password shown');
    assert.match(receiver.cli(['user', 'list']).stdout, /sso\.precreated\s+officer\s+active\s+sso/);
    // The SSO officer's own account page: nothing to change here.
    await page.goto(receiver.url + '/account/password');
    assert.match(await page.locator('#sso-account').textContent(), /single sign-on/);
    assert.equal(await page.locator('form[action="/account/password"]').count(), 0);

    const logins = auditRows('login.success');
    assert.match(logins, /sso\.officer sso\.officer ip:127\.0\.0\.1 method=oidc/);
    assert.match(logins, /sso\.admin sso\.admin ip:127\.0\.0\.1 method=oidc/);
    assert.match(auditRows('user.add'), /oidc sso\.officer officer sso http:\/\/127\.0\.0\.1:\d+ sub=sso\.officer/);

    // An SSO account never signs in with a password, even one it never had.
    const pw = await newContext();
    const pwPage = await pw.newPage();
    await pwPage.goto(receiver.url + '/login');
    await pwPage.getByLabel('Username').fill('sso.officer');
    await pwPage.getByLabel('Password').fill(PASSWORD);
    await pwPage.getByRole('button', { name: 'Sign in', exact: true }).click();
    await pwPage.getByText('Wrong username or password.').waitFor();
    // Signing out ends the SSO session like any other.
    await page.goto(receiver.url + '/');
    await page.getByRole('button', { name: /Sign out/ }).click();
    await page.waitForURL(/\/login$/);
    await Promise.all([context.close(), admins.close(), pw.close()]);
  });

  test('a tampered state is refused, and so is a state from another browser', async () => {
    const context = await newContext();
    const page = await context.newPage();
    const url = await startFlow(context);
    url.searchParams.set('state', url.searchParams.get('state').slice(0, -4) + 'AAAA');
    await followAtProvider(page, url, 'sso.officer');
    assert.equal(await refusal(page), 'Sign-in not completed');
    assert.equal((await context.cookies(receiver.url)).find((c) => c.name === '__Host-duress_session'), undefined);
    assert.match(auditRows('login.sso-refused'), /ip:127\.0\.0\.1 +unknown, used or expired state/);
    await context.close();

    // A flow started in one browser, its provider answer arriving in another (which has no
    // flow cookie): refused, and the flow is used up, so the first cannot finish it either.
    const first = await newContext();
    const other = await newContext();
    const otherPage = await other.newPage();
    let callback;
    otherPage.on('request', (r) => {
      if (r.url().startsWith(`https://127.0.0.1:${receiverPort}/login/oidc/callback?`)) callback = r.url();
    });
    await followAtProvider(otherPage, await startFlow(first), 'sso.officer');
    assert.equal(await refusal(otherPage), 'Sign-in not completed');
    assert.match(await otherPage.locator('#sso-notice').textContent(), /another browser/);
    assert.ok(callback, 'the provider redirected back with a code');
    const firstPage = await first.newPage();
    await firstPage.goto(callback);
    assert.equal(await refusal(firstPage), 'Sign-in not completed', 'single use');
    assert.match(await firstPage.locator('#sso-notice').textContent(), /already used/);
    assert.match(auditRows('login.sso-refused'), /state from another browser/);
    await Promise.all([first.close(), other.close()]);
  });

  test('an ID token with another nonce is refused', async () => {
    const context = await newContext();
    const page = await context.newPage();
    // The provider is asked for a different nonce than the one the console keeps for this
    // flow: the provider signs a perfectly valid ID token carrying it, and only the console's
    // nonce check can refuse it.
    const url = await startFlow(context);
    url.searchParams.set('nonce', 'a-nonce-this-console-never-issued');
    await followAtProvider(page, url, 'sso.officer');
    assert.equal(await refusal(page), 'Sign-in refused');
    assert.equal((await context.cookies(receiver.url)).find((c) => c.name === '__Host-duress_session'), undefined);
    assert.match(auditRows('login.sso-refused'), /ID token refused: .*[Nn]once/);
    await context.close();
  });

  test('a user without the required group is refused, audited', async () => {
    const context = await newContext();
    const page = await context.newPage();
    await throughProvider(page, 'sso.visitor');
    assert.equal(await refusal(page), 'Not allowed to use the console');
    await page.goto(receiver.url + '/');
    assert.match(page.url(), /\/login$/);
    assert.match(auditRows('login.sso-refused'), /ip:127\.0\.0\.1 sso\.visitor no officer or admin value in claim groups/);
    const users = receiver.cli(['user', 'list']);
    assert.doesNotMatch(users.stdout, /sso\.visitor/, 'no account was created');
    await context.close();
  });

  test('a local account with the same name is not taken over; the break-glass admin still signs in', async () => {
    const context = await newContext();
    const page = await context.newPage();
    await throughProvider(page, 'ada.local');
    assert.equal(await refusal(page), 'Account name taken by a local account');
    assert.equal((await context.cookies(receiver.url)).find((c) => c.name === '__Host-duress_session'), undefined);
    assert.match(auditRows('login.sso-refused'), /ada\.local a local account has this name \(sso http:\/\/127\.0\.0\.1:\d+ sub=ada\.local\)/);
    // The local account is untouched: still an officer with its password.
    assert.match(receiver.cli(['user', 'list']).stdout, /ada\.local\s+officer\s+active/);
    for (const [user, board] of [['ada.local', '/'], ['breakglass', '/admin/users']]) {
      const local = await newContext();
      const p = await local.newPage();
      await p.goto(receiver.url + '/login');
      await p.getByLabel('Username').fill(user);
      await p.getByLabel('Password').fill(PASSWORD);
      await p.getByRole('button', { name: 'Sign in', exact: true }).click();
      await p.waitForURL(receiver.url + '/');
      const r = await p.goto(receiver.url + board);
      assert.equal(r.status(), 200, `${user} signs in with a password`);
      await local.close();
    }
    assert.equal(receiver.auditVerify().status, 0, 'the audit chain verifies');
    await context.close();
  });
  // Last in this file: it uses up 127.0.0.1's starts for a minute.
  test('an address that keeps starting sign-ins is held back (429, Retry-After) and writes no more flows', async () => {
    const context = await newContext();
    // The flows already pending are marked, so expiry sweeps of old ones cannot blur the count.
    const mark = receiver.tamper("UPDATE oidc_flows SET nonce = 'pending-before-the-burst'");
    assert.equal(mark.status, 0, mark.stderr);
    const flows = () => {
      // Marked as in watch.test.js: psql (PostgreSQL) prints headers around a bare number.
      const r = receiver.tamper("SELECT 'n=' || count(*) FROM oidc_flows WHERE nonce <> 'pending-before-the-burst'");
      assert.equal(r.status, 0, r.stderr);
      return Number(/n=(\d+)/.exec(r.stdout)[1]);
    };
    const statuses = [];
    let retryAfter;
    for (let i = 0; i < 40; i++) {
      const r = await context.request.get(receiver.url + '/login/oidc', { maxRedirects: 0 });
      statuses.push(r.status());
      if (r.status() === 429) retryAfter = r.headers()['retry-after'];
    }
    const started = statuses.filter((s) => s === 303).length;
    assert.ok(started <= 30, `at most 30 starts a minute, got ${started}`);
    assert.deepEqual(statuses.slice(statuses.indexOf(429)), statuses.slice(statuses.indexOf(429)).map(() => 429),
      `once held back, held back: ${statuses.join(' ')}`);
    assert.ok(statuses.includes(429), 'held back');
    assert.match(retryAfter, /^[1-9][0-9]*$/);
    assert.equal(flows(), started, 'a refused start writes nothing');
    await context.close();
  });
});
