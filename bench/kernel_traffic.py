"""2. Kernel-to-front-end traffic: iopub messages a real kernel sends while a loop of 1 million items runs with
tqdm.notebook (tqdm.auto, ipywidgets installed) and with jupyter_sse.progress (publishing to a live server),
counted by msg_type through a jupyter_client kernel client.
"""

from __future__ import annotations

import collections
import queue
import time
import uuid
from typing import Any

from _util import Server

LOOP = """
import time
{imp}
for i in {bar}(range({n})):
    if i % {every} == 0:
        time.sleep({sleep})
"""


def _execute_as_a_notebook_cell(kc: Any, code: str) -> str:
    """Send the cell as JupyterLab does, with its ``cellId``: without one the kernel side takes the run for a
    headless one (papermill, nbclient) and adds its progress lines for the log."""
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False}
    msg = kc.session.msg("execute_request", content)
    msg["metadata"]["cellId"] = f"bench-{uuid.uuid4()}"
    kc.shell_channel.send(msg)
    return str(msg["header"]["msg_id"])


def count_cell(kc: Any, code: str, settle: float = 1.0) -> dict[str, Any]:
    msg_id = _execute_as_a_notebook_cell(kc, code)
    counts: collections.Counter[str] = collections.Counter()
    t0 = time.monotonic()
    idle_at = None
    while True:
        timeout = 120 if idle_at is None else max(0.05, idle_at + settle - time.monotonic())
        try:
            msg = kc.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            if idle_at is not None:
                break
            raise
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        mt = msg["msg_type"]
        counts[mt] += 1
        if mt == "comm_open":
            counts["comm_open:" + str(msg["content"].get("target_name"))] += 1
        if mt == "error":
            raise RuntimeError("cell failed: " + "\n".join(msg["content"].get("traceback", []))[-2000:])
        if mt == "status" and msg["content"]["execution_state"] == "idle":
            idle_at = time.monotonic()
    wall = (idle_at or time.monotonic()) - t0
    comm_targets = {k: v for k, v in counts.items() if k.startswith("comm_open:")}
    for k in comm_targets:
        del counts[k]
    return {"by_type": dict(counts), "comm_targets": comm_targets, "total": sum(counts.values()), "wall_s": wall}


def run(quick: bool) -> dict[str, Any]:
    from jupyter_client.manager import KernelManager

    n = 1_000_000
    every = 10_000
    sleep = 0.005 if quick else 0.12  # full: ~12 s of loop, so tqdm.notebook draws 100+ updates at 10 Hz
    out: dict[str, Any] = {"n": n, "sleep_every": every, "sleep_s": sleep}
    with Server("jupyter") as srv:
        km = KernelManager(kernel_name="python3")
        km.start_kernel(
            env={"JUPYTER_SSE_URL": srv.base, "JUPYTER_SSE_TOKEN": srv.token, "PATH": __import__("os").environ["PATH"]}
        )
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            count_cell(kc, "import tqdm.auto, jupyter_sse, ipywidgets; from jupyter_sse import progress", 0.3)
            settle = 0.3 if quick else 1.0
            out["tqdm_notebook"] = count_cell(
                kc, LOOP.format(imp="from tqdm.auto import tqdm", bar="tqdm", n=n, every=every, sleep=sleep), settle
            )
            out["progress"] = count_cell(
                kc,
                LOOP.format(imp="from jupyter_sse import progress", bar="progress", n=n, every=every, sleep=sleep),
                settle,
            )
            # what progress sent to the server meanwhile (the updates the front end sees through SSE instead)
            jobs = srv.request("GET", "jupyter-sse/api/jobs")["jobs"]
            out["progress_job"] = {k: jobs[0].get(k) for k in ("state", "n", "total")} if jobs else None
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    for key in ("tqdm_notebook", "progress"):
        by = out[key]["by_type"]
        # the cell's own frame (busy/idle status, execute_input) is not the bar's
        out[key]["bar_messages"] = out[key]["total"] - by.get("status", 0) - by.get("execute_input", 0)
    return out


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=1))
