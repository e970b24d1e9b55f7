/**
 * One SSE connection per browser tab, shared by every JobWidget view, the job panel, the status bar item and
 * the notifications.
 *
 * Browsers allow 6 HTTP/1.1 connections per origin, and a notebook can hold 20 bars, so views never open their
 * own stream: they `watch` a job id here, or listen to `changed` while they `hold` the stream open. The stream is
 * the unfiltered `GET events` (every job of this server), started on the first hold, with the latest snapshot of
 * each job cached (jobcache.ts) so a new view (a re-rendered output, a reloaded notebook) draws at once. It is
 * opened with fetch through ServerConnection, so it carries JupyterLab's auth and honours base_url, and it
 * reconnects with backoff (backoff.ts) and Last-Event-ID, so the server resends only what changed while it was away.
 *
 * `useHub` points it at a team hub (`jupyter sse hub`, which serves the same API) instead: the panel and every
 * view then show the user's jobs of all their servers, as the hub has them.
 */
import { ServerConnection } from '@jupyterlab/services';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { parseRetryAfter, reconnectDelay } from './backoff';
import { IJobPage, IJobSnapshot, JobCache, emptySnapshot } from './jobcache';
import { WRITE_HEADER } from './protocol';
import { SSEParser } from './sse';

/** A job as the server sends it (docs/protocol.md, "Job"). */
export interface IJob {
  id: string;
  name: string;
  state: 'pending' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'lost';
  n: number;
  total: number | null;
  unit: string;
  message: string;
  created: number;
  updated: number;
  finished: number | null;
  elapsed: number;
  rate: number | null;
  eta: number | null;
  error: { type: string; message: string } | null;
  cancel_requested: boolean;
  [key: string]: unknown;
}

export type { IJobSnapshot };

/**
 * One change of what the tab knows of a job: a `job` or `log` event, a `removed` one, the job forgotten by a
 * `reset`, or the server's answer about it after one (`confirmed`).
 */
export interface IJobChange {
  readonly jobId: string;
  readonly kind: 'job' | 'log' | 'removed' | 'reset' | 'confirmed';
  readonly snapshot: IJobSnapshot;
}

/** The connection as the panel shows it. */
export interface IStreamStatus {
  /** A response is being read. */
  readonly connected: boolean;
  /** Connections tried so far. */
  readonly connections: number;
  /** Date.now() of the next attempt while waiting to reconnect, else null. */
  readonly retryAt: number | null;
  /** The HTTP status of the last refused attempt (503 at the server's cap on streams), else null. */
  readonly refusedStatus: number | null;
  /** The wait comes from the server's Retry-After. */
  readonly retryAfter: boolean;
  /** The team hub refuses this browser until it logs in to it (and logging in without a click failed). */
  readonly needsLogin: boolean;
}

// with nothing holding it the stream closes after this; a view re-rendered meanwhile keeps it open
const IDLE_CLOSE_MS = 10000;

export function apiUrl(settings: ServerConnection.ISettings, path: string): string {
  const base = settings.baseUrl.endsWith('/') ? settings.baseUrl : settings.baseUrl + '/';
  return base + 'jupyter-sse/api/' + path;
}

/**
 * The settings for a team hub at `hubUrl`: absolute, or a path on this origin (`/services/jupyter-sse/` when it runs
 * as a JupyterHub service). Throws on a URL that cannot be read.
 */
export function hubSettings(hubUrl: string): ServerConnection.ISettings {
  const href = new URL(hubUrl, window.location.href).href;
  // never this server's token: the hub authenticates on its own (JupyterHub's login, through its cookie)
  return ServerConnection.makeSettings({
    baseUrl: href.endsWith('/') ? href : href + '/',
    token: '',
    appendToken: false
  });
}

/**
 * Sent with every cancel and removal: the team hub takes its login cookie for a write only with this header (a page
 * of another origin cannot send it), and this server ignores it (its XSRF header does that job).
 */
const WRITE: Record<string, string> = { [WRITE_HEADER]: '1' };

/** The server answered the events request with an error instead of a stream. */
class StreamRefused extends Error {
  constructor(
    readonly status: number,
    readonly retryAfterMs: number | null
  ) {
    super(`GET events: HTTP ${status}`);
  }
}

function sleep(ms: number, stop: AbortSignal): Promise<void> {
  return new Promise(resolve => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      stop.removeEventListener('abort', done);
      resolve();
    }
    stop.addEventListener('abort', done);
  });
}

