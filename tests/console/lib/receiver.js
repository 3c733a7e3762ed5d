// Starts the real `duress-receiver serve` binary on a free 127.0.0.1 port with a temporary
// data dir, and runs its command line (users, tokens, audit verify) against that data dir.
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

/** Runs the receiver's command line; returns { status, stdout, stderr }. */
function cli(args, input) {
  const r = spawnSync(BIN, args, { input, encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

class Receiver {
  static async start(extraArgs = []) {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'duress-console-'));
    const proc = spawn(BIN, ['serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', ...extraArgs], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
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
    return new Receiver(url, dataDir, proc, log);
  }

  constructor(url, dataDir, proc, log) {
    this.url = url;
    this.dataDir = dataDir;
    this.proc = proc;
    this.log = log;
    this.certPath = path.join(dataDir, 'tls', 'cert.pem');
    this.ca = fs.readFileSync(this.certPath);
    this.database = path.join(dataDir, 'receiver.sqlite3');
  }

  cli(args, input) {
    return cli([...args, '--data-dir', this.dataDir], input);
  }

  addUser(username, role, password) {
    const r = this.cli(['user', 'add', '--username', username, '--role', role, '--password-stdin'], password + '\n');
    if (r.status !== 0) throw new Error('user add failed: ' + r.stderr);
  }

  createToken() {
    const r = this.cli(['token', 'create', '--uses', '50', '--expires', '1h']);
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
