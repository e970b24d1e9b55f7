/**
 * One SSE connection per browser tab, shared by every JobWidget view, the job panel, the status bar item and
 * the notifications (`watchAll`).
 *
 * Browsers allow 6 HTTP/1.1 connections per origin, and a notebook can hold 20 bars, so views never open their
 * own stream: they `watch` a job id here. The stream is the unfiltered `GET events` (every job of this server),
 * started on the first watch, dispatched by job id, with the latest Job snapshot and the last few log lines
 * cached per job so a new view (a re-rendered output, a reloaded notebook) draws at once. It is opened with
 * fetch through ServerConnection, so it carries JupyterLab's auth and honours base_url, and it reconnects with
 * backoff and Last-Event-ID, so the server resends only what changed while it was away.
 */
import { ServerConnection } from '@jupyterlab/services';

import { IJobPage, JobCache } from './jobcache';
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

/** What a watcher is told: the job (null until the server has it), its last log lines, and when it arrived. */
export interface IJobSnapshot {
  job: IJob | null;
  logs: string[];
  /** performance.now() when `job` arrived: views tick elapsed time from it while the job runs. */
  receivedAt: number;
  /** The job was deleted on the server. */
  removed: boolean;
}

export type JobWatcher = (snapshot: IJobSnapshot) => void;

/** What an "all jobs" watcher is told: one job changed (or was removed: `snapshot.removed`). */
export type AllJobsWatcher = (jobId: string, snapshot: IJobSnapshot) => void;

export { TERMINAL_STATES } from './protocol.js';
// the key "all jobs" watchers hold in the watcher count (not a valid job id, so no job can have it)
const ALL_JOBS = '*';
const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 30000;
// with no watchers left the stream closes after this; a view re-rendered meanwhile keeps it open
const IDLE_CLOSE_MS = 10000;

export function apiUrl(settings: ServerConnection.ISettings, path: string): string {
  const base = settings.baseUrl.endsWith('/') ? settings.baseUrl : settings.baseUrl + '/';
  return base + 'jupyter-sse/api/' + path;
}

export class JobStream {
  constructor(settings?: ServerConnection.ISettings) {
    this._settings = settings ?? ServerConnection.makeSettings();
  }

  get settings(): ServerConnection.ISettings {
    return this._settings;
  }

  /** True while a response is being read. */
  get connected(): boolean {
    return this._connected;
  }

  /** Number of connections opened so far (tests and the panel's status use it). */
  get connections(): number {
    return this._connections;
  }

  /** The cached state of a job. */
  snapshot(jobId: string): IJobSnapshot {
    const cache = this._cache;
    return {
      job: cache.jobs.get(jobId) ?? null,
      logs: cache.logs.get(jobId) ?? [],
      receivedAt: cache.receivedAt.get(jobId) ?? performance.now(),
      removed: cache.removed.has(jobId)
    };
  }

  /** Call `watcher` with the job's state now (if cached) and on every change; returns the unwatch function. */
  watch(jobId: string, watcher: JobWatcher): () => void {
    let set = this._watchers.get(jobId);
    if (!set) {
      set = new Set();
      this._watchers.set(jobId, set);
    }
    set.add(watcher);
    this._watchCount++;
    if (this._idleTimer !== null) {
      clearTimeout(this._idleTimer);
      this._idleTimer = null;
    }
    if (this._cache.jobs.has(jobId)) {
      watcher(this.snapshot(jobId));
    }
    this._start();
    let active = true;
    return () => {
      if (!active) {
        return;
      }
      active = false;
      set!.delete(watcher);
      if (set!.size === 0) {
        this._watchers.delete(jobId);
      }
      this._watchCount--;
      if (this._watchCount === 0 && this._idleTimer === null) {
        this._idleTimer = setTimeout(() => {
          this._idleTimer = null;
          if (this._watchCount === 0) {
            this._stop();
          }
        }, IDLE_CLOSE_MS);
      }
    };
  }

  /**
   * Every job the stream knows now, in no particular order: on connect the server sends the unfinished jobs and the
   * most recent finished ones; older ones are read by page (`page`).
   */
  jobs(): IJob[] {
    return Array.from(this._cache.jobs.values());
  }

