/**
 * The job's MIME type and its data, as the kernel displays them (jupyter_sse/kernel/display.py, JOB_MIME):
 * `{"application/vnd.jupyter-sse.job+json": {"job_id": "...", "version": 1}, "text/plain": "<text line>"}`.
 * No DOM and no JupyterLab imports here, so node's test runner can load it.
 */
import { JOB_ID_PATTERN, JOB_MIME_TYPE } from './protocol.js';

export const MIME_TYPE = JOB_MIME_TYPE;

const JOB_ID = new RegExp(JOB_ID_PATTERN);

/** The job id of a bundle's MIME data, or null when it has none that the protocol allows. */
export function jobIdOf(data: unknown): string | null {
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    return null;
  }
  const jobId = (data as Record<string, unknown>).job_id;
  return typeof jobId === 'string' && JOB_ID.test(jobId) ? jobId : null;
}
