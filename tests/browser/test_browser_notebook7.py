"""Notebook 7 (not JupyterLab), behind a base URL prefix as under JupyterHub (`/user/alice/`): the job view
renders a running job from the notebook's saved output, builds its stream URL with the prefix, and follows the
job live to its end."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import CHROMIUM, OVERRIDES, Lab, _artifacts, _free_port

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PREFIX = "/user/alice/"
JOB = "nb7job"


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no chromium at {CHROMIUM}: run scripts/ensure-chromium (make test does)", pytrace=False)
    base = tmp_path_factory.mktemp("nb7")
    root = base / "notebooks"
    root.mkdir()
    settings = base / "app-settings"
    settings.mkdir()
    (settings / "overrides.json").write_text(json.dumps(OVERRIDES))
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTER_DATA_DIR": str(base / "data"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(base / "user-settings"),
    }
    for name in ("JUPYTER_SSE_URL", "JUPYTER_SSE_TOKEN", "JUPYTER_TOKEN"):
        env.pop(name, None)
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable, "-m", "notebook", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0", f"--ServerApp.base_url={PREFIX}", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}", f"--JupyterNotebookApp.app_settings_dir={settings}",
        "--ServerApp.allow_unauthenticated_access=False",
    ]  # fmt: skip
    if os.getuid() == 0:
        cmd.append("--allow-root")
    log = (base / "notebook.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Lab(url=f"http://127.0.0.1:{port}{PREFIX}", token=token, root=root)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                server.request("GET", "jupyter-sse/api/jobs")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "jupyter notebook did not start:\n" + (base / "notebook.log").read_text()
                    ) from None
                time.sleep(0.2)
        yield server
    finally:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.copy(base / "notebook.log", _artifacts() / "notebook7.log")


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
