/**
 * The Jobs panel: every job on the server, live, from the tab's one shared stream (its `changed` signal). Per job: name,
 * notebook and cell, state, bar, count, rate, ETA, elapsed; a filter by state; Cancel for a running job, Remove
 * for a finished one; a click on a job opens its notebook at its cell.
 *
 * Rows are keyed by job id and updated in place (never rebuilt), so a click is not lost to a redraw while jobs
 * stream in; redraws are batched to one per animation frame.
 *
 * The stream brings the unfinished jobs and the most recent finished ones; "Older jobs" reads the rest from GET jobs,
 * a page at a time (a server may keep 100,000 jobs). A `reset` of the stream drops the pages read, with the rest.
 *
 * The foot says how the stream is connected (live, or when it retries and why); the panel's node carries the same
 * in `data-connected` and `data-connections` (connections tried), for scripts and tests.
 */
import { IDisposable } from '@lumino/disposable';
import { Widget } from '@lumino/widgets';

import { ProgressBar } from './bar';
import { FrameScheduler, el } from './dom';
import { formatDuration, formatNumber, formatRate } from './format';
import { JobFilter, isActive, matchesFilter, orderJobs, TERMINAL } from './jobcenter';
import { mergeJobs } from './jobcache';
import { IJob, IJobChange, IStreamStatus, JobStream, apiUrl } from './stream';

export const PANEL_ID = 'jupyter-sse-jobs';

const FILTERS: Array<[JobFilter, string]> = [
  ['all', 'All'],
  ['active', 'Running'],
  ['finished', 'Finished'],
  ['succeeded', 'Succeeded'],
  ['failed', 'Failed'],
  ['cancelled', 'Cancelled'],
  ['lost', 'Lost']
];

/** Opens a job's notebook at its cell (index.ts gives the JupyterLab side of it). */
export type OpenJob = (job: IJob) => void;

class JobRow {
  constructor(
    readonly jobId: string,
    private readonly _panel: JobsPanel
  ) {
    this.node = el('li', 'jp-sse-row');
    this.node.dataset.jobId = jobId;
    this.node.tabIndex = 0;
    const head = el('div', 'jp-sse-row-head', this.node);
    this._name = el('span', 'jp-sse-row-name', head);
    this._state = el('span', 'jp-sse-row-state', head);
    this._button = el('button', 'jp-sse-row-action jp-mod-styled', head);
    this._button.type = 'button';
    this._button.addEventListener('click', event => {
      event.stopPropagation(); // the row's own click opens the notebook
      void this._onAction();
    });
    this._bar = new ProgressBar(this.node);
    this._stats = el('div', 'jp-sse-row-stats', this.node);
    this._where = el('div', 'jp-sse-row-where', this.node);
    this._error = el('div', 'jp-sse-row-error', this.node);
    const open = () => {
      if (this._job && typeof this._job.path === 'string' && this._job.path) {
        this._panel.openJob(this._job);
      }
    };
    this.node.addEventListener('click', open);
    this.node.addEventListener('keydown', event => {
      if (event.key === 'Enter') {
        open();
      }
    });
  }

  readonly node: HTMLLIElement;

  update(job: IJob, depth: number, receivedAt: number): void {
    this._job = job;
    this._receivedAt = receivedAt;
    const node = this.node;
    node.className = `jp-sse-row jp-sse-state-${job.state}` + (depth > 0 ? ' jp-sse-row-child' : '');
    node.style.paddingLeft = depth > 0 ? `${8 + 14 * Math.min(depth, 4)}px` : '';
    this._name.textContent = (depth > 0 ? '↳ ' : '') + (job.name || job.id);
    this._name.title = `${job.name || '(no name)'} — job ${job.id}`;
    this._state.textContent = job.cancel_requested && isActive(job) ? 'cancelling' : job.state;
    const active = isActive(job);
    this._button.textContent = active ? 'Cancel' : 'Remove';
    this._button.title = active ? 'Ask the server to cancel this job' : 'Forget this finished job on the server';
    this._button.disabled = active && job.cancel_requested;
    this._percent = this._bar.update(job, false).percent;
    const where: string[] = [];
    if (typeof job.path === 'string' && job.path) {
      where.push(job.path);
    }
    if (typeof job.cell_id === 'string' && job.cell_id) {
      where.push(`cell ${job.cell_id.slice(0, 8)}`);
    }
    this._where.textContent = where.join(' · ');
    this.node.title = where.length ? `Open ${where.join(', ')}` : '';
    this._error.textContent = job.state === 'failed' && job.error ? `${job.error.type}: ${job.error.message}` : '';
    this.tick();
  }

