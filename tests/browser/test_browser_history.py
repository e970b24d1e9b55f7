"""The Jobs panel in a real JupyterLab and Chromium with a large or lost history: older jobs read page by page, and
a server restarted with its memory store (a new history) leaves no ghost job in the panel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests._servers import free_port
from tests.browser.conftest import Lab, running_jupyter

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

_ARGS = [
    "--LabApp.app_settings_dir={settings}",
    "--LabApp.expose_app_in_browser=True",
    "--SSEExtension.store_kind=memory",
    "--SSEExtension.sync_finished_jobs=5",
]


def _publish(lab: Lab, jobs: list[dict[str, Any]]) -> None:
    lab.request("POST", "jupyter-sse/api/updates", {"jobs": jobs})


def _open_panel(lab: Lab, browser: Any) -> Any:
    page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    page.goto(f"{lab.url}lab?token={lab.token}")
    page.wait_for_function("() => window.jupyterapp?.commands.hasCommand('jupyter-sse:open-jobs')")
    # after the shell restored its layout: a restore that comes later may collapse the side bar again
    page.evaluate(
        "async () => { await window.jupyterapp.restored;"
        " await window.jupyterapp.commands.execute('jupyter-sse:open-jobs'); }"
    )
    page.locator(".jp-sse-panel").wait_for(state="visible", timeout=20_000)
    return page


def _rows(page: Any) -> Any:
    return page.locator(".jp-sse-panel .jp-sse-row")


def _row(page: Any, name: str) -> Any:
    return page.locator(".jp-sse-panel .jp-sse-row", has=page.locator(".jp-sse-row-name", has_text=name))


def test_the_panel_reads_older_jobs_by_page_and_drops_ghosts_after_a_restart(tmp_path: Path, browser: Any) -> None:
    port = free_port()
    with running_jupyter(tmp_path, "jupyterlab", _ARGS, port=port) as lab:
        token = lab.token
        _publish(lab, [{"id": f"old{i:03d}", "name": f"old{i:03d}", "state": "succeeded"} for i in range(120)])
        _publish(lab, [{"id": "ghost", "name": "ghost", "n": 1, "total": 10}])
        page = _open_panel(lab, browser)
        _row(page, "ghost").wait_for(timeout=20_000)
        # The stream's sync: the running job and the 5 most recent finished ones; the rest come by page.
        page.wait_for_function("() => document.querySelectorAll('.jp-sse-panel .jp-sse-row').length === 6")
        more = page.locator(".jp-sse-panel-more")
        more.click()  # the first page: the 100 newest, 6 of which the panel has already
        page.wait_for_function("() => document.querySelectorAll('.jp-sse-panel .jp-sse-row').length === 100")
        more.click()  # the last page
        page.wait_for_function("() => document.querySelectorAll('.jp-sse-panel .jp-sse-row').length === 121")
        assert page.locator(".jp-sse-panel-count").text_content() == "121 of 121 jobs"
        more.wait_for(state="hidden")
    # The server comes back on the same port with an empty memory store: a new history, without "ghost".
    with running_jupyter(tmp_path, "jupyterlab", _ARGS, port=port, token=token) as lab:
        _publish(lab, [{"id": "fresh", "name": "fresh", "n": 1}])
        _row(page, "fresh").wait_for(timeout=60_000)  # the tab's stream reconnected and was reset
        page.wait_for_function("() => document.querySelectorAll('.jp-sse-panel .jp-sse-row').length === 1")
        assert _row(page, "ghost").count() == 0 and _rows(page).count() == 1
        page.context.close()
