"""4. Memory of the Jupyter server with jupyter-sse: RSS growth per finished job kept (10,000 finished jobs, with
``jobs_kept`` raised so all are kept, one subscriber connected so the cached events exist too), and per running
job fed 10,000 log lines (bounded by ``log_lines_kept``, default 1000), and per subscriber that never reads
(raw sockets with a 4 KiB receive buffer, 5,000 jobs kept: a first sync of about 12 MB each; and 2,000 of them
with the default 500 jobs kept), then after they closed. Per idle subscriber: see fanout.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from _util import Server


def drain(srv: Server, stop: threading.Event) -> threading.Thread:
    """One subscriber that reads and discards everything (a browser tab left open)."""
    u = urlsplit(srv.base)

    def run() -> None:
        s = socket.create_connection((u.hostname, u.port))
        head = f"GET /jupyter-sse/api/events HTTP/1.1\r\nHost: {u.netloc}\r\nAuthorization: token {srv.token}\r\n\r\n"
        s.sendall(head.encode())
        s.settimeout(0.2)
        while not stop.is_set():
            try:
                if not s.recv(1 << 20):
                    return
            except TimeoutError:
                pass
        s.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


SETTLE = [0.5]


def settle(srv: Server) -> int:
    time.sleep(SETTLE[0])
    srv.request("GET", "jupyter-sse/api/jobs?state=pending")
    time.sleep(SETTLE[0] / 2)
    return srv.rss()


def finished_jobs(srv: Server, n: int) -> dict[str, Any]:
    stop = threading.Event()
    if True:
        drain(srv, stop)
        srv.request("POST", "jupyter-sse/api/updates", {"jobs": [{"id": "warm", "state": "succeeded", "n": 1}]})
        rss0 = settle(srv)
        t0 = time.monotonic()
        for start in range(0, n, 500):
            srv.request(
                "POST",
                "jupyter-sse/api/updates",
                {
                    "jobs": [
                        {
                            "id": f"done-{i:06d}",
                            "name": f"training run {i}",
                            "state": "succeeded",
                            "n": 1000,
                            "total": 1000,
                            "elapsed": 12.5,
                            "rate": 80.0,
                            "message": "epoch 10/10",
                        }
                        for i in range(start, min(start + 500, n))
                    ]
                },
            )
        post_s = time.monotonic() - t0
        rss1 = settle(srv)
        kept = srv.request("GET", "jupyter-sse/api/jobs?limit=1")["total"]  # pages: the total says how many
        stop.set()
        return {
            "jobs": n,
            "kept": kept,
            "kib_per_job": (rss1 - rss0) / 1024 / n,
            "post_s": post_s,
            "finished_updates_per_s": n / post_s,
        }


def log_jobs(srv: Server, jobs: int, lines: int, kept_setting: int = 1000) -> dict[str, Any]:
    stop = threading.Event()
    line = "epoch 3 step 1234: loss=0.123456 acc=0.987654 lr=1e-4 " + "x" * 24  # ~80 characters
    if True:
        drain(srv, stop)
        srv.request("POST", "jupyter-sse/api/updates", {"jobs": [{"id": f"log-{j}", "n": 0} for j in range(jobs)]})
        rss0 = settle(srv)
        marks = {}
        sent = 0
        for step in range(0, lines, 1000):
            for j in range(jobs):  # one job per POST: 1,000 lines of ~80 characters stay under the 1 MiB limit
                srv.request(
                    "POST",
                    "jupyter-sse/api/updates",
                    {"jobs": [], "logs": [{"job": f"log-{j}", "lines": [f"{line} {step + k}" for k in range(1000)]}]},
                )
            sent += 1000
            if sent in (kept_setting, lines):
                marks[sent] = settle(srv)
        stop.set()
        return {
            "jobs": jobs,
            "lines_per_job": lines,
            "log_lines_kept": kept_setting,
            "kib_per_job_at_kept": (marks[kept_setting] - rss0) / 1024 / jobs,
            "kib_per_job_at_end": (marks[lines] - rss0) / 1024 / jobs,
        }


def stalled_subscribers(srv: Server, jobs: int, subscribers: int) -> dict[str, Any]:
    """Subscribers that never read, while 20 jobs change 10 times a second: RSS with them and after they close."""
    u = urlsplit(srv.base)
    for start in range(0, jobs, 250):
        srv.request(
            "POST",
            "jupyter-sse/api/updates",
            {
                "jobs": [
                    {"id": f"done-{i:06d}", "state": "succeeded", "message": f"{i} " + "x" * 2000}
                    for i in range(start, min(start + 250, jobs))
                ]
            },
        )
    stop = threading.Event()

    def churn() -> None:
        n = 0
        while not stop.is_set():
            body = {"jobs": [{"id": f"run-{j}", "n": n, "total": 10**6} for j in range(20)]}
            srv.request("POST", "jupyter-sse/api/updates", body)
            n += 1
            stop.wait(0.1)

    churner = threading.Thread(target=churn, daemon=True)
    churner.start()
    drain(srv, stop)  # one reader, so that the snapshots all streams share are encoded before the baseline
    rss0 = settle(srv)
    head = f"GET /jupyter-sse/api/events HTTP/1.1\r\nHost: {u.netloc}\r\nAuthorization: token {srv.token}\r\n\r\n"

    def burst() -> tuple[int, int, int]:
        """RSS with the subscribers connected, after they closed, and 10 s later (the updates going on)."""
        socks = []
        for _ in range(subscribers):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect((u.hostname, u.port))
            s.sendall(head.encode())
            socks.append(s)
        time.sleep(5 * SETTLE[0] + 2)  # the first syncs fill the kernel's buffers
        with_them = settle(srv)
        for s in socks:
            s.close()
        time.sleep(3 + SETTLE[0])  # the heap is trimmed 2 s after the last close
        after = settle(srv)
        time.sleep(10)
        return with_them, after, settle(srv)

    rss1, rss2, rss2_later = burst()
    # The same again: what the first left behind is reused, not added to.
    _, rss3, _ = burst()
    stop.set()
    churner.join()
    return {
        "jobs_kept": jobs,
        "subscribers": subscribers,
        "kib_per_stalled_subscriber": (rss1 - rss0) / 1024 / subscribers,
        "rss_before_mib": rss0 / 2**20,
        "rss_with_mib": rss1 / 2**20,
        "rss_after_close_mib": rss2 / 2**20,
        "rss_10s_after_close_mib": rss2_later / 2**20,
        "rss_after_second_burst_mib": rss3 / 2**20,
    }


def run(quick: bool) -> dict[str, Any]:
    SETTLE[0] = 0.3 if quick else 0.8
    n = 1000 if quick else 10_000
    if quick:  # one server for both: saves a server start in the CI smoke run
        with Server("jupyter", extra=[f"--SSEExtension.jobs_kept={n + 100}"]) as srv:
            res = {"finished": finished_jobs(srv, n), "logs": log_jobs(srv, 5, 2000)}
    else:
        with Server("jupyter", extra=[f"--SSEExtension.jobs_kept={n + 100}"]) as srv:
            finished = finished_jobs(srv, n)
        with Server("jupyter") as srv:
            res = {"finished": finished, "logs": log_jobs(srv, 20, 10_000)}
    with Server("jupyter", extra=["--SSEExtension.jobs_kept=5000", "--SSEExtension.send_timeout=600"]) as srv:
        res["stalled"] = stalled_subscribers(srv, 5000, 50 if quick else 200)
    if not quick:  # many more of them, with the default 500 jobs kept: what the allocators keep after a burst
        with Server("jupyter", extra=["--SSEExtension.send_timeout=600"]) as srv:
            res["stalled_many"] = stalled_subscribers(srv, 500, 2000)
    print(f"  memory: {res}", flush=True)
    return res


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=1))
