"""The standalone hub's own behaviour: auth, refusing to start unprotected, prompt shutdown with open streams,
its schema, publishing from scripts, and the testing plugin. (Protocol behaviour shared with the extension is
in tests/server, run against both servers.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jupyter_sse.cli import main
from jupyter_sse.hub import BackgroundHub, HubConfigError, check_bind, create_app

pytestmark = pytest.mark.timeout(60)

TOKEN = "hub-test-token"
ROOT = Path(__file__).parents[2]
ROUTES = [
    ("GET", "jobs"),
    ("GET", "jobs/a"),
    ("DELETE", "jobs/a"),
    ("POST", "jobs/a/cancel"),
    ("POST", "updates"),
    ("GET", "events"),
    ("GET", "jobs/a/events"),
    ("GET", "openapi.json"),
    ("GET", "no-such-route"),
]


@pytest.fixture
def hub() -> Iterator[BackgroundHub]:
    with BackgroundHub(TOKEN, heartbeat=1.0) as running:
        yield running


def _api(hub: BackgroundHub) -> str:
    return hub.url + "jupyter-sse/api/"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer wrong",
        "token wrong",
        "Basic aHViOnRlc3Q=",
        f"Bearer{TOKEN}",
        f"Bearer {TOKEN}x",
        f"Bearer  x{TOKEN}",
    ],
)
def test_every_route_refuses_without_the_token(hub: BackgroundHub, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    with httpx.Client(headers=headers, timeout=5) as client:
        for method, path in ROUTES:
            response = client.request(method, _api(hub) + path, json={"jobs": [{"id": "a"}]})
            assert response.status_code == 403, (method, path)
            assert response.json()["error"] == "forbidden", (method, path)
    assert len(hub.broker.store) == 0


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "token"])
def test_bearer_and_token_schemes_are_accepted(hub: BackgroundHub, scheme: str) -> None:
    with httpx.Client(headers={"Authorization": f"{scheme} {TOKEN}"}, timeout=5) as client:
        assert client.post(_api(hub) + "updates", json={"jobs": [{"id": "a"}]}).json() == {"cancel": []}
        assert client.get(_api(hub) + "jobs/a").json()["state"] == "running"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org"])
def test_refuses_to_start_off_loopback_without_a_token(host: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(HubConfigError, match="without a way to authenticate"):
        check_bind(host, None)
    check_bind(host, "a-token")  # with one, anywhere
    assert main(["hub", "--host", host, "--port", "1", "--no-auth"]) == 2
    assert "refusing to serve" in capsys.readouterr().err


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_may_go_without_a_token(host: str) -> None:
    check_bind(host, None)


def test_a_hub_without_a_token_serves_on_loopback() -> None:
    with BackgroundHub(None) as hub, httpx.Client(timeout=5) as client:
        assert client.get(_api(hub) + "jobs").json() == {"jobs": [], "total": 0, "next": None}


def test_shutdown_is_prompt_with_open_streams(hub: BackgroundHub) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    httpx.post(_api(hub) + "updates", json={"jobs": [{"id": "a"}]}, headers=auth)
    ended: list[float] = []

    def read(path: str) -> None:
        with httpx.Client(headers=auth, timeout=30) as client, client.stream("GET", _api(hub) + path) as response:
            opened.release()
            for _ in response.iter_raw():
                pass
        ended.append(time.monotonic())

    opened = threading.Semaphore(0)
    readers = [threading.Thread(target=read, args=(path,)) for path in ("events", "events", "jobs/a/events")]
    for reader in readers:
        reader.start()
    for _ in readers:
        assert opened.acquire(timeout=10)
    assert hub.broker.subscriber_count == 3
    started = time.monotonic()
    hub.stop()
    stopped = time.monotonic() - started
    for reader in readers:
        reader.join(5)
    assert not hub.running
    assert stopped < 2.0, stopped
    # Every stream ended properly (the readers returned without an error).
    assert len(ended) == 3


def test_cli_hub_stops_promptly_on_sigint_with_an_open_stream(tmp_path: Path) -> None:
    env = {**os.environ, "JUPYTER_SSE_HUB_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_sse.cli", "hub", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        url = None
        for line in proc.stderr or ():
            if "Uvicorn running on" in line:
                url = line.split("Uvicorn running on ")[1].split()[0]
                break
        assert url is not None
        with (
            httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client,
            client.stream("GET", url + "/jupyter-sse/api/events") as response,
        ):
            assert next(response.iter_raw()).startswith(b"retry: ")
            started = time.monotonic()
            proc.send_signal(2)  # SIGINT, as Ctrl-C
            assert proc.wait(5) == 0
            assert time.monotonic() - started < 2.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_head_on_a_stream_leaves_no_subscriber(hub: BackgroundHub) -> None:
    response = httpx.head(_api(hub) + "events", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert response.status_code in (200, 405)
    for _ in range(50):
        if hub.broker.subscriber_count == 0:
            break
        time.sleep(0.02)
    assert hub.broker.subscriber_count == 0


def test_silent_publisher_makes_the_job_lost() -> None:
    with BackgroundHub(TOKEN, publisher_lease=0.2) as hub:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        httpx.post(_api(hub) + "updates", json={"jobs": [{"id": "quiet"}]}, headers=auth)
        deadline = time.monotonic() + 5
        while httpx.get(_api(hub) + "jobs/quiet", headers=auth).json()["state"] != "lost":
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_openapi_describes_the_protocol_with_the_core_models(hub: BackgroundHub) -> None:
    schema = httpx.get(_api(hub) + "openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    paths = schema["paths"]
    assert set(paths) == {
        f"/jupyter-sse/api/{p}"
        for p in ("jobs", "jobs/{job_id}", "jobs/{job_id}/cancel", "updates", "events", "jobs/{job_id}/events")
    }
    body = paths["/jupyter-sse/api/updates"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/UpdateBatch"}
    components = schema["components"]["schemas"]
    assert components["JobUpdate"]["additionalProperties"] is False
    assert set(components["Job"]["properties"]) >= {"id", "state", "n", "total", "cancel_requested", "error"}
    assert components["ErrorBody"]["required"] == ["error"]
    assert schema["components"]["securitySchemes"]["token"]["scheme"] == "bearer"


def test_the_server_extension_and_the_cli_do_not_import_the_asgi_stack() -> None:
    code = (
        "import sys, jupyter_sse.server.app, jupyter_sse.core, jupyter_sse.cli, jupyter_sse.client\n"
        "print([m for m in ('fastapi', 'starlette', 'uvicorn', 'sse_starlette') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_plain_python_script_publishes_to_the_hub(hub: BackgroundHub, tmp_path: Path) -> None:
    script = tmp_path / "pipeline.py"
    script.write_text(
        "import time\nfrom jupyter_sse import progress\n"
        "for i in progress(range(20), desc='pipeline step'):\n    time.sleep(0.02)\n"
    )
    env = {**os.environ, "JUPYTER_SSE_URL": hub.url, "JUPYTER_SSE_TOKEN": TOKEN}
    env.pop("JUPYTER_SSE_DISABLE", None)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "succeeded" in proc.stderr  # its own bar's final line, as without a server
    jobs = httpx.get(_api(hub) + "jobs", headers={"Authorization": f"Bearer {TOKEN}"}).json()["jobs"]
    assert [(j["name"], j["state"], j["n"], j["total"]) for j in jobs] == [("pipeline step", "succeeded", 20, 20)]


def test_the_jupyter_sse_cli_reads_the_hub(hub: BackgroundHub, capsys: pytest.CaptureFixture[str]) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    httpx.post(_api(hub) + "updates", json={"jobs": [{"id": "c1", "name": "cli", "n": 2, "total": 2}]}, headers=auth)
    httpx.post(_api(hub) + "updates", json={"jobs": [{"id": "c1", "state": "succeeded"}]}, headers=auth)
    assert main(["list", "--json", "--url", hub.url, "--token", TOKEN]) == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)] == ["c1"]
    assert main(["follow", "c1", "--url", hub.url, "--token", TOKEN]) == 0


def test_the_plugin_works_with_dash_p(tmp_path: Path) -> None:
    # A user's test: the sync runner, a job that reports progress, the environment set for the test only.
    (tmp_path / "test_user.py").write_text(
        """
import os
import nbformat

CODE = (
    "import time\\nfrom jupyter_sse import progress\\n"
    "for i in progress(range(100), desc='train'):\\n    time.sleep(0.01)"
)

def test_notebook(sse_hub, tmp_path):
    assert os.environ["JUPYTER_SSE_URL"] == sse_hub.url
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CODE)]
    nbformat.write(nb, tmp_path / "train.ipynb")
    run = sse_hub.run_notebook(tmp_path / "train.ipynb", kernel_name="python3")
    train = run.job("train")
    assert (train["state"], train["n"], train["total"]) == ("succeeded", 100, 100)
    assert len(run.snapshots(train["id"])) >= 5
    assert run.events(train["id"])[0].event == "job"

def test_environment_is_restored():
    assert "JUPYTER_SSE_URL" not in os.environ
"""
    )
    # As a user runs it, in a project of its own; without the other plugins installed here (they are slow to load).
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_SSE_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    command = [sys.executable, "-m", "pytest", "-p", "jupyter_sse.testing", "-p", "no:cacheprovider", "-q"]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


def test_create_app_is_importable_without_serving() -> None:
    app = create_app("t")
    assert app.state.broker.subscriber_count == 0
