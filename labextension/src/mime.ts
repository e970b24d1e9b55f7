/**
 * The MIME renderer of `application/vnd.jupyter-sse.job+json`: what `progress()` and `job()` display in a kernel.
 *
 * The bundle is `{"application/vnd.jupyter-sse.job+json": {"job_id": "...", "version": 1}, "text/plain": "..."}`:
 * only the job id, so the renderer needs neither the kernel nor a widget model. It shows the shared JobView,
 * subscribed through the tab's one SSE stream; a reloaded tab (the cell still running) or a saved notebook
 * opened with no kernel draws the job at once from the server. Front ends without this extension (nbclient,
 * GitHub, a terminal) show the `text/plain` line, which the kernel replaces with the final one at the end.
 *
 * Loaded as the package's `mimeExtension` (package.json), next to its `extension` (the ipywidgets view): both
 * are exposed by one module-federation container, so they share one `getJobStream()`.
 */
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import { JobView } from './jobview';
import { MIME_TYPE, jobIdOf } from './mimetype';

export { MIME_TYPE, jobIdOf };

export class JobRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this._mimeType = options.mimeType;
    this.addClass('jp-sse-rendered');
  }

  /** Called for the first display and again for every update of the display (same id: the view stays). */
  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const jobId = jobIdOf(model.data[this._mimeType]);
    if (jobId === null) {
      // not a job we can watch: show the kernel's text line instead of a bar that would wait forever
      this._view?.dispose();
      this._view = null;
      this.node.textContent = '';
      const pre = document.createElement('pre');
      pre.textContent = String(model.data['text/plain'] ?? '');
      this.node.appendChild(pre);
      return Promise.resolve();
    }
    if (this._view === null) {
      this.node.textContent = '';
      this._view = new JobView(this.node);
    }
    this._view.setJobId(jobId);
    return Promise.resolve();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._view?.dispose();
    this._view = null;
    super.dispose();
  }

  private readonly _mimeType: string;
  private _view: JobView | null = null;
}

export const rendererFactory: IRenderMime.IRendererFactory = {
  // only a job id goes in; everything drawn is text set with textContent: safe for untrusted notebooks
  safe: true,
  mimeTypes: [MIME_TYPE],
  // below text/plain's 120 (lower wins): the live view where this extension runs, the text line elsewhere
  defaultRank: 20,
  createRenderer: options => new JobRenderer(options)
};

const extension: IRenderMime.IExtension = {
  id: 'jupyter-sse:mime',
  description: 'Renders application/vnd.jupyter-sse.job+json: a live view of the job, from the shared SSE stream',
  rendererFactory,
  rank: 20,
  dataType: 'json'
};

export default extension;
