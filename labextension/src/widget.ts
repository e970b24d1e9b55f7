/**
 * The JobWidget: its model carries only the job id; its view watches the job on the tab's shared stream.
 *
 * The kernel sends nothing per update: the view's data comes from the server, so it keeps moving while the
 * kernel is busy and comes back after a reload (the notebook keeps the output, the view re-subscribes by id).
 */
import { DOMWidgetModel, DOMWidgetView, ISerializers } from '@jupyter-widgets/base';

import { IJob, IJobSnapshot, TERMINAL_STATES, getJobStream } from './stream';
import { MODULE_NAME, MODULE_VERSION } from './version';

export class JobWidgetModel extends DOMWidgetModel {
  defaults(): Backbone.ObjectHash {
    return {
      ...super.defaults(),
      _model_name: 'JobWidgetModel',
      _model_module: MODULE_NAME,
      _model_module_version: MODULE_VERSION,
      _view_name: 'JobWidgetView',
      _view_module: MODULE_NAME,
      _view_module_version: MODULE_VERSION,
      job_id: ''
    };
  }

  static serializers: ISerializers = { ...DOMWidgetModel.serializers };
}

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

export class JobWidgetView extends DOMWidgetView {
  render(): void {
    this.el.classList.add('jp-sse-job');
    const head = el('div', 'jp-sse-head', this.el);
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
    this._stats = el('div', 'jp-sse-stats', this.el);
    this._message = el('div', 'jp-sse-message', this.el);
    this._error = el('div', 'jp-sse-error', this.el);
    this._log = el('pre', 'jp-sse-log', this.el);
    this._subscribe();
    this.listenTo(this.model, 'change:job_id', () => this._subscribe());
  }

  remove(): void {
    this._unwatch?.();
    this._unwatch = null;
    this._setTicking(false);
    super.remove();
  }

  private _subscribe(): void {
    this._unwatch?.();
    this._unwatch = null;
    const jobId = String(this.model.get('job_id') || '');
    this.el.dataset.jobId = jobId;
    this._snapshot = { job: null, logs: [], receivedAt: performance.now(), removed: false };
    this._draw();
    if (jobId) {
      this._unwatch = getJobStream().watch(jobId, snapshot => {
        this._snapshot = snapshot;
        this._draw();
      });
    }
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
    if (on && this._timer === null) {
      this._timer = setInterval(() => this._drawStats(), TICK_MS);
    } else if (!on && this._timer !== null) {
      clearInterval(this._timer);
      this._timer = null;
    }
  }

  private _draw(): void {
    const { job, logs, removed } = this._snapshot;
    const state = job ? job.state : removed ? 'removed' : 'pending';
    this.el.dataset.state = state;
    for (const cls of Array.from(this.el.classList)) {
      if (cls.startsWith('jp-sse-state-')) {
        this.el.classList.remove(cls);
      }
    }
    this.el.classList.add(`jp-sse-state-${state}`);
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

  private _snapshot: IJobSnapshot = { job: null, logs: [], receivedAt: 0, removed: false };
  private _unwatch: (() => void) | null = null;
  private _timer: ReturnType<typeof setInterval> | null = null;
  private _cancelSent = false;
  private _name!: HTMLSpanElement;
  private _bar!: HTMLDivElement;
  private _fill!: HTMLDivElement;
  private _percent!: HTMLSpanElement;
  private _state!: HTMLSpanElement;
  private _cancel!: HTMLButtonElement;
  private _stats!: HTMLDivElement;
  private _message!: HTMLDivElement;
  private _error!: HTMLDivElement;
  private _log!: HTMLPreElement;
}

export type { IJob };
