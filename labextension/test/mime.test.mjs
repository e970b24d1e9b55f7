// The job MIME data the kernel displays: which job ids the renderer accepts. Runs on the compiled lib/.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { MIME_TYPE, jobIdOf } from '../lib/mimetype.js';

test('the MIME type is the one the kernel sends', () => {
  assert.equal(MIME_TYPE, 'application/vnd.jupyter-sse.job+json');
});

test('a job id that the protocol allows is taken', () => {
  assert.equal(jobIdOf({ job_id: 'a1b2_c-3', version: 1 }), 'a1b2_c-3');
  assert.equal(jobIdOf({ job_id: 'x'.repeat(64) }), 'x'.repeat(64));
  assert.equal(jobIdOf({ job_id: 'abc', version: 2, extra: true }), 'abc'); // later versions: same id
});

test('anything else is refused (the renderer then shows the text line)', () => {
  for (const data of [
    null,
    undefined,
    'abc',
    42,
    ['abc'],
    {},
    { job_id: '' },
    { job_id: 7 },
    { job_id: 'x'.repeat(65) },
    { job_id: '../etc' },
    { job_id: 'a b' },
    { job_id: '<img>' }
  ]) {
    assert.equal(jobIdOf(data), null, JSON.stringify(data));
  }
});
