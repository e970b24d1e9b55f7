"""5. Ingest: job updates per second the Jupyter server accepts from 10 publishing processes, each POSTing
batches of ``batch`` job updates (pre-encoded bodies, keep-alive connections) as fast as the server answers.

``kind="progress"``: the same jobs move on (what a running job sends; written behind, once a second).
``kind="durable"``: every update is a new job that ends, with a log line: everything the server must write
before it answers (and retention removes as many old finished jobs, each removal written too).
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from _util import LOAD_CPU, PY, Server, pinned

CLIENT = r"""
import http.client, json, sys, time
from urllib.parse import urlsplit
url, token, proc, batch, duration = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
durable = sys.argv[6] == "durable"
u = urlsplit(url)
path = u.path.rstrip("/") + "/jupyter-sse/api/updates"
h = {"Authorization": "token " + token, "Content-Type": "application/json"}
bodies = [json.dumps({"jobs": [{"id": f"p{proc}-j{j}", "name": f"job {j}", "n": k * 10 + j % 7, "total": 10**6,
                                "elapsed": k * 0.1, "rate": 100.0, "message": f"step {k}"} for j in range(batch)]})
          for k in range(16)]
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
sys.stdout.write("READY\n"); sys.stdout.flush()
start = float(sys.stdin.readline())
while time.time() < start:
    time.sleep(0.001)
ok = failed = 0
end = start + duration
k = 0
while time.time() < end:
    if durable:  # new ids each time: each job is made and ends in this request, with one log line
        ids = [f"p{proc}-k{k}-j{j}" for j in range(batch)]
        body = json.dumps({"jobs": [{"id": i, "name": "short", "n": 1, "total": 1, "state": "succeeded"} for i in ids],
                           "logs": [{"job": i, "lines": ["done"]} for i in ids]})
    else:
        body = bodies[k % 16]
    conn.request("POST", path, body=body, headers=h)
    r = conn.getresponse(); r.read()
    if r.status == 200: ok += 1
    else: failed += 1
    k += 1
print(json.dumps({"posts": ok, "failed": failed, "updates": ok * batch}))
"""


def run_one(batch: int, procs: int, duration: float, kind: str = "progress") -> dict[str, Any]:
    with Server("jupyter") as srv:
        clients = [
            subprocess.Popen(
                pinned([PY, "-c", CLIENT, srv.base, srv.token, str(i), str(batch), str(duration), kind], LOAD_CPU),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(procs)
        ]
        for c in clients:
            c.stdout.readline()
        start = time.time() + 0.5
        for c in clients:
            c.stdin.write(f"{start}\n")
            c.stdin.flush()
        time.sleep(0.5)
        c0 = srv.cpu_times()
        outs = [json.loads(c.stdout.readline()) for c in clients]
        cpu = srv.cpu_times() - c0
        for c in clients:
            c.wait()
        updates = sum(o["updates"] for o in outs)
        return {
            "kind": kind,
            "batch": batch,
            "processes": procs,
            "duration": duration,
            "updates": updates,
            "updates_per_s": updates / duration,
            "posts_per_s": sum(o["posts"] for o in outs) / duration,
            "failed": sum(o["failed"] for o in outs),
            "server_cpu_pct": 100 * cpu / duration,
            "updates_per_server_cpu_s": updates / max(cpu, 1e-9),
            "rss_mib": srv.rss() / 2**20,
        }


def run(quick: bool) -> list[dict[str, Any]]:
    res = []
    runs = [("progress", 100), ("durable", 100)] if quick else [("progress", 1), ("progress", 100), ("durable", 100)]
    for kind, batch in runs:
        r = run_one(batch, 10, 1.0 if quick else 8.0, kind)
        print(
            f"  ingest {kind} batch={batch}: {r['updates_per_s']:.0f} updates/s, server CPU {r['server_cpu_pct']:.0f}%",
            flush=True,
        )
        res.append(r)
    return res


if __name__ == "__main__":
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=1))
