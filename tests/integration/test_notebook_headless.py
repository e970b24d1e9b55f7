"""Headless notebook runs (nbclient, as papermill and notebook tests use it): the output keeps a readable final
line, updated in place rather than flooded, with and without a Jupyter server to publish to."""

from __future__ import annotations

import re
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from jupyter_sse.client import AsyncClient
from tests.conftest import SSEServer

pytestmark = pytest.mark.timeout(120)

LOOP = """import time
from jupyter_sse import progress
for i in progress(range(30), desc='headless'):
    time.sleep(0.05)
"""


def _notebook(*sources: str) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    return nb


def _texts(cell: Any) -> list[str]:
    """What a reader of the saved notebook sees: the text of each output that shows any (the headless log's
    progress lines are outputs emptied as soon as they are sent)."""
    texts = []
    for output in cell.outputs:
        if output.output_type in ("display_data", "execute_result"):
            texts.append(output.data.get("text/plain", ""))
        elif output.output_type == "stream":
            texts.append(output.text)
    return [text for text in texts if text]


def _assert_final_line(text: str, state: str, count: str) -> None:
    assert state in text, text
    assert count in text, text
    assert re.search(r"\d\d:\d\d", text), f"no elapsed time in {text!r}"
    assert re.search(r"\d+(\.\d+)?\s*it/s", text), f"no rate in {text!r}"


def test_nbclient_without_server_keeps_final_text_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTER_SSE_URL", raising=False)
    monkeypatch.delenv("JUPYTER_SSE_TOKEN", raising=False)
    nb = _notebook(LOOP)
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    texts = _texts(nb.cells[0])
    # One display, updated in place: not a flood of outputs.
    assert len(texts) == 1, texts
    _assert_final_line(texts[0], "succeeded", "30/30")
    assert "headless" in texts[0]


def test_nbclient_failure_leaves_failed_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTER_SSE_URL", raising=False)
    nb = _notebook(
        "from jupyter_sse import progress\nfor i in progress(range(10), desc='broken'):\n"
        "    if i == 4:\n        raise RuntimeError('disk full')\n"
    )
    client = NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=True)
    client.execute()
    texts = _texts(nb.cells[0])
    assert any("failed" in t and "disk full" in t and "4/10" in t for t in texts), texts


async def test_nbclient_with_server_publishes_the_job(sse_server: SSEServer) -> None:
    nb = _notebook(LOOP)
    await NotebookClient(nb, timeout=60, kernel_name="python3").async_execute()
    texts = _texts(nb.cells[0])
    assert len(texts) == 1, texts
    _assert_final_line(texts[0], "succeeded", "30/30")
    async with AsyncClient(sse_server.url, sse_server.token) as client:
        jobs = [j for j in await client.list() if j["name"] == "headless"]
    assert len(jobs) == 1
    assert jobs[0]["state"] == "succeeded"
    assert jobs[0]["n"] == 30


def test_nbclient_without_server_shows_the_last_log_lines_with_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTER_SSE_URL", raising=False)
    monkeypatch.delenv("JUPYTER_SSE_TOKEN", raising=False)
    nb = _notebook(
        "from jupyter_sse import job\nwith job('logged', total=12) as j:\n"
        "    for i in range(12):\n        j.log(f'step {i} done')\n        j.update()\n"
        "    j.log('two\\nlines')\n"
    )
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    texts = _texts(nb.cells[0])
    assert len(texts) == 1, texts
    lines = texts[0].splitlines()
    # bounded: the last five lines, and how many came before them
    assert lines[:-1] == ["[9 earlier log lines]", "step 9 done", "step 10 done", "step 11 done", "two", "lines"]
    _assert_final_line(lines[-1], "succeeded", "12/12")
