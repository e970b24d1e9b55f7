"""The tab's shared stream against a real JupyterLab at its cap on event streams: the server answers 503 with
Retry-After, and the tab comes back when it was told to (with a little jitter added), not on its own backoff."""

from __future__ import annotations

import itertools
import subprocess
import sys
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import ARTIFACTS, Lab, running_jupyter

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

RETRY_AFTER = 4  # seconds: the server sends ceil(retry_ms / 1000)
JITTER = 0.2  # the most the tab adds to it, as a fraction (labextension/src/backoff.ts)
_ARGS = [
    "--LabApp.app_settings_dir={settings}",
    "--LabApp.expose_app_in_browser=True",
    "--SSEExtension.store_kind=memory",
    "--SSEExtension.max_event_streams=1",
    f"--SSEExtension.retry_ms={RETRY_AFTER * 1000}",
]


@pytest.fixture
def capped_lab(tmp_path: Path) -> Iterator[Lab]:
    with running_jupyter(tmp_path, "jupyterlab", _ARGS) as lab:
        yield lab


# A client that opens the events stream, says so on stdout, and then reads it until it is stopped.
_HOLDER = """
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "token " + sys.argv[2]})
with urllib.request.urlopen(req) as stream:
    print(stream.status, stream.readline().decode().strip(), flush=True)
    while stream.read(1):
        pass
"""


@pytest.fixture
def held_stream(capped_lab: Lab) -> Iterator[subprocess.Popen[str]]:
    """The server's only event stream, held by another process (stopped by PID at the end)."""
    url = capped_lab.url + "jupyter-sse/api/events"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, url, capped_lab.token], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"200 retry: {RETRY_AFTER * 1000}"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _events_responses(page: Any) -> list[Any]:
    seen: list[Any] = []
    page.on("response", lambda r: seen.append(r) if r.url.split("?")[0].endswith("jupyter-sse/api/events") else None)
    return seen


def test_a_refused_stream_comes_back_after_retry_after(
    capped_lab: Lab, held_stream: subprocess.Popen[str], browser: Any
) -> None:
    lab = capped_lab
    with pytest.raises(urllib.error.HTTPError) as refused:
        lab.request("GET", "jupyter-sse/api/events")
    assert (refused.value.code, refused.value.headers["Retry-After"]) == (503, str(RETRY_AFTER))

    page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    responses = _events_responses(page)
    page.goto(f"{lab.url}lab?token={lab.token}")
    page.wait_for_function("() => window.jupyterapp?.commands.hasCommand('jupyter-sse:open-jobs')")
    page.evaluate(
        "async () => { await window.jupyterapp.restored;"
        " await window.jupyterapp.commands.execute('jupyter-sse:open-jobs'); }"
    )
    panel = page.locator("#jupyter-sse-jobs")
    panel.wait_for(state="visible", timeout=20_000)
    # three refusals: the tab's first attempt and two retries, each told to wait RETRY_AFTER seconds
    page.wait_for_function(
        "() => Number(document.getElementById('jupyter-sse-jobs').dataset.connections) >= 3",
        timeout=(3 * RETRY_AFTER * (1 + JITTER) + 10) * 1000,
    )
    connection = page.locator(".jp-sse-panel-connection")
    text = connection.inner_text()
    assert text.startswith("server busy: retrying in "), text
    assert 0 <= int(text.split()[-2]) <= RETRY_AFTER * (1 + JITTER) + 1
    assert panel.get_attribute("data-connected") == "false"
    panel.screenshot(path=str(ARTIFACTS / "retry-after-refused.png"))

    held_stream.kill()  # the slot is free: the next attempt, at most RETRY_AFTER plus the jitter later, connects
    held_stream.wait()
    page.wait_for_function(
        "() => document.getElementById('jupyter-sse-jobs').dataset.connected === 'true'",
        timeout=(RETRY_AFTER * (1 + JITTER) + 3) * 1000,
    )
    assert connection.inner_text() == ""
    lab.request("POST", "jupyter-sse/api/updates", {"jobs": [{"id": "after", "name": "after the wait", "n": 1}]})
    page.locator(".jp-sse-panel .jp-sse-row-name", has_text="after the wait").wait_for(timeout=10_000)

    statuses = [r.status for r in responses]
    starts = [r.request.timing["startTime"] / 1000 for r in responses]
    assert statuses[:3] == [503, 503, 503] and statuses[-1] == 200, statuses
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    print(f"attempts: {statuses}; gaps between them (s): {[round(g, 2) for g in gaps]}")
    # never sooner than told (the usual backoff would have retried after 1.5-2.5 s), never much later
    for gap in gaps:
        assert RETRY_AFTER - 0.1 <= gap <= RETRY_AFTER * (1 + JITTER) + 0.5, gaps
    page.context.close()