export class JobStream {
  constructor(settings?: ServerConnection.ISettings) {
    this._settings = settings ?? ServerConnection.makeSettings();
  }

  get settings(): ServerConnection.ISettings {
    return this._settings;
  }

  /** The team hub the stream reads from ('' for this server). */
  get hubUrl(): string {
    return this._hub;
  }

  /**
   * Read from the team hub at `hubUrl` ('' for this server again). What was known is forgotten (another server's
   * jobs and event ids mean nothing here) and the stream reconnects if it was open. A URL that cannot be read
   * changes nothing and is logged.
   */
  useHub(hubUrl: string): void {
    const hub = hubUrl.trim();
    if (hub === this._hub) {
      return;
    }
    let settings: ServerConnection.ISettings;
    try {
      settings = hub ? hubSettings(hub) : ServerConnection.makeSettings();
    } catch (err) {
      console.warn(`jupyter-sse: the hubUrl setting ${JSON.stringify(hub)} is no URL; nothing changed`, err);
      return;
    }
    if (hub && new URL(settings.baseUrl).origin !== window.location.origin) {
      console.warn(
        `jupyter-sse: the team hub ${settings.baseUrl} is on another origin: unless a proxy in front of it ` +
          'answers CORS requests for this page, the browser refuses its answers'
      );
    }
    this._hub = hub;
    this._settings = settings;
    this._loginTried = false;
    this._parser.lastEventId = '';
    this._forgetAll();
    this._setStatus({ needsLogin: false });
    if (this._stopper !== null) {
      this._stop();
      this._start();
    }
  }

  /** Every change of a job's snapshot. Listeners also `hold()` the stream, or nothing arrives. */
  get changed(): ISignal<this, IJobChange> {
    return this._changed;
  }

  /** The server reset the stream: everything known was forgotten (each job's `reset` change follows). */
  get reset(): ISignal<this, void> {
    return this._reset;
  }

  /** The connection opened, closed, or a reconnect was scheduled. */
  get statusChanged(): ISignal<this, IStreamStatus> {
    return this._statusChanged;
  }

  get status(): IStreamStatus {
    return this._status;
  }

  /** True while a response is being read. */
  get connected(): boolean {
    return this._status.connected;
  }

  /** Number of connections opened so far. */
  get connections(): number {
    return this._status.connections;
  }

  /** The cached state of a job (an empty one if the tab knows nothing of it). */
  snapshot(jobId: string): IJobSnapshot {
    return this._cache.get(jobId) ?? emptySnapshot(performance.now());
  }

  /**
   * Every job the stream knows now, in no particular order: on connect the server sends the unfinished jobs and the
   * most recent finished ones; older ones are read by page (`page`).
   */
  jobs(): IJob[] {
    return this._cache.jobs();
  }

  /** Keep the stream open (it opens now if it was closed) until the returned handle is disposed. */
  hold(): IDisposable {
    this._holds++;
    if (this._idleTimer !== null) {
      clearTimeout(this._idleTimer);
      this._idleTimer = null;
    }
    this._start();
    return new DisposableDelegate(() => {
      this._holds--;
      if (this._holds === 0 && this._idleTimer === null) {
        this._idleTimer = setTimeout(() => {
          this._idleTimer = null;
          if (this._holds === 0) {
            this._stop();
          }
        }, IDLE_CLOSE_MS);
      }
    });
  }

  /** Call `watcher` with the job's snapshot now (if cached) and on every change, holding the stream open. */
  watch(jobId: string, watcher: (snapshot: IJobSnapshot) => void): IDisposable {
    const slot = (_sender: JobStream, change: IJobChange) => {
      if (change.jobId === jobId) {
        watcher(change.snapshot);
      }
    };
    this._changed.connect(slot);
    this._watched.set(jobId, (this._watched.get(jobId) ?? 0) + 1);
    const hold = this.hold();
    const known = this._cache.get(jobId);
    if (known !== undefined && (known.job !== null || known.removed)) {
      watcher(known);
    }
    return new DisposableDelegate(() => {
      this._changed.disconnect(slot);
      const left = (this._watched.get(jobId) ?? 1) - 1;
      if (left > 0) {
        this._watched.set(jobId, left);
      } else {
        this._watched.delete(jobId);
      }
      hold.dispose();
    });
  }

