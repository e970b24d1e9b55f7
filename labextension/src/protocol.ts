/**
 * The wire rules of protocol v1, as jupyter_sse/protocol.py states them: written by scripts/gen-protocol-ts
 * from that module (run it after changing the module; a test fails while the two differ). Do not edit.
 * No DOM and no JupyterLab imports here, so node's test runner can load it.
 */

/** Where the API lives, under a server's base URL (which ends with "/"). */
export const API_PATH = 'jupyter-sse/api/';

/**
 * Jobs in a page of `GET jobs` when the client names no limit. Pages are bounded both ways: with a
 * hundred thousand jobs kept, one unbounded answer was 44 MB.
 */
export const DEFAULT_PAGE_SIZE = 100;

/**
 * An event id: `<epoch>.<seq>`, the epoch naming the server's history (1 to 64 of [A-Za-z0-9]) and the
 * seq increasing within it, or a bare seq (ids from before epochs). Opaque to clients; anchored, as
 * JOB_ID_PATTERN.
 */
export const EVENT_ID_PATTERN = '^(?:([A-Za-z0-9]{1,64})\\.)?([0-9]{1,30})$';

/**
 * The ends a publisher gives its own job, which never change again: what the kernel side means by
 * "ended".
 */
export const FINAL_STATES: ReadonlySet<string> = new Set([
  'succeeded',
  'failed',
  'cancelled',
]);

/** The characters of a job id: a regular-expression character class, without its brackets. */
export const JOB_ID_CHARS = 'A-Za-z0-9_-';

/** The longest job id. */
export const JOB_ID_MAX_LENGTH = 64;

/** A whole job id, anchored: usable as it is in JSON Schema, FastAPI and JavaScript. */
export const JOB_ID_PATTERN = '^[A-Za-z0-9_-]{1,64}$';

/** The rule of job ids in words, for error messages. */
export const JOB_ID_RULE = '1 to 64 characters of [A-Za-z0-9_-]';

/** What `progress` and `job` display; its data is `{"job_id": ..., "version": JOB_MIME_VERSION}`. */
export const JOB_MIME_TYPE = 'application/vnd.jupyter-sse.job+json';

/** The version of that data. */
export const JOB_MIME_VERSION = 1;

/** The longest log line. */
export const LOG_LINE_MAX_LENGTH = 8192;

/** The largest `POST updates` body. */
export const MAX_BODY_BYTES = 1048576;

/** The most jobs (and the most log batches) in one `POST updates`. */
export const MAX_JOBS_PER_REQUEST = 1000;

/** The most log lines in one `POST updates`. */
export const MAX_LOG_LINES_PER_REQUEST = 10000;

/** The largest metadata of a job, encoded as compact JSON. */
export const MAX_METADATA_BYTES = 4096;

/** The most URLs in a job's `metadata.notify`. */
export const MAX_NOTIFY_TARGETS = 10;

/** The largest count, total or rate: beyond it a number is a bug, and browsers lose integer precision. */
export const MAX_NUMBER = 1000000000000000000;

/** The largest page of `GET jobs` a client may ask for. */
export const MAX_PAGE_SIZE = 1000;

/** The longest name, unit, error type, kernel id or cell id. */
export const NAME_MAX_LENGTH = 256;

/** The states a publisher may send (`lost` is the server's to give). */
export const PUBLISHED_STATES = [
  'pending',
  'running',
  'succeeded',
  'failed',
  'cancelled',
] as const;

/** Every state of a job, in the order of its life. */
export const STATES = [
  'pending',
  'running',
  'succeeded',
  'failed',
  'cancelled',
  'lost',
] as const;

/**
 * A job in one of these has ended: its stream ends, it may be deleted. `lost` (its kernel died, or its
 * publisher went silent past a lease) is one, although the job comes back to running if its publisher
 * reports.
 */
export const TERMINAL_STATES: ReadonlySet<string> = new Set([
  'succeeded',
  'failed',
  'cancelled',
  'lost',
]);

/** The longest message, error message or path. */
export const TEXT_MAX_LENGTH = 4096;

/**
 * The header a page sends with a cancel or a removal that only its login cookie authenticates (the
 * team hub behind JupyterHub): a page of another origin cannot send it without a CORS preflight, which
 * the hub never grants.
 */
export const WRITE_HEADER = 'X-Jupyter-SSE-Request';

/** The names of the SSE events a stream carries. Clients ignore names they do not know. */
export const EventKind = {
  JOB: 'job',
  LOG: 'log',
  REMOVED: 'removed',
  RESET: 'reset',
} as const;
