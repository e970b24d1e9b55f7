"""``notify=`` from a real kernel: ``progress``, ``job``, ``submit`` and ``tqdm`` carry it to the server, whose
rules and per-job targets decide who is told (a ``json://`` endpoint on loopback)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests._notify_targets import HTTPSink
from tests.conftest import SSEServer
from tests.integration.conftest import KernelSession, errors

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def jp_server_config(http_sink: HTTPSink) -> dict[str, Any]:
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_sse": True, "jupyter_server_terminals": False},
            "allow_unauthenticated_access": False,
        },
        "SSEExtension": {
            "store_kind": "memory",
            "notify_urls": [http_sink.url("all")],
            "notify_window": 0.0,
            "notify_min_duration": 0.0,  # every job would notify, but for what it says itself
        },
    }


async def test_notify_argument_from_the_kernel(
    sse_server: SSEServer, kernel: KernelSession, http_sink: HTTPSink
) -> None:
    own = http_sink.url("own")
    messages = await kernel.execute(
        "from jupyter_sse import progress, job, submit, tqdm\n"
        f"for _ in progress(range(3), desc='loop', notify={own!r}): pass\n"
        "with job('manual', notify=True) as j: j.update()\n"
        "submit(lambda: None, name='quiet', notify=False).result(30)\n"
        "for _ in tqdm(range(2), desc='bar', notify=True): pass\n"
        "try:\n    progress(range(1), notify=5)\nexcept ValueError as e:\n    print('refused:', e)\n"
    )
    assert errors(messages) == []
    printed = "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")
    assert "refused: notify= takes True, False, an Apprise URL" in printed
    broker = sse_server.broker
    (extension,) = sse_server.app.extension_manager.extension_apps["jupyter_sse"]
    deadline = time.monotonic() + 20
    # every job's end reached the server (the notifier decides at that moment), and the webhooks arrived
    while len(http_sink.bodies) < 3 or sorted(j.state for j in broker.list_jobs()) != ["succeeded"] * 4:
        assert time.monotonic() < deadline, (http_sink.bodies, broker.list_jobs())
        await asyncio.sleep(0.05)
    assert extension.monitor.notifier.messages == 3  # none for the submitted job: it said no
    told = sorted((b["title"].split(" ")[0], path) for b, path in zip(http_sink.bodies, http_sink.paths, strict=True))
    assert told == [("bar", "/all"), ("loop", "/own"), ("manual", "/all")]
    (quiet,) = [job for job in broker.list_jobs() if job.name == "quiet"]
    assert quiet.metadata["notify"] is False