  /** One page of GET jobs, newest first: pass the previous page's `next` as `cursor` for the following one. */
  async page(cursor: string | null, limit = 100): Promise<IJobPage> {
    const query = `jobs?limit=${limit}` + (cursor ? `&cursor=${encodeURIComponent(cursor)}` : '');
    const response = await ServerConnection.makeRequest(apiUrl(this._settings, query), {}, this._settings);
    if (!response.ok) {
      throw new ServerConnection.ResponseError(response, `GET jobs failed: ${response.status}`);
    }
    const body = (await response.json()) as Partial<IJobPage>;
    const jobs = Array.isArray(body.jobs) ? body.jobs : [];
    // a server from before pages sends every job, with no total and no next
    return { jobs, total: typeof body.total === 'number' ? body.total : jobs.length, next: body.next ?? null };
  }

  /** Ask the server to forget a finished job: DELETE jobs/{id} (409 while it runs). */
  async remove(jobId: string): Promise<void> {
    const url = apiUrl(this._settings, 'jobs/' + encodeURIComponent(jobId));
    const response = await ServerConnection.makeRequest(url, { method: 'DELETE', headers: WRITE }, this._settings);
    if (!response.ok && response.status !== 404) {
      throw new ServerConnection.ResponseError(response, `remove failed: ${response.status}`);
    }
  }

  /** Ask the server to cancel a job: POST jobs/{id}/cancel (ServerConnection adds the XSRF header). */
  async cancel(jobId: string): Promise<IJob> {
    const url = apiUrl(this._settings, 'jobs/' + encodeURIComponent(jobId) + '/cancel');
    const response = await ServerConnection.makeRequest(url, { method: 'POST', headers: WRITE }, this._settings);
    if (!response.ok) {
      throw new ServerConnection.ResponseError(response, `cancel failed: ${response.status}`);
    }
    return (await response.json()) as IJob;
  }

  private _start(): void {
    if (this._stopper !== null) {
      return;
    }
    this._stopper = new AbortController();
    void this._loop(this._stopper.signal);
  }

  private _stop(): void {
    this._stopper?.abort();
    this._stopper = null;
  }

  private _setStatus(change: Partial<IStreamStatus>): void {
    this._status = { ...this._status, ...change };
    this._statusChanged.emit(this._status);
  }

  /** One loop per start: it ends when `stop` aborts (which also aborts the read and the wait in progress). */
  private async _loop(stop: AbortSignal): Promise<void> {
    let backoff = 0;
    while (!stop.aborted) {
      let retryAfterMs: number | null = null;
      let refusedStatus: number | null = null;
      try {
        await this._connect(stop, () => {
          backoff = 0; // the server answered: the next drop reconnects after the server's retry only
        });
      } catch (err) {
        if (stop.aborted) {
          break;
        }
        if (err instanceof StreamRefused) {
          refusedStatus = err.status;
          retryAfterMs = err.retryAfterMs;
        }
        console.debug('jupyter-sse: event stream failed', err);
      }
      if (stop.aborted) {
        break;
      }
      if (refusedStatus === 403 && this._hub && !this._loginTried) {
        this._loginTried = true;
        const loggedIn = await this._login(stop);
        this._setStatus({ needsLogin: !loggedIn });
        if (loggedIn) {
          continue;
        }
      }
      const next = reconnectDelay(backoff, this._retryMs, retryAfterMs, Math.random());
      backoff = next.backoff;
      this._setStatus({
        connected: false,
        retryAt: Date.now() + next.delay,
        refusedStatus,
        retryAfter: retryAfterMs !== null
      });
      await sleep(next.delay, stop);
    }
    // a loop stopped for a restart (useHub) leaves the status to the loop that replaced it
    const replaced = this._stopper !== null && this._stopper.signal !== stop;
    if (!replaced && (this._status.connected || this._status.retryAt !== null)) {
      this._setStatus({ connected: false, retryAt: null });
    }
  }

