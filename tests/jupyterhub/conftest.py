"""A real JupyterHub for the tests: JupyterHub from PyPI, configurable-http-proxy from npm, on loopback.

One hub per test session, with a DummyAuthenticator and SimpleLocalProcessSpawner (no system users needed), users
alice and bob (and admin, an admin), each single-user server running jupyter-sse with a 1 s heartbeat. Everything
the hub starts (the proxy, the single-user servers, their kernels) is its descendant: teardown stops the servers
through the API, stops the hub, then ends by PID whatever of that tree is still alive.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests._servers import free_port
from tests.jupyterhub._hub import (
    ACTIVITY_INTERVAL,
    CHP_VERSION,
    HARNESS_TOKEN,
    HEARTBEAT,
    NODE_CACHE,
    SERVICE,
    USERS,
    Hub,
)


def _install_chp() -> Path:
    binary = NODE_CACHE / "node_modules" / ".bin" / "configurable-http-proxy"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail("node and npm are needed for configurable-http-proxy (the labextension build needs them too)")
    staging = NODE_CACHE.with_name(NODE_CACHE.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    result = subprocess.run(
        [npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(staging),
         f"configurable-http-proxy@{CHP_VERSION}"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"npm install configurable-http-proxy failed:\n{result.stdout}\n{result.stderr}")
    # Rename into place: a run interrupted mid-install never leaves a half-filled cache behind.
    shutil.rmtree(NODE_CACHE, ignore_errors=True)
    staging.rename(NODE_CACHE)
    return binary


def _config(
    root: Path, chp: Path, port: int, hub_port: int, proxy_api_port: int, proxy_token: str, sse_port: int
) -> str:
    singleuser = Path(sys.executable).with_name("jupyterhub-singleuser")
    return textwrap.dedent(f"""
        c = get_config()  # noqa
        c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
        c.JupyterHub.public_url = "http://127.0.0.1:{port}"  # what a deployment sets; services learn it
        c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
        c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
        c.ConfigurableHTTPProxy.auth_token = {proxy_token!r}
        c.ConfigurableHTTPProxy.command = [{str(chp)!r}]
        c.JupyterHub.db_url = "sqlite:///{root / "hub.sqlite"}"
        c.JupyterHub.cookie_secret_file = {str(root / "cookie_secret")!r}
        c.JupyterHub.pid_file = {str(root / "hub.pid")!r}
        c.JupyterHub.authenticator_class = "dummy"
        c.DummyAuthenticator.password = "jupyter-sse-test"
        c.Authenticator.allowed_users = {{"alice", "bob"}}
        c.Authenticator.admin_users = {{"admin"}}
        c.JupyterHub.spawner_class = "simple"
        c.SimpleLocalProcessSpawner.home_dir_template = {str(root / "home" / "{username}")!r}
        c.Spawner.cmd = [{str(singleuser)!r}]
        c.Spawner.notebook_dir = "~"
        c.Spawner.args = ["--SSEExtension.heartbeat_interval={HEARTBEAT}", "--ServerApp.port_retries=20"]
        if {os.geteuid() == 0}:
            c.Spawner.args.append("--allow-root")
        # The single-user server reports its last_activity to the hub this often (300 s by default).
        c.Spawner.environment = {{"JUPYTERHUB_ACTIVITY_INTERVAL": "{ACTIVITY_INTERVAL}"}}
        c.Spawner.start_timeout = 90
        c.Spawner.http_timeout = 90
        # The hub reads the proxy's per-route last_activity this often (300 s by default).
        c.JupyterHub.last_activity_interval = {ACTIVITY_INTERVAL}
        c.JupyterHub.services = [{{"name": "harness", "api_token": {HARNESS_TOKEN!r}}}]
        c.JupyterHub.load_roles = [
            {{"name": "harness", "services": ["harness"],
              "scopes": ["admin:users", "admin:servers", "tokens", "read:users:activity"]}},
        ]
        # The jupyter-sse hub as a managed service (README, "A hub for a team"): users may use it, the admin
        # role's custom scope sees everyone's jobs, and a user's server token (their kernels') may publish to it.
        c.JupyterHub.services.append({{
            "name": {SERVICE!r}, "url": "http://127.0.0.1:{sse_port}", "oauth_no_confirm": True,
            "command": [{sys.executable!r}, "-m", "jupyter_sse.cli", "hub"],
        }})
        c.JupyterHub.custom_scopes = {{
            "custom:jupyter-sse:admin": {{"description": "see and act on every user's jobs in jupyter-sse"}},
        }}
        c.JupyterHub.load_roles += [
            {{"name": "user", "scopes": ["self", "access:services!service={SERVICE}"]}},
            {{"name": "jupyter-sse-admin", "users": ["admin"],
              "scopes": ["custom:jupyter-sse:admin", "access:services!service={SERVICE}"]}},
        ]
        c.Spawner.server_token_scopes = [
            "access:servers!server", "users:activity!user", "access:services!service={SERVICE}",
        ]
    """)


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    chp = _install_chp()
    root = tmp_path_factory.mktemp("jupyterhub")
    port, hub_port, proxy_api_port, sse_port = free_port(), free_port(), free_port(), free_port()
    proxy_token = "jupyter-sse-proxy-token"
    (root / "jupyterhub_config.py").write_text(
        _config(root, chp, port, hub_port, proxy_api_port, proxy_token, sse_port)
    )
    for name in (*USERS, "admin"):
        (root / "home" / name).mkdir(parents=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("JUPYTER_SSE_", "JUPYTERHUB_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log_path = root / "hub.log"
    log = open(log_path, "ab")  # noqa: SIM115 - the hub writes to it until it stops
    # A session of its own, so a Ctrl-C in the terminal running pytest reaches pytest, which then tears down.
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterhub", "-f", str(root / "jupyterhub_config.py")],
        cwd=root, env=env, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    hub = Hub(
        url=f"http://127.0.0.1:{port}/",
        api=f"http://127.0.0.1:{port}/hub/api/",
        proxy_api=f"http://127.0.0.1:{proxy_api_port}",
        proxy_token=proxy_token,
        root=root,
        log=log_path,
    )
    family: dict[int, psutil.Process] = {}

    def remember_descendants() -> None:
        try:
            for child in psutil.Process(proc.pid).children(recursive=True):
                family.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    try:
        _wait_until(lambda: hub.hub_api("GET", "").status_code == 200, 60, "the hub did not start", hub)
        for name in USERS:
            response = hub.hub_api("POST", f"users/{name}")
            assert response.status_code in (201, 409), response.text
            # The scopes a user's own browser session has on its server (the single-user server's OAuth token
            # carries access:servers!server=alice/); the user's server is its only door.
            response = hub.hub_api(
                "POST", f"users/{name}/tokens", json={"scopes": [f"access:servers!user={name}"], "note": "test"}
            )
            assert response.status_code == 201, response.text
            hub.tokens[name] = response.json()["token"]
        response = hub.hub_api("POST", "users/admin")
        assert response.status_code in (201, 409), response.text
        response = hub.hub_api("POST", "users/admin/tokens", json={"note": "admin, all its role allows"})
        assert response.status_code == 201, response.text
        hub.tokens["admin"] = response.json()["token"]
        for name in USERS:
            response = hub.hub_api("POST", f"users/{name}/server")
            assert response.status_code in (201, 202), response.text
        for name in USERS:
            _wait_until(lambda n=name: _server_ready(hub, n), 90, f"{name}'s server did not start", hub)
        remember_descendants()
        yield hub
    finally:
        remember_descendants()
        try:
            for name in USERS:
                hub.hub_api("DELETE", f"users/{name}/server")
        except httpx.HTTPError:
            pass
        remember_descendants()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the hub stops its proxy and the servers it spawned
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        # Whatever outlived the hub (it starts the proxy and the servers in sessions of their own): by PID.
        for child in family.values():
            try:
                if child.is_running():
                    child.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(list(family.values()), timeout=10)


def _server_ready(hub: Hub, name: str) -> bool:
    model = hub.hub_api("GET", f"users/{name}").json()
    server = model.get("servers", {}).get("", {})
    if not server.get("ready"):
        return False
    response = httpx.get(hub.user_url(name) + "api/status", headers=hub.auth(name), timeout=10)
    return response.status_code == 200


def _wait_until(check: Any, timeout: float, message: str, hub: Hub) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"{message} (last error: {last!r})\n--- hub log ---\n{hub.log_tail()}")
