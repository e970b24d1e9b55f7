/**
 * The JobWidget, for ipywidgets layouts (`VBox([JobWidget(job_id=...)])`): its model carries only the job id,
 * its view is a thin wrapper of the shared JobView (src/jobview.ts), which watches the job on the tab's stream.
 *
 * `progress()` does not use it: it displays the job's own MIME type (src/mime.ts), which needs no widget model
 * and so renders at once after a reload, even while the cell that started the job is still running.
 */
import { DOMWidgetModel, DOMWidgetView, ISerializers } from '@jupyter-widgets/base';

import { JobView } from './jobview';
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

export class JobWidgetView extends DOMWidgetView {
  render(): void {
    this._view = new JobView(this.el);
    this._view.setJobId(String(this.model.get('job_id') || ''));
    this.listenTo(this.model, 'change:job_id', () => this._view?.setJobId(String(this.model.get('job_id') || '')));
  }

  remove(): void {
    this._view?.dispose();
    this._view = null;
    super.remove();
  }

  private _view: JobView | null = null;
}

export { formatDuration, formatNumber, formatRate } from './format';
export type { IJob } from './stream';
