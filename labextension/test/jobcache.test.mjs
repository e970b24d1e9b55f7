// The tab's job cache (lib/jobcache.js): one snapshot per job, which events replace, `reset` forgets them all, and a
// job a view still shows after a reset is kept or removed by what the server says of it, never by a stale snapshot.
// Runs on the compiled lib/.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { JobCache, REMOVED_KEPT, mergeJobs } from '../lib/jobcache.js';
import { job } from './_job.mjs';

test('job, log and removed events fill and empty the cache; unknown events change nothing', () => {
  const cache = new JobCache();
  assert.equal(cache.apply('job', job({ id: 'a', n: 1 }), 10), 'a');
  const first = cache.get('a');
  assert.equal(cache.apply('log', { job: 'a', lines: ['1', '2', '3', '4', '5', '6'] }, 11), 'a');
  assert.deepEqual(cache.get('a').logs, ['2', '3', '4', '5', '6']);
  assert.equal(cache.get('a').receivedAt, 10); // a log line is not a newer job
  assert.deepEqual(first.logs, []); // replaced, not changed: a view may keep the snapshot it was handed
  cache.apply('job', job({ id: 'a', n: 2 }), 12);
  assert.deepEqual([cache.get('a').job.n, cache.get('a').logs.length, cache.get('a').receivedAt], [2, 5, 12]);
  assert.equal(cache.apply('sync', { anything: true }, 12), null);
  assert.equal(cache.apply('removed', { job: 'a' }, 13), 'a');
  assert.deepEqual(cache.get('a'), { job: null, logs: [], receivedAt: 13, removed: true });
  assert.deepEqual(cache.jobs(), []);
});

test('removed jobs are remembered up to a bound, the oldest removal forgotten first', () => {
  const cache = new JobCache();
  cache.apply('job', job({ id: 'live' }), 0);
  for (let i = 0; i < REMOVED_KEPT + 10; i++) {
    cache.apply('removed', { job: `gone${i}` }, i);
  }
  cache.apply('removed', { job: 'gone10' }, 99); // removed again: now the newest removal
  assert.equal(cache.size, REMOVED_KEPT + 1);
  assert.equal(cache.get('live').job.id, 'live');
  assert.equal(cache.get('gone9'), undefined);
  assert.equal(cache.get('gone10').removed, true);
  cache.apply('removed', { job: 'another' }, 100);
  assert.equal(cache.get('gone11'), undefined);
  assert.equal(cache.get('gone10').removed, true);
  // a removed job that comes back is no longer counted as removed
  cache.apply('job', job({ id: 'another' }), 101);
  cache.apply('removed', { job: 'one more' }, 102);
  assert.equal(cache.size, REMOVED_KEPT + 2); // 'live' and 'another', and the removals kept
});

test('reset forgets every job, so none of the old history stays running (no ghost)', () => {
  const cache = new JobCache();
  cache.apply('job', job({ id: 'ghost', state: 'running' }), 1);
  cache.apply('job', job({ id: 'done', state: 'succeeded' }), 1);
  cache.apply('removed', { job: 'gone' }, 1);
  assert.deepEqual(cache.reset().sort(), ['done', 'ghost', 'gone']);
  assert.equal(cache.size, 0);
  // the sync that follows: only what exists now
  cache.apply('job', job({ id: 'new' }), 2);
  assert.deepEqual(
    cache.jobs().map(j => j.id),
    ['new']
  );
});

test('after a reset, the server says whether a job a view shows still exists; the stream wins over it', () => {
  const cache = new JobCache();
  cache.reset();
  // an old finished job the bounded sync left out: GET jobs/{id} has it
  assert.equal(cache.confirm('old', job({ id: 'old', state: 'succeeded' }), 5), true);
  assert.equal(cache.get('old').job.state, 'succeeded');
  // a job of the history that is gone: 404
  assert.equal(cache.confirm('ghost', null, 5), true);
  assert.equal(cache.get('ghost').removed, true);
  // the stream sent a newer snapshot before the answer came: the answer changes nothing
  cache.apply('job', job({ id: 'live', n: 9 }), 6);
  assert.equal(cache.confirm('live', job({ id: 'live', n: 1 }), 7), false);
  assert.equal(cache.get('live').job.n, 9);
  assert.equal(cache.confirm('live', null, 7), false);
});

test('the panel lists the live jobs and the older pages, a live snapshot before a paged one', () => {
  const older = new Map([
    ['a', job({ id: 'a', state: 'running' })],
    ['b', job({ id: 'b', state: 'succeeded' })]
  ]);
  const merged = mergeJobs([job({ id: 'a', state: 'failed' }), job({ id: 'c' })], older);
  assert.deepEqual(
    merged.map(j => [j.id, j.state]),
    [
      ['a', 'failed'],
      ['c', 'running'],
      ['b', 'succeeded']
    ]
  );
});
