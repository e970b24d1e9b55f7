/** How numbers and durations read in the cell view and the panel: as tqdm prints them. No DOM here. */

/** "01:05", or "1:02:03" past an hour; as tqdm prints durations. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (x: number) => String(x).padStart(2, '0');
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${pad(m)}:${pad(s % 60)}`;
}

/** A count without a float's noise: 12, 12.5, 1.23e+06. */
export function formatNumber(x: number): string {
  if (Number.isInteger(x) && Math.abs(x) < 1e6) {
    return String(x);
  }
  return Math.abs(x) < 1e6 ? String(Number(x.toPrecision(4))) : x.toPrecision(3);
}

export function formatRate(rate: number | null, unit: string): string {
  if (rate === null || !isFinite(rate)) {
    return `? ${unit}/s`;
  }
  if (rate > 0 && rate < 1) {
    return `${formatNumber(1 / rate)} s/${unit}`;
  }
  return `${rate >= 100 ? Math.round(rate) : rate.toFixed(2)} ${unit}/s`;
}
