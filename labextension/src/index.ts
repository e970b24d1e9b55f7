/**
 * jupyter-sse's JupyterLab (and Notebook 7) extension. Two entry points, one module-federation container:
 * - `extension` (this file): registers the JobWidget (the ipywidgets view, for layouts) with the widget manager,
 *   and the job center (`jupyter-sse:plugin`): the Jobs panel, the status bar item, notifications when jobs end,
 *   and re-attaching running jobs to their cells when a notebook opens;
 * - `mimeExtension` (src/mime.ts): the renderer of `application/vnd.jupyter-sse.job+json`, what `progress()`
 *   displays. Both draw with the one JobView class and share the tab's one SSE stream.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';
import { IJupyterWidgetRegistry } from '@jupyter-widgets/base';
import { Widget } from '@lumino/widgets';

import { normalizePath } from './jobcenter';
import { DEFAULT_NOTIFY_SETTINGS, JobNotifier } from './notify';
import { JobsPanel, PANEL_ID } from './panel';
import { Reattacher, isNotebookPanel } from './reattach';
import { JobsStatus } from './statusbar';
import { IJob, getJobStream } from './stream';
import { MODULE_NAME, MODULE_VERSION } from './version';
import { JobWidgetModel, JobWidgetView } from './widget';

const widgetPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-sse:widget',
  description: 'The JobWidget view: live job progress from the server, over one shared SSE stream per tab',
  autoStart: true,
  requires: [IJupyterWidgetRegistry],
  activate: (_app: JupyterFrontEnd, registry: IJupyterWidgetRegistry): void => {
    registry.registerWidget({ name: MODULE_NAME, version: MODULE_VERSION, exports: { JobWidgetModel, JobWidgetView } });
  }
};

const OPEN_PANEL = 'jupyter-sse:open-jobs';

// a gauge: the panel's tab in the side bar
const jobsIcon = new LabIcon({
  name: 'jupyter-sse:jobs',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16"><g class="jp-icon3" fill="#616161">' +
    '<path d="M3 5h18v3H3zM3 10.5h12v3H3zM3 16h7v3H3z"/></g></svg>'
});

interface INotebookLike {
  context: { ready: Promise<void> };
  revealed?: Promise<void>;
  content: {
    widgets: ReadonlyArray<{ model: { id: string }; node: HTMLElement }>;
    activeCellIndex: number;
    scrollToItem?: (index: number, align?: string) => Promise<void>;
  };
}

/** Open the job's notebook and bring its cell into view (the panel's click, a notification's Show). */
async function openJob(app: JupyterFrontEnd, job: IJob): Promise<void> {
  if (typeof job.path !== 'string' || !job.path) {
    return;
  }
  const widget = (await app.commands.execute('docmanager:open', { path: normalizePath(job.path) })) as unknown;
  const panel = widget as Partial<INotebookLike> | undefined;
  if (!panel?.context || !panel.content || !Array.isArray(panel.content.widgets)) {
    return;
  }
  await panel.context.ready;
  await panel.revealed;
  const notebook = panel.content;
  const index = notebook.widgets.findIndex(cell => cell.model.id === job.cell_id);
  if (index < 0) {
    return;
  }
  notebook.activeCellIndex = index;
  if (typeof notebook.scrollToItem === 'function') {
    await notebook.scrollToItem(index, 'center'); // a windowed notebook may not have the cell's node yet
  } else {
    notebook.widgets[index].node.scrollIntoView({ block: 'center' });
  }
}

const jobCenterPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-sse:plugin',
  description: 'The job center: the Jobs panel, a status bar item, notifications when jobs end, re-attach on reload',
  autoStart: true,
  optional: [IStatusBar, ISettingRegistry],
  activate: (app: JupyterFrontEnd, statusBar: IStatusBar | null, settingRegistry: ISettingRegistry | null): void => {
    const stream = getJobStream();
    const open = (job: IJob) => {
      openJob(app, job).catch(err => console.warn("jupyter-sse: could not open the job's notebook", err));
    };

    const panel = new JobsPanel(stream, open);
    panel.title.icon = jobsIcon;
    app.shell.add(panel, 'right', { rank: 600 });

    app.commands.addCommand(OPEN_PANEL, {
      label: 'Show Jobs',
      caption: 'Show the Jobs panel: every job on this server',
      execute: () => app.shell.activateById(PANEL_ID)
    });

    if (statusBar) {
      const item = new JobsStatus(stream, () => void app.commands.execute(OPEN_PANEL));
      statusBar.registerStatusItem('jupyter-sse:status', { item, align: 'left', rank: 20 });
    }

    const notifier = new JobNotifier(stream, open);
    if (settingRegistry) {
      settingRegistry
        .load(jobCenterPlugin.id)
        .then(settings => {
          const apply = () => {
            const composite = settings.composite as Partial<typeof DEFAULT_NOTIFY_SETTINGS> & { hubUrl?: unknown };
            notifier.settings = {
              notifyAfterSeconds: Number(composite.notifyAfterSeconds ?? DEFAULT_NOTIFY_SETTINGS.notifyAfterSeconds),
              browserNotifications: composite.browserNotifications !== false
            };
            stream.useHub(typeof composite.hubUrl === 'string' ? composite.hubUrl : '');
          };
          apply();
          settings.changed.connect(apply);
        })
        .catch(err => console.warn('jupyter-sse: could not load the job center settings', err));
    }

    const reattacher = new Reattacher(stream);
    const track = (widget: unknown) => {
      if (isNotebookPanel(widget)) {
        reattacher.track(widget);
      }
    };
    // notebooks opened from now on (also the ones the layout restorer reopens after a reload): the notebook
    // factory may be registered after this plugin activates (nothing here requires the notebook plugin)
    let connected = false;
    const connectFactory = () => {
      const factory = connected ? undefined : app.docRegistry.getWidgetFactory('Notebook');
      if (factory) {
        connected = true;
        factory.widgetCreated.connect((_sender, widget) => track(widget));
      }
    };
    connectFactory();
    if (!connected) {
      app.docRegistry.changed.connect((_sender, change) => {
        if (change.type === 'widgetFactory') {
          connectFactory();
        }
      });
    }
    // ...and any already open (tracking twice is harmless)
    const trackOpen = () => {
      for (const widget of app.shell.widgets('main')) {
        track(widget as Widget);
      }
    };
    trackOpen();
    void app.restored.then(trackOpen);
  }
};

export default [widgetPlugin, jobCenterPlugin];
export { getJobStream, JobStream } from './stream';
export { SSEParser } from './sse';
export { JobView } from './jobview';
export { MIME_TYPE, jobIdOf } from './mimetype';
