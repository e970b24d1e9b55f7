"""The job center in a real JupyterLab and a real Chromium: the Jobs panel, the status bar item, a notification
when a long job ends, and re-attaching a running job to its cell after a reload without saving."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import ARTIFACTS, Lab, NotebookPage

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PLUGIN_SETTINGS = "lab/api/settings/jupyter-sse:plugin"
DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "panel.png"


def _row(nb: NotebookPage, name: str) -> Any:
    page = nb.page
    return page.locator(".jp-sse-panel .jp-sse-row", has=page.locator(".jp-sse-row-name", has_text=name))


def _wait_row_state(nb: NotebookPage, name: str, state: str, timeout: float = 30) -> None:
    _row(nb, name).and_(nb.page.locator(f".jp-sse-state-{state}")).wait_for(timeout=timeout * 1000)


def _set_settings(lab: Lab, values: dict[str, Any]) -> None:
    lab.request("PUT", PLUGIN_SETTINGS, {"raw": json.dumps(values)})


@pytest.fixture
def quick_notifications(lab: Lab) -> Iterator[None]:
    # the default threshold (30 s) would make the test wait half a minute: announce jobs longer than 1 s
    _set_settings(lab, {"notifyAfterSeconds": 1})
    yield
    _set_settings(lab, {})


def test_panel_lists_filters_cancels_removes_and_opens_the_cell(lab: Lab, notebook_page: Any) -> None:
    name = lab.write_notebook(
        "center.ipynb",
        "import time\nfrom jupyter_sse import progress, submit\n"
        "for i in progress(range(20), desc='finisher'):\n    time.sleep(0.1)",
        "def endless():\n    for i in progress(range(5000), desc='steps'):\n        time.sleep(0.05)\n"
        "h = submit(endless, name='background')",
    )
    nb = notebook_page(name)
    page = nb.page
    nb.run_all()

    # the status bar counts the running jobs; a click opens the panel
    status = page.locator(".jp-sse-status")
    page.wait_for_function(
        "() => Number(document.querySelector('.jp-sse-status')?.dataset.running) >= 1", timeout=30_000
    )
    assert "running" in status.inner_text()
    status.click()
    panel = page.locator(".jp-sse-panel")
    panel.wait_for(state="visible", timeout=10_000)

    # every job, live: the loop finishes, the background job and its child run
    _wait_row_state(nb, "finisher", "succeeded")
    _wait_row_state(nb, "background", "running")
    _wait_row_state(nb, "steps", "running")
    finisher = _row(nb, "finisher")
    assert "20/20 it" in finisher.locator(".jp-sse-row-stats").inner_text()
    assert "center.ipynb" in finisher.locator(".jp-sse-row-where").inner_text()
    assert "cell c0" in finisher.locator(".jp-sse-row-where").inner_text()
    page.wait_for_function(
        "() => document.querySelector('.jp-sse-status').dataset.running === '2'", timeout=10_000
    )  # the background job and its loop
    assert "2 running" in status.inner_text()
    page.wait_for_timeout(600)  # a few more events: the bar of the child has moved
    nb.screenshot("jobcenter-panel", panel)
    nb.screenshot("jobcenter-page")  # the notebook, the panel and the status bar together
    _save_docs_image(panel)

    # the filter
    page.select_option(".jp-sse-panel-filter", "active")
    _row(nb, "finisher").wait_for(state="detached", timeout=5_000)
    assert _row(nb, "background").count() == 1
    page.select_option(".jp-sse-panel-filter", "finished")
    _row(nb, "background").wait_for(state="detached", timeout=5_000)
    assert _row(nb, "finisher").count() == 1
    page.select_option(".jp-sse-panel-filter", "all")

    # clicking a job opens its notebook at its cell
    page.evaluate("() => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = 0; }")
    _row(nb, "background").locator(".jp-sse-row-name").click()
    page.wait_for_function("() => window.jupyterapp.shell.currentWidget.content.activeCellIndex === 1", timeout=10_000)

    # Cancel reaches the background job (and its loop) through the server
    background_id = _row(nb, "background").get_attribute("data-job-id")
    _row(nb, "background").locator(".jp-sse-row-action").click()
    _wait_row_state(nb, "background", "cancelled", timeout=15)
    _wait_row_state(nb, "steps", "cancelled", timeout=15)
    assert lab.job(background_id or "")["state"] == "cancelled"
    page.wait_for_function("() => document.querySelector('.jp-sse-status').dataset.running === '0'", timeout=10_000)

    # Remove forgets a finished job on the server
    finisher_id = _row(nb, "finisher").get_attribute("data-job-id")
    _row(nb, "finisher").locator(".jp-sse-row-action").click()
    _row(nb, "finisher").wait_for(state="detached", timeout=10_000)
    with pytest.raises(urllib.error.HTTPError) as info:
        lab.job(finisher_id or "")
    assert info.value.code == 404
    nb.screenshot("jobcenter-after-cancel-remove", panel)


def _save_docs_image(panel: Any) -> None:
    """The README's screenshot: the panel alone, small."""
    DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "panel-docs.png"
    box = panel.bounding_box()
    rows = panel.locator(".jp-sse-row")
    last = rows.nth(rows.count() - 1).bounding_box()
    height = (last["y"] + last["height"] - box["y"] + 4) if last else box["height"]
    panel.page.screenshot(
        path=str(path), clip={"x": box["x"], "y": box["y"], "width": box["width"], "height": min(height, 400)}
    )
    # A test run never changes a committed file unless asked: JUPYTER_SSE_UPDATE_DOCS_IMAGES=1 refreshes it.
    if os.environ.get("JUPYTER_SSE_UPDATE_DOCS_IMAGES") == "1" and path.stat().st_size < 150_000:
        shutil.copy(path, DOCS_IMAGE)


