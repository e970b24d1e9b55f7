// The one bar model of the cell view and the panel (lib/bar.js): rounding, the indeterminate test, and what ARIA
// is told. Runs on the compiled lib/ (the DOM part is driven by the browser tests).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { barModel } from '../lib/bar.js';
import { job } from './_job.mjs';

test('a known total: the width is exact, the percent rounded down, 100% only when done', () => {
  const bar = barModel(job({ n: 2, total: 3 }), false);
  assert.deepEqual(bar, {
    indeterminate: false,
    width: '66.67%',
    percent: 66,
    valueNow: 2,
    valueMax: 3,
    valueText: null
  });
  assert.equal(barModel(job({ n: 999, total: 1000 }), false).percent, 99);
  assert.equal(barModel(job({ n: 1000, total: 1000, state: 'succeeded' }), false).percent, 100);
});

test('a count beyond the total, or below zero, stays inside the bar and inside ARIA range', () => {
  assert.deepEqual(
    [barModel(job({ n: 12, total: 10 }), false).valueNow, barModel(job({ n: 12, total: 10 }), false).width],
    [10, '100.00%']
  );
  assert.equal(barModel(job({ n: -1, total: 10 }), false).valueNow, 0);
});

test('no total while running or pending: indeterminate, with no aria-valuenow and the count as text', () => {
  for (const state of ['running', 'pending']) {
    const bar = barModel(job({ state, n: 1500000, unit: 'B' }), false);
    assert.equal(bar.indeterminate, true);
    assert.equal(bar.width, '');
    assert.equal(bar.valueNow, null);
    assert.equal(bar.valueMax, null);
    assert.equal(bar.valueText, '1.50e+6 B');
    assert.equal(bar.percent, null);
  }
  assert.equal(barModel(job({ total: 0 }), false).indeterminate, true); // a total of 0 is no total
});

test('an ended job without a total stands still, full; a removed job stands still, empty', () => {
  for (const state of ['succeeded', 'failed', 'cancelled', 'lost']) {
    const bar = barModel(job({ state, n: 7 }), false);
    assert.deepEqual([bar.indeterminate, bar.width, bar.valueNow, bar.valueText], [false, '100%', null, '7 it']);
  }
  const removed = barModel(null, true);
  assert.deepEqual(
    [removed.indeterminate, removed.width, removed.valueNow, removed.valueText],
    [false, '0%', null, 'removed']
  );
  // a view still waiting for its job's first event slides, as a running job without a total does
  const waiting = barModel(null, false);
  assert.deepEqual([waiting.indeterminate, waiting.valueNow, waiting.valueText], [true, null, 'waiting']);
});
