/**
 * The live view of one job: a bar, its state, count, rate, elapsed and ETA, the message, the error, the last log
 * lines and a Cancel button. It needs only a job id and the server: its data comes from the tab's shared stream.
 *
 * One class for both ways a job reaches the page: the MIME renderer of `application/vnd.jupyter-sse.job+json`
 * (what `progress()` displays; it renders at once, also after a reload or from a saved notebook with no kernel)
 * and the ipywidgets `JobWidgetView` (for `JobWidget` in ipywidgets layouts). Both hand it their host element.
 */
import { IDisposable } from '@lumino/disposable';

import { ProgressBar } from './bar';
import { el } from './dom';
import { formatDuration, formatNumber, formatRate } from './format';
import { emptySnapshot } from './jobcache';
import { IJob, IJobSnapshot, getJobStream } from './stream';

const TICK_MS = 1000;

export class JobView {
  /** Build the view's DOM inside `host` (which gets the `jp-sse-job` class); call `setJobId` to show a job. */
  constructor(readonly host: HTMLElement) {
    host.classList.add('jp-sse-job');
    const head = el('div', 'jp-sse-head', host);
    this._name = el('span', 'jp-sse-name', head);
    this._bar = new ProgressBar(head);
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
    this._watch?.dispose();
    this._watch = null;
    this._jobId = jobId;
    this._cancelSent = false;
    this.host.dataset.jobId = jobId;
    this._snapshot = emptySnapshot(performance.now());
    this._draw();
    if (jobId) {
      this._watch = getJobStream().watch(jobId, snapshot => {
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
    this._watch?.dispose();
    this._watch = null;
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

    const bar = this._bar.update(job, removed);
    this._percent.textContent = bar.percent === null ? '' : `${bar.percent}%`;

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
      this._stats.textContent = this._snapshot.removed
        ? 'this job was removed from the server'
        : 'waiting for the job…';
      return;
    }
    const running = job.state === 'running';
    const since = running ? (performance.now() - receivedAt) / 1000 : 0;
    const parts = [
      job.total !== null
        ? `${formatNumber(job.n)}/${formatNumber(job.total)} ${job.unit}`
        : `${formatNumber(job.n)} ${job.unit}`,
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
  private _snapshot: IJobSnapshot = emptySnapshot(0);
  private _watch: IDisposable | null = null;
  private _timer: ReturnType<typeof setInterval> | null = null;
  private _cancelSent = false;
  private readonly _name: HTMLSpanElement;
  private readonly _bar: ProgressBar;
  private readonly _percent: HTMLSpanElement;
  private readonly _state: HTMLSpanElement;
  private readonly _cancel: HTMLButtonElement;
  private readonly _stats: HTMLDivElement;
  private readonly _message: HTMLDivElement;
  private readonly _error: HTMLDivElement;
  private readonly _log: HTMLPreElement;
}

export type { IJob };