  /** Call `watcher` when the server resets the stream (what was known is forgotten); returns the unwatch function. */
  onReset(watcher: () => void): () => void {
    this._resetWatchers.add(watcher);
    return () => this._resetWatchers.delete(watcher);
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

  /**
   * Call `watcher` on every `job` and `removed` event of any job (the job panel, the status bar, notifications);
   * returns the unwatch function. It keeps the stream open like a job watcher does.
   */
  watchAll(watcher: AllJobsWatcher): () => void {
    this._allWatchers.add(watcher);
    const unwatch = this.watch(ALL_JOBS, () => undefined);
    return () => {
      this._allWatchers.delete(watcher);
      unwatch();
    };
  }

  /** Ask the server to forget a finished job: DELETE jobs/{id} (409 while it runs). */
  async remove(jobId: string): Promise<void> {
    const url = apiUrl(this._settings, 'jobs/' + encodeURIComponent(jobId));
    const response = await ServerConnection.makeRequest(url, { method: 'DELETE' }, this._settings);
    if (!response.ok && response.status !== 404) {
      throw new ServerConnection.ResponseError(response, `remove failed: ${response.status}`);
    }
  }

  /** Ask the server to cancel a job: POST jobs/{id}/cancel (ServerConnection adds the XSRF header). */
  async cancel(jobId: string): Promise<IJob> {
    const url = apiUrl(this._settings, 'jobs/' + encodeURIComponent(jobId) + '/cancel');
    const response = await ServerConnection.makeRequest(url, { method: 'POST' }, this._settings);
    if (!response.ok) {
      throw new ServerConnection.ResponseError(response, `cancel failed: ${response.status}`);
    }
    return (await response.json()) as IJob;
  }

  private _start(): void {
    if (this._running) {
      return;
    }
    this._running = true;
    void this._loop();
  }

  private _stop(): void {
    this._running = false;
    this._abort?.abort();
    this._abort = null;
  }

  private async _loop(): Promise<void> {
    let backoff = 0;
    while (this._running) {
      const abort = new AbortController();
      this._abort = abort;
      try {
        await this._connect(abort.signal, () => {
          backoff = 0; // the server answered: the next drop reconnects after the server's retry only
        });
      } catch (err) {
        if (!this._running) {
          break;
        }
        console.debug('jupyter-sse: event stream failed', err);
      } finally {
        this._connected = false;
      }
      if (!this._running) {
        break;
      }
      // exponential backoff with jitter, from the server's retry hint, capped
      const base = backoff === 0 ? Math.max(this._retryMs, MIN_BACKOFF_MS) : Math.min(backoff * 2, MAX_BACKOFF_MS);
      backoff = base;
      await new Promise(resolve => setTimeout(resolve, base * (0.75 + Math.random() * 0.5)));
    }
  }

  private async _connect(signal: AbortSignal, onOpen: () => void): Promise<void> {
    const headers: Record<string, string> = { Accept: 'text/event-stream' };
    if (this._parser.lastEventId) {
      headers['Last-Event-ID'] = this._parser.lastEventId;
    }
    this._connections++;
    const response = await ServerConnection.makeRequest(
      apiUrl(this._settings, 'events'),
      { method: 'GET', headers, signal, cache: 'no-store' },
      this._settings
    );
    if (!response.ok || !response.body) {
      throw new Error(`GET events: HTTP ${response.status}`);
    }
    this._connected = true;
    onOpen();
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

  private _onEvent(type: string, data: string): void {
    let payload: Record<string, unknown>;
    try {
      payload = JSON.parse(data);
    } catch {
      return;
    }
    if (type === 'reset') {
      this._reset();
      return;
    }
    const jobId = this._cache.apply(type, payload, performance.now());
    if (jobId === null) {
      return; // an event this version does not know: ignored, as the protocol says
    }
    this._notify(jobId, type !== 'log');
  }

  private _notify(jobId: string, toAll: boolean): void {
    const watchers = this._watchers.get(jobId);
    const all = toAll ? Array.from(this._allWatchers) : [];
    if (!watchers && all.length === 0) {
      return;
    }
    const snapshot = this.snapshot(jobId);
    for (const watcher of all) {
      try {
        watcher(jobId, snapshot);
      } catch (err) {
        console.error('jupyter-sse: a job watcher failed', err);
      }
    }
    for (const watcher of Array.from(watchers ?? [])) {
      try {
        watcher(snapshot);
      } catch (err) {
        console.error('jupyter-sse: a job watcher failed', err);
      }
    }
  }

  /** The server no longer has the history we resumed from: forget it all, then take the sync that follows. */
  private _reset(): void {
    const known = this._cache.reset();
    for (const watcher of Array.from(this._resetWatchers)) {
      try {
        watcher();
      } catch (err) {
        console.error('jupyter-sse: a reset watcher failed', err);
      }
    }
    for (const jobId of known) {
      this._notify(jobId, true);
      if (this._watchers.has(jobId)) {
        void this._confirm(jobId);
      }
    }
  }

  /** Ask the server about a job a view shows that the sync may have left out (an older finished one). */
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
      this._notify(jobId, true);
    }
  }

  private readonly _settings: ServerConnection.ISettings;
  private readonly _parser = new SSEParser(
    event => this._onEvent(event.type, event.data),
    ms => {
      this._retryMs = ms;
    }
  );
  private readonly _watchers = new Map<string, Set<JobWatcher>>();
  private readonly _allWatchers = new Set<AllJobsWatcher>();
  private readonly _cache = new JobCache();
  private readonly _resetWatchers = new Set<() => void>();
  private _watchCount = 0;
  private _idleTimer: ReturnType<typeof setTimeout> | null = null;
  private _running = false;
  private _connected = false;
  private _connections = 0;
  private _retryMs = 2000;
  private _abort: AbortController | null = null;
}

let shared: JobStream | null = null;

/** The tab's stream, made on first use. */
export function getJobStream(): JobStream {
  if (shared === null) {
    shared = new JobStream();
  }
  return shared;
}
