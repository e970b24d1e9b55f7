"""The job model of protocol v1: what a job is, and what a publisher may send about it.

Incoming updates are validated with pydantic (strict types, finite non-negative numbers, bounded strings, no
unknown fields), so every refusal names the field and the reason. The stored job is a plain slotted dataclass:
thousands of finished jobs are kept, and pydantic models cost several times the memory.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, field_validator

from ..protocol import (
    DEFAULT_PAGE_SIZE,
    JOB_ID_CHARS,
    JOB_ID_MAX_LENGTH,
    JOB_ID_PATTERN,
    JOB_ID_RULE,
    LOG_LINE_MAX_LENGTH,
    MAX_BODY_BYTES,
    MAX_JOBS_PER_REQUEST,
    MAX_LOG_LINES_PER_REQUEST,
    MAX_METADATA_BYTES,
    MAX_NUMBER,
    MAX_PAGE_SIZE,
    NAME_MAX_LENGTH,
    PUBLISHED_STATES,
    STATES,
    TERMINAL_STATES,
    TEXT_MAX_LENGTH,
    is_valid_job_id,
)
from .errors import ProtocolError

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_BODY_BYTES",
    "MAX_PAGE_SIZE",
    "PAGE_CURSOR",
    "STATES",
    "TERMINAL_STATES",
    "ErrorInfo",
    "Job",
    "JobPage",
    "JobUpdate",
    "LogBatch",
    "UpdateBatch",
    "check_job_id",
    "created_key",
    "decode_page_cursor",
    "encode_page_cursor",
    "is_valid_job_id",
    "parse_limit",
    "parse_update_batch",
]

_MAX_NUMBER = float(MAX_NUMBER)

#: A page cursor: a creation time (whole microseconds) and a job id.
PAGE_CURSOR = re.compile(rf"([0-9]{{1,20}})~([{JOB_ID_CHARS}]{{1,{JOB_ID_MAX_LENGTH}}})")

JobId = Annotated[str, Field(pattern=JOB_ID_PATTERN)]
# Bounds on each member, not on the union: pydantic writes union-level bounds as "ge"/"le", which JSON Schema does
# not know, so the OpenAPI schema would not say that counts are >= 0.
Number = Annotated[StrictInt, Field(ge=0, le=MAX_NUMBER)] | Annotated[StrictFloat, Field(ge=0, lt=_MAX_NUMBER)]
ShortText = Annotated[str, Field(max_length=NAME_MAX_LENGTH)]
LongText = Annotated[str, Field(max_length=TEXT_MAX_LENGTH)]
LogLine = Annotated[str, Field(max_length=LOG_LINE_MAX_LENGTH)]
PublishedState = Literal["pending", "running", "succeeded", "failed", "cancelled"]
assert PublishedState.__args__ == PUBLISHED_STATES  # type: ignore[attr-defined]


def check_job_id(job_id: str) -> str:
    """Return ``job_id`` or raise the protocol's 400 ``invalid_job_id``."""
    if not is_valid_job_id(job_id):
        raise ProtocolError(400, "invalid_job_id", f"a job id is {JOB_ID_RULE}")
    return job_id


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class ErrorInfo(_Strict):
    type: ShortText
    message: LongText = ""