  /** Redraw the times (elapsed moves on while a job runs, between its events). */
  tick(): void {
    const job = this._job;
    if (!job) {
      return;
    }
    const active = isActive(job);
    const elapsed = job.elapsed + (active ? (performance.now() - this._receivedAt) / 1000 : 0);
    const parts: string[] = [];
    // a job with no total and no count (a submitted function whose loops are its children) shows only times
    if (job.total !== null || job.n > 0) {
      const count = job.total !== null ? `${formatNumber(job.n)}/${formatNumber(job.total)}` : formatNumber(job.n);
      parts.push(`${count} ${job.unit}`);
    }
    if (this._percent !== null) {
      parts.push(`${this._percent}%`);
    }
    if (job.rate !== null) {
      parts.push(formatRate(job.rate, job.unit));
    }
    if (active && job.eta !== null && isFinite(job.eta)) {
      parts.push(`ETA ${formatDuration(job.eta)}`);
    }
    parts.push(`${active ? 'elapsed' : 'took'} ${formatDuration(elapsed)}`);
    this._stats.textContent = parts.join(' · ');
  }

  private async _onAction(): Promise<void> {
    const job = this._job;
    if (!job) {
      return;
    }
    this._button.disabled = true;
    try {
      if (TERMINAL.has(job.state)) {
        await this._panel.stream.remove(job.id);
      } else {
        await this._panel.stream.cancel(job.id);
      }
    } catch (err) {
      console.warn('jupyter-sse: job action failed', err);
      this._button.disabled = false;
    }
  }

  private readonly _name: HTMLSpanElement;
  private readonly _state: HTMLSpanElement;
  private readonly _button: HTMLButtonElement;
  private readonly _bar: ProgressBar;
  private readonly _stats: HTMLDivElement;
  private readonly _where: HTMLDivElement;
  private readonly _error: HTMLDivElement;
  private _job: IJob | null = null;
  private _receivedAt = 0;
  private _percent: number | null = null;
}

export class JobsPanel extends Widget {
  constructor(
    readonly stream: JobStream,
    private readonly _open: OpenJob
  ) {
    super();
    this.id = PANEL_ID;
    this.addClass('jp-sse-panel');
    const head = el('div', 'jp-sse-panel-head', this.node);
    el('span', 'jp-sse-panel-title', head).textContent = 'Jobs';
    this._filter = el('select', 'jp-sse-panel-filter jp-mod-styled', head);
    this._filter.title = 'Show jobs in this state';
    for (const [value, label] of FILTERS) {
      const option = el('option', '', this._filter);
      option.value = value;
      option.textContent = label;
    }
    this._filter.addEventListener('change', () => this._frame.schedule());
    this._clear = el('button', 'jp-sse-panel-clear jp-mod-styled', head);
    this._clear.type = 'button';
    this._clear.textContent = 'Clear';
    this._clear.title = 'Remove every finished job shown: the server forgets them';
    this._clear.addEventListener('click', () => void this._removeFinished());
    this._empty = el('div', 'jp-sse-panel-empty', this.node);
    this._list = el('ul', 'jp-sse-panel-list', this.node);
    this._connection = el('div', 'jp-sse-panel-connection', this.node);
    this._connection.setAttribute('role', 'status');
    const foot = el('div', 'jp-sse-panel-foot', this.node);
    this._count = el('span', 'jp-sse-panel-count', foot);
    this._more = el('button', 'jp-sse-panel-more jp-mod-styled', foot);
    this._more.type = 'button';
    this._more.textContent = 'Older jobs';
    this._more.title = 'Read the next page of older jobs from the server';
    this._more.addEventListener('click', () => void this._loadOlder());
    stream.changed.connect(this._onChange, this);
    stream.reset.connect(this._onReset, this);
    stream.statusChanged.connect(this._drawConnection, this);
    this._hold = stream.hold();
    this._timer = setInterval(() => this._tick(), 1000);
    this._drawConnection();
    this._frame.schedule();
  }

  get filter(): JobFilter {
    return this._filter.value as JobFilter;
  }

  openJob(job: IJob): void {
    this._open(job);
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.stream.changed.disconnect(this._onChange, this);
    this.stream.reset.disconnect(this._onReset, this);
    this.stream.statusChanged.disconnect(this._drawConnection, this);
    this._hold.dispose();
    this._frame.dispose();
    clearInterval(this._timer);
    super.dispose();
  }

  private _onChange(_sender: JobStream, change: IJobChange): void {
    if (change.kind === 'log') {
      return; // the panel shows no log lines
    }
    if (change.snapshot.removed) {
      this._older.delete(change.jobId);
    }
    this._frame.schedule();
  }

  private _onReset(): void {
    this._older.clear();
    this._next = undefined;
    this._total = null;
    this._frame.schedule();
  }

