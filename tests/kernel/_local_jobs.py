"""Jobs made in this process with no server and no real display: each started job is recorded, for tests of
the kernel side's own API (tqdm, asyncio) that look at the JobState it made."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from jupyter_sse.kernel import publisher as publisher_mod
from jupyter_sse.kernel._state import JobState
from jupyter_sse.kernel.display import Display, set_display_factory

__all__ = ["named", "recording_jobs"]


class _Recorder(Display):
    def __init__(self, started: list[JobState]) -> None:
        self.started = started

    def start(self, job: JobState) -> None:
        self.started.append(job)


@contextlib.contextmanager
def recording_jobs() -> Iterator[list[JobState]]:
    """Every job started inside the block, in order, published nowhere."""
    pub = publisher_mod.configure(None)
    started: list[JobState] = []
    set_display_factory(lambda job: _Recorder(started))
    try:
        yield started
    finally:
        set_display_factory(None)
        pub.close()


def named(jobs: list[JobState], name: str) -> JobState:
    found = [j for j in jobs if j.name == name]
    assert len(found) == 1, [j.name for j in jobs]
    return found[0]
