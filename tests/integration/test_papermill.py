"""`papermill --log-output`, run for real in a subprocess: its log gets progress lines at a bounded rate up to the
final state, while the saved notebook keeps one visible line per bar; with and without a server to publish to."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest

from tests._servers import ServerProcess

pytestmark = pytest.mark.timeout(180)

INTERVAL = 0.5  # the notebook shortens the log's interval (5 s) so that a 4 s loop shows several lines
STEPS, STEP = 40, 0.1

SETUP = f"import jupyter_sse.kernel.display as display\ndisplay.HEADLESS_LOG_INTERVAL = {INTERVAL}\n"
LOOP = f"""import time
from jupyter_sse import progress
for i in progress(range({STEPS}), desc="pm-loop"):
    time.sleep({STEP})
"""
LINE = re.compile(r"pm-loop:\s+(\d+)%\|")


def _run_papermill(tmp_path: Path, env: dict[str, str]) -> tuple[list[str], Any]:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(LOOP)]
    source, saved = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, source)
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", "--log-output", "-k", "python3", str(source), str(saved)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=150,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = [line for line in (proc.stdout + proc.stderr).splitlines() if LINE.search(line)]
    return logged, nbformat.read(saved, as_version=4)


def _check(logged: list[str], notebook: Any) -> None:
    percents = [int(LINE.search(line).group(1)) for line in logged]  # type: ignore[union-attr]
    assert percents[0] == 0, logged
    assert logged[-1].endswith(" succeeded") and f"{STEPS}/{STEPS} [" in logged[-1], logged
    # lines along the way, in order, and at a bounded rate: not one per step
    between = [p for p in percents[1:-1] if 0 < p < 100]
    assert len(between) >= 2, logged
    assert percents == sorted(percents), logged
    assert len(logged) <= 2 + STEPS * STEP / INTERVAL + 2, logged
    # the saved notebook: one visible output, the final line
    outputs = notebook.cells[1].outputs
    visible = [o.data["text/plain"] for o in outputs if o.output_type == "display_data" and o.data.get("text/plain")]
    assert [o.output_type for o in outputs if o.output_type != "display_data"] == []
    assert len(visible) == 1, visible
    assert visible[0].endswith(" succeeded") and f"{STEPS}/{STEPS} [" in visible[0]


def test_papermill_log_output_without_a_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_SSE_")}
    logged, notebook = _run_papermill(tmp_path, env)
    _check(logged, notebook)


def test_papermill_log_output_with_a_server(server_process: ServerProcess, tmp_path: Path) -> None:
    server = server_process
    server.start()
    with sqlite3.connect(server.db) as db:
        token = db.execute("SELECT value FROM meta WHERE key = 'publish_token'").fetchone()[0]
    env = {**os.environ, "JUPYTER_SSE_URL": server.url, "JUPYTER_SSE_TOKEN": token}
    logged, notebook = _run_papermill(tmp_path, env)
    _check(logged, notebook)
    # the saved output is the job's own bundle (the live view in JupyterLab), and the job reached the server
    from jupyter_sse.kernel.display import JOB_MIME

    bundle = next(o.data for o in notebook.cells[1].outputs if JOB_MIME in o.data)
    job = httpx.get(
        server.url + f"jupyter-sse/api/jobs/{bundle[JOB_MIME]['job_id']}", headers=server.auth, timeout=10
    ).json()
    assert (job["state"], job["n"], job["name"]) == ("succeeded", STEPS, "pm-loop")
