/**
 * The job center's pure logic: what the panel lists and in which order, the status bar's combined progress,
 * which endings deserve a notification, and which cells need their job re-attached. No DOM and no JupyterLab
 * imports (types only), so node's test runner can load it.
 */
import type { IJob } from './stream';

import { TERMINAL_STATES as TERMINAL } from './protocol.js';

export { TERMINAL };

export function isActive(job: IJob): boolean {
  return job.state === 'running' || job.state === 'pending';
}

/** The panel's filter: a state, or 'active' (running or pending), or 'finished' (any terminal state), or 'all'. */
export type JobFilter = 'all' | 'active' | 'finished' | IJob['state'];

export function matchesFilter(job: IJob, filter: JobFilter): boolean {
  if (filter === 'all') {
    return true;
  }
  if (filter === 'active') {
    return isActive(job);
  }
  if (filter === 'finished') {
    return TERMINAL.has(job.state);
  }
  return job.state === filter;
}

/**
 * Newest first, each job followed by its children (a progress() inside a loop, or inside a submitted job), with
 * their depth. A child whose parent is not listed (filtered out, or forgotten) is shown at the top level.
 */
export function orderJobs(jobs: IJob[]): Array<{ job: IJob; depth: number }> {
  const ids = new Set(jobs.map(j => j.id));
  const children = new Map<string, IJob[]>();
  const roots: IJob[] = [];
  for (const job of jobs) {
    const parent = typeof job.parent === 'string' ? job.parent : null;
    if (parent !== null && parent !== job.id && ids.has(parent)) {
      const list = children.get(parent) ?? [];
      list.push(job);
      children.set(parent, list);
    } else {
      roots.push(job);
    }
  }
  const newestFirst = (a: IJob, b: IJob) => b.created - a.created || (a.id < b.id ? -1 : 1);
  const out: Array<{ job: IJob; depth: number }> = [];
  const seen = new Set<string>(); // a parent cycle in bad data must not loop forever
  const visit = (job: IJob, depth: number) => {
    if (seen.has(job.id)) {
      return;
    }
    seen.add(job.id);
    out.push({ job, depth });
    for (const child of (children.get(job.id) ?? []).sort(newestFirst)) {
      visit(child, depth + 1);
    }
  };
  for (const job of roots.sort(newestFirst)) {
    visit(job, 0);
  }
  return out;
}

export interface ICombinedProgress {
  /** Jobs running (or pending). */
  running: number;
  /** Sum of n over the running top-level jobs that have a total. */
  n: number;
  /** Sum of their totals (0: no running job has a total). */
  total: number;
  /** n / total in [0, 1], or null when no running job has a total. */
  fraction: number | null;
}

/**
 * How many jobs run and their combined progress: sum n / sum total of the running jobs with a total. A child of
 * a running parent that has a total counts in `running` but not in the fraction (an inner loop's progress is
 * already in its outer loop's); the child of a parent without one (a submitted function) counts in both.
 */
export function combinedProgress(jobs: Iterable<IJob>): ICombinedProgress {
  let running = 0;
  let n = 0;
  let total = 0;
  const list = Array.from(jobs);
  // running parents that measure their own progress: their children's progress is already in theirs
  const measured = new Set(list.filter(j => isActive(j) && j.total !== null && j.total > 0).map(j => j.id));
  for (const job of list) {
    if (!isActive(job)) {
      continue;
    }
    running++;
    const nested = typeof job.parent === 'string' && measured.has(job.parent);
    if (nested || job.total === null || !(job.total > 0)) {
      continue;
    }
    n += Math.min(Math.max(job.n, 0), job.total);
    total += job.total;
  }
  return { running, n, total, fraction: total > 0 ? n / total : null };
}

/**
 * Decides which job endings to announce: only jobs this tab saw running (not old finished jobs that the stream
 * replays on connect), once each, and only those that ran at least `thresholdSeconds`.
 */
export class EndTracker {
  /** Feed every job snapshot; returns the job when it just ended and deserves a notification, else null. */
  update(job: IJob, thresholdSeconds: number): IJob | null {
    if (isActive(job)) {
      this._seenRunning.add(job.id);
      return null;
    }
    if (!TERMINAL.has(job.state) || !this._seenRunning.has(job.id)) {
      return null;
    }
    this._seenRunning.delete(job.id); // once
    return job.elapsed >= thresholdSeconds ? job : null;
  }

  forget(jobId: string): void {
    this._seenRunning.delete(jobId);
  }

  private readonly _seenRunning = new Set<string>();
}

/** The one-line summary of an ended job, for a notification. */
export function endMessage(job: IJob): string {
  const name = job.name || job.id;
  const where = typeof job.path === 'string' && job.path ? ` (${job.path.split('/').pop()})` : '';
  const took = ` after ${formatSeconds(job.elapsed)}`;
  switch (job.state) {
    case 'succeeded':
      return `${name}${where} finished${took}`;
    case 'failed':
      return `${name}${where} failed${took}` + (job.error ? `: ${job.error.type}: ${job.error.message}` : '');
    case 'cancelled':
      return `${name}${where} was cancelled${took}`;
    default:
      return `${name}${where} was lost${took} (its kernel died or stopped reporting)`;
  }
}

export function formatSeconds(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) {
    return `${s} s`;
  }
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${s % 60} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A notebook path as the server records it and as the document manager names it, made comparable. */
export function normalizePath(path: string): string {
  // a drive prefix ("RTC:", "Drive:") is the front end's, the kernel only knows the server-relative path
  const colon = path.indexOf(':');
  const slash = path.indexOf('/');
  const bare = colon > 0 && (slash < 0 || colon < slash) ? path.slice(colon + 1) : path;
  return bare.replace(/^\/+/, '');
}

/** A cell as re-attach sees it: its id and the job ids its outputs already show. */
export interface ICellOutputs {
  id: string;
  jobIds: Set<string>;
}

/**
 * The running jobs of this notebook whose cell no longer shows them (a reload before the notebook was saved):
 * same path, a cell with the job's `cell_id`, and no output of the job's MIME type for that job in that cell.
 * Oldest first, so an outer loop's view lands above its inner one's, as the kernel displayed them.
 */
export function reattachTargets(
  jobs: Iterable<IJob>,
  path: string,
  cells: ICellOutputs[]
): Array<{ cellId: string; job: IJob }> {
  const want = normalizePath(path);
  const byId = new Map(cells.map(c => [c.id, c]));
  const out: Array<{ cellId: string; job: IJob }> = [];
  for (const job of jobs) {
    if (!isActive(job) || typeof job.path !== 'string' || typeof job.cell_id !== 'string') {
      continue;
    }
    if (normalizePath(job.path) !== want) {
      continue;
    }
    const cell = byId.get(job.cell_id);
    if (cell === undefined || cell.jobIds.has(job.id)) {
      continue;
    }
    out.push({ cellId: cell.id, job });
  }
  return out.sort((a, b) => a.job.created - b.job.created);
}
