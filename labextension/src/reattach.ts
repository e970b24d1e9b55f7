/**
 * Re-attach: a notebook reloaded before it was saved has lost the outputs of its running cells, but the server
 * still has their jobs, with the notebook path and the cell id the publisher recorded. When a notebook opens,
 * every running job of that notebook whose cell shows no output for it gets one again: our MIME bundle, which
 * the MIME renderer draws as the live view, so the cell shows the job still moving.
 *
 * Only in a window after the notebook opened (the stream may still be replaying jobs then): later, a job started
 * from this tab shows its own output, and the kernel's display could race the stream's first event.
 * Notebooks are seen through duck-typed interfaces, so the extension needs no @jupyterlab/notebook.
 */
import { IDisposable } from '@lumino/disposable';

import { MIME_TYPE, jobIdOf } from './mimetype';
import { ICellOutputs, reattachTargets } from './jobcenter';
import { IJob, IJobChange, JobStream } from './stream';

// how long after a notebook opened its running jobs may be re-attached
const REATTACH_WINDOW_MS = 20000;

export interface IOutputModelLike {
  data: Record<string, unknown>;
}

export interface ICellModelLike {
  id: string;
  type: string;
  outputs?: {
    length: number;
    get(index: number): IOutputModelLike;
    add(output: Record<string, unknown>): number;
  };
}

export interface INotebookPanelLike {
  id: string;
  isDisposed: boolean;
  context: { path: string; ready: Promise<void> };
  content: { model: { cells: { length: number; get(index: number): ICellModelLike } } | null };
  disposed: { connect(fn: () => void): unknown };
}

export function isNotebookPanel(widget: unknown): widget is INotebookPanelLike {
  const w = widget as Partial<INotebookPanelLike> | null;
  return (
    !!w &&
    typeof w === 'object' &&
    !!w.context &&
    typeof w.context.path === 'string' &&
    !!w.content &&
    'model' in w.content
  );
}

/** The text line shown by front ends without the renderer (and kept if the notebook is saved). */
function textLine(job: IJob): string {
  return `${job.name || job.id}: ${job.state} (re-attached from the server)`;
}

export class Reattacher {
  constructor(private readonly _stream: JobStream) {
    _stream.changed.connect(this._onChange, this);
    this._hold = _stream.hold();
  }

  /** Follow a notebook that was just opened. */
  track(panel: INotebookPanelLike): void {
    if (this._tracked.has(panel)) {
      return;
    }
    this._tracked.add(panel);
    void panel.context.ready.then(() => {
      if (panel.isDisposed) {
        return;
      }
      this._open.set(panel, { until: performance.now() + REATTACH_WINDOW_MS, attached: new Set() });
      panel.disposed.connect(() => this._open.delete(panel));
      this._check(panel);
    });
  }

  dispose(): void {
    this._stream.changed.disconnect(this._onChange, this);
    this._hold.dispose();
    this._open.clear();
  }

  private _onChange(_sender: JobStream, { kind, snapshot }: IJobChange): void {
    if (kind !== 'log' && snapshot.job?.state === 'running' && this._open.size > 0) {
      this._schedule();
    }
  }

  private _schedule(): void {
    if (this._timer === null) {
      this._timer = setTimeout(() => {
        this._timer = null;
        for (const panel of Array.from(this._open.keys())) {
          this._check(panel);
        }
      }, 100);
    }
  }

  private _check(panel: INotebookPanelLike): void {
    const state = this._open.get(panel);
    const model = panel.content.model;
    if (!state || !model || panel.isDisposed) {
      return;
    }
    if (performance.now() > state.until) {
      this._open.delete(panel);
      return;
    }
    const cells: ICellOutputs[] = [];
    const byId = new Map<string, ICellModelLike>();
    for (let i = 0; i < model.cells.length; i++) {
      const cell = model.cells.get(i);
      if (cell.type !== 'code' || !cell.outputs) {
        continue;
      }
      const jobIds = new Set<string>();
      for (let k = 0; k < cell.outputs.length; k++) {
        const id = jobIdOf(cell.outputs.get(k).data?.[MIME_TYPE]);
        if (id !== null) {
          jobIds.add(id);
        }
      }
      cells.push({ id: cell.id, jobIds });
      byId.set(cell.id, cell);
    }
    for (const { cellId, job } of reattachTargets(this._stream.jobs(), panel.context.path, cells)) {
      if (state.attached.has(job.id)) {
        continue; // once per opened notebook: an output the user cleared stays cleared
      }
      state.attached.add(job.id);
      byId.get(cellId)?.outputs?.add({
        output_type: 'display_data',
        data: { [MIME_TYPE]: { job_id: job.id, version: 1 }, 'text/plain': textLine(job) },
        metadata: {}
      });
    }
  }

  private readonly _tracked = new WeakSet<INotebookPanelLike>();
  private readonly _open = new Map<INotebookPanelLike, { until: number; attached: Set<string> }>();
  private readonly _hold: IDisposable;
  private _timer: ReturnType<typeof setTimeout> | null = null;
}
