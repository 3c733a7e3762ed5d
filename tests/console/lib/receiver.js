// Starts the real `duress-receiver serve` binary on a free 127.0.0.1 port with a temporary
// data dir, and runs its command line (users, tokens, audit verify) against that data dir.
// With DURESS_TEST_PG_URL (a throw-away cluster's URL, printed by `duress-testpg`; see
// tests/console/run), each receiver gets a fresh PostgreSQL database in that cluster instead of
// SQLite in its data dir, so the whole suite runs on either backend.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const repo = path.resolve(__dirname, '..', '..', '..');
const targetDir = process.env.CARGO_TARGET_DIR
  ? path.resolve(repo, process.env.CARGO_TARGET_DIR)
  : path.join(repo, 'target');
const BIN = process.env.DURESS_RECEIVER_BIN || path.join(targetDir, 'debug', 'duress-receiver');

const PG_URL = process.env.DURESS_TEST_PG_URL || '';
const PSQL = '/usr/lib/postgresql/15/bin/psql';
let databases = 0;

/** The socket directory of the test cluster (`…?host=DIR`). */
function pgSocket() {
  const m = /[?&]host=([^&]+)/.exec(PG_URL);
  if (!m) throw new Error(`DURESS_TEST_PG_URL has no host=: ${PG_URL}`);
  return decodeURIComponent(m[1]);
}

/** Runs SQL as the test cluster's superuser in database `db`. */
function psql(db, sql) {
  const r = spawnSync(PSQL, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', pgSocket(), '-U', 'postgres', '-d', db, '-c', sql],
    { encoding: 'utf8', timeout: 30_000 });
  if (r.error) throw r.error;
  return r;
}

/** A fresh database in the test cluster; returns its URL. */
function freshDatabase() {
  databases += 1;
  const name = `console_${process.pid}_${databases}`;
  const r = psql('postgres', `CREATE DATABASE ${name}`);
  if (r.status !== 0) throw new Error(`creating database ${name}: ${r.stderr}`);
  return { name, url: `postgres://postgres@/${name}?host=${encodeURIComponent(pgSocket())}` };
}

/** Runs the receiver's command line; returns { status, stdout, stderr }. */
function cli(args, input, env = process.env) {
  const r = spawnSync(BIN, args, { input, env, encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Starts `serve`; resolves to [url, proc, log]. */
async function serve(dataDir, listen, extraArgs, env) {
  const proc = spawn(BIN, ['serve', '--data-dir', dataDir, '--listen', listen, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  const log = [];
  proc.stderr.on('data', (d) => log.push(d.toString()));
  const lines = readline.createInterface({ input: proc.stdout });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('receiver did not start: ' + log.join(''))), 30_000);
    proc.once('exit', (code) => { clearTimeout(timer); reject(new Error(`receiver exited ${code}: ${log.join('')}`)); });
    lines.on('line', (line) => {
      const m = /^Duress receiver listening on (https:\/\/\S+)$/.exec(line);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
  });
  return [url, proc, log];
}

class Receiver {
  /**
   * `options.config`: text of a configuration file (`serve --config`), written to the data dir.
   * `options.listen`: the address to serve on (default `127.0.0.1:0`, a free port), for a test
   * that must know the URL before the receiver starts (an OpenID provider's redirect URL).
   */
  static async start(extraArgs = [], options = {}) {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'duress-console-'));
    const pg = PG_URL ? freshDatabase() : null;
    const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' };
    delete env.DURESS_DATABASE_URL;
    if (pg) env.DURESS_DATABASE_URL = pg.url;
    const args = [...extraArgs];
    if (options.config !== undefined) {
      const file = path.join(dataDir, 'receiver.toml');
      fs.writeFileSync(file, options.config);
      args.push('--config', file);
    }
    const [url, proc, log] = await serve(dataDir, options.listen || '127.0.0.1:0', args, env);
    const r = new Receiver(url, dataDir, proc, log, env, pg);
    r.args = args;
    return r;
  }

  /** Stops the process (SIGTERM) but keeps its data: `restart()` brings it back. */
  async kill() {
    if (this.proc.exitCode !== null) return;
    const exited = new Promise((resolve) => this.proc.once('exit', resolve));
    this.proc.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
  }

  /** Starts again on the same address, data dir and database, as after a crash or upgrade. */
  async restart() {
    const listen = new URL(this.url).host;
    const [url, proc, log] = await serve(this.dataDir, listen, this.args || [], this.env);
    this.url = url;
    this.proc = proc;
    this.log = log;
  }

  constructor(url, dataDir, proc, log, env, pg) {
    this.url = url;
    this.dataDir = dataDir;
    this.proc = proc;
    this.log = log;
    this.env = env;
    this.pg = pg;
    this.certPath = path.join(dataDir, 'tls', 'cert.pem');
    this.ca = fs.readFileSync(this.certPath);
    this.database = path.join(dataDir, 'receiver.sqlite3');
  }

  /** Which backend this receiver's store is on. */
  get backend() {
    return this.pg ? 'postgresql' : 'sqlite';
  }

  /** Runs SQL on this receiver's store directly, as someone with access to the database would. */
  tamper(sql) {
    const r = this.pg
      ? psql(this.pg.name, sql)
      // The running receiver writes in the background (sweeps, escalations, the live log), and
      // the sqlite3 shell gives up at once with "database is locked" unless it is told to wait
      // for the writer's lock like the receiver's own connections do.
      : spawnSync('sqlite3', ['-cmd', '.timeout 10000', this.database, sql], { encoding: 'utf8' });
    if (r.error) throw r.error;
    return r;
  }

  cli(args, input) {
    return cli([...args, '--data-dir', this.dataDir], input, this.env);
  }

  addUser(username, role, password) {
    const r = this.cli(['user', 'add', '--username', username, '--role', role, '--password-stdin'], password + '\n');
    if (r.status !== 0) throw new Error('user add failed: ' + r.stderr);
  }

  createToken() {
    // Many test agents enroll with it and start active: auto approval asked for explicitly
    // (a multi-use token is manual by default).
    const r = this.cli(['token', 'create', '--uses', '50', '--expires', '1h', '--approve', 'auto']);
    if (r.status !== 0) throw new Error('token create failed: ' + r.stderr);
    return r.stdout.trim().split('\n').pop();
  }

  auditVerify() {
    return this.cli(['audit', 'verify']);
  }

  async stop() {
    if (this.proc.exitCode !== null) return;
    const exited = new Promise((resolve) => this.proc.once('exit', resolve));
    this.proc.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
    fs.rmSync(this.dataDir, { recursive: true, force: true });
  }
}

module.exports = { Receiver, BIN, repo };
