"""What a kernel sends for a job: the job's MIME bundle, once at the start and once at the end, and no comm.

The labextension renders ``application/vnd.jupyter-sse.job+json`` as the live view (it needs only the job id);
every other front end shows the ``text/plain`` line, which the final update replaces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_sse.client import AsyncClient
from jupyter_sse.kernel import job, progress
from jupyter_sse.kernel import publisher as publisher_mod
from jupyter_sse.kernel.display import (
    JOB_MIME,
    KernelDisplay,
    MimeDisplay,
    default_display,
    set_display_factory,
)
from tests._display_fakes import FakeShell, Handle
from tests.conftest import SSEServer

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Jobs shown as MimeDisplays, with IPython's display() recorded instead of sent."""
    import IPython.display

    out: list[dict[str, Any]] = []
    monkeypatch.setattr(IPython.display, "display", lambda data, raw, display_id: Handle(out, data))
    pub = publisher_mod.configure(None)
    set_display_factory(lambda job: MimeDisplay(FakeShell()))
    yield out
    set_display_factory(None)
    pub.close()


def test_bundle_is_the_job_mime_type_and_a_text_line(shown: list[dict[str, Any]]) -> None:
    bar = progress(range(3), desc="train")
    for _ in bar:
        pass
    first = shown[0]["display"]
    assert set(first) == {JOB_MIME, "text/plain"}
    assert first[JOB_MIME] == {"job_id": bar.job_id, "version": 1}
    assert first["text/plain"].startswith("train:   0%|")


def test_one_display_and_one_final_update_with_the_same_mime_data(shown: list[dict[str, Any]]) -> None:
    for _ in progress(range(50), desc="t"):
        pass
    assert len(shown) == 2  # nothing per iteration: the view reads the server's stream
    final = shown[1]["update"]
    assert final[JOB_MIME] == shown[0]["display"][JOB_MIME]
    assert final["text/plain"].startswith("t: 100%|") and final["text/plain"].endswith(" succeeded")


def test_manual_job_and_failure(shown: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError), job("load", total=5) as j:
        j.update(2)
        j.log("line")
        j.message("half way")
        raise ValueError("disk full")
    assert len(shown) == 2
    assert shown[0]["display"][JOB_MIME]["job_id"] == j.id
    assert shown[1]["update"]["text/plain"].endswith(" failed: ValueError: disk full")


def test_leave_false_removes_the_view(shown: list[dict[str, Any]]) -> None:
    for _ in progress(range(2), leave=False):
        pass
    assert shown[-1]["update"] == {"text/plain": ""}


def test_final_update_is_routed_to_the_cell_from_another_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import IPython.display

    out: list[dict[str, Any]] = []
    monkeypatch.setattr(IPython.display, "display", lambda data, raw, display_id: Handle(out, data))
    shell = FakeShell()
    bar = progress(range(3), file=None)
    assert bar._job is not None
    display = MimeDisplay(shell)
    display.start(bar._job)
    t = threading.Thread(target=display.finish, args=(bar._job,))
    t.start()
    t.join()
    assert shell.display_pub.parents == [{"msg_id": "cell"}]
    assert len(out) == 2


def test_default_display_is_the_bundle_when_published_and_text_without_a_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import jupyter_sse.kernel.display as display_mod

    monkeypatch.setattr(display_mod, "ipython_shell", lambda: FakeShell())
    monkeypatch.setattr(display_mod, "is_kernel_shell", lambda shell: True)
    bar = progress(range(1))
    assert bar._job is not None
    pub = publisher_mod.configure(None)
    try:
        assert isinstance(default_display(bar._job), KernelDisplay)
    finally:
        pub.close()
    pub = publisher_mod.configure("http://127.0.0.1:9/", "t")
    try:
        chosen = default_display(bar._job)
        assert isinstance(chosen, MimeDisplay)
        assert chosen.live_interval is None
    finally:
        pub.close()
        publisher_mod.configure(None).close()


