// A minimal Duress agent in Node: an Ed25519 key (node:crypto), enrollment with a token, and
// signed events and heartbeats exactly as docs/protocol.md describes them (compact JWS,
// `alg: Ed25519`, `kid` = device id, UUIDv7 event ids, millisecond RFC 3339 timestamps).
'use strict';
const crypto = require('node:crypto');
const https = require('node:https');

const b64u = (buf) => Buffer.from(buf).toString('base64url');

function uuidv7() {
  const b = crypto.randomBytes(16);
  let ts = BigInt(Date.now());
  for (let i = 5; i >= 0; i--) { b[i] = Number(ts & 0xffn); ts >>= 8n; }
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** POSTs a compact JWS; resolves { status, body }. */
function postJose(receiver, path, jws) {
  return new Promise((resolve, reject) => {
    const url = new URL(path, receiver.url);
    const req = https.request(url, {
      method: 'POST',
      ca: receiver.ca,
      headers: { 'content-type': 'application/jose', 'content-length': Buffer.byteLength(jws) },
    }, (res) => {
      let data = '';
      res.on('data', (c) => { data += c; });
      res.on('end', () => {
        let body = data;
        try { body = JSON.parse(data); } catch (_) { /* keep text */ }
        resolve({ status: res.statusCode, body });
      });
    });
    req.on('error', reject);
    req.end(jws);
  });
}

const DEFAULT_LOCATION = {
  label: 'Bldg A, Floor 2, Room 214 (Financial Aid front desk)',
  country: 'US', A1: 'MN', A3: 'Saint Paul', RD: 'University Ave', HNO: '700', PC: '55106',
  BLD: 'A', FLR: '2', ROOM: '214',
};

class Agent {
  constructor(receiver, { location = DEFAULT_LOCATION, host = {} } = {}) {
    this.receiver = receiver;
    const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519');
    this.privateKey = privateKey;
    const jwk = publicKey.export({ format: 'jwk' });
    this.jwk = { kty: 'OKP', crv: 'Ed25519', x: jwk.x };
    this.location = location;
    this.host = {
      hostname: 'fa-desk-01', user: 'mgarcia', ips: ['10.20.2.14'], macs: ['02:00:00:00:02:14'],
      os: 'Windows 11 Enterprise 24H2', agent_version: '0.1.0', ...host,
    };
    this.seq = 0;
    this.deviceId = null;
  }

  sign(header, claims) {
    const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(claims))}`;
    return `${input}.${b64u(crypto.sign(null, Buffer.from(input), this.privateKey))}`;
  }

  async enroll(token) {
    const jws = this.sign(
      { alg: 'Ed25519', typ: 'duress-enrollment', jwk: this.jwk },
      { token, sent_at: new Date().toISOString(), location: this.location, host: this.host },
    );
    const r = await postJose(this.receiver, '/v1/enrollments', jws);
    if (r.status !== 201) throw new Error('enrollment refused: ' + JSON.stringify(r.body));
    this.deviceId = r.body.device_id;
    return this;
  }

  /** One press (kind duress | test | cancel); resolves the receiver's answer body. */
  async press(kind = 'duress', overrides = {}) {
    this.seq += 1;
    const now = new Date().toISOString();
    const jws = this.sign(
      { alg: 'Ed25519', typ: 'duress-event', kid: this.deviceId },
      {
        id: uuidv7(), seq: this.seq, kind, occurred_at: now, sent_at: now, source: 'hotkey',
        location: this.location, host: this.host, ...overrides,
      },
    );
    const r = await postJose(this.receiver, '/v1/events', jws);
    if (r.status !== 200) throw new Error('event refused: ' + JSON.stringify(r.body));
    return r.body;
  }

  async heartbeat(hotkey = { state: 'registered', chords: ['Ctrl+Alt+Shift+D'] }) {
    const jws = this.sign(
      { alg: 'Ed25519', typ: 'duress-heartbeat', kid: this.deviceId },
      {
        sent_at: new Date().toISOString(), hotkey, queued: 0, last_seq: this.seq,
        location: this.location, host: this.host,
      },
    );
    const r = await postJose(this.receiver, '/v1/heartbeats', jws);
    if (r.status !== 200) throw new Error('heartbeat refused: ' + JSON.stringify(r.body));
    return r.body;
  }
}

module.exports = { Agent, uuidv7, DEFAULT_LOCATION };
