"""The core of jupyter-sse: the job model, the SSE encoding, the broker and the stores.

Plain Python and asyncio: no web framework, so the tornado extension and the FastAPI hub are thin layers over it.
"""

from .broker import Broker, Event, Subscription
from .errors import ProtocolError
from .model import (
    MAX_BODY_BYTES,
    STATES,
    TERMINAL_STATES,
    Job,
    JobUpdate,
    UpdateBatch,
    check_job_id,
    is_valid_job_id,
    parse_update_batch,
)
from .sse import encode_comment, encode_event, encode_retry
from .store import JobEntry, MemoryStore, Store

__all__ = [
    "MAX_BODY_BYTES",
    "STATES",
    "TERMINAL_STATES",
    "Broker",
    "Event",
    "Job",
    "JobEntry",
    "JobUpdate",
    "MemoryStore",
    "ProtocolError",
    "Store",
    "Subscription",
    "UpdateBatch",
    "check_job_id",
    "encode_comment",
    "encode_event",
    "encode_retry",
    "is_valid_job_id",
    "parse_update_batch",
]
