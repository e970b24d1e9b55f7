/**
 * The live view of one job: a bar, its state, count, rate, elapsed and ETA, the message, the error, the last log
 * lines and a Cancel button. It needs only a job id and the server: its data comes from the tab's shared stream.
 *
 * One class for both ways a job reaches the page: the MIME renderer of `application/vnd.jupyter-sse.job+json`
 * (what `progress()` displays; it renders at once, also after a reload or from a saved notebook with no kernel)
 * and the ipywidgets `JobWidgetView` (for `JobWidget` in ipywidgets layouts). Both hand it their host element.
 */
import { IJob, IJobSnapshot, TERMINAL_STATES, getJobStream } from './stream';

/** "01:05", or "1:02:03" past an hour; as tqdm prints durations. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (x: number) => String(x).padStart(2, '0');
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${pad(m)}:${pad(s % 60)}`;
}

/** A count without a float's noise: 12, 12.5, 1.23e+06. */
export function formatNumber(x: number): string {
  if (Number.isInteger(x) && Math.abs(x) < 1e6) {
    return String(x);
  }
  return Math.abs(x) < 1e6 ? String(Number(x.toPrecision(4))) : x.toPrecision(3);
}

export function formatRate(rate: number | null, unit: string): string {
  if (rate === null || !isFinite(rate)) {
    return `? ${unit}/s`;
  }
  if (rate > 0 && rate < 1) {
    return `${formatNumber(1 / rate)} s/${unit}`;
  }
  return `${rate >= 100 ? Math.round(rate) : rate.toFixed(2)} ${unit}/s`;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls: string, parent?: HTMLElement): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = cls;
  parent?.appendChild(node);
  return node;
}

const TICK_MS = 1000;

export class JobView {
  /** Build the view's DOM inside `host` (which gets the `jp-sse-job` class); call `setJobId` to show a job. */
  constructor(readonly host: HTMLElement) {
    host.classList.add('jp-sse-job');
    const head = el('div', 'jp-sse-head', host);
    this._name = el('span', 'jp-sse-name', head);
    this._bar = el('div', 'jp-sse-bar', head);
    this._bar.setAttribute('role', 'progressbar');
    this._bar.setAttribute('aria-valuemin', '0');
    this._fill = el('div', 'jp-sse-fill', this._bar);
    this._percent = el('span', 'jp-sse-percent', head);
    this._state = el('span', 'jp-sse-state', head);
    this._cancel = el('button', 'jp-sse-cancel jp-mod-styled', head);
    this._cancel.type = 'button';
    this._cancel.textContent = 'Cancel';
    this._cancel.title = 'Ask the server to cancel this job: the loop stops at its next step';
    this._cancel.addEventListener('click', () => void this._onCancel());
    this._stats = el('div', 'jp-sse-stats', host);
    this._message = el('div', 'jp-sse-message', host);
    this._error = el('div', 'jp-sse-error', host);
    this._log = el('pre', 'jp-sse-log', host);
    this._draw();
  }

  get jobId(): string {
    return this._jobId;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Watch `jobId` on the shared stream (the same id again: nothing changes; '' shows nothing). */
  setJobId(jobId: string): void {
    if (this._disposed || (jobId === this._jobId && this._started)) {
      return;
    }
    this._started = true;
    this._unwatch?.();
    this._unwatch = null;
    this._jobId = jobId;
    this._cancelSent = false;
    this.host.dataset.jobId = jobId;
    this._snapshot = { job: null, logs: [], receivedAt: performance.now(), removed: false };
    this._draw();
    if (jobId) {
      this._unwatch = getJobStream().watch(jobId, snapshot => {
        this._snapshot = snapshot;
        this._draw();
      });
    }
  }

  /** Stop watching and ticking; the DOM stays as it was (its owner removes it). */
  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._unwatch?.();
    this._unwatch = null;
    this._setTicking(false);
  }

  private async _onCancel(): Promise<void> {
    const job = this._snapshot.job;
    if (!job) {
      return;
    }
    this._cancelSent = true;
    this._draw();
    try {
      await getJobStream().cancel(job.id);
    } catch (err) {
      console.error('jupyter-sse: cancel failed', err);
      this._cancelSent = false;
      this._draw();
    }
  }

