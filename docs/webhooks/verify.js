#!/usr/bin/env node
// Verify a presence webhook signature (docs/WEBHOOKS.md).
//
//   node verify.js SECRET SIGNATURE_HEADER_VALUE BODY_FILE     exit 0 = valid, 1 = not
//
// integ_webhooks runs this file against real deliveries, so the snippet in the docs is tested.
'use strict';
const crypto = require('crypto');

// header: the X-Presence-Signature value; rawBody: the request body as received (a Buffer).
function verify(secret, header, rawBody, toleranceS = 300) {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header || '');
  if (!m) return false;
  if (Math.abs(Date.now() / 1000 - Number(m[1])) > toleranceS) return false; // a replay
  const expected = crypto.createHmac('sha256', secret).update(m[1] + '.').update(rawBody).digest();
  const given = Buffer.from(m[2], 'hex');
  return given.length === expected.length && crypto.timingSafeEqual(given, expected);
}

if (require.main === module) {
  const [secret, header, file] = process.argv.slice(2);
  process.exit(verify(secret, header, require('fs').readFileSync(file)) ? 0 : 1);
}
module.exports = { verify };
