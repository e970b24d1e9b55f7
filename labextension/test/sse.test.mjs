// The SSE parser against the cases the WHATWG spec spells out. Runs on the compiled lib/ (npm run build:lib).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { SSEParser } from '../lib/sse.js';

function parse(chunks) {
  const events = [];
  const retries = [];
  const parser = new SSEParser(
    e => events.push(e),
    ms => retries.push(ms)
  );
  for (const chunk of chunks) {
    parser.feed(chunk);
  }
  return { events, retries, parser };
}

test('an event with id, type and multi-line data', () => {
  const { events } = parse(['id: 7\nevent: job\ndata: {"a":\ndata: 1}\n\n']);
  assert.deepEqual(events, [{ type: 'job', data: '{"a":\n1}', lastEventId: '7' }]);
});

test('comments, retry and a leading BOM are handled; blank data-less events are not dispatched', () => {
  const { events, retries } = parse(['\ufeffretry: 2000\n: jupyter-sse v1\n\n', 'event: x\n\n', 'data: y\n\n']);
  assert.deepEqual(retries, [2000]);
  assert.deepEqual(events, [{ type: 'message', data: 'y', lastEventId: '' }]);
});

test('CRLF, CR and LF line ends, split anywhere across chunks', () => {
  const text = 'id: 1\r\nevent: job\rdata: a\n\r\nid: 2\ndata: b\r\r';
  for (let size = 1; size <= text.length; size++) {
    const chunks = [];
    for (let i = 0; i < text.length; i += size) {
      chunks.push(text.slice(i, i + size));
    }
    const { events, parser } = parse(chunks);
    assert.deepEqual(
      events.map(e => [e.type, e.data, e.lastEventId]),
      [
        ['job', 'a', '1'],
        ['message', 'b', '2']
      ],
      `chunk size ${size}`
    );
    assert.equal(parser.lastEventId, '2');
  }
});

test('a field without a colon, only one leading space stripped, unknown fields and bad retry ignored', () => {
  const { events, retries } = parse(['data\ndata:  two\nfoo: bar\nretry: 12x\n\n']);
  assert.deepEqual(events, [{ type: 'message', data: '\n two', lastEventId: '' }]);
  assert.deepEqual(retries, []);
});

test('an id containing NULL is ignored and the id persists across events', () => {
  const { events } = parse(['id: 5\ndata: a\n\nid: x\u0000y\ndata: b\n\n']);
  assert.deepEqual(
    events.map(e => e.lastEventId),
    ['5', '5']
  );
});

test('an event cut off by the end of the stream is discarded on reset', () => {
  const events = [];
  const parser = new SSEParser(e => events.push(e));
  parser.feed('id: 3\ndata: partial\n');
  parser.reset();
  parser.feed('data: whole\n\n');
  assert.deepEqual(events, [{ type: 'message', data: 'whole', lastEventId: '3' }]);
});