def test_notification_when_a_long_job_ends(lab: Lab, notebook_page: Any, quick_notifications: None) -> None:
    name = lab.write_notebook(
        "notify.ipynb",
        "import time\nfrom jupyter_sse import progress\nfor i in progress(range(15), desc='slowpoke'):\n"
        "    time.sleep(0.1)\n",
        "for i in progress(range(3), desc='speedy'):\n    pass\n",
    )
    nb = notebook_page(name)
    page = nb.page
    nb.run_all()
    toast = page.locator(".Toastify__toast", has_text="slowpoke")
    toast.wait_for(timeout=30_000)
    text = toast.inner_text()
    assert "finished after" in text and "notify.ipynb" in text
    nb.screenshot("jobcenter-notification")
    page.wait_for_timeout(1000)
    # a job shorter than the threshold is not announced
    assert page.locator(".Toastify__toast", has_text="speedy").count() == 0


def test_reload_without_saving_reattaches_the_running_job(lab: Lab, notebook_page: Any) -> None:
    name = lab.write_notebook(
        "reattach.ipynb",
        "x = 1",
        "import time\nfrom jupyter_sse import progress\n"
        "for i in progress(range(100), desc='survivor'):\n    time.sleep(0.1)",
    )
    nb = notebook_page(name)
    page = nb.page
    nb.run_all()
    widget = nb.widgets().first
    widget.wait_for(state="attached", timeout=30_000)
    page.wait_for_function(
        "el => Number(el.querySelector('[role=progressbar]').getAttribute('aria-valuenow')) >= 5",
        arg=widget.element_handle(),
        timeout=30_000,
    )
    job_id = _job_id_of(lab, "survivor")
    # the file on disk has no outputs: the reload loses the cell's output
    assert json.loads((lab.root / name).read_text())["cells"][1]["outputs"] == []
    page.reload()
    # not wait_kernel_idle: the kernel is busy with the job until it ends, and re-attach is for running jobs
    page.wait_for_function(
        "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget; "
        "return !!w && !!w.context && w.context.isReady; }",
        timeout=30_000,
    )
    reattached = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-sse-job")
    reattached.wait_for(state="attached", timeout=30_000)
    # live: the bar moves on after the re-attach, in the cell that ran the job, once
    first = float(reattached.locator("[role=progressbar]").get_attribute("aria-valuenow") or 0)
    page.wait_for_function(
        "([el, v]) => Number(el.querySelector('[role=progressbar]').getAttribute('aria-valuenow')) > v",
        arg=[reattached.element_handle(), first],
        timeout=15_000,
    )
    assert page.locator(".jp-Notebook .jp-sse-job").count() == 1
    assert page.locator(".jp-Notebook .jp-Cell").nth(0).locator(".jp-sse-job").count() == 0
    output_job = page.evaluate(
        """() => {
            const cell = window.jupyterapp.shell.currentWidget.content.model.cells.get(1);
            const data = cell.outputs.get(0).data;
            return data['application/vnd.jupyter-sse.job+json'].job_id;
        }"""
    )
    assert output_job == job_id
    nb.screenshot("jobcenter-reattached", reattached)
    lab.request("POST", f"jupyter-sse/api/jobs/{job_id}/cancel")  # done here: free the kernel


def _job_id_of(lab: Lab, name: str) -> str:
    for job in lab.request("GET", "jupyter-sse/api/jobs")["jobs"]:
        if job["name"] == name:
            return str(job["id"])
    raise AssertionError(f"no job {name!r}")
