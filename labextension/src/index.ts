/**
 * jupyter-sse's JupyterLab (and Notebook 7) extension. Two entry points, one module-federation container:
 * - `extension` (this file): registers the JobWidget (the ipywidgets view, for layouts) with the widget manager;
 * - `mimeExtension` (src/mime.ts): the renderer of `application/vnd.jupyter-sse.job+json`, what `progress()`
 *   displays. Both draw with the one JobView class and share the tab's one SSE stream.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { IJupyterWidgetRegistry } from '@jupyter-widgets/base';

import { getJobStream } from './stream';
import { MODULE_NAME, MODULE_VERSION } from './version';
import { JobWidgetModel, JobWidgetView } from './widget';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-sse:widget',
  description: 'The JobWidget view: live job progress from the server, over one shared SSE stream per tab',
  autoStart: true,
  requires: [IJupyterWidgetRegistry],
  activate: (_app: JupyterFrontEnd, registry: IJupyterWidgetRegistry): void => {
    registry.registerWidget({ name: MODULE_NAME, version: MODULE_VERSION, exports: { JobWidgetModel, JobWidgetView } });
    // a handle for tests and debugging in the browser console (read-only use)
    (window as unknown as Record<string, unknown>).jupyterSSE = { stream: getJobStream };
  }
};

export default plugin;
export { getJobStream, JobStream } from './stream';
export { SSEParser } from './sse';
export { JobView } from './jobview';
export { MIME_TYPE, jobIdOf } from './mimetype';
