// When the shared stream reconnects (lib/backoff.js): the server's Retry-After wins over the usual backoff,
// with jitter only added and a bound. Runs on the compiled lib/.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  MAX_BACKOFF_MS,
  MAX_RETRY_AFTER_MS,
  MIN_BACKOFF_MS,
  RETRY_AFTER_JITTER,
  parseRetryAfter,
  reconnectDelay
} from '../lib/backoff.js';

test('Retry-After is read as seconds or as an HTTP date; anything else is ignored', () => {
  const now = Date.parse('Mon, 30 Nov 2026 09:00:00 GMT');
  assert.equal(parseRetryAfter('7', now), 7000);
  assert.equal(parseRetryAfter(' 0 ', now), 0);
  assert.equal(parseRetryAfter('Mon, 30 Nov 2026 09:00:12 GMT', now), 12000);
  assert.equal(parseRetryAfter('Mon, 30 Nov 2026 08:00:00 GMT', now), 0); // a date gone by: at once
  assert.equal(parseRetryAfter(null, now), null);
  assert.equal(parseRetryAfter('soon', now), null);
  assert.equal(parseRetryAfter('-3', now), null);
  assert.equal(parseRetryAfter('1.5', now), null);
});

test('the usual backoff starts at the server hint, doubles to a cap, with jitter both ways', () => {
  let { delay, backoff } = reconnectDelay(0, 2000, null, 0.5);
  assert.deepEqual([delay, backoff], [2000, 2000]);
  ({ delay, backoff } = reconnectDelay(backoff, 2000, null, 0));
  assert.deepEqual([delay, backoff], [3000, 4000]);
  assert.equal(reconnectDelay(20000, 2000, null, 0.999).backoff, MAX_BACKOFF_MS);
  assert.equal(reconnectDelay(0, 10, null, 0.5).delay, MIN_BACKOFF_MS);
});

test('a Retry-After replaces the backoff: never sooner, at most the jitter later, bounded, and it resets', () => {
  for (const random of [0, 0.5, 0.999]) {
    const { delay, backoff } = reconnectDelay(16000, 2000, 6000, random);
    assert.ok(delay >= 6000 && delay <= 6000 * (1 + RETRY_AFTER_JITTER), String(delay));
    assert.equal(backoff, 0);
  }
  // far beyond the usual cap, as the server asked, but not forever
  assert.equal(reconnectDelay(0, 2000, 120000, 0).delay, 120000);
  assert.equal(reconnectDelay(0, 2000, 86400000, 0).delay, MAX_RETRY_AFTER_MS);
  assert.equal(reconnectDelay(0, 2000, 0, 0).delay, MIN_BACKOFF_MS);
});