class JobUpdate(_Strict):
    """A publisher's report on one job; fields left out keep their stored value."""

    id: JobId
    name: ShortText | None = None
    state: PublishedState | None = None
    n: Number | None = None
    total: Number | None = None
    unit: ShortText | None = None
    message: LongText | None = None
    elapsed: Number | None = None
    rate: Number | None = None
    error: ErrorInfo | None = None
    kernel_id: ShortText | None = None
    cell_id: ShortText | None = None
    path: LongText | None = None
    parent: JobId | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_is_small_json(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                encoded = json.dumps(value, allow_nan=False, separators=(",", ":"))
            except ValueError as exc:
                raise ValueError(f"metadata must be plain JSON: {exc}") from None
            if len(encoded.encode()) > MAX_METADATA_BYTES:
                raise ValueError(f"metadata is over {MAX_METADATA_BYTES} bytes encoded")
        return value


class LogBatch(_Strict):
    job: JobId
    lines: Annotated[list[LogLine], Field(max_length=MAX_LOG_LINES_PER_REQUEST)]


class UpdateBatch(_Strict):
    """The body of ``POST updates``."""

    jobs: Annotated[list[JobUpdate], Field(max_length=MAX_JOBS_PER_REQUEST)] = []
    logs: Annotated[list[LogBatch], Field(max_length=MAX_JOBS_PER_REQUEST)] = []

    @field_validator("logs")
    @classmethod
    def _bounded_line_count(cls, value: list[LogBatch]) -> list[LogBatch]:
        if sum(len(batch.lines) for batch in value) > MAX_LOG_LINES_PER_REQUEST:
            raise ValueError(f"at most {MAX_LOG_LINES_PER_REQUEST} log lines a request")
        return value


# The members of the int-or-float union name themselves in error locations; a client wants the field.
_UNION_TAGS = frozenset({"int", "float", "constrained-int", "constrained-float"})


def _clean_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """One entry per field, with every reason; never the offending input (it can be megabytes)."""
    by_loc: dict[tuple[Any, ...], list[str]] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(part for part in err["loc"] if part not in _UNION_TAGS)
        messages = by_loc.setdefault(loc, [])
        if err["msg"] not in messages:
            messages.append(err["msg"])
    return [{"loc": list(loc), "msg": "; ".join(messages)} for loc, messages in by_loc.items()]


def parse_update_batch(body: bytes) -> UpdateBatch:
    """Parse and validate a ``POST updates`` body, or raise the protocol's 400/413 error."""
    if len(body) > MAX_BODY_BYTES:
        raise ProtocolError(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        # Parsed apart from validation so that NaN and Infinity, which are not JSON, are a JSON error.
        data = pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        raise ProtocolError(400, "invalid_json", str(exc)) from None
    try:
        return UpdateBatch.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(400, "invalid_update", _clean_errors(exc)) from None


@dataclass(slots=True)
class Job:
    """A job as the server keeps it and as ``job`` events and ``GET jobs`` carry it."""

    id: str
    created: float
    updated: float
    name: str = ""
    state: str = "running"
    n: int | float = 0
    total: int | float | None = None
    unit: str = "it"
    message: str = ""
    finished: float | None = None
    elapsed: int | float = 0.0
    rate: int | float | None = None
    eta: float | None = None
    error: dict[str, str] | None = None
    kernel_id: str | None = None
    cell_id: str | None = None
    path: str | None = None
    parent: str | None = None
    owner: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    cancel_requested: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _JOB_FIELDS}

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def compute_eta(self) -> None:
        eta = None
        if self.state == "running" and self.total is not None and self.rate and self.total >= self.n:
            eta = (self.total - self.n) / self.rate
        # A valid but tiny rate (5e-324) makes it infinite, which JSON cannot carry: unknown, then.
        self.eta = eta if eta is not None and math.isfinite(eta) else None


_JOB_FIELDS = tuple(Job.__dataclass_fields__)


@dataclass(slots=True)
class JobPage:
    """One page of ``GET jobs``: the jobs (newest first), how many match in all, the cursor of the next page."""

    jobs: list[Job]
    total: int
    next: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"jobs": [job.to_dict() for job in self.jobs], "total": self.total, "next": self.next}


def parse_limit(text: str | None) -> int:
    """``?limit=`` as an int, or the protocol's 400 ``invalid_query``; no value: the default page size."""
    if text is None or text == "":
        return DEFAULT_PAGE_SIZE
    if not text.isascii() or not text.isdigit() or len(text) > 9 or not 1 <= int(text) <= MAX_PAGE_SIZE:
        raise ProtocolError(400, "invalid_query", f"limit must be 1 to {MAX_PAGE_SIZE}")
    return int(text)


def created_key(created: float) -> int:
    """A job's creation time in whole microseconds: its place in the order of ``GET jobs`` (then its id)."""
    return round(created * 1_000_000)


def encode_page_cursor(created: int, job_id: str) -> str:
    """Where a page ends in the order of ``GET jobs``, from ``created_key`` and the id. Opaque to clients."""
    return f"{created}~{job_id}"


def decode_page_cursor(cursor: str) -> tuple[int, str]:
    """The place ``encode_page_cursor`` names, or the protocol's 400 ``invalid_query``."""
    found = PAGE_CURSOR.fullmatch(cursor)
    if found is None:
        raise ProtocolError(400, "invalid_query", "cursor must be the `next` of a page of GET jobs")
    return int(found.group(1)), found.group(2)
