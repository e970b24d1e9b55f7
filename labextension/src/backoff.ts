/**
 * When the shared stream reconnects. No DOM here, so node's test runner can load it.
 *
 * Normally: after the server's `retry:` hint, then doubling up to a cap, with jitter so that the tabs of many users
 * do not all come back in the same second after a restart. When the server refused the stream (503 at its cap on
 * event streams) and said when to come back (`Retry-After`), that time wins: coming back sooner would only be
 * refused again, and a doubled backoff could leave a tab disconnected long after a slot is free. Jitter is only
 * added to it, never taken off, and the wait is bounded, so a bad header cannot park a tab for hours.
 */

export const MIN_BACKOFF_MS = 500;
export const MAX_BACKOFF_MS = 30000;
/** The longest a Retry-After is honoured. */
export const MAX_RETRY_AFTER_MS = 300000;
/** The most jitter added to a Retry-After, as a fraction of it. */
export const RETRY_AFTER_JITTER = 0.2;

/**
 * A `Retry-After` header's value in milliseconds from `now`: delay-seconds or an HTTP date (RFC 9110, 10.2.3);
 * null when absent or unreadable.
 */
export function parseRetryAfter(value: string | null, now: number): number | null {
  if (value === null) {
    return null;
  }
  const text = value.trim();
  if (/^[0-9]+$/.test(text)) {
    return parseInt(text, 10) * 1000;
  }
  // an HTTP date names its day ("Sun, 06 Nov 1994 08:49:37 GMT"); Date.parse alone would take "-3" for a year
  const date = /^[A-Za-z]{3},/.test(text) ? Date.parse(text) : NaN;
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

export interface IReconnect {
  /** How long to wait before the next attempt (ms). */
  delay: number;
  /** The backoff to carry to the attempt after it (0: start again from the server's hint). */
  backoff: number;
}

/**
 * The wait before the next connect: `backoff` is the previous one (0 after a stream the server answered),
 * `retryMs` the server's `retry:` hint, `retryAfterMs` the refusal's Retry-After (or null), `random` in [0, 1).
 */
export function reconnectDelay(
  backoff: number,
  retryMs: number,
  retryAfterMs: number | null,
  random: number
): IReconnect {
  if (retryAfterMs !== null) {
    const wait = Math.min(Math.max(retryAfterMs, MIN_BACKOFF_MS), MAX_RETRY_AFTER_MS);
    return { delay: Math.round(wait * (1 + RETRY_AFTER_JITTER * random)), backoff: 0 };
  }
  const base = backoff === 0 ? Math.max(retryMs, MIN_BACKOFF_MS) : Math.min(backoff * 2, MAX_BACKOFF_MS);
  return { delay: Math.round(base * (0.75 + random * 0.5)), backoff: base };
}
