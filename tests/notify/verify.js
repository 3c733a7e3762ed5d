#!/usr/bin/env node
// node verify.js webhook CAPTURE.json SECRET   — verifies a captured webhook request with the
//   standardwebhooks library (headers webhook-id/-timestamp/-signature, body as received).
// node verify.js teams CAPTURE.json            — validates the Adaptive Card in a captured Teams
//   post against Microsoft's Adaptive Card JSON schema (adaptivecards-designer) with ajv.
// CAPTURE.json: {"headers": {lower-case name: value}, "body": "the body as text"}.
// Exit 0 and "ok" when valid; otherwise exit 1 with the reason.
'use strict';
const fs = require('node:fs');

const [mode, file, secret] = process.argv.slice(2);
const capture = JSON.parse(fs.readFileSync(file, 'utf8'));

function fail(msg) {
  console.error(`verify ${mode}: ${msg}`);
  process.exit(1);
}

if (mode === 'webhook') {
  const { Webhook } = require('standardwebhooks');
  const wh = new Webhook(secret);
  try {
    wh.verify(capture.body, capture.headers);
  } catch (e) {
    fail(`signature rejected: ${e.message}`);
  }
  console.log('ok');
} else if (mode === 'teams') {
  const Ajv = require('ajv');
  const draft6 = require('ajv/dist/refs/json-schema-draft-06.json');
  const { adaptiveCardSchema } = require('adaptivecards-designer/lib/adaptive-card-schema.js');
  const ajv = new Ajv({ strict: false, allErrors: true });
  ajv.addMetaSchema(draft6);
  // The package's schema names itself with draft-04's `id`; ajv 8 wants `$id`. That keyword is
  // the only change: every definition is used as shipped.
  const { id, ...rest } = adaptiveCardSchema;
  const validate = ajv.compile({ $id: id, ...rest });
  const post = JSON.parse(capture.body);
  if (post.type !== 'message' || !Array.isArray(post.attachments) || post.attachments.length !== 1) {
    fail('not a Workflows message envelope with one attachment');
  }
  const att = post.attachments[0];
  if (att.contentType !== 'application/vnd.microsoft.card.adaptive') fail(`contentType ${att.contentType}`);
  if (att.content.version !== '1.4') fail(`version ${att.content.version}`);
  if (Buffer.byteLength(capture.body) >= 28 * 1024) fail('28 KB or more');
  if (!validate(att.content)) fail(JSON.stringify(validate.errors));
  console.log('ok');
} else {
  fail('mode: webhook or teams');
}
