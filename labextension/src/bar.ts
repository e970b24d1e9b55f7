/**
 * The one progress bar of the cell view (jobview.ts) and the Jobs panel (panel.ts): both draw a job's bar with
 * `ProgressBar`, from `barModel`, so they round, animate and announce it the same way.
 *
 * - A known total: the fill's width is n / total (clamped), the percent shown is rounded down (100% only when
 *   done, as tqdm does), and ARIA gets aria-valuenow = n, aria-valuemax = total.
 * - No total while the job runs (or while the view waits for its first event): the sliding indeterminate bar, and
 *   no aria-valuenow (ARIA's rule for an indeterminate progressbar); the count goes in aria-valuetext.
 * - No total once the job ended: a full, still bar in the state's colour. A removed job's bar stands still too.
 */
// explicit .js: node's test runner loads the compiled module, and ES modules resolve no bare specifiers
import { el } from './dom.js';
import { formatNumber } from './format.js';
import { isActive } from './jobcenter.js';
import type { IJob } from './stream';

export interface IBarModel {
  indeterminate: boolean;
  /** The fill's CSS width; '' leaves it to the stylesheet (the indeterminate slide). */
  width: string;
  /** The whole percent to show, rounded down; null without a total. */
  percent: number | null;
  /** aria-valuenow and aria-valuemax; null on an indeterminate bar or one without a total. */
  valueNow: number | null;
  valueMax: number | null;
  /** aria-valuetext, for a bar without a total. */
  valueText: string | null;
}

/** How a job's bar is drawn: `job` null means not known yet (or `removed`). */
export function barModel(job: IJob | null, removed: boolean): IBarModel {
  const total = job?.total ?? null;
  if (job !== null && total !== null && total > 0) {
    const n = Math.min(Math.max(job.n, 0), total);
    const fraction = n / total;
    return {
      indeterminate: false,
      width: `${(fraction * 100).toFixed(2)}%`,
      percent: Math.floor(fraction * 100),
      valueNow: n,
      valueMax: total,
      valueText: null
    };
  }
  const indeterminate = job !== null ? isActive(job) : !removed;
  const valueText = job !== null ? `${formatNumber(job.n)} ${job.unit}` : removed ? 'removed' : 'waiting';
  return {
    indeterminate,
    width: indeterminate ? '' : job !== null ? '100%' : '0%',
    percent: null,
    valueNow: null,
    valueMax: null,
    valueText
  };
}

/** A `div.jp-sse-bar[role=progressbar]` with its fill, appended to `parent`. */
export class ProgressBar {
  constructor(parent: HTMLElement) {
    this.node = el('div', 'jp-sse-bar', parent);
    this.node.setAttribute('role', 'progressbar');
    this.node.setAttribute('aria-valuemin', '0');
    this._fill = el('div', 'jp-sse-fill', this.node);
  }

  readonly node: HTMLDivElement;

  /** Draw the job's bar; returns the model drawn (the caller shows its percent where it wants). */
  update(job: IJob | null, removed: boolean): IBarModel {
    const model = barModel(job, removed);
    const bar = this.node;
    bar.classList.toggle('jp-sse-indeterminate', model.indeterminate);
    this._fill.style.width = model.width;
    setOrRemove(bar, 'aria-valuenow', model.valueNow);
    setOrRemove(bar, 'aria-valuemax', model.valueMax);
    setOrRemove(bar, 'aria-valuetext', model.valueText);
    bar.setAttribute('aria-label', job?.name ? `${job.name} progress` : 'job progress');
    return model;
  }

  private readonly _fill: HTMLDivElement;
}

function setOrRemove(node: HTMLElement, name: string, value: number | string | null): void {
  if (value === null) {
    node.removeAttribute(name);
  } else {
    node.setAttribute(name, String(value));
  }
}
