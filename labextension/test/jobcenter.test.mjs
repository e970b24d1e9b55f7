// The job center's pure logic: the status bar's combined progress, the panel's order and filter, which endings
// are announced, and which cells get their running job re-attached. Runs on the compiled lib/.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  EndTracker,
  combinedProgress,
  endMessage,
  matchesFilter,
  normalizePath,
  orderJobs,
  reattachTargets
} from '../lib/jobcenter.js';
import { job } from './_job.mjs';

test('combined progress: sum n / sum total of running jobs with a total', () => {
  const p = combinedProgress([
    job({ id: 'a', n: 30, total: 100 }),
    job({ id: 'b', n: 10, total: 50 }),
    job({ id: 'c', n: 7, total: null }), // running, no total: counted, not in the fraction
    job({ id: 'd', state: 'succeeded', n: 100, total: 100 }) // ended: not counted
  ]);
  assert.equal(p.running, 3);
  assert.equal(p.n, 40);
  assert.equal(p.total, 150);
  assert.ok(Math.abs(p.fraction - 40 / 150) < 1e-9);
});

test("combined progress: nested jobs count as running but their progress is their parent's", () => {
  const p = combinedProgress([
    job({ id: 'outer', n: 1, total: 4 }),
    job({ id: 'inner', parent: 'outer', n: 90, total: 100 })
  ]);
  assert.deepEqual(p, { running: 2, n: 1, total: 4, fraction: 0.25 });
  // a submitted job has no total of its own: its loop's progress is the progress
  const q = combinedProgress([job({ id: 'submitted' }), job({ id: 'loop', parent: 'submitted', n: 25, total: 100 })]);
  assert.deepEqual(q, { running: 2, n: 25, total: 100, fraction: 0.25 });
});

test('combined progress: nothing running, or no totals', () => {
  assert.deepEqual(combinedProgress([]), { running: 0, n: 0, total: 0, fraction: null });
  assert.equal(combinedProgress([job({ n: 5 })]).fraction, null);
  // a count past the total (tqdm allows it) does not push the fraction past 1
  assert.equal(combinedProgress([job({ n: 12, total: 10 })]).fraction, 1);
});

test('filters', () => {
  const running = job({ state: 'running' });
  const failed = job({ state: 'failed' });
  assert.ok(matchesFilter(running, 'all') && matchesFilter(failed, 'all'));
  assert.ok(matchesFilter(running, 'active') && !matchesFilter(failed, 'active'));
  assert.ok(!matchesFilter(running, 'finished') && matchesFilter(failed, 'finished'));
  assert.ok(matchesFilter(failed, 'failed') && !matchesFilter(failed, 'succeeded'));
});

test('order: newest first, children right after their parent, orphans at the top level', () => {
  const order = orderJobs([
    job({ id: 'old', created: 1 }),
    job({ id: 'new', created: 5 }),
    job({ id: 'child', parent: 'old', created: 2 }),
    job({ id: 'grandchild', parent: 'child', created: 3 }),
    job({ id: 'orphan', parent: 'gone', created: 4 })
  ]).map(o => `${o.job.id}:${o.depth}`);
  assert.deepEqual(order, ['new:0', 'orphan:0', 'old:0', 'child:1', 'grandchild:2']);
});

test('order survives a parent cycle in bad data', () => {
  const order = orderJobs([job({ id: 'a', parent: 'b' }), job({ id: 'b', parent: 'a' })]);
  assert.ok(order.length <= 2);
});

test('endings: only jobs seen running, once, past the threshold', () => {
  const t = new EndTracker();
  // an old finished job replayed on connect: quiet
  assert.equal(t.update(job({ id: 'old', state: 'succeeded', elapsed: 999 }), 30), null);
  assert.equal(t.update(job({ id: 'a', state: 'running', elapsed: 1 }), 30), null);
  const ended = job({ id: 'a', state: 'failed', elapsed: 45 });
  assert.equal(t.update(ended, 30), ended);
  assert.equal(t.update(ended, 30), null); // once
  // short jobs stay quiet
  t.update(job({ id: 'short', state: 'running' }), 30);
  assert.equal(t.update(job({ id: 'short', state: 'succeeded', elapsed: 2 }), 30), null);
  // lost is an ending too
  t.update(job({ id: 'l', state: 'pending' }), 0);
  assert.equal(t.update(job({ id: 'l', state: 'lost', elapsed: 0 }), 0)?.id, 'l');
});

test('end messages', () => {
  assert.equal(
    endMessage(job({ name: 'train', state: 'succeeded', elapsed: 75, path: 'a/b.ipynb' })),
    'train (b.ipynb) finished after 1 min 15 s'
  );
  assert.match(
    endMessage(job({ state: 'failed', elapsed: 3, error: { type: 'ValueError', message: 'bad' } })),
    /failed after 3 s: ValueError: bad$/
  );
  assert.match(endMessage(job({ state: 'cancelled' })), /was cancelled/);
  assert.match(endMessage(job({ state: 'lost' })), /was lost/);
});

test('paths compare without a drive prefix or leading slash', () => {
  assert.equal(normalizePath('RTC:dir/nb.ipynb'), 'dir/nb.ipynb');
  assert.equal(normalizePath('/dir/nb.ipynb'), 'dir/nb.ipynb');
  assert.equal(normalizePath('dir/a:b.ipynb'), 'dir/a:b.ipynb');
});

test('re-attach: running jobs of this notebook whose cell does not show them', () => {
  const jobs = [
    job({ id: 'lost-view', path: 'exp/train.ipynb', cell_id: 'c1', created: 2 }),
    job({ id: 'outer', path: 'exp/train.ipynb', cell_id: 'c1', created: 1 }),
    job({ id: 'shown', path: 'exp/train.ipynb', cell_id: 'c2' }),
    job({ id: 'finished', path: 'exp/train.ipynb', cell_id: 'c1', state: 'succeeded' }),
    job({ id: 'other-nb', path: 'other.ipynb', cell_id: 'c1' }),
    job({ id: 'no-cell', path: 'exp/train.ipynb', cell_id: 'deleted' }),
    job({ id: 'no-path', cell_id: 'c1' })
  ];
  const cells = [
    { id: 'c1', jobIds: new Set() },
    { id: 'c2', jobIds: new Set(['shown']) }
  ];
  const targets = reattachTargets(jobs, 'exp/train.ipynb', cells).map(t => `${t.cellId}:${t.job.id}`);
  assert.deepEqual(targets, ['c1:outer', 'c1:lost-view']); // oldest first: the outer bar above the inner one
  assert.deepEqual(reattachTargets(jobs, 'RTC:exp/train.ipynb', cells).length, 2);
  assert.deepEqual(reattachTargets(jobs, 'elsewhere.ipynb', cells), []);
});
