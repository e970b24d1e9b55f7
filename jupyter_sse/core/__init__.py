"""The core of jupyter-sse: the job model, the SSE encoding, the broker and the stores.

Plain Python and asyncio: no web framework, so the tornado extension and the FastAPI hub are thin layers over it.
"""

from .broker import RESET, Broker, Event, Subscription
from .errors import ProtocolError
from .model import (
    DEFAULT_PAGE_SIZE,
    MAX_BODY_BYTES,
    MAX_PAGE_SIZE,
    PAGE_CURSOR,
    STATES,
    TERMINAL_STATES,
    Job,
    JobPage,
    JobUpdate,
    UpdateBatch,
    check_job_id,
    is_valid_job_id,
    parse_limit,
    parse_update_batch,
)
from .sse import encode_comment, encode_event, encode_id, encode_retry
from .store import JobEntry, MemoryStore, Store

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_BODY_BYTES",
    "MAX_PAGE_SIZE",
    "PAGE_CURSOR",
    "RESET",
    "STATES",
    "TERMINAL_STATES",
    "Broker",
    "Event",
    "Job",
    "JobEntry",
    "JobPage",
    "JobUpdate",
    "MemoryStore",
    "ProtocolError",
    "Store",
    "Subscription",
    "UpdateBatch",
    "check_job_id",
    "encode_comment",
    "encode_event",
    "encode_id",
    "encode_retry",
    "is_valid_job_id",
    "parse_limit",
    "parse_update_batch",
]
