"""The Jobs panel pointed at the team hub, in a real Chromium behind a real JupyterHub: alice logs in to JupyterHub,
her JupyterLab's `hubUrl` setting names the jupyter-sse hub that JupyterHub runs as a service (same origin, behind
the same proxy), and her panel shows her jobs on the hub, not bob's, without a second login."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser.conftest import ARTIFACTS
from tests.jupyterhub import conftest as jupyterhub_harness
from tests.jupyterhub._hub import SERVICE, Hub

pytestmark = [pytest.mark.browser, pytest.mark.jupyterhub, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """tests/jupyterhub's JupyterHub (the same config and teardown), for this module only: it is stopped before
    the session's own one starts, so that two hubs never run at once."""
    yield from jupyterhub_harness.hub.__wrapped__(tmp_path_factory)


HUB_PATH = f"/services/{SERVICE}/"


def _service_token(hub: Hub, name: str) -> str:
    response = hub.hub_api(
        "POST", f"users/{name}/tokens", json={"scopes": [f"access:services!service={SERVICE}"], "note": "publish"}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def _publish(hub: Hub, token: str, job: dict[str, Any]) -> None:
    url = f"{hub.url}services/{SERVICE}/jupyter-sse/api/updates"
    deadline = time.monotonic() + 60
    while True:  # JupyterHub starts the service with itself; it may still be starting
        try:
            response = httpx.post(url, json={"jobs": [job]}, headers={"Authorization": f"token {token}"}, timeout=10)
            if response.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"the jupyter-sse service did not take the job\n{hub.log_tail()}"
        time.sleep(0.3)


def _set_hub_url(hub: Hub, user: str, value: str) -> None:
    # through alice's own server, with a token of hers (token requests need no XSRF cookie)
    url = f"{hub.user_url(user)}lab/api/settings/jupyter-sse:plugin"
    response = httpx.put(url, json={"raw": json.dumps({"hubUrl": value})}, headers=hub.auth(user), timeout=30)
    assert response.status_code == 204, response.text


def _write_notebook(hub: Hub, user: str, name: str, job_id: str) -> None:
    """A saved notebook whose cell shows the job (no kernelspec: opening it starts no kernel)."""
    output = {
        "output_type": "display_data",
        "data": {"application/vnd.jupyter-sse.job+json": {"job_id": job_id, "version": 1}, "text/plain": job_id},
        "metadata": {},
    }
    cell = {"cell_type": "code", "source": "", "metadata": {}, "outputs": [output], "execution_count": 1, "id": "c0"}
    notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]}
    (hub.root / "home" / user / name).write_text(json.dumps(notebook))


def test_the_panel_shows_the_users_jobs_on_the_team_hub(hub: Hub, browser: Any) -> None:
    _publish(hub, _service_token(hub, "alice"), {"id": "teamjob", "name": "alice on the hub", "n": 3, "total": 10})
    _publish(hub, _service_token(hub, "bob"), {"id": "bobjob", "name": "bob on the hub", "n": 1, "total": 10})
    _set_hub_url(hub, "alice", HUB_PATH)
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{hub.url}hub/login")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", "jupyter-sse-test")
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_url(lambda url: "/hub/login" not in url, timeout=30_000)  # logged in: sent on
        page.goto(f"{hub.user_url('alice')}lab")
        status = page.locator(".jp-sse-status")
        status.wait_for(timeout=60_000)
        status.click()  # opens the Jobs panel
        panel = page.locator("#jupyter-sse-jobs")
        panel.wait_for(state="visible", timeout=20_000)
        row = panel.locator(".jp-sse-row", has=page.locator(".jp-sse-row-name", has_text="alice on the hub"))
        row.wait_for(timeout=30_000)
        assert panel.get_attribute("data-source") == "hub"
        assert panel.get_attribute("data-connected") == "true"
        assert row.locator("[role=progressbar]").get_attribute("aria-valuenow") == "3"
        # live: a change published to the hub reaches the panel over its stream
        _publish(hub, _service_token(hub, "alice"), {"id": "teamjob", "n": 7, "total": 10})
        page.wait_for_function(
            "el => el.querySelector('[role=progressbar]').getAttribute('aria-valuenow') === '7'",
            arg=row.element_handle(),
            timeout=15_000,
        )
        # only her own jobs: the hub decides by her JupyterHub login
        assert panel.locator(".jp-sse-row-name", has_text="bob on the hub").count() == 0
        panel.screenshot(path=str(ARTIFACTS / "hub-panel.png"))

        # she acts on her jobs there too: Cancel reaches the hub (her login cookie, with the panel's own header)
        _publish(hub, _service_token(hub, "alice"), {"id": "stopme", "name": "alice stops this", "n": 1})
        stop = panel.locator(".jp-sse-row", has=page.locator(".jp-sse-row-name", has_text="alice stops this"))
        stop.wait_for(timeout=15_000)
        stop.locator(".jp-sse-row-action").click()
        page.wait_for_function(
            "el => el.querySelector('.jp-sse-row-state').textContent === 'cancelling'",
            arg=stop.element_handle(),
            timeout=15_000,
        )
        # her loop sees the cancel and ends cancelled; Remove then forgets the job on the hub
        _publish(hub, _service_token(hub, "alice"), {"id": "stopme", "state": "cancelled"})
        page.wait_for_function(
            "el => el.querySelector('.jp-sse-row-action').textContent === 'Remove'",
            arg=stop.element_handle(),
            timeout=15_000,
        )
        stop.locator(".jp-sse-row-action").click()
        stop.wait_for(state="detached", timeout=15_000)

        # a cell's job view follows the same setting: a notebook showing the job (as a kernel publishing to the
        # hub displays it) draws it from the hub, live
        _write_notebook(hub, "alice", "teamjob.ipynb", "teamjob")
        page.goto(f"{hub.user_url('alice')}lab/tree/teamjob.ipynb")
        view = page.locator(".jp-sse-job[data-job-id=teamjob]")
        view.wait_for(timeout=60_000)
        page.wait_for_function(
            "el => el.dataset.state === 'running'"
            " && el.querySelector('[role=progressbar]').getAttribute('aria-valuenow') === '7'",
            arg=view.element_handle(),
            timeout=30_000,
        )
        _publish(hub, _service_token(hub, "alice"), {"id": "teamjob", "state": "succeeded", "n": 10, "total": 10})
        page.wait_for_function("el => el.dataset.state === 'succeeded'", arg=view.element_handle(), timeout=15_000)
        assert view.locator(".jp-sse-percent").inner_text() == "100%"
        dialog = page.locator(".jp-Dialog")
        if dialog.count():  # "Select Kernel": keep no kernel
            page.keyboard.press("Escape")
            dialog.wait_for(state="detached", timeout=10_000)
        # the fill's width slides to its end (a CSS transition) before the picture
        page.wait_for_function(
            "el => el.querySelector('.jp-sse-fill').getBoundingClientRect().width"
            " >= el.querySelector('.jp-sse-bar').getBoundingClientRect().width - 1",
            arg=view.element_handle(),
            timeout=5_000,
        )
        view.screenshot(path=str(ARTIFACTS / "hub-cell-view.png"))
    finally:
        context.close()
        _set_hub_url(hub, "alice", "")
