"""Waiting on a condition in tests, instead of sleeping for a time that is too long on a quiet machine and too
short on a busy one: poll it often, fail with what was awaited once ``timeout`` has passed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["until", "wait_until"]

T = TypeVar("T")
_POLL = 0.005


def wait_until(condition: Callable[[], T], timeout: float = 10.0, what: str = "the condition") -> T:
    """``condition()``'s first true value, polled from this thread."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(_POLL)
    return value


async def until(condition: Callable[[], T], timeout: float = 10.0, what: str = "the condition") -> T:
    """``condition()``'s first true value, polled between turns of the running loop (which runs meanwhile)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(_POLL)
    return value
