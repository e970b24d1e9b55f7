"""Test notebooks that report progress: a pytest plugin with an in-process hub and a notebook runner.

Enable it with ``pytest -p jupyter_sse.testing``, or in a ``conftest.py``::

    pytest_plugins = ["jupyter_sse.testing"]

Then a test asks for the ``sse_hub`` fixture: a hub (``jupyter sse hub``) served in a background thread on a
free loopback port for the length of the test, with ``JUPYTER_SSE_URL`` and ``JUPYTER_SSE_TOKEN`` pointing at
it, so every kernel that nbclient (or papermill) starts during the test publishes there. They are restored
afterwards. ``sse_hub.run_notebook(path)`` executes a notebook with nbclient while a subscriber records every
event the hub sends, and returns a ``NotebookRun``::

    def test_training_notebook(sse_hub):
        run = sse_hub.run_notebook("notebooks/train.ipynb", timeout=120)
        train = run.job("train")                   # the final state of the job named "train"
        assert train["state"] == "succeeded"
        assert (train["n"], train["total"]) == (100, 100)
        assert len(run.snapshots(train["id"])) >= 5  # it reported progress at least 5 times

``run.jobs`` holds the final Job (a dict, as ``GET jobs/{id}`` returns it) of every job the run started, oldest
first; ``run.events(job_id)`` every event the hub sent about one job (``jupyter_sse.client.Event``: ``event``
is ``job``, ``log`` or ``removed``, ``data`` the decoded JSON), in order; ``run.snapshots(job_id)`` the data of
its ``job`` events; ``run.log(job_id)`` its log lines; ``run.notebook`` the executed notebook (nbformat).
Keyword arguments go to ``nbclient.NotebookClient`` (``timeout``, ``kernel_name``, ``allow_errors``, ...); the
kernel runs in the notebook's folder. In an ``async def`` test, ``await sse_hub.run_notebook_async(path)``.

``run_notebook(path, url=..., token=...)`` does the same against any server that speaks the protocol, a Jupyter
server with the extension included (its kernels already inherit the variables from the server).

Needs the ``asgi`` extra (the hub) and nbclient.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from .client import Client, Event
from .client._common import api_url, auth_headers, error_from_response
from .protocol import TERMINAL_STATES

if TYPE_CHECKING:
    from .hub import BackgroundHub

__all__ = ["NotebookRun", "SSEHub", "run_notebook", "run_notebook_async", "sse_hub"]

_ENV = ("JUPYTER_SSE_URL", "JUPYTER_SSE_TOKEN", "JUPYTER_SSE_DISABLE")
# How long after the notebook ends the recorder may take to see the final state of its jobs.
_CATCH_UP = 10.0


@dataclass
class NotebookRun:
    """What one notebook run did: its jobs' final states and every event the server sent about them."""

    notebook: Any
    jobs: list[dict[str, Any]]
    _events: list[Event] = field(default_factory=list, repr=False)

    def job(self, name: str) -> dict[str, Any]:
        """The one job of this run with that name (AssertionError if there is none, or several)."""
        found = [job for job in self.jobs if job.get("name") == name]
        assert len(found) == 1, f"{len(found)} jobs named {name!r} in {[job.get('name') for job in self.jobs]}"
        return found[0]

    def events(self, job_id: str) -> list[Event]:
        return [event for event in self._events if _job_of(event) == job_id]

    def snapshots(self, job_id: str) -> list[dict[str, Any]]:
        return [event.data for event in self.events(job_id) if event.event == "job"]

    def log(self, job_id: str) -> list[str]:
        return [line for event in self.events(job_id) if event.event == "log" for line in event.data["lines"]]


def _job_of(event: Event) -> str | None:
    if not isinstance(event.data, dict):
        return None
    value = event.data.get("id") if event.event == "job" else event.data.get("job")
    return str(value) if value is not None else None


class _Recorder:
    """A subscriber to every job, on a thread of its own so that it records while a sync nbclient run blocks."""

    def __init__(self, url: str, token: str | None) -> None:
        self._url = url
        self._token = token
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name="jupyter-sse-recorder", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        if not self._connected.wait(timeout) or self._error is not None:
            self.stop()
            raise RuntimeError(f"cannot subscribe to {self._url}: {self._error!r}")

    def snapshot(self) -> list[Event]:
        with self._lock:
            return list(self.events)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start(); a stop's cancellation ends here too
            self._error = self._error or exc
        finally:
            self._connected.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        timeout = httpx.Timeout(10.0, read=None)  # nothing may be sent for a long while: that is no error
        async with (
            httpx.AsyncClient(base_url=api_url(self._url), headers=auth_headers(self._token), timeout=timeout) as http,
            aconnect_sse(http, "GET", "events") as source,
        ):
            if source.response.status_code != 200:
                await source.response.aread()
                raise error_from_response(source.response)
            # The server subscribed us before it answered: from here on, no change can be missed.
            self._connected.set()
            async for sse in source.aiter_sse():
                if sse.data:
                    with self._lock:
                        self.events.append(Event(event=sse.event, data=sse.json(), id=sse.id))

    def stop(self) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            loop.call_soon_threadsafe(task.cancel)
        self._thread.join(10)


