"""Server-Sent Events wire encoding, as the WHATWG HTML spec defines the stream format.

A few spec-driven lines rather than sse-starlette's encoder: importing that package pulls starlette and anyio
into the Jupyter server process (its ``__init__`` also patches uvicorn's exit handler).
"""

from __future__ import annotations

import re

__all__ = ["encode_comment", "encode_event", "encode_id", "encode_retry"]

# The spec ends a line at CRLF, LF or CR; str.splitlines() would also split at \v, \f, \x1c, \u2028...
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _check_field(name: str, value: str) -> None:
    # A CR or LF would end the field early (and inject another); the spec ignores an id with NUL.
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"SSE {name} must not contain CR, LF or NUL: {value!r}")


def encode_event(data: str, event: str | None = None, id: str | None = None) -> bytes:
    """One event: optional ``id:`` and ``event:`` lines, one ``data:`` line per line of ``data``."""
    parts: list[str] = []
    if id is not None:
        _check_field("id", id)
        parts.append(f"id: {id}\n")
    if event is not None:
        _check_field("event", event)
        parts.append(f"event: {event}\n")
    if "\n" in data or "\r" in data:
        parts.extend(f"data: {line}\n" for line in _LINE_BREAK.split(data))
    else:
        parts.append(f"data: {data}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def encode_id(id: str) -> bytes:
    """A message with only an ``id:``: it moves the client's last event id and dispatches no event (per the spec,
    a message without data is not dispatched, but its id is kept)."""
    _check_field("id", id)
    return f"id: {id}\n\n".encode()


def encode_comment(text: str = "") -> bytes:
    """A comment (ignored by parsers; used to open the stream at once and as the heartbeat)."""
    return "".join(f": {line}\n" for line in _LINE_BREAK.split(text)).encode("utf-8") + b"\n"


def encode_retry(milliseconds: int) -> bytes:
    """The reconnection delay the client should use."""
    if milliseconds < 0:
        raise ValueError("retry must be >= 0")
    return f"retry: {int(milliseconds)}\n\n".encode()
