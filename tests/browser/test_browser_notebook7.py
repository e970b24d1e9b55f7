"""Notebook 7 (not JupyterLab), behind a base URL prefix as under JupyterHub (`/user/alice/`): the job view
renders a running job from the notebook's saved output, builds its stream URL with the prefix, and follows the
job live to its end."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Lab, _artifacts, running_jupyter

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PREFIX = "/user/alice/"
JOB = "nb7job"


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    args = ["--JupyterNotebookApp.app_settings_dir={settings}"]
    with running_jupyter(tmp_path_factory.mktemp("nb7"), "notebook", args, base_url=PREFIX) as server:
        yield server


def _publish(server: Lab, **fields: Any) -> None:
    server.request("POST", "jupyter-sse/api/updates", {"jobs": [{"id": JOB, **fields}]})


def _notebook_with_job_output(root: Path) -> str:
    # What progress() leaves in a saved notebook: the job's MIME bundle with its text line.
    output = {
        "output_type": "display_data",
        "metadata": {},
        "data": {
            "application/vnd.jupyter-sse.job+json": {"job_id": JOB, "version": 1},
            "text/plain": ["nb7: 0%|          | 0/20 [00:00<?, ?it/s]"],
        },
    }
    cell = {"cell_type": "code", "id": "c0", "metadata": {}, "execution_count": 1, "outputs": [output]}
    cell["source"] = "for i in progress(range(20), desc='nb7'): ..."
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": kernelspec}, "cells": [cell]}
    (root / "nb7.ipynb").write_text(json.dumps(nb))
    return "nb7.ipynb"


def test_notebook7_under_a_prefix_follows_a_running_job_live(notebook7: Lab, browser: Any) -> None:
    _publish(notebook7, name="nb7", n=0, total=20, state="running")
    name = _notebook_with_job_output(notebook7.root)
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    page = context.new_page()
    streams: list[str] = []
    page.on("request", lambda request: streams.append(request.url) if "jupyter-sse/api/events" in request.url else None)
    try:
        page.goto(f"{notebook7.url}notebooks/{name}?token={notebook7.token}")
        view = page.locator(".jp-sse-job").first
        view.wait_for(state="attached", timeout=60_000)

        def publish_steps() -> None:
            for n in range(1, 21):
                time.sleep(0.15)
                _publish(notebook7, n=n, elapsed=n * 0.15, rate=6.6)
            _publish(notebook7, n=20, state="succeeded")

        publisher = threading.Thread(target=publish_steps)
        publisher.start()
        bar = view.locator("[role=progressbar]")
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = view.get_attribute("data-state") == "succeeded"
            value = bar.get_attribute("aria-valuenow")
            if value is not None and (not seen or seen[-1] != value):
                seen.append(value)
            if done:
                break
            page.wait_for_timeout(50)
        publisher.join()
        assert view.get_attribute("data-state") == "succeeded", seen
        assert len({int(float(v)) for v in seen}) >= 4, f"the bar did not move: {seen}"
        assert int(float(seen[-1])) == 20
        # One stream for the page, and its URL carries the server's prefix.
        assert streams and all(
            url.startswith(f"http://127.0.0.1:{notebook7.url.split(':')[2].split('/')[0]}{PREFIX}") for url in streams
        ), streams
        view.screenshot(path=str(_artifacts() / "notebook7-succeeded.png"))
    finally:
        context.close()
