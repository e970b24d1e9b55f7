/**
 * The status bar item: how many jobs run and their combined progress (sum n / sum total of the running jobs
 * that have a total); a click opens the Jobs panel. Fed by the tab's one shared stream, redrawn once per frame.
 */
import { Widget } from '@lumino/widgets';

import { combinedProgress } from './jobcenter';
import { JobStream } from './stream';

export class JobsStatus extends Widget {
  constructor(
    private readonly _stream: JobStream,
    onClick: () => void
  ) {
    super();
    this.addClass('jp-sse-status');
    this.node.title = 'Jobs on this server: click to open the Jobs panel';
    this.node.setAttribute('role', 'button');
    this._label = document.createElement('span');
    this._label.className = 'jp-sse-status-label';
    this._bar = document.createElement('span');
    this._bar.className = 'jp-sse-status-bar';
    this._fill = document.createElement('span');
    this._fill.className = 'jp-sse-status-fill';
    this._bar.appendChild(this._fill);
    this.node.append(this._label, this._bar);
    this.node.addEventListener('click', onClick);
    this._unwatch = _stream.watchAll(() => this._schedule());
    this._render();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._unwatch();
    super.dispose();
  }

  private _schedule(): void {
    if (this._frame === null) {
      this._frame = requestAnimationFrame(() => {
        this._frame = null;
        this._render();
      });
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
  private readonly _unwatch: () => void;
  private _frame: number | null = null;
}
