"""The wire rules of protocol v1 that every part shares (docs/protocol.md): job ids, the bounds of a request, the
states and which of them are terminal, the names of events. Standard library only: the kernel side, the core, both
servers and the client import it without pulling in anything else.

The TypeScript side reads the same values from ``labextension/src/protocol.ts``, which
``scripts/gen-protocol-ts`` writes from this module (a test fails when the two differ).
"""

from __future__ import annotations

import enum
import re

__all__ = [
    "API_PATH",
    "DEFAULT_PAGE_SIZE",
    "EVENT_ID_PATTERN",
    "FINAL_STATES",
    "JOB_ID_CHARS",
    "JOB_ID_MAX_LENGTH",
    "JOB_ID_PATTERN",
    "JOB_ID_RULE",
    "JOB_MIME_TYPE",
    "JOB_MIME_VERSION",
    "LOG_LINE_MAX_LENGTH",
    "MAX_BODY_BYTES",
    "MAX_JOBS_PER_REQUEST",
    "MAX_LOG_LINES_PER_REQUEST",
    "MAX_METADATA_BYTES",
    "MAX_NOTIFY_TARGETS",
    "MAX_NUMBER",
    "MAX_PAGE_SIZE",
    "NAME_MAX_LENGTH",
    "PUBLISHED_STATES",
    "STATES",
    "TERMINAL_STATES",
    "TEXT_MAX_LENGTH",
    "WRITE_HEADER",
    "EventKind",
    "is_valid_job_id",
]

#: Where the API lives, under a server's base URL (which ends with "/").
API_PATH = "jupyter-sse/api/"
#: What `progress` and `job` display; its data is `{"job_id": ..., "version": JOB_MIME_VERSION}`.
JOB_MIME_TYPE = "application/vnd.jupyter-sse.job+json"
#: The version of that data.
JOB_MIME_VERSION = 1
#: The header a page sends with a cancel or a removal that only its login cookie authenticates (the team hub behind
#: JupyterHub): a page of another origin cannot send it without a CORS preflight, which the hub never grants.
WRITE_HEADER = "X-Jupyter-SSE-Request"

# Job ids are made by the publisher, so that publishing never waits on a round trip.
#: The characters of a job id: a regular-expression character class, without its brackets.
JOB_ID_CHARS = "A-Za-z0-9_-"
#: The longest job id.
JOB_ID_MAX_LENGTH = 64
#: A whole job id, anchored: usable as it is in JSON Schema, FastAPI and JavaScript.
JOB_ID_PATTERN = rf"^[{JOB_ID_CHARS}]{{1,{JOB_ID_MAX_LENGTH}}}$"
#: An event id: `<epoch>.<seq>`, the epoch naming the server's history (1 to 64 of [A-Za-z0-9]) and the seq
#: increasing within it, or a bare seq (ids from before epochs). Opaque to clients; anchored, as JOB_ID_PATTERN.
EVENT_ID_PATTERN = r"^(?:([A-Za-z0-9]{1,64})\.)?([0-9]{1,30})$"
#: The rule of job ids in words, for error messages.
JOB_ID_RULE = f"1 to {JOB_ID_MAX_LENGTH} characters of [{JOB_ID_CHARS}]"
_JOB_ID = re.compile(rf"[{JOB_ID_CHARS}]{{1,{JOB_ID_MAX_LENGTH}}}")

# Bounds of what a publisher may send: a request that breaks one is refused whole, so publishers clip to them.
#: The longest name, unit, error type, kernel id or cell id.
NAME_MAX_LENGTH = 256
#: The longest message, error message or path.
TEXT_MAX_LENGTH = 4096
#: The longest log line.
LOG_LINE_MAX_LENGTH = 8192
#: The most jobs (and the most log batches) in one `POST updates`.
MAX_JOBS_PER_REQUEST = 1000
#: The most log lines in one `POST updates`.
MAX_LOG_LINES_PER_REQUEST = 10_000
#: The largest metadata of a job, encoded as compact JSON.
MAX_METADATA_BYTES = 4096
#: The most URLs in a job's `metadata.notify`.
MAX_NOTIFY_TARGETS = 10
#: The largest `POST updates` body.
MAX_BODY_BYTES = 1024 * 1024
#: The largest count, total or rate: beyond it a number is a bug, and browsers lose integer precision.
MAX_NUMBER = 10**18
#: Jobs in a page of `GET jobs` when the client names no limit. Pages are bounded both ways: with a hundred
#: thousand jobs kept, one unbounded answer was 44 MB.
DEFAULT_PAGE_SIZE = 100
#: The largest page of `GET jobs` a client may ask for.
MAX_PAGE_SIZE = 1000

#: Every state of a job, in the order of its life.
STATES = ("pending", "running", "succeeded", "failed", "cancelled", "lost")
#: A job in one of these has ended: its stream ends, it may be deleted. `lost` (its kernel died, or its
#: publisher went silent past a lease) is one, although the job comes back to running if its publisher reports.
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "lost"})
#: The ends a publisher gives its own job, which never change again: what the kernel side means by "ended".
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
#: The states a publisher may send (`lost` is the server's to give).
PUBLISHED_STATES = ("pending", "running", "succeeded", "failed", "cancelled")


def is_valid_job_id(job_id: str) -> bool:
    """Whether ``job_id`` is a job id the protocol allows."""
    return _JOB_ID.fullmatch(job_id) is not None


class EventKind(str, enum.Enum):
    """The names of the SSE events a stream carries. Clients ignore names they do not know."""

    JOB = "job"  # data: the whole Job
    LOG = "log"  # data: {"job", "lines"[, "dropped": true]}
    REMOVED = "removed"  # data: {"job"}
    RESET = "reset"  # data: {"epoch"}: forget what you know, a full sync follows

    def __str__(self) -> str:  # the name on the wire, in f-strings too (Python 3.12 formats enums with str())
        return self.value
