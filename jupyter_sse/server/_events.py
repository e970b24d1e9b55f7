"""Job state changes on Jupyter's event bus (jupyter_events), so other extensions and JupyterLab's
``EventManager`` (``/api/events/subscribe``) see jobs start and end."""

from __future__ import annotations

from typing import Any

from ..core import Job
from ..protocol import JOB_ID_RULE, STATES

__all__ = ["JOB_EVENT_SCHEMA", "JOB_EVENT_SCHEMA_ID", "JobEventEmitter"]

JOB_EVENT_SCHEMA_ID = "https://events.jupyter.org/jupyter_sse/job/v1"

_TEXT = {"type": ["string", "null"]}
JOB_EVENT_SCHEMA: dict[str, Any] = {
    "$id": JOB_EVENT_SCHEMA_ID,
    "version": "1",
    "title": "jupyter-sse job state changes",
    "personal-data": True,  # names, paths and error messages come from the user's code
    "description": "A job reported to jupyter-sse changed state: it started, ended, was lost or came back.",
    "type": "object",
    "required": ["job_id", "state"],
    "properties": {
        "job_id": {"type": "string", "description": f"The job's id ({JOB_ID_RULE})."},
        "name": {"type": "string", "description": "The job's name (the bar's description)."},
        "state": {
            "enum": list(STATES),
            "description": "The state the job is now in.",
        },
        "previous_state": {
            "enum": [*STATES, None],
            "description": "The state it was in before; null for a job the server had not seen.",
        },
        "n": {"type": "number", "description": "Work done."},
        "total": {"type": ["number", "null"], "description": "Work to do, if known."},
        "unit": {"type": "string"},
        "elapsed": {"type": "number", "description": "Seconds the job has run."},
        "kernel_id": {**_TEXT, "description": "The kernel that runs it."},
        "cell_id": {**_TEXT, "description": "The notebook cell that started it."},
        "path": {**_TEXT, "description": "The notebook, relative to the server's root."},
        "parent": {**_TEXT, "description": "The job it is nested in."},
        "owner": {"type": "string"},
        "error_type": {**_TEXT, "description": "The exception's type, for a failed job."},
        "error_message": {**_TEXT, "description": "The exception's message, for a failed job."},
    },
}


class JobEventEmitter:
    """A state-change callback (see ``core.transitions``) that emits each change on an ``EventLogger``."""

    def __init__(self, event_logger: Any) -> None:
        self._logger = event_logger
        event_logger.register_event_schema(JOB_EVENT_SCHEMA)

    def __call__(self, job: Job, previous: str | None) -> None:
        error = job.error or {}
        self._logger.emit(
            schema_id=JOB_EVENT_SCHEMA_ID,
            data={
                "job_id": job.id,
                "name": job.name,
                "state": job.state,
                "previous_state": previous,
                "n": job.n,
                "total": job.total,
                "unit": job.unit,
                "elapsed": job.elapsed,
                "kernel_id": job.kernel_id,
                "cell_id": job.cell_id,
                "path": job.path,
                "parent": job.parent,
                "owner": job.owner,
                "error_type": error.get("type"),
                "error_message": error.get("message"),
            },
        )
