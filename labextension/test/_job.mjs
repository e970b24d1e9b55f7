// A job as the server sends it (docs/protocol.md, "Job"), with the fields a test names changed: shared by the
// node tests of the bar, the job cache and the job center.
export function job(fields) {
  return {
    id: 'j',
    name: 'job',
    state: 'running',
    n: 0,
    total: null,
    unit: 'it',
    message: '',
    created: 0,
    updated: 0,
    finished: null,
    elapsed: 0,
    rate: null,
    eta: null,
    error: null,
    cancel_requested: false,
    parent: null,
    path: null,
    cell_id: null,
    ...fields
  };
}