def test_mime_type_matches_the_labextension() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "labextension"
    # the renderer takes the type from the wire rules (protocol.ts, checked against protocol.py in test_protocol)
    assert "MIME_TYPE = JOB_MIME_TYPE;" in (root / "src" / "mimetype.ts").read_text()
    assert f"JOB_MIME_TYPE = '{JOB_MIME}';" in (root / "src" / "protocol.ts").read_text()
    package = json.loads((root / "package.json").read_text())
    assert package["jupyterlab"]["mimeExtension"] == "lib/mime.js"  # loaded next to the widget extension


def test_the_bundle_needs_no_ipywidgets() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["ipywidgets"] = None  # importing it fails
        import jupyter_sse.kernel.display as d
        from jupyter_sse.kernel import progress, publisher
        publisher.configure("http://127.0.0.1:9/", "t")
        d.ipython_shell = lambda: type("S", (), {"display_pub": None})()
        d.is_kernel_shell = lambda shell: True
        bar = progress(range(1))
        print(type(d.default_display(bar._job)).__name__)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_SSE_")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "MimeDisplay", proc.stderr


LOOP = """import time
from jupyter_sse import progress
for i in progress(range(40), desc='iopub'):
    time.sleep(0.02)
"""


async def _run(client: Any, code: str, timeout: float = 60, cell_id: str | None = None) -> list[dict[str, Any]]:
    """Run ``code``; every iopub message it caused, once the kernel is idle again. ``cell_id``: sent in the
    request's metadata, as JupyterLab does (nbclient and papermill send none)."""
    if cell_id is None:
        msg_id = client.execute(code)
    else:
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}}
        msg = client.session.msg("execute_request", content, metadata={"cellId": cell_id})
        client.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
    messages = []
    deadline = time.monotonic() + timeout
    while True:
        msg = await client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return messages


async def test_real_kernel_sends_one_display_and_one_update_and_no_comm(sse_server: SSEServer) -> None:
    from jupyter_client.manager import AsyncKernelManager

    env = dict(os.environ, JUPYTER_SSE_URL=sse_server.url, JUPYTER_SSE_TOKEN=sse_server.publish_token)
    km = AsyncKernelManager(kernel_name="python3")
    await km.start_kernel(env=env)
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        await _run(client, "import jupyter_sse")  # the import's own messages are not the loop's
        messages = await _run(client, LOOP, cell_id="a-cell")
        types = [m["msg_type"] for m in messages]
        assert types == ["status", "execute_input", "display_data", "update_display_data", "status"], types
        shown, final = messages[2]["content"], messages[3]["content"]
        display_id = shown["transient"]["display_id"]
        assert display_id and final["transient"]["display_id"] == display_id
        job_id = shown["data"][JOB_MIME]["job_id"]
        assert shown["data"][JOB_MIME] == final["data"][JOB_MIME] == {"job_id": job_id, "version": 1}
        assert shown["data"]["text/plain"].startswith("iopub:   0%|")
        assert final["data"]["text/plain"].startswith("iopub: 100%|") and "40/40" in final["data"]["text/plain"]
        assert final["data"]["text/plain"].endswith(" succeeded")
        # the kernel made no widget: ipywidgets was not even imported
        check = await _run(client, "import sys; print('ipywidgets' in sys.modules)")
        printed = [m["content"]["text"] for m in check if m["msg_type"] == "stream"]
        assert printed == ["False\n"], printed
        async with AsyncClient(sse_server.url, sse_server.token) as api:
            got = await api.get(job_id)
        assert got["state"] == "succeeded" and got["n"] == 40
        # Without a cell id (nbclient, papermill): the same, then the final line once more as a new output, for
        # papermill's log (which logs new outputs, not updates), emptied at once for the saved notebook.
        messages = await _run(client, LOOP)
        types = [m["msg_type"] for m in messages]
        assert types == [
            "status", "execute_input", "display_data", "update_display_data", "display_data", "update_display_data",
            "status",
        ], types  # fmt: skip
        main, final, logged, emptied = (m["content"] for m in messages[2:6])
        assert final["transient"] == main["transient"] and JOB_MIME in final["data"]
        assert logged["data"] == {"text/plain": final["data"]["text/plain"]}
        assert emptied["transient"] == logged["transient"] != main["transient"]
        assert emptied["data"] == {"text/plain": ""}
    finally:
        client.stop_channels()
        await km.shutdown_kernel(now=True)