def _prepare(path: str | os.PathLike[str], nbclient_kwargs: dict[str, Any]) -> Any:
    import nbformat
    from nbclient import NotebookClient

    notebook_path = Path(path)
    nb = nbformat.read(notebook_path, as_version=4)  # type: ignore[no-untyped-call]
    kwargs: dict[str, Any] = {"timeout": 60}
    kwargs.update(nbclient_kwargs)
    kwargs.setdefault("resources", {"metadata": {"path": str(notebook_path.parent.resolve())}})
    return nb, NotebookClient(nb, **kwargs)


def _begin(url: str, token: str | None) -> tuple[_Recorder, set[str]]:
    with Client(url, token) as client:
        before = {str(job["id"]) for job in client.list()}
    recorder = _Recorder(url, token)
    recorder.start()
    return recorder, before


def _finish(url: str, token: str | None, recorder: _Recorder, before: set[str], nb: Any) -> NotebookRun:
    try:
        with Client(url, token) as client:
            deadline = time.monotonic() + _CATCH_UP
            while True:
                jobs = [job for job in client.list() if job["id"] not in before]
                if _caught_up(jobs, recorder.snapshot()) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
    finally:
        recorder.stop()
    events = recorder.snapshot()
    seen = {job_id for job_id in map(_job_of, events) if job_id is not None} - before
    # A job the run started and that retention or a DELETE removed since is known by its last snapshot.
    listed = {str(job["id"]) for job in jobs}
    for job_id in sorted(seen - listed):
        snapshots = [event.data for event in events if event.event == "job" and _job_of(event) == job_id]
        if snapshots:
            jobs.append(snapshots[-1])
    jobs.sort(key=lambda job: job.get("created") or 0.0)
    return NotebookRun(notebook=nb, jobs=jobs, _events=[e for e in events if _job_of(e) not in before])


def _caught_up(jobs: list[dict[str, Any]], events: list[Event]) -> bool:
    """The recorder has the server's current state of every job, and every job has ended."""
    latest: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.event == "job":
            latest[str(event.data["id"])] = event.data
    return all(
        job["state"] in TERMINAL_STATES and latest.get(str(job["id"]), {}).get("updated") == job["updated"]
        for job in jobs
    )


def run_notebook(
    path: str | os.PathLike[str], *, url: str, token: str | None = None, **nbclient_kwargs: Any
) -> NotebookRun:
    """Execute a notebook with nbclient while recording the events of ``url``'s server; see the module doc.

    The kernel publishes wherever ``JUPYTER_SSE_URL`` in this process's environment points (``sse_hub`` sets
    it): ``url`` and ``token`` are where the recorder subscribes.
    """
    nb, client = _prepare(path, nbclient_kwargs)
    recorder, before = _begin(url, token)
    try:
        client.execute()
    except BaseException:
        recorder.stop()
        raise
    return _finish(url, token, recorder, before, nb)


async def run_notebook_async(
    path: str | os.PathLike[str], *, url: str, token: str | None = None, **nbclient_kwargs: Any
) -> NotebookRun:
    """``run_notebook`` for ``async def`` tests: the notebook runs on the test's event loop."""
    nb, client = _prepare(path, nbclient_kwargs)
    recorder, before = await asyncio.to_thread(_begin, url, token)
    try:
        await client.async_execute()
    except BaseException:
        await asyncio.to_thread(recorder.stop)
        raise
    return await asyncio.to_thread(_finish, url, token, recorder, before, nb)


class SSEHub:
    """What the ``sse_hub`` fixture gives: a running hub, and notebook runs recorded against it."""

    def __init__(self, hub: BackgroundHub) -> None:
        self._hub = hub
        self.url: str = hub.url
        self.token: str | None = hub.token

    @property
    def hub(self) -> BackgroundHub:
        return self._hub

    def client(self) -> Client:
        """A ``jupyter_sse.client.Client`` of this hub (close it, or use it in a ``with``)."""
        return Client(self.url, self.token)

    def run_notebook(self, path: str | os.PathLike[str], **nbclient_kwargs: Any) -> NotebookRun:
        return run_notebook(path, url=self.url, token=self.token, **nbclient_kwargs)

    async def run_notebook_async(self, path: str | os.PathLike[str], **nbclient_kwargs: Any) -> NotebookRun:
        return await run_notebook_async(path, url=self.url, token=self.token, **nbclient_kwargs)


@pytest.fixture
def sse_hub() -> Iterator[SSEHub]:
    """A jupyter-sse hub for this test, with the environment pointing the kernels it starts at it."""
    from .hub import BackgroundHub

    saved = {name: os.environ.get(name) for name in _ENV}
    with BackgroundHub(secrets.token_urlsafe(16)) as hub:
        os.environ["JUPYTER_SSE_URL"] = hub.url
        os.environ["JUPYTER_SSE_TOKEN"] = str(hub.token)
        os.environ.pop("JUPYTER_SSE_DISABLE", None)
        try:
            yield SSEHub(hub)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
