"""Fork storm: many forks while many jobs churn in the parent, against a real Jupyter server with jupyter-sse.

The parent keeps ``--churn`` jobs running in two threads that update them and keep ending and restarting them
(so the publisher thread and the ending jobs hold the kernel side's locks all the time). Meanwhile the main
thread forks ``--forks`` children, at most ``--concurrency`` alive at once. Each child runs a short ``progress``
loop and leaves with ``os._exit(0)``, as multiprocessing's children do, under ``signal.alarm``: a child still
running when its alarm fires is counted hung. At the end the server is asked for every child's job.

    python bench/forkstorm.py                      # 1,000 forks while 1,000 jobs churn
    python bench/forkstorm.py --forks 200 --churn 200
    PYTHONPATH=/path/to/other/checkout python bench/forkstorm.py --label "other"   # run from outside the repo

Writes ``results/forkstorm.json`` and ``results/forkstorm.md`` (``--out`` to change the directory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import Server, percentile

HUNG = -signal.SIGALRM


def _child(name: str, alarm: int) -> None:  # pragma: no cover - runs in the forked child
    code = 1
    try:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # a hang ends the child, counted as hung
        signal.alarm(alarm)
        from jupyter_sse import progress

        for _ in progress(range(5), desc=name):
            pass
        code = 0
    finally:
        os._exit(code)


def storm(forks: int, churn: int, concurrency: int, alarm: int) -> dict[str, Any]:
    from jupyter_sse import job
    from jupyter_sse.kernel.display import Display, set_display_factory

    set_display_factory(lambda _job: Display())  # measure the kernel side, not a terminal
    stop = threading.Event()
    churned = [0, 0]

    def churner(slot: int, count: int) -> None:
        handles = [job(f"churn-{slot}").__enter__() for _ in range(count)]
        i = 0
        while not stop.is_set():
            k = i % count
            handles[k].update()
            if i % 5 == 0:  # end one (the end takes END_LOCK and waits for its flush) and start another
                handles[k].__exit__(None, None, None)
                handles[k] = job(f"churn-{slot}").__enter__()
                churned[slot] += 1
            i += 1
        for h in handles:
            h.__exit__(None, None, None)

    threads = [threading.Thread(target=churner, args=(s, churn // 2 + (s < churn % 2))) for s in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the churn is under way before the first fork
    started: dict[int, tuple[str, float]] = {}
    results: list[tuple[str, int, float]] = []
    begin = time.monotonic()

    def reap(block: bool) -> None:
        for pid, (name, t0) in list(started.items()):
            done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
            if done:
                results.append((name, os.waitstatus_to_exitcode(status), time.monotonic() - t0))
                del started[pid]
                if not block:
                    return

    for i in range(forks):
        while len(started) >= concurrency:
            reap(block=False)
            time.sleep(0.001)
        name = f"storm-{i}"
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:  # pragma: no cover
            _child(name, alarm)
        started[pid] = (name, t0)
    while started:
        reap(block=True)
    forking = time.monotonic() - begin
    stop.set()
    for t in threads:
        t.join()
    lifetimes = [r[2] for r in results]
    return {
        "forks": forks,
        "churn_jobs": churn,
        "churned_jobs_ended": sum(churned),
        "concurrency": concurrency,
        "alarm_s": alarm,
        "seconds": round(forking, 2),
        "forks_per_s": round(forks / forking, 1),
        "child_lifetime_ms_p50": round(1000 * (percentile(lifetimes, 50) or 0), 1),
        "child_lifetime_ms_p99": round(1000 * (percentile(lifetimes, 99) or 0), 1),
        "child_lifetime_ms_max": round(1000 * max(lifetimes, default=0), 1),
        "hung": sum(1 for r in results if r[1] == HUNG),
        "failed_exit": sum(1 for r in results if r[1] not in (0, HUNG)),
        "names": [r[0] for r in results],
    }


def run(forks: int, churn: int, concurrency: int, alarm: int) -> dict[str, Any]:
    with Server("jupyter", extra=["--SSEExtension.jobs_kept=1000000"]) as server:
        env = dict(os.environ, JUPYTER_SSE_URL=server.base, JUPYTER_SSE_TOKEN=server.token)
        # the storm runs in its own process: it forks, and this one holds the server's handles
        cmd = [sys.executable, __file__, "--inner", str(forks), str(churn), str(concurrency), str(alarm)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, check=False)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-3000:])
        res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        names = set(res.pop("names"))
        deadline = time.monotonic() + 10
        while True:  # the children waited for their final state: it should all be there at once
            jobs = [j for j in server.request("GET", "jupyter-sse/api/jobs")["jobs"] if j["name"] in names]
            states: dict[str, int] = {}
            for j in jobs:
                states[j["state"]] = states.get(j["state"], 0) + 1
            if states.get("succeeded", 0) == len(names) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    res["on_server"] = states
    res["succeeded"] = states.get("succeeded", 0)
    res["lost"] = forks - res["succeeded"]
    res["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    return res


def markdown(runs: dict[str, dict[str, Any]]) -> str:
    first = next(iter(runs.values()))
    lines = [
        "# Fork storm",
        "",
        f"Forks (at most {first['concurrency']} alive) while jobs churn in the parent (two threads update them and "
        "keep ending and restarting them); each child runs `progress(range(5))` and leaves with `os._exit(0)` "
        f"under an alarm (a child its alarm ends counts as hung). {first['machine']['cpus']} CPUs, Python "
        f"{first['machine']['python']}. `python bench/forkstorm.py [--label L]`.",
        "",
        "| run | forks | churning jobs (ended meanwhile) | hung | other exit | succeeded on the server | lost "
        "| seconds | forks/s | child lifetime p50 / p99 / max (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, r in runs.items():
        lines.append(
            f"| {label} | {r['forks']:,} | {r['churn_jobs']:,} ({r['churned_jobs_ended']:,}) | {r['hung']} "
            f"| {r['failed_exit']} | {r['succeeded']:,} | {r['lost']} | {r['seconds']} | {r['forks_per_s']} "
            f"| {r['child_lifetime_ms_p50']} / {r['child_lifetime_ms_p99']} / {r['child_lifetime_ms_max']} |"
        )
    return "\n".join([*lines, ""])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        forks, churn, concurrency, alarm = (int(x) for x in sys.argv[2:6])
        print(json.dumps(storm(forks, churn, concurrency, alarm)))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--forks", type=int, default=1000)
    p.add_argument("--churn", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--alarm", type=int, default=20, help="seconds before a child counts as hung")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--label", default="this revision", help="the row's name; rows of other labels are kept")
    args = p.parse_args()
    res = run(args.forks, args.churn, args.concurrency, args.alarm)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "forkstorm.json"
    runs: dict[str, dict[str, Any]] = {}
    if path.exists():
        runs = json.loads(path.read_text()).get("runs", {})
    runs[args.label] = res
    path.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    (args.out / "forkstorm.md").write_text(markdown(runs))
    print(markdown(runs))
    return 0 if res["hung"] == 0 and res["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
