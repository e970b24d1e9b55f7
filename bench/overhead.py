"""1. Per-iteration overhead: bare loop, tqdm (tqdm.std to a null file), jupyter_sse.progress with no server and
with a live server (its publisher thread running and POSTing), over a range, a list, a NumPy array and a generator.

Run as a script (``python bench/overhead.py N RUNS [URL TOKEN]``) so that nothing else lives in the process; prints
one JSON line. Runs are interleaved (bare, tqdm, progress, ... repeated) and the median is kept.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import Any


def gen(n: int) -> Any:
    yield from range(n)


def loop(it: Any) -> None:
    for _ in it:
        pass


def main() -> None:
    n, runs = int(sys.argv[1]), int(sys.argv[2])
    url, token = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else (None, None)
    import numpy as np
    from tqdm.std import tqdm

    from jupyter_sse.kernel import progress
    from jupyter_sse.kernel.publisher import configure

    null = open(os.devnull, "w")  # noqa: SIM115
    sources = {
        "range": lambda: range(n),
        "list": (lambda data: lambda: data)(list(range(n))),
        "ndarray": (lambda data: lambda: data)(np.arange(n)),
        "generator": lambda: gen(n),
    }
    pub_none = configure(None)
    pub_live = configure(url, token) if url else None
    publishers = {"progress": pub_none, "progress_live": pub_live}
    methods: dict[str, Any] = {
        "bare": lambda src: loop(src),
        "tqdm": lambda src: loop(tqdm(src, file=null, total=n)),
        "progress": lambda src: loop(progress(src, file=null, total=n)),
    }
    if pub_live is not None:
        methods["progress_live"] = methods["progress"]
    import jupyter_sse.kernel.publisher as publisher_mod

    out: dict[str, Any] = {"n": n, "runs": runs, "live_server": url is not None, "kinds": {}}
    for kind, make in sources.items():
        times: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(runs):
            for name, fn in methods.items():
                publisher_mod._publisher = publishers.get(name, pub_none)
                src = make()
                gc.collect()
                t0 = time.perf_counter()
                fn(src)
                times[name].append(time.perf_counter() - t0)
        med = {m: sorted(v)[len(v) // 2] for m, v in times.items()}
        row: dict[str, Any] = {f"{m}_ns": med[m] / n * 1e9 for m in med}
        bare = med["bare"]
        for m in ("progress", "progress_live"):
            if m in med:
                row[f"{m}_vs_bare"] = med[m] / bare
                row[f"{m}_overhead_vs_tqdm"] = (med[m] - bare) / (med["tqdm"] - bare)
        row["tqdm_vs_bare"] = med["tqdm"] / bare
        best = {m: min(v) for m, v in times.items()}  # less sensitive to other work on a shared machine
        for m in ("progress", "progress_live"):
            if m in best:
                row[f"{m}_vs_bare_best"] = best[m] / best["bare"]
        out["kinds"][kind] = row
    if pub_live is not None:
        out["live_publisher_stats"] = {
            "requests": pub_live.stats.requests,
            "succeeded": pub_live.stats.succeeded,
            "failed": pub_live.stats.failed,
        }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
