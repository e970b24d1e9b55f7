/**
 * A Server-Sent Events parser, per the WHATWG HTML spec ("Parsing an event stream").
 *
 * Why our own instead of EventSource or a library: EventSource cannot send headers (JupyterLab's token), and the
 * maintained fetch-based libraries either pull in more than we need or own the reconnect loop, which here must be
 * shared by every widget in the tab. The spec's algorithm is a few dozen lines; test/sse.test.mjs checks it.
 */

export interface ISSEEvent {
  /** The event type: the `event:` field, or "message". */
  type: string;
  /** The `data:` lines joined with "\n". */
  data: string;
  /** The last event id seen on this stream (persists across events, as the spec says). */
  lastEventId: string;
}

export class SSEParser {
  constructor(
    private readonly onEvent: (event: ISSEEvent) => void,
    private readonly onRetry: (ms: number) => void = () => undefined
  ) {}

  /** The id to send as Last-Event-ID when reconnecting. */
  lastEventId = '';

  /** Feed decoded text; complete lines are processed, a partial line waits for the next chunk. */
  feed(text: string): void {
    let buf = this._pending + text;
    if (this._first) {
      if (buf.length === 0) {
        return;
      }
      this._first = false;
      if (buf.charCodeAt(0) === 0xfeff) {
        buf = buf.slice(1); // one leading BOM is ignored
      }
    }
    let start = 0;
    if (this._afterCR && buf.charCodeAt(0) === 10) {
      start = 1; // the LF of a CRLF split across chunks
    }
    this._afterCR = false;
    for (let i = start; i < buf.length; i++) {
      const c = buf.charCodeAt(i);
      if (c !== 10 && c !== 13) {
        continue;
      }
      // a CR ends the line at once (so an event ending in CR is not held back); a following LF is skipped
      this._line(buf.slice(start, i));
      if (c === 13) {
        if (i + 1 === buf.length) {
          this._afterCR = true;
        } else if (buf.charCodeAt(i + 1) === 10) {
          i++;
        }
      }
      start = i + 1;
    }
    this._pending = buf.slice(start);
  }

  /** The stream ended: an event without its blank line is discarded (spec), and state is reset for a reconnect. */
  reset(): void {
    this._pending = '';
    this._data = '';
    this._type = '';
    this._hasData = false;
    this._first = true;
    this._afterCR = false;
  }

  private _line(line: string): void {
    if (line === '') {
      this._dispatch();
      return;
    }
    if (line.charCodeAt(0) === 58 /* ':' */) {
      return; // a comment (the server's heartbeat)
    }
    const colon = line.indexOf(':');
    let field = line;
    let value = '';
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.charCodeAt(0) === 32) {
        value = value.slice(1);
      }
    }
    switch (field) {
      case 'event':
        this._type = value;
        break;
      case 'data':
        this._data += value + '\n';
        this._hasData = true;
        break;
      case 'id':
        if (value.indexOf('\u0000') < 0) {
          this.lastEventId = value;
        }
        break;
      case 'retry':
        if (/^[0-9]+$/.test(value)) {
          this.onRetry(parseInt(value, 10));
        }
        break;
      default:
        break; // unknown fields are ignored
    }
  }

  private _dispatch(): void {
    const hasData = this._hasData;
    const data = this._data;
    const type = this._type || 'message';
    this._data = '';
    this._type = '';
    this._hasData = false;
    if (!hasData) {
      return;
    }
    this.onEvent({ type, data: data.slice(0, -1), lastEventId: this.lastEventId });
  }

  private _pending = '';
  private _data = '';
  private _type = '';
  private _hasData = false;
  private _first = true;
  private _afterCR = false;
}
