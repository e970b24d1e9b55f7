"""1. Per-iteration overhead: bare loop, tqdm (tqdm.std to a null file), jupyter_sse.progress with no server and
with a live server (its publisher thread running and POSTing), over a range, a list, a NumPy array and a generator;
and jupyter_sse.tqdm (the tqdm subclass) against tqdm.std.tqdm, run in the same rounds.

Run as a script (``python bench/overhead.py N RUNS [URL TOKEN]``) so that nothing else lives in the process; prints
one JSON line. Runs are interleaved (bare, tqdm, progress, ... repeated); times are medians, and ratios to the bare
loop are medians of the ratios within each round.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import statistics
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
    from jupyter_sse.kernel import tqdm as sse_tqdm
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
        "sse_tqdm": lambda src: loop(sse_tqdm(src, file=null, total=n)),
        # The floor of any wrapper: the cheapest C iterator around the native one, doing nothing else. progress
        # needs one (itertools.chain, to see the loop end), so it cannot be cheaper than this.
        "chain": lambda src: loop(itertools.chain(src, ())),
    }
    if pub_live is not None:
        methods["progress_live"] = methods["progress"]
    import jupyter_sse.kernel.publisher as publisher_mod

    # tqdm is 4-17x slower than the rest and only needs to be roughly right: fewer runs of it.
    tqdm_runs = min(runs, 5)
    out: dict[str, Any] = {"n": n, "runs": runs, "tqdm_runs": tqdm_runs, "live_server": url is not None, "kinds": {}}
    for kind, make in sources.items():
        times: dict[str, list[float]] = {m: [] for m in methods}
        for r in range(runs):
            for name, fn in methods.items():
                if name in ("tqdm", "sse_tqdm") and r >= tqdm_runs:
                    continue
                publisher_mod._publisher = publishers.get(name, pub_none)
                src = make()
                gc.collect()
                t0 = time.perf_counter()
                fn(src)
                times[name].append(time.perf_counter() - t0)
        med = {m: statistics.median(v) for m, v in times.items()}
        row: dict[str, Any] = {f"{m}_ns": med[m] / n * 1e9 for m in med}
        bare = med["bare"]

        def paired(m: str, times: dict[str, list[float]] = times) -> float:
            # The median of per-round ratios: each round runs bare and m back to back, so a slow stretch of a
            # shared VM (consecutive bare runs differ by up to 1.6x there) lands on both sides of the ratio.
            return statistics.median(t / b for t, b in zip(times[m], times["bare"], strict=False))

        for m in ("progress", "progress_live", "chain"):
            if m in med:
                row[f"{m}_vs_bare"] = paired(m)
        for m in ("progress", "progress_live"):
            if m in med:
                row[f"{m}_overhead_vs_tqdm"] = (med[m] - bare) / (med["tqdm"] - bare)
        # the subclass against the class it extends, paired within each round as above
        row["sse_tqdm_vs_tqdm"] = statistics.median(
            s / t for s, t in zip(times["sse_tqdm"], times["tqdm"], strict=False)
        )
        row["runs_ms"] = {m: [round(t * 1e3, 2) for t in v] for m, v in times.items()}
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
