/**
 * What a tab knows of the server's jobs, as the shared stream fills it: one snapshot per job id (the latest Job,
 * its last few log lines, when it arrived, whether it was removed). Pure logic (types only), so node's test runner
 * can load it; stream.ts owns the connection and signals the changes.
 *
 * Snapshots are replaced, never changed in place, so a view may keep the one it was handed.
 *
 * `reset` (the server no longer has the history the stream resumed from: it restarted with a memory store, or the
 * id was too old) forgets everything: the sync that follows says what exists now. A job a view still shows but the
 * sync did not name is checked with the server (`confirm`), since the sync leaves out older finished jobs: only a
 * 404 makes it removed, so no vanished job stays "running" forever and no old finished one is dropped by mistake.
 */
import type { IJob } from './stream';

export const LOG_LINES_KEPT = 5;
// a removed job is remembered (so a view of it says "removed") up to this many; the oldest are forgotten first
export const REMOVED_KEPT = 1000;

/** What the tab knows of one job. */
export interface IJobSnapshot {
  /** The latest Job, or null until the server has sent it (or after it was removed). */
  readonly job: IJob | null;
  readonly logs: readonly string[];
  /** performance.now() when `job` arrived: views tick elapsed time from it while the job runs. */
  readonly receivedAt: number;
  /** The job was deleted on the server. */
  readonly removed: boolean;
}

/** The snapshot of a job the tab knows nothing of. */
export function emptySnapshot(now: number): IJobSnapshot {
  return { job: null, logs: [], receivedAt: now, removed: false };
}

export class JobCache {
  /** The snapshot of a job, if the tab knows anything of it. */
  get(jobId: string): IJobSnapshot | undefined {
    return this._snapshots.get(jobId);
  }

  /** Every job the tab has a Job for, in no particular order. */
  jobs(): IJob[] {
    const out: IJob[] = [];
    for (const snapshot of this._snapshots.values()) {
      if (snapshot.job !== null) {
        out.push(snapshot.job);
      }
    }
    return out;
  }

  /** How many ids the cache holds, removed ones included. */
  get size(): number {
    return this._snapshots.size;
  }

  /** Apply one `job`, `log` or `removed` event; returns the job id it concerns, or null if it is none of them. */
  apply(type: string, payload: Record<string, unknown>, now: number): string | null {
    if (type === 'job') {
      const job = payload as IJob;
      if (typeof job.id !== 'string') {
        return null;
      }
      const logs = this._snapshots.get(job.id)?.logs ?? [];
      this._set(job.id, { job, logs, receivedAt: now, removed: false });
      return job.id;
    }
    if (type === 'log') {
      const jobId = String(payload.job);
      const lines = Array.isArray(payload.lines) ? (payload.lines as unknown[]).map(String) : [];
      const old = this._snapshots.get(jobId) ?? emptySnapshot(now);
      this._set(jobId, { ...old, logs: old.logs.concat(lines).slice(-LOG_LINES_KEPT) });
      return jobId;
    }
    if (type === 'removed') {
      const jobId = String(payload.job);
      this._setRemoved(jobId, now);
      return jobId;
    }
    return null;
  }

  /** Forget every job (a `reset` event); returns the ids that were known, to tell their watchers. */
  reset(): string[] {
    const known = Array.from(this._snapshots.keys());
    this._snapshots.clear();
    this._removed = 0;
    return known;
  }

  /**
   * The server's answer for a job a view still shows after a reset: the job (GET jobs/{id}), or null for a 404.
   * A snapshot the stream sent meanwhile is newer and wins. Returns whether anything changed.
   */
  confirm(jobId: string, job: IJob | null, now: number): boolean {
    const known = this._snapshots.get(jobId);
    if (known !== undefined && (known.job !== null || known.removed)) {
      return false;
    }
    if (job === null) {
      this._setRemoved(jobId, now);
    } else {
      this._set(jobId, { job, logs: known?.logs ?? [], receivedAt: now, removed: false });
    }
    return true;
  }

  private _set(jobId: string, snapshot: IJobSnapshot): void {
    if (this._snapshots.get(jobId)?.removed) {
      this._removed--;
    }
    this._snapshots.set(jobId, snapshot);
  }

  private _setRemoved(jobId: string, now: number): void {
    if (this._snapshots.get(jobId)?.removed) {
      this._removed--;
    }
    // deleted first so that insertion order is the order of removal, which the bound below relies on
    this._snapshots.delete(jobId);
    this._snapshots.set(jobId, { job: null, logs: [], receivedAt: now, removed: true });
    this._removed++;
    if (this._removed <= REMOVED_KEPT) {
      return;
    }
    for (const [id, snapshot] of this._snapshots) {
      if (snapshot.removed) {
        this._snapshots.delete(id); // insertion order: the oldest removal still remembered
        this._removed--;
        return;
      }
    }
  }

  private readonly _snapshots = new Map<string, IJobSnapshot>();
  private _removed = 0;
}

/** A page of GET jobs (docs/protocol.md): newest first; `next` is the cursor of the following page, or null. */
export interface IJobPage {
  jobs: IJob[];
  total: number;
  next: string | null;
}

/** The panel's list: every job the stream knows, and the older ones read by page that the stream does not. */
export function mergeJobs(live: Iterable<IJob>, older: Map<string, IJob>): IJob[] {
  const out = Array.from(live);
  const seen = new Set(out.map(job => job.id));
  for (const [id, job] of older) {
    if (!seen.has(id)) {
      out.push(job);
    }
  }
  return out;
}
