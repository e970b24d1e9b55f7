/**
 * What a tab knows of the server's jobs, as the shared stream fills it: the latest snapshot of each job, its last
 * few log lines, when it arrived, and which jobs were removed. Pure logic (types only), so node's test runner can
 * load it; stream.ts owns the connection and tells the watchers.
 *
 * `reset` (the server no longer has the history the stream resumed from: it restarted with a memory store, or the
 * id was too old) forgets everything: the sync that follows says what exists now. A job a view still shows but the
 * sync did not name is checked with the server (`confirm`), since the sync leaves out older finished jobs: only a
 * 404 makes it removed, so no vanished job stays "running" forever and no old finished one is dropped by mistake.
 */
import type { IJob } from './stream';

export const LOG_LINES_KEPT = 5;

export class JobCache {
  readonly jobs = new Map<string, IJob>();
  readonly logs = new Map<string, string[]>();
  readonly receivedAt = new Map<string, number>();
  readonly removed = new Set<string>();

  /** Apply one `job`, `log` or `removed` event; returns the job id it concerns, or null if it is none of them. */
  apply(type: string, payload: Record<string, unknown>, now: number): string | null {
    if (type === 'job') {
      const job = payload as IJob;
      if (typeof job.id !== 'string') {
        return null;
      }
      this.jobs.set(job.id, job);
      this.receivedAt.set(job.id, now);
      this.removed.delete(job.id);
      return job.id;
    }
    if (type === 'log') {
      const jobId = String(payload.job);
      const lines = Array.isArray(payload.lines) ? (payload.lines as unknown[]).map(String) : [];
      const kept = (this.logs.get(jobId) ?? []).concat(lines);
      this.logs.set(jobId, kept.slice(-LOG_LINES_KEPT));
      return jobId;
    }
    if (type === 'removed') {
      const jobId = String(payload.job);
      this._forget(jobId);
      this.removed.add(jobId);
      return jobId;
    }
    return null;
  }

  /** Forget every job (a `reset` event); returns the ids that were known, to tell their watchers. */
  reset(): string[] {
    const known = new Set<string>([...this.jobs.keys(), ...this.logs.keys(), ...this.removed]);
    this.jobs.clear();
    this.logs.clear();
    this.receivedAt.clear();
    this.removed.clear();
    return Array.from(known);
  }

  /**
   * The server's answer for a job a view still shows after a reset: the job (GET jobs/{id}), or null for a 404.
   * A snapshot the stream sent meanwhile is newer and wins. Returns whether anything changed.
   */
  confirm(jobId: string, job: IJob | null, now: number): boolean {
    if (this.jobs.has(jobId) || this.removed.has(jobId)) {
      return false;
    }
    if (job === null) {
      this.removed.add(jobId);
      return true;
    }
    this.jobs.set(jobId, job);
    this.receivedAt.set(jobId, now);
    return true;
  }

  private _forget(jobId: string): void {
    this.jobs.delete(jobId);
    this.logs.delete(jobId);
    this.receivedAt.delete(jobId);
  }
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