  private async _connect(signal: AbortSignal, onOpen: () => void): Promise<void> {
    const headers: Record<string, string> = { Accept: 'text/event-stream' };
    if (this._parser.lastEventId) {
      headers['Last-Event-ID'] = this._parser.lastEventId;
    }
    this._setStatus({ connections: this._status.connections + 1 });
    const response = await ServerConnection.makeRequest(
      apiUrl(this._settings, 'events'),
      { method: 'GET', headers, signal, cache: 'no-store' },
      this._settings
    );
    if (!response.ok || !response.body) {
      // Retry-After means something only with these two (RFC 9110)
      const honoured = response.status === 503 || response.status === 429;
      const retryAfter = honoured ? parseRetryAfter(response.headers.get('Retry-After'), Date.now()) : null;
      void response.body?.cancel().catch(() => undefined);
      throw new StreamRefused(response.status, retryAfter);
    }
    onOpen();
    this._loginTried = false;
    this._setStatus({ connected: true, retryAt: null, refusedStatus: null, retryAfter: false, needsLogin: false });
    const reader = response.body.getReader();
    const decoder = new TextDecoder('utf-8');
    this._parser.reset();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) {
          break;
        }
        this._parser.feed(decoder.decode(value, { stream: true }));
      }
    } finally {
      reader.releaseLock();
    }
  }

  /**
   * A hub run as a JupyterHub service answers 403 until this browser has its login cookie. Its OAuth login is a
   * chain of redirects on this origin, which fetch follows: a user logged in to JupyterHub gets the cookie without
   * a click. Whether it worked: the answer at the end is the hub's JSON, not a page asking for something.
   */
  private async _login(signal: AbortSignal): Promise<boolean> {
    try {
      const response = await fetch(apiUrl(this._settings, 'jobs?limit=1'), {
        headers: { Accept: 'text/html' },
        credentials: 'same-origin',
        redirect: 'follow',
        cache: 'no-store',
        signal
      });
      void response.body?.cancel().catch(() => undefined);
      return response.ok && (response.headers.get('Content-Type') ?? '').includes('json');
    } catch (err) {
      console.debug('jupyter-sse: logging in to the team hub failed', err);
      return false;
    }
  }

  private _onEvent(type: string, data: string): void {
    let payload: Record<string, unknown>;
    try {
      payload = JSON.parse(data);
    } catch {
      return;
    }
    if (type === 'reset') {
      this._forgetAll();
      return;
    }
    const jobId = this._cache.apply(type, payload, performance.now());
    if (jobId === null) {
      return; // an event this version does not know: ignored, as the protocol says
    }
    this._emit(jobId, type as IJobChange['kind']);
  }

  private _emit(jobId: string, kind: IJobChange['kind']): void {
    this._changed.emit({ jobId, kind, snapshot: this.snapshot(jobId) });
  }

  /** The server no longer has the history we resumed from: forget it all, then take the sync that follows. */
  private _forgetAll(): void {
    const known = this._cache.reset();
    this._reset.emit();
    for (const jobId of known) {
      this._emit(jobId, 'reset');
      if (this._watched.has(jobId)) {
        void this._confirm(jobId);
      }
    }
  }

  /** Ask the server about a job a view shows, which the sync may have left out (an older finished one). */
  private async _confirm(jobId: string): Promise<void> {
    let job: IJob | null = null;
    try {
      const url = apiUrl(this._settings, 'jobs/' + encodeURIComponent(jobId));
      const response = await ServerConnection.makeRequest(url, {}, this._settings);
      if (response.status === 404) {
        job = null;
      } else if (response.ok) {
        job = (await response.json()) as IJob;
      } else {
        return; // not known either way: the stream will tell
      }
    } catch (err) {
      console.debug('jupyter-sse: checking a job after a reset failed', err);
      return;
    }
    if (this._cache.confirm(jobId, job, performance.now())) {
      this._emit(jobId, 'confirmed');
    }
  }

  private _settings: ServerConnection.ISettings;
  private readonly _parser = new SSEParser(
    event => this._onEvent(event.type, event.data),
    ms => {
      this._retryMs = ms;
    }
  );
  private readonly _cache = new JobCache();
  private readonly _changed = new Signal<this, IJobChange>(this);
  private readonly _reset = new Signal<this, void>(this);
  private readonly _statusChanged = new Signal<this, IStreamStatus>(this);
  private _status: IStreamStatus = {
    connected: false,
    connections: 0,
    retryAt: null,
    refusedStatus: null,
    retryAfter: false,
    needsLogin: false
  };
  // how many views watch each job id: after a reset, only these are checked with the server
  private readonly _watched = new Map<string, number>();
  private _holds = 0;
  private _idleTimer: ReturnType<typeof setTimeout> | null = null;
  private _stopper: AbortController | null = null;
  private _retryMs = 2000;
  private _hub = '';
  private _loginTried = false;
}

let shared: JobStream | null = null;

/** The tab's stream, made on first use. */
export function getJobStream(): JobStream {
  if (shared === null) {
    shared = new JobStream();
  }
  return shared;
}
