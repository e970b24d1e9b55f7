"""A real JupyterLab (subprocess, loopback, token auth) and a real headless Chromium driven by Playwright.

The lab server is shared by the module's tests (starting it costs seconds); each test opens its own notebook,
in its own workspace, and deletes its kernel session at the end (a session outlives the browser page).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests._servers import free_port

CHROMIUM = os.environ.get("JUPYTER_SSE_CHROMIUM", "/usr/bin/chromium")
# flags that work as root, offline, in containers
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# JupyterLab's news and update pop-ups would cover the notebook
OVERRIDES = {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False}}


@dataclass
class Lab:
    url: str  # ends with "/"
    token: str
    root: Path

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"token {self.token}")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def write_notebook(self, name: str, *sources: str) -> str:
        cells = [
            {"cell_type": "code", "source": s, "metadata": {}, "outputs": [], "execution_count": None, "id": f"c{i}"}
            for i, s in enumerate(sources)
        ]
        nb = {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "cells": cells,
        }
        (self.root / name).write_text(json.dumps(nb))
        return name

    def delete_sessions(self, name: str) -> None:
        for session in self.request("GET", "api/sessions"):
            if session.get("path") == name:
                self.request("DELETE", f"api/sessions/{session['id']}")

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"jupyter-sse/api/jobs/{job_id}")
        return result


@contextlib.contextmanager
def running_jupyter(
    base: Path, app: str, app_args: list[str], *, base_url: str = "/", port: int = 0, token: str = ""
) -> Iterator[Lab]:
    """``python -m <app>`` (jupyterlab, notebook) on a free loopback port (or ``port``) with a token (or ``token``)
    and isolated Jupyter dirs, its app settings overridden to stop the news pop-up; stopped (kernels too) when the
    block ends. The same ``base``, ``port`` and ``token`` again make a restart of the same server."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no chromium at {CHROMIUM}: run scripts/ensure-chromium (make test does)", pytrace=False)
    root = base / "notebooks"
    root.mkdir(exist_ok=True)
    settings = base / "app-settings"
    settings.mkdir(exist_ok=True)
    (settings / "overrides.json").write_text(json.dumps(OVERRIDES))
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(base / "user-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        PYTHONUNBUFFERED="1",
    )
    for name in ("JUPYTER_SSE_URL", "JUPYTER_SSE_TOKEN", "JUPYTER_TOKEN"):
        env.pop(name, None)
    port = port or free_port()
    token = token or secrets.token_hex(16)
    cmd = [
        sys.executable,
        "-m",
        app,
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.base_url={base_url}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_unauthenticated_access=False",
        *(arg.format(settings=settings) for arg in app_args),
    ]
    if os.getuid() == 0:
        cmd.append("--allow-root")
    log_path = base / f"{app}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Lab(url=f"http://127.0.0.1:{port}{base_url}", token=token, root=root)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                server.request("GET", "jupyter-sse/api/jobs")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{app} did not start:\n" + log_path.read_text()) from None
                time.sleep(0.2)
        yield server
    finally:
        proc.send_signal(signal.SIGINT)  # the server shuts its kernels down on SIGINT (twice: no prompt)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.copy(log_path, _artifacts() / f"{app}.log")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    args = ["--LabApp.app_settings_dir={settings}", "--LabApp.expose_app_in_browser=True"]
    with running_jupyter(tmp_path_factory.mktemp("lab"), "jupyterlab", args) as server:
        yield server


def _artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class NotebookPage:
    """A JupyterLab page on one notebook, with the few actions the tests need."""

    def __init__(self, lab: Lab, page: Any, name: str) -> None:
        self.lab = lab
        self.page = page
        self.name = name
        self.workspace = "w" + secrets.token_hex(4)

    def open(self, wait_kernel: bool = True) -> None:
        url = f"{self.lab.url}lab/workspaces/{self.workspace}/tree/{self.name}?token={self.lab.token}"
        self.page.goto(url)
        if wait_kernel:
            self.wait_kernel_idle()

    def wait_kernel_idle(self, timeout: float = 60) -> None:
        self.page.wait_for_function(
            """() => {
                const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                return !!k && k.status === 'idle' && k.connectionStatus === 'connected';
            }""",
            timeout=timeout * 1000,
        )

    def command(self, name: str) -> None:
        # not awaited: run-all-cells' promise resolves only when the cells have finished
        self.page.evaluate("name => { void window.jupyterapp.commands.execute(name); }", name)

    def run_all(self) -> None:
        self.command("notebook:run-all-cells")

    def widgets(self) -> Any:
        return self.page.locator(".jp-sse-job")

    def screenshot(self, name: str, locator: Any = None) -> Path:
        path = _artifacts() / f"{name}.png"
        (locator if locator is not None else self.page).screenshot(path=str(path))
        return path


@pytest.fixture
def notebook_page(lab: Lab, browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh page (own context, own workspace); call ``open(name)`` with a notebook written by the test."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    opened: list[NotebookPage] = []

    def open_notebook(name: str, wait_kernel: bool = True) -> NotebookPage:
        nb = NotebookPage(lab, page, name)
        nb.open(wait_kernel=wait_kernel)
        opened.append(nb)
        return nb

    try:
        yield open_notebook
    finally:
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            page.screenshot(path=str(_artifacts() / f"{request.node.name}-failure.png"))
        context.close()
        for nb in opened:
            lab.delete_sessions(nb.name)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # keep the call phase's report on the item, so the fixture can screenshot a failure
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


@pytest.fixture(autouse=True)
def jp_server_cleanup() -> Iterator[None]:
    """pytest-jupyter's autouse cleanup runs a loop that would be Playwright's running one (its sync API runs
    one): these tests start their own JupyterLab, not pytest-jupyter's, so there is nothing to clean up."""
    yield None


@pytest.fixture(autouse=True)
def jp_asyncio_loop() -> Iterator[None]:
    """See jp_server_cleanup: pytest-jupyter's loop fixture would close Playwright's running loop."""
    yield None