  /** The foot's connection line: live, or when the next attempt is and why (redrawn every second meanwhile). */
  private _drawConnection(): void {
    const status: IStreamStatus = this.stream.status;
    const hub = this.stream.hubUrl;
    this.node.dataset.connected = String(status.connected);
    this.node.dataset.connections = String(status.connections);
    this.node.dataset.source = hub ? 'hub' : 'server';
    this.title.caption = hub ? `Jobs: yours on the team hub (${hub})` : 'Jobs: every job on this server';
    this._connection.textContent = '';
    if (status.needsLogin) {
      // the hub's own page runs its login (JupyterHub's OAuth); the stream comes back on its next attempt
      this._connection.append('the team hub needs you to ');
      const link = el('a', 'jp-sse-panel-login', this._connection);
      link.href = apiUrl(this.stream.settings, 'jobs');
      link.target = '_blank';
      link.rel = 'noopener';
      link.textContent = 'log in to it';
      return;
    }
    let text = '';
    if (status.retryAt !== null) {
      const seconds = Math.max(0, Math.ceil((status.retryAt - Date.now()) / 1000));
      const why =
        status.refusedStatus === 503 && status.retryAfter
          ? 'server busy'
          : status.refusedStatus !== null
            ? `HTTP ${status.refusedStatus}`
            : 'disconnected';
      text = `${why}: retrying in ${seconds} s`;
    } else if (!status.connected && status.connections > 0) {
      text = 'connecting…';
    }
    this._connection.textContent = text;
    this._connection.title = status.connected ? '' : 'The live stream of jobs is not connected';
  }

  /** The next page of older jobs (the first: the newest, most of which the stream already has). */
  private async _loadOlder(): Promise<void> {
    if (this._next === null || this._loading) {
      return;
    }
    this._loading = true;
    this._more.disabled = true;
    try {
      const page = await this.stream.page(this._next ?? null);
      for (const job of page.jobs) {
        this._older.set(job.id, job);
      }
      this._next = page.next;
      this._total = page.total;
    } catch (err) {
      console.warn('jupyter-sse: reading older jobs failed', err);
    } finally {
      this._loading = false;
      this._more.disabled = false;
      this._frame.schedule();
    }
  }

  private _render(): void {
    const stream = this.stream;
    const all = mergeJobs(stream.jobs(), this._older);
    const filter = this.filter;
    const ordered = orderJobs(all.filter(job => matchesFilter(job, filter)));
    const keep = new Set(ordered.map(o => o.job.id));
    for (const [id, row] of this._rows) {
      if (!keep.has(id)) {
        row.node.remove();
        this._rows.delete(id);
      }
    }
    let previous: HTMLElement | null = null;
    for (const { job, depth } of ordered) {
      let row = this._rows.get(job.id);
      if (!row) {
        row = new JobRow(job.id, this);
        this._rows.set(job.id, row);
      }
      row.update(job, depth, stream.snapshot(job.id).receivedAt);
      // move a node only when it is out of place: moving the row under the pointer would swallow a click
      const expected: Element | null = previous ? previous.nextElementSibling : this._list.firstElementChild;
      if (expected !== row.node) {
        this._list.insertBefore(row.node, expected);
      }
      previous = row.node;
    }
    this._empty.textContent =
      ordered.length > 0
        ? ''
        : all.length === 0
          ? `No jobs on ${this.stream.hubUrl ? 'the team hub' : 'this server'} yet.`
          : 'No jobs match this filter.';
    this._clear.disabled = !ordered.some(o => TERMINAL.has(o.job.state));
    this._more.style.display = this._next === null ? 'none' : '';
    this._count.textContent = this._total !== null ? `${all.length} of ${this._total} jobs` : `${all.length} jobs`;
  }

  private _tick(): void {
    if (this.stream.status.retryAt !== null) {
      this._drawConnection(); // the countdown
    }
    if (!this.isVisible) {
      return;
    }
    for (const row of this._rows.values()) {
      row.tick();
    }
  }

  private async _removeFinished(): Promise<void> {
    const ids = Array.from(this._rows.keys());
    for (const id of ids) {
      const job = this.stream.snapshot(id).job;
      if (job && TERMINAL.has(job.state)) {
        try {
          await this.stream.remove(id);
        } catch (err) {
          console.warn('jupyter-sse: remove failed', err);
        }
      }
    }
  }

  private readonly _filter: HTMLSelectElement;
  private readonly _clear: HTMLButtonElement;
  private readonly _empty: HTMLDivElement;
  private readonly _list: HTMLUListElement;
  private readonly _rows = new Map<string, JobRow>();
  private readonly _count: HTMLSpanElement;
  private readonly _more: HTMLButtonElement;
  private readonly _connection: HTMLDivElement;
  // older jobs read by page, and the cursor of the next page (undefined: none read yet; null: no more)
  private readonly _older = new Map<string, IJob>();
  private _next: string | null | undefined = undefined;
  private _total: number | null = null;
  private _loading = false;
  private readonly _hold: IDisposable;
  private readonly _timer: ReturnType<typeof setInterval>;
  // one redraw per frame however many events arrive
  private readonly _frame = new FrameScheduler(() => this._render());
}
