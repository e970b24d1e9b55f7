"""The job view in a real JupyterLab and a real Chromium: live, shared-stream, reload, cancel, failure.

``progress()`` displays the job's MIME type (application/vnd.jupyter-sse.job+json), rendered by the
labextension's MIME renderer; ``JobWidget`` (ipywidgets) shows the same view inside widget layouts.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.browser.conftest import NotebookPage

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def _wait_state(widget: Any, state: str, timeout: float = 30) -> None:
    widget.page.wait_for_function(
        "([el, state]) => el.dataset.state === state",
        arg=[widget.element_handle(), state],
        timeout=timeout * 1000,
    )


def _watch_values(nb: NotebookPage, widget: Any, until: str, timeout: float = 30) -> list[str]:
    """The aria-valuenow values the bar shows, polled every 50 ms, until the widget reaches ``until``."""
    bar = widget.locator("[role=progressbar]")
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = widget.get_attribute("data-state") == until
        # read after the state: an event between the two reads must not leave a stale last value
        value = bar.get_attribute("aria-valuenow")
        if value is not None and (not seen or seen[-1] != value):
            seen.append(value)
        if done:
            return seen
        nb.page.wait_for_timeout(50)
    raise AssertionError(f"widget never reached {until}; saw {seen}, state {widget.get_attribute('data-state')}")


def _stream_connections(nb: NotebookPage) -> int:
    """Connections the tab's shared stream has opened, as the Jobs panel's node tells them."""
    return int(nb.page.evaluate("() => document.getElementById('jupyter-sse-jobs').dataset.connections"))


def test_progress_cell_shows_a_moving_bar_that_ends_succeeded(lab: Any, notebook_page: Any) -> None:
    name = lab.write_notebook(
        "moving.ipynb",
        "import time\nfrom jupyter_sse import progress\n"
        "for i in progress(range(40), desc='train'):\n    time.sleep(0.1)",
    )
    nb = notebook_page(name)
    nb.run_all()
    widget = nb.widgets().first
    widget.wait_for(state="attached", timeout=30_000)
    seen = _watch_values(nb, widget, "succeeded")
    distinct = sorted({int(float(v)) for v in seen})
    assert len(distinct) >= 4, f"the bar did not move: {seen}"
    assert distinct == sorted(distinct) and distinct[-1] == 40
    bar = widget.locator("[role=progressbar]")
    assert bar.get_attribute("aria-valuemax") == "40"
    assert widget.locator(".jp-sse-percent").inner_text() == "100%"
    assert widget.locator(".jp-sse-state").inner_text().lower() == "succeeded"
    assert "40/40 it" in widget.locator(".jp-sse-stats").inner_text()
    assert widget.locator(".jp-sse-cancel").is_hidden()
    # drawn by the MIME renderer, not an ipywidgets view: no widget model at all
    assert "jp-sse-rendered" in (widget.get_attribute("class") or "")
    assert nb.page.locator(".jupyter-widgets").count() == 0
    print(f"distinct aria-valuenow values seen: {len(distinct)}")
    nb.screenshot("widget-succeeded", widget)


def test_twenty_live_bars_share_one_stream_and_all_finish(lab: Any, notebook_page: Any) -> None:
    name = lab.write_notebook(
        "twenty.ipynb",
        "import time\nfrom jupyter_sse import progress\n"
        "bars = [progress(total=10, desc=f'bar {i:02d}') for i in range(20)]\n"
        "for step in range(10):\n    for b in bars:\n        b.update()\n    time.sleep(0.2)\n"
        "for b in bars:\n    b.close()",
    )
    nb = notebook_page(name)
    nb.run_all()
    widgets = nb.widgets()
    nb.page.wait_for_function("() => document.querySelectorAll('.jp-sse-job').length === 20", timeout=30_000)
    # all twenty are live at once, before any has finished
    nb.page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-sse-job')].every(el => el.dataset.state === 'running')",
        timeout=30_000,
    )
    nb.page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-sse-job')].every(el => el.dataset.state === 'succeeded')",
        timeout=30_000,
    )
    for i in range(20):
        bar = widgets.nth(i).locator("[role=progressbar]")
        assert bar.get_attribute("aria-valuenow") == "10"
    # one SSE connection for the whole tab (browsers allow 6 per origin)
    assert _stream_connections(nb) == 1
    nb.screenshot("widget-twenty")


def _start_and_reload(lab: Any, notebook_page: Any, name: str) -> tuple[NotebookPage, int]:
    name = lab.write_notebook(
        name,
        "import time\nfrom jupyter_sse import progress\n"
        "for i in progress(range(80), desc='long'):\n    time.sleep(0.1)",
    )
    nb = notebook_page(name)
    nb.run_all()
    widget = nb.widgets().first
    widget.wait_for(state="attached", timeout=30_000)
    nb.page.wait_for_function(
        "el => Number(el.querySelector('[role=progressbar]').getAttribute('aria-valuenow')) >= 5",
        arg=widget.element_handle(),
        timeout=30_000,
    )
    nb.command("docmanager:save")  # the notebook keeps the widget's output
    nb.page.wait_for_timeout(500)
    before = int(float(widget.locator("[role=progressbar]").get_attribute("aria-valuenow") or 0))
    nb.page.reload()
    return nb, before


def test_reloaded_tab_shows_the_job_finished(lab: Any, notebook_page: Any) -> None:
    nb, _ = _start_and_reload(lab, notebook_page, "reload-end.ipynb")
    widget = nb.widgets().first
    widget.wait_for(state="attached", timeout=30_000)
    _wait_state(widget, "succeeded")
    assert widget.locator("[role=progressbar]").get_attribute("aria-valuenow") == "80"
    nb.screenshot("widget-reloaded", widget)


def test_reloaded_tab_shows_the_running_job_live(lab: Any, notebook_page: Any) -> None:
    nb, before = _start_and_reload(lab, notebook_page, "reload-live.ipynb")
    widget = nb.widgets().first
    widget.wait_for(state="attached", timeout=30_000)
    seen = _watch_values(nb, widget, "succeeded", timeout=30)
    running = [int(float(v)) for v in seen if int(float(v)) < 80]
    assert len(set(running)) >= 2, f"not live after the reload: {seen}"
    assert running[0] > before
    assert int(float(seen[-1])) == 80
    assert widget.locator(".jp-sse-state").inner_text().lower() == "succeeded"
    assert "80/80 it" in widget.locator(".jp-sse-stats").inner_text()
    print(f"before the reload: {before}; distinct values while running after it: {len(set(running))}")


def test_saved_notebook_opened_without_kernel_shows_the_final_state(lab: Any, notebook_page: Any) -> None:
    name = lab.write_notebook(
        "saved-run.ipynb",
        "import time\nfrom jupyter_sse import progress\n"
        "for i in progress(range(25), desc='saved'):\n    time.sleep(0.04)",
    )
    nb = notebook_page(name)
    nb.run_all()
    widget = nb.widgets().first
    widget.wait_for(state="attached", timeout=30_000)
    _wait_state(widget, "succeeded")
    nb.page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
        timeout=30_000,
    )
    nb.command("docmanager:save")
    nb.page.wait_for_timeout(1000)
    lab.delete_sessions(name)  # the kernel is shut down
    saved = json.loads((lab.root / name).read_text())
    outputs = saved["cells"][0]["outputs"]
    assert len(outputs) == 1, outputs
    job_id = outputs[0]["data"]["application/vnd.jupyter-sse.job+json"]["job_id"]
    assert "".join(outputs[0]["data"]["text/plain"]).endswith(" succeeded")  # the final line, for other front ends
    # the same notebook as another machine sees it: no kernelspec, so JupyterLab starts no kernel
    saved["metadata"] = {}
    (lab.root / "saved-copy.ipynb").write_text(json.dumps(saved))

    nb2 = notebook_page("saved-copy.ipynb", wait_kernel=False)
    view = nb2.widgets().first
    view.wait_for(state="attached", timeout=30_000)
    _wait_state(view, "succeeded")
    dialog = nb2.page.locator(".jp-Dialog")
    if dialog.count():  # "Select Kernel": keep no kernel
        nb2.page.keyboard.press("Escape")
        dialog.wait_for(state="detached", timeout=10_000)
    assert view.get_attribute("data-job-id") == job_id
    assert view.locator("[role=progressbar]").get_attribute("aria-valuenow") == "25"
    assert view.locator(".jp-sse-state").inner_text().lower() == "succeeded"
    assert "25/25 it" in view.locator(".jp-sse-stats").inner_text()
    assert not [s for s in lab.request("GET", "api/sessions") if s.get("path") == "saved-copy.ipynb"]
    assert lab.request("GET", "api/kernels") == []
    nb2.screenshot("widget-saved-no-kernel", view)


def test_jobwidget_in_an_ipywidgets_layout_shares_the_stream(lab: Any, notebook_page: Any) -> None:
    name = lab.write_notebook(
        "boxed.ipynb",
        "import time, ipywidgets\nfrom jupyter_sse import progress, JobWidget\n"
        "bar = progress(range(30), desc='boxed')\n"
        "display(ipywidgets.VBox([ipywidgets.Label('in a box'), JobWidget(job_id=bar.job_id)]))\n"
        "for i in bar:\n    time.sleep(0.05)",
    )
    nb = notebook_page(name)
    nb.run_all()
    # one view in the box, one for the cell's own output; while the final update replaces that output, the old
    # and the new one may both be in the page for a moment
    nb.page.wait_for_function(
        "() => document.querySelectorAll('.widget-vbox .jp-sse-job').length === 1"
        " && document.querySelectorAll('.jp-sse-job.jp-sse-rendered').length === 1"
        " && document.querySelectorAll('.jp-sse-job').length === 2",
        timeout=30_000,
    )
    boxed = nb.page.locator(".widget-vbox .jp-sse-job")
    rendered = nb.page.locator(".jp-sse-job.jp-sse-rendered")
    assert boxed.get_attribute("data-job-id") == rendered.get_attribute("data-job-id")
    for view in (boxed, rendered):
        _wait_state(view, "succeeded")
        assert view.locator("[role=progressbar]").get_attribute("aria-valuenow") == "30"
    assert _stream_connections(nb) == 1


def test_cancel_button_stops_the_loop_and_shows_cancelled(lab: Any, notebook_page: Any) -> None:
    name = lab.write_notebook(
        "cancel.ipynb",
        "import time\nfrom jupyter_sse import progress, JobCancelled\n"
        "try:\n    for i in progress(range(1000), desc='cancel me'):\n        time.sleep(0.05)\n"
        "except JobCancelled:\n    print('stopped at', i)",
    )
    nb = notebook_page(name)
    nb.run_all()
    widget = nb.widgets().first
    widget.wait_for(state="attached", timeout=30_000)
    _wait_state(widget, "running")
    cancel = widget.locator(".jp-sse-cancel")
    cancel.click()
    _wait_state(widget, "cancelled", timeout=15)
    assert widget.locator(".jp-sse-state").inner_text().lower() == "cancelled"
    assert cancel.is_hidden()
    stopped = int(float(widget.locator("[role=progressbar]").get_attribute("aria-valuenow") or 0))
    assert 0 < stopped < 1000
    nb.page.locator(".jp-OutputArea-output pre").get_by_text("stopped at").wait_for(timeout=15_000)
    nb.screenshot("widget-cancelled", widget)


def test_failing_loop_shows_failed_with_the_error(lab: Any, notebook_page: Any) -> None:
    name = lab.write_notebook(
        "fail.ipynb",
        "import time\nfrom jupyter_sse import progress\n"
        "for i in progress(range(30), desc='fragile'):\n    time.sleep(0.05)\n"
        "    if i == 12:\n        raise ValueError('disk full')",
    )
    nb = notebook_page(name)
    nb.run_all()
    widget = nb.widgets().first
    widget.wait_for(state="attached", timeout=30_000)
    _wait_state(widget, "failed")
    assert widget.locator(".jp-sse-error").inner_text() == "ValueError: disk full"
    assert widget.locator(".jp-sse-state").inner_text().lower() == "failed"
    assert widget.locator("[role=progressbar]").get_attribute("aria-valuenow") == "12"
    nb.screenshot("widget-failed", widget)


def test_unknown_total_shows_an_indeterminate_bar_with_count_and_rate(lab: Any, notebook_page: Any) -> None:
    name = lab.write_notebook(
        "unknown.ipynb",
        "import time\nfrom jupyter_sse import job\n"
        "with job('stream') as j:\n    for i in range(20):\n        j.update()\n        j.log(f'chunk {i}')\n"
        "        j.message(f'reading chunk {i}')\n        time.sleep(0.1)",
    )
    nb = notebook_page(name)
    nb.run_all()
    widget = nb.widgets().first
    widget.wait_for(state="attached", timeout=30_000)
    nb.page.wait_for_function(
        "el => el.dataset.state === 'running' && /^\\d+ it$/.test(el.querySelector('[role=progressbar]')"
        ".getAttribute('aria-valuetext') || '') && !el.querySelector('.jp-sse-log').hidden",
        arg=widget.element_handle(),
        timeout=30_000,
    )
    bar = widget.locator("[role=progressbar]")
    assert "jp-sse-indeterminate" in (bar.get_attribute("class") or "")
    assert bar.get_attribute("aria-valuenow") is None
    stats = widget.locator(".jp-sse-stats").inner_text()
    assert " it · " in stats and "it/s" in stats, stats
    nb.screenshot("widget-indeterminate", widget)
    _wait_state(widget, "succeeded")
    assert widget.locator(".jp-sse-log").inner_text().splitlines()[-1] == "chunk 19"
    # ended without a total: a full bar that stands still
    assert "jp-sse-indeterminate" not in (bar.get_attribute("class") or "")
    assert _fill_animation(widget) == "none"
    # removed on the server (the panel's Remove): the view says so, and its bar stands still too
    lab.request("DELETE", f"jupyter-sse/api/jobs/{widget.get_attribute('data-job-id')}")
    _wait_state(widget, "removed")
    assert "jp-sse-indeterminate" not in (bar.get_attribute("class") or "")
    assert _fill_animation(widget) == "none"
    assert bar.get_attribute("aria-valuenow") is None and bar.get_attribute("aria-valuetext") == "removed"
    assert widget.locator(".jp-sse-stats").inner_text() == "this job was removed from the server"


def _fill_animation(widget: Any) -> str:
    return str(widget.evaluate("el => getComputedStyle(el.querySelector('.jp-sse-fill')).animationName"))
