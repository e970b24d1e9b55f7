/**
 * Notifications when a job ends (succeeded, failed, cancelled, lost): a JupyterLab notification, and a browser
 * notification while the tab is hidden (only with the browser's permission). Only for jobs this tab saw running,
 * so old finished jobs the stream replays on connect stay quiet, and only for jobs that ran at least
 * `notifyAfterSeconds` (a setting): a two-second loop is watched in its cell, a two-hour one is not.
 */
import { Notification } from '@jupyterlab/apputils';
import { IDisposable } from '@lumino/disposable';

import { EndTracker, endMessage } from './jobcenter';
import { IJob, IJobChange, JobStream } from './stream';

export interface INotifySettings {
  notifyAfterSeconds: number;
  browserNotifications: boolean;
}

export const DEFAULT_NOTIFY_SETTINGS: INotifySettings = { notifyAfterSeconds: 30, browserNotifications: true };

export class JobNotifier {
  constructor(
    private readonly _stream: JobStream,
    private readonly _showJob: (job: IJob) => void
  ) {
    _stream.changed.connect(this._onChange, this);
    this._hold = _stream.hold();
  }

  settings: INotifySettings = { ...DEFAULT_NOTIFY_SETTINGS };

  dispose(): void {
    this._stream.changed.disconnect(this._onChange, this);
    this._hold.dispose();
  }

  private _onChange(_sender: JobStream, { jobId, kind, snapshot }: IJobChange): void {
    if (kind === 'log') {
      return;
    }
    if (snapshot.job === null) {
      this._tracker.forget(jobId);
      return;
    }
    const ended = this._tracker.update(snapshot.job, this.settings.notifyAfterSeconds);
    if (ended !== null) {
      this._notify(ended);
    }
  }

  private _notify(job: IJob): void {
    const message = endMessage(job);
    const options = {
      autoClose: job.state === 'succeeded' ? 8000 : (false as const),
      actions: typeof job.path === 'string' && job.path ? [{ label: 'Show', callback: () => this._showJob(job) }] : []
    };
    if (job.state === 'succeeded') {
      Notification.success(message, options);
    } else if (job.state === 'failed') {
      Notification.error(message, options);
    } else if (job.state === 'cancelled') {
      Notification.warning(message, options);
    } else {
      Notification.info(message, options);
    }
    this._browserNotify(job, message);
  }

  private _browserNotify(job: IJob, message: string): void {
    // window.Notification: the browser's (the JupyterLab import shadows the name)
    const Native = typeof window !== 'undefined' ? window.Notification : undefined;
    if (!this.settings.browserNotifications || !document.hidden || !Native || Native.permission !== 'granted') {
      return;
    }
    try {
      const note = new Native(`Job ${job.state}: ${job.name || job.id}`, {
        body: message,
        tag: `jupyter-sse-${job.id}`
      });
      note.onclick = () => {
        window.focus();
        this._showJob(job);
        note.close();
      };
    } catch (err) {
      console.debug('jupyter-sse: browser notification failed', err);
    }
  }

  private readonly _tracker = new EndTracker();
  private readonly _hold: IDisposable;
}