  private _setTicking(on: boolean): void {
    if (on && this._timer === null && !this._disposed) {
      this._timer = setInterval(() => this._drawStats(), TICK_MS);
    } else if (!on && this._timer !== null) {
      clearInterval(this._timer);
      this._timer = null;
    }
  }

  private _draw(): void {
    const host = this.host;
    const { job, logs, removed } = this._snapshot;
    const state = job ? job.state : removed ? 'removed' : 'pending';
    host.dataset.state = state;
    for (const cls of Array.from(host.classList)) {
      if (cls.startsWith('jp-sse-state-')) {
        host.classList.remove(cls);
      }
    }
    host.classList.add(`jp-sse-state-${state}`);
    this._name.textContent = job?.name ?? '';
    this._name.hidden = !job?.name;
    this._state.textContent = job?.cancel_requested && state === 'running' ? 'cancelling' : state;

    const total = job?.total ?? null;
    const n = job?.n ?? 0;
    const known = total !== null && total > 0;
    this._bar.classList.toggle('jp-sse-indeterminate', !known && !TERMINAL_STATES.has(state));
    if (known) {
      const frac = Math.min(Math.max(n / total, 0), 1);
      this._fill.style.width = `${(frac * 100).toFixed(2)}%`;
      this._bar.setAttribute('aria-valuenow', String(n));
      this._bar.setAttribute('aria-valuemax', String(total));
      this._bar.removeAttribute('aria-valuetext');
      this._percent.textContent = `${Math.floor(frac * 100)}%`;
    } else {
      // no total: an indeterminate bar (no aria-valuenow, as ARIA says), the count in aria-valuetext
      this._fill.style.width = TERMINAL_STATES.has(state) ? '100%' : '';
      this._bar.removeAttribute('aria-valuenow');
      this._bar.removeAttribute('aria-valuemax');
      this._bar.setAttribute('aria-valuetext', job ? `${formatNumber(n)} ${job.unit}` : 'waiting');
      this._percent.textContent = '';
    }
    this._bar.setAttribute('aria-label', job?.name ? `${job.name} progress` : 'job progress');

    this._message.textContent = job?.message ?? '';
    this._message.hidden = !job?.message;
    const error = job?.error;
    this._error.textContent = error ? `${error.type}: ${error.message}` : '';
    this._error.hidden = !error;
    this._log.textContent = logs.join('\n');
    this._log.hidden = logs.length === 0;

    const cancellable = state === 'running' || state === 'pending';
    this._cancel.hidden = !job || !cancellable;
    this._cancel.disabled = this._cancelSent || !!job?.cancel_requested;
    this._drawStats();
    this._setTicking(state === 'running');
  }

  /** Count, rate, elapsed and ETA; elapsed ticks locally between events (the job's elapsed + time since). */
  private _drawStats(): void {
    const { job, receivedAt } = this._snapshot;
    if (!job) {
      this._stats.textContent = this._snapshot.removed ? 'this job was removed from the server' : 'waiting for the job…';
      return;
    }
    const running = job.state === 'running';
    const since = running ? (performance.now() - receivedAt) / 1000 : 0;
    const parts = [
      job.total !== null ? `${formatNumber(job.n)}/${formatNumber(job.total)} ${job.unit}` : `${formatNumber(job.n)} ${job.unit}`,
      formatRate(job.rate, job.unit),
      `${formatDuration(job.elapsed + since)} elapsed`
    ];
    if (running && job.eta !== null) {
      parts.push(`${formatDuration(Math.max(job.eta - since, 0))} left`);
    }
    this._stats.textContent = parts.join(' · ');
  }

  private _jobId = '';
  private _started = false;
  private _disposed = false;
  private _snapshot: IJobSnapshot = { job: null, logs: [], receivedAt: 0, removed: false };
  private _unwatch: (() => void) | null = null;
  private _timer: ReturnType<typeof setInterval> | null = null;
  private _cancelSent = false;
  private readonly _name: HTMLSpanElement;
  private readonly _bar: HTMLDivElement;
  private readonly _fill: HTMLDivElement;
  private readonly _percent: HTMLSpanElement;
  private readonly _state: HTMLSpanElement;
  private readonly _cancel: HTMLButtonElement;
  private readonly _stats: HTMLDivElement;
  private readonly _message: HTMLDivElement;
  private readonly _error: HTMLDivElement;
  private readonly _log: HTMLPreElement;
}

export type { IJob };
