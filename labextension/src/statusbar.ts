/**
 * The status bar item: how many jobs run and their combined progress (sum n / sum total of the running jobs
 * that have a total); a click opens the Jobs panel. Fed by the tab's one shared stream, redrawn once per frame.
 */
import { IDisposable } from '@lumino/disposable';
import { Widget } from '@lumino/widgets';

import { FrameScheduler, el } from './dom';
import { combinedProgress } from './jobcenter';
import { IJobChange, JobStream } from './stream';

export class JobsStatus extends Widget {
  constructor(
    private readonly _stream: JobStream,
    onClick: () => void
  ) {
    super();
    this.addClass('jp-sse-status');
    this.node.title = 'Jobs on this server: click to open the Jobs panel';
    this.node.setAttribute('role', 'button');
    this._label = el('span', 'jp-sse-status-label', this.node);
    this._bar = el('span', 'jp-sse-status-bar', this.node);
    this._fill = el('span', 'jp-sse-status-fill', this._bar);
    this.node.addEventListener('click', onClick);
    _stream.changed.connect(this._onChange, this);
    this._hold = _stream.hold();
    this._render();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._stream.changed.disconnect(this._onChange, this);
    this._hold.dispose();
    this._frame.dispose();
    super.dispose();
  }

  private _onChange(_sender: JobStream, change: IJobChange): void {
    if (change.kind !== 'log') {
      this._frame.schedule();
    }
  }

  private _render(): void {
    const p = combinedProgress(this._stream.jobs());
    this.node.dataset.running = String(p.running);
    if (p.running === 0) {
      this._label.textContent = 'Jobs: none running';
      this._bar.style.display = 'none';
      return;
    }
    const percent = p.fraction === null ? '' : ` · ${Math.floor(p.fraction * 100)}%`;
    this._label.textContent = `Jobs: ${p.running} running${percent}`;
    this._bar.style.display = p.fraction === null ? 'none' : '';
    this._fill.style.width = `${((p.fraction ?? 0) * 100).toFixed(1)}%`;
  }

  private readonly _label: HTMLSpanElement;
  private readonly _bar: HTMLSpanElement;
  private readonly _fill: HTMLSpanElement;
  private readonly _hold: IDisposable;
  private readonly _frame = new FrameScheduler(() => this._render());
}
