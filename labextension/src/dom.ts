/**
 * The few DOM helpers the views share. Nothing runs at import, so node's test runner can load the modules that
 * import this one.
 */

/** A new element with its class, appended to `parent` when one is given. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls: string,
  parent?: HTMLElement
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = cls;
  parent?.appendChild(node);
  return node;
}

/**
 * Runs `draw` at most once per animation frame however often `schedule` is called: a burst of events costs one
 * redraw, and a hidden tab gets its frame when it is shown again.
 */
export class FrameScheduler {
  constructor(private readonly _draw: () => void) {}

  schedule(): void {
    if (this._frame !== null || this._disposed) {
      return;
    }
    this._frame = requestAnimationFrame(() => {
      this._frame = null;
      this._draw();
    });
  }

  dispose(): void {
    this._disposed = true;
    if (this._frame !== null) {
      cancelAnimationFrame(this._frame);
      this._frame = null;
    }
  }

  private _frame: number | null = null;
  private _disposed = false;
}
