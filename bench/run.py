"""Run every benchmark and write bench/results/results.{json,md,png}.

    python bench/run.py            # the full run (about 6 minutes on 2 cores)
    python bench/run.py --quick    # the CI smoke run (< 60 s), written to bench/results/quick/

Targets are reported, never asserted: the exit status is non-zero only when a benchmark itself broke.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import HERE, LOAD_CPU, PY, Server, pinned, raise_fd_limit


def section_overhead(quick: bool) -> dict[str, Any]:
    n, runs = (300_000, 3) if quick else (10_000_000, 15)
    with Server("jupyter") as srv:
        out = subprocess.run(
            pinned([PY, str(HERE / "overhead.py"), str(n), str(runs), srv.base, srv.token], LOAD_CPU),
            capture_output=True,
            text=True,
            timeout=900,
        )
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    res = json.loads(out.stdout.strip().splitlines()[-1])
    for kind, row in res["kinds"].items():
        shown = ", ".join(f"{k}={v:.2f}" for k, v in row.items() if k != "runs_ms")
        print(f"  overhead {kind:9}: {shown}", flush=True)
    return res


def section_kernel(quick: bool) -> dict[str, Any]:
    import kernel_traffic

    res = kernel_traffic.run(quick)
    print(
        f"  kernel traffic: tqdm.notebook {res['tqdm_notebook']['by_type']}, progress {res['progress']['by_type']}",
        flush=True,
    )
    return res


def section_fanout(quick: bool) -> list[dict[str, Any]]:
    import fanout

    return fanout.run(quick)


def section_replicas(quick: bool) -> list[dict[str, Any]]:
    import replicas

    return replicas.run_section(quick)


def section_lone(quick: bool) -> list[dict[str, Any]]:
    import fanout

    return fanout.run_lone(quick)


def section_memory(quick: bool) -> dict[str, Any]:
    import memory

    return memory.run(quick)


def section_ingest(quick: bool) -> list[dict[str, Any]]:
    import ingest

    return ingest.run(quick)


def section_history(quick: bool) -> dict[str, Any]:
    import history

    return history.run(quick)


SECTIONS = {
    "overhead": section_overhead,
    "kernel": section_kernel,
    "fanout": section_fanout,
    "replicas": section_replicas,
    "lone": section_lone,
    "memory": section_memory,
    "ingest": section_ingest,
    "history": section_history,
}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "CPU max MHz"):
                info[key.strip()] = value.strip()
    except OSError:
        pass
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    import jupyter_server
    import tqdm

    try:
        repo = HERE.parent
        info["git"] = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "jupyter_sse"], capture_output=True, text=True
        ).stdout.strip()
        info["git"] += " + uncommitted changes in jupyter_sse/" if dirty else ""
    except OSError:
        pass
    info["server_args"] = " ".join(__import__("_util").SERVER_EXTRA)
    info["versions"] = {"jupyter_server": jupyter_server.__version__, "tqdm": tqdm.__version__}
    for mod in ("fastapi", "sse_starlette", "uvicorn", "tornado", "numpy", "ipykernel", "ipywidgets"):
        with contextlib.suppress(Exception):
            info["versions"][mod] = __import__(mod).__version__
    return info


_NAMES = {
    "jupyter": "jupyter-sse",
    "hub": "hub (memory store)",
    "hub-redis": "hub (Redis store)",
    "baseline": "baseline (FastAPI+sse-starlette)",
}


def _server_name(row: dict[str, Any]) -> str:
    return _NAMES.get(row["server"], row["server"])


SUBSCRIBERS_HISTORY = 50


def fmt(v: Any, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**missed**")


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"# jupyter-sse benchmarks{' (quick)' if r['quick'] else ''}",
        "",
        f"{m.get('Model name', '?')}, {m.get('cpus')} CPUs, {m.get('memory_gib', '?')} GiB, Python {m['python']}, "
        f"{r['date']}, {r.get('wall_s', 0):.0f} s. Server under test pinned to core 0, load generators to core 1. "
        f"jupyter-sse {m.get('git', '?')}"
        + (f", server options {m['server_args']}" if m.get("server_args") else "")
        + ".",
        "",
    ]
    if r.get("reruns"):
        lines[-1:-1] = [
            "Re-run later: "
            + "; ".join(f"{name} on {v['date']} at {v['git']}" for name, v in sorted(r["reruns"].items()))
            + ".",
        ]
    ov = r.get("overhead")
    if isinstance(ov, dict) and "kinds" in ov:
        lines += [
            f"## 1. Per-iteration overhead ({ov['n']:,} items; {ov['runs']} rounds, tqdm in "
            f"{ov.get('tqdm_runs', ov['runs'])}; ratios are medians of the ratios within a round)",
            "",
            "| iterable | bare ns/it | tqdm ns/it | progress ns/it | progress (live server) ns/it | "
            "tqdm / bare | progress / bare | live / bare | live / bare, best runs | itertools.chain alone / bare | "
            "live overhead / tqdm overhead | live extra ms per loop | target | |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for kind, row in ov["kinds"].items():
            live = row.get("progress_live_vs_bare")
            extra_ms = None
            if row.get("progress_live_ns") is not None:
                extra_ms = (row["progress_live_ns"] - row["progress_ns"]) * ov["n"] / 1e6
            # The targets: progress with no server against the same loop bare (as tqdm writes to a
            # null file). The live column adds what a server costs a loop; see "live extra ms per loop".
            if kind == "generator":
                target, ok = "overhead ≤ 0.5x tqdm's", row["progress_overhead_vs_tqdm"] <= 0.5
            else:
                target, ok = "≤ 1.25x bare", row["progress_vs_bare"] <= 1.25
            lines.append(
                f"| {kind} | {row['bare_ns']:.1f} | {row['tqdm_ns']:.1f} | {row['progress_ns']:.1f} | "
                f"{fmt(row.get('progress_live_ns'), '.1f')} | {row['tqdm_vs_bare']:.2f}x | "
                f"{row['progress_vs_bare']:.2f}x | {fmt(live)}x | {fmt(row.get('progress_live_vs_bare_best'))}x | "
                f"{fmt(row.get('chain_vs_bare'))}x | {fmt(row.get('progress_live_overhead_vs_tqdm'))} | "
                f"{fmt(extra_ms, '.1f')} | "
                f"{target} | {verdict(ok)} |"
            )
        if all("sse_tqdm_ns" in row for row in ov["kinds"].values()):
            lines += [
                "",
                "jupyter_sse.tqdm (the tqdm subclass) against tqdm.std.tqdm, in the same rounds (target ≤ 1.1x):",
                "",
                "| iterable | tqdm.std.tqdm ns/it | jupyter_sse.tqdm ns/it | jupyter_sse.tqdm / tqdm | |",
                "|---|---|---|---|---|",
            ]
            for kind, row in ov["kinds"].items():
                ratio = row["sse_tqdm_vs_tqdm"]
                ok = verdict(ratio <= 1.1)
                lines.append(f"| {kind} | {row['tqdm_ns']:.1f} | {row['sse_tqdm_ns']:.1f} | {ratio:.2f}x | {ok} |")
        lines.append("")
    kt = r.get("kernel")
    if isinstance(kt, dict) and "progress" in kt:
        lines += [
            f"## 2. Kernel → front end: iopub messages for a {kt['n']:,}-item loop "
            f"(sleep {kt['sleep_s']} s every {kt['sleep_every']:,})",
            "",
            "| bar | loop s | iopub messages (by msg_type) | bar messages (all but status, execute_input) |",
            "|---|---|---|---|",
        ]
        for key, label in (("tqdm_notebook", "tqdm.notebook (tqdm.auto)"), ("progress", "jupyter_sse.progress")):
            d = kt[key]
            by = ", ".join(f"{k} {v}" for k, v in sorted(d["by_type"].items()))
            lines.append(f"| {label} | {d['wall_s']:.1f} | {by} | {d['bar_messages']} |")

        def updates(d: dict[str, int]) -> int:
            return sum(d.get(k, 0) for k in ("comm_msg", "update_display_data", "stream", "clear_output"))

        pu, tu = updates(kt["progress"]["by_type"]), updates(kt["tqdm_notebook"]["by_type"])
        ratio = kt["tqdm_notebook"]["bar_messages"] / max(kt["progress"]["bar_messages"], 1)
        lines += [
            "",
            f"Updates after the display (comm_msg, update_display_data, stream, clear_output): "
            f"tqdm.notebook {tu}, progress {pu}. Target: progress sends only its display (display_data and "
            f"its widget's comm_open) and its final update: {verdict(pu <= 1)}. tqdm.notebook sends "
            f"{ratio:.0f}x as many bar messages.",
            "",
        ]
    fo = r.get("fanout")
    if isinstance(fo, list) and fo:
        lines += [
            "## 3. Fan-out: 20 jobs x 10 Hz (one POST per job update) to N SSE subscribers",
            "",
            "| server | subscribers | connected | p50 ms | p99 ms | delivered events/s | of offered | "
            "server CPU % | server CPU µs per event | client CPU % | server RSS MiB | idle KiB/subscriber | "
            "POSTs late/sent |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        lines[-2] = lines[-2].replace("of offered", "of offered (POSTs/s sent x N)")
        for x in fo:
            if "error" in x:
                lines.append(f"| {x['server']} | {x['subscribers']} | failed: {x['error'][:80]} |||||||||||")
                continue
            pub = x.get("publisher", {})
            name = _server_name(x)
            lines.append(
                f"| {name} | {x['subscribers']:,} | {x['connected']:,} | {fmt(x['p50_ms'], '.1f')} | "
                f"{fmt(x['p99_ms'], '.1f')} | {x['events_per_s']:,.0f} | {fmt(x.get('delivered_ratio'), '.0%')} | "
                f"{x['server_cpu_pct']:.0f} | {x['server_cpu_us_per_event']:.1f} | "
                f"{fmt(x.get('client_cpu_pct'), '.0f')} | "
                f"{x['rss_busy_mib']:.0f} | {x['idle_kib_per_sub']:.1f} | "
                f"{pub.get('late', 0)}/{pub.get('posts', 0)} ({x.get('posts_per_s', 0):.0f}/s) |"
            )
        lines.append("")
        by = {(x["server"], x["subscribers"]): x for x in fo if "error" not in x}
        for n in sorted({x["subscribers"] for x in fo}):
            j, b = by.get(("jupyter", n)), by.get(("baseline", n))
            if j and b:
                lines.append(
                    f"- {n:,} subscribers: throughput jupyter-sse / baseline = "
                    f"{j['events_per_s'] / max(b['events_per_s'], 1):.2f}x "
                    f"({verdict(j['events_per_s'] >= 0.98 * b['events_per_s'])}); p99 "
                    f"{fmt(j['p99_ms'], '.0f')} ms vs {fmt(b['p99_ms'], '.0f')} ms"
                    + (f"; target p99 < 100 ms: {verdict((j['p99_ms'] or 1e9) < 100)}" if n == 1000 else "")
                )
            for kind in ("hub", "hub-redis"):
                h = by.get((kind, n))
                if j and h:
                    ratio = (h["p99_ms"] or 1e9) / max(j["p99_ms"] or 1e-9, 1e-9)
                    lines.append(
                        f"- {n:,} subscribers, {_NAMES[kind]} / jupyter-sse: p99 {ratio:.2f}x "
                        f"({fmt(h['p99_ms'], '.0f')} vs {fmt(j['p99_ms'], '.0f')} ms; target ≤ 1.5x"
                        + (
                            f": {verdict(ratio <= 1.5)}"
                            if kind == "hub" and n >= 1000
                            else ", set for the memory store at 1,000 and 2,000"
                        )
                        + f"), server CPU per event {h['server_cpu_us_per_event'] / j['server_cpu_us_per_event']:.2f}x"
                        f", throughput {h['events_per_s'] / max(j['events_per_s'], 1):.2f}x, idle "
                        f"{h['idle_kib_per_sub']:.1f} KiB/subscriber"
                        + (f" (target < 30: {verdict(h['idle_kib_per_sub'] < 30)})" if n >= 2000 else "")
                        + (
                            f"; vs baseline: p99 {(h['p99_ms'] or 0) / max(b['p99_ms'] or 1e-9, 1e-9):.3f}x"
                            if b
                            else ""
                        )
                    )
        lines.append("")
    rep_rows = r.get("replicas")
    if isinstance(rep_rows, list) and rep_rows:
        lines += [
            "### 3c. Hub replicas: 20 jobs x 10 Hz to subscribers spread over 3 replicas on Redis",
            "",
            "Directly: the publisher posts to the first replica and each replica has a third of the subscribers, so "
            "two thirds of them get every event across Redis. Behind nginx: every client, the publisher too, goes "
            "through one nginx (round robin), so the replicas also contend for the write lock. Not pinned (replicas "
            "are there to use both cores), so set beside the pinned rows of 3 with care: the same machine, the same "
            "load, the hubs, Redis, nginx and the load generators share its 2 cores.",
            "",
            "| setup | subscribers | connected | p50 ms (median of replicas) | p99 ms (worst replica) | "
            "delivered events/s | of offered | POSTs late/sent |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for x in rep_rows:
            if "error" in x:
                lines.append(f"| {x.get('server')} | {x.get('subscribers')} | failed: {x['error'][:80]} ||||||")
                continue
            pub = x.get("publisher", {})
            lines.append(
                f"| {x['server']} | {x['subscribers']:,} | {x['connected']:,} | {fmt(x['median_of_p50_ms'], '.1f')} | "
                f"{fmt(x['p99_ms_worst'], '.1f')} | {x['events_per_s']:,.0f} | "
                f"{fmt(x.get('delivered_ratio'), '.0%')} | {pub.get('late', 0)}/{pub.get('posts', 0)} |"
            )
        lines.append("")
        for x in rep_rows:
            if "error" not in x and x["subscribers"] == 1000 and x["server"] == "hub x3 on Redis":
                lines.append(
                    f"- 1,000 subscribers over 3 replicas, published through one: p99 {x['p99_ms_worst']:.0f} ms "
                    f"(target < 100 ms: {verdict(x['p99_ms_worst'] < 100)})"
                )
                lines.append("")
    lone = r.get("lone")
    if isinstance(lone, list) and lone:
        lines += [
            "### 3b. A lone job: 1 job x 10 Hz, 10 subscribers (the common case in a notebook)",
            "",
            "| server | p50 ms | p99 ms | delivered events/s |",
            "|---|---|---|---|",
        ]
        for x in lone:
            name = _server_name(x)
            if "error" in x:
                lines.append(f"| {name} | failed: {x['error'][:80]} |||")
                continue
            lines.append(
                f"| {name} | {fmt(x['p50_ms'], '.1f')} | {fmt(x['p99_ms'], '.1f')} | {x['events_per_s']:,.0f} |"
            )
        lines.append("")
    mem = r.get("memory")
    if isinstance(mem, dict) and "finished" in mem:
        f, lg = mem["finished"], mem["logs"]
        idle = [x for x in (fo or []) if isinstance(x, dict) and x.get("server") == "jupyter" and "error" not in x]
        idle_max = max(idle, key=lambda x: x["subscribers"]) if idle else None
        lines += ["## 4. Memory (server RSS growth)", "", "| what | measured | target | |", "|---|---|---|---|"]
        if idle_max:
            lines.append(
                f"| per idle subscriber ({idle_max['subscribers']:,} connected) | "
                f"{idle_max['idle_kib_per_sub']:.1f} KiB | < 30 KiB | "
                f"{verdict(idle_max['idle_kib_per_sub'] < 30)} |"
            )
        lines.append(
            f"| per finished job kept ({f['jobs']:,} jobs, {f['kept']:,} kept; POSTed at "
            f"{f.get('finished_updates_per_s', 0):,.0f} jobs/s) | {f['kib_per_job']:.2f} KiB | "
            f"< 4 KiB | {verdict(f['kib_per_job'] < 4)} |"
        )
        for st in (mem.get("stalled"), mem.get("stalled_many")):
            if not isinstance(st, dict):
                continue
            back = st["rss_after_close_mib"] <= 1.1 * st["rss_before_mib"]
            lines.append(
                f"| per subscriber that never reads ({st['subscribers']:,}, {st['jobs_kept']:,} jobs kept) | "
                f"{st['kib_per_stalled_subscriber']:.0f} KiB; RSS {st['rss_before_mib']:.0f} → "
                f"{st['rss_with_mib']:.0f} → {st['rss_after_close_mib']:.0f} MiB after they close"
                + (
                    f" ({st['rss_after_second_burst_mib']:.0f} MiB after as many again)"
                    if "rss_after_second_burst_mib" in st
                    else ""
                )
                + " | "
                f"< 64 KiB, back within 10% | {verdict(st['kib_per_stalled_subscriber'] < 64 and back)} |"
            )
        bounded = lg["kib_per_job_at_end"] <= 1.5 * lg["kib_per_job_at_kept"] + 16
        lines.append(
            f"| per running job, {lg['lines_per_job']:,} log lines (log_lines_kept={lg['log_lines_kept']}) | "
            f"{lg['kib_per_job_at_end']:.0f} KiB (after the first {lg['log_lines_kept']:,} lines: "
            f"{lg['kib_per_job_at_kept']:.0f} KiB) | bounded by retention | {verdict(bounded)} |"
        )
        lines.append("")
        if isinstance(mem.get("stalled_many"), dict):
            lines += [
                "What 2,000 closed streams used to leave behind was Python's small-object "
                "allocator (pymalloc), measured inside the server (`sys._debugmallocstats`, "
                "tracemalloc): it held the same 58 MB of objects before and after, but in 79-92 of "
                "its 1 MiB arenas instead of 57, and an arena goes back to the system only when "
                "it is empty. Whatever long-lived object came after the burst (a name in the type "
                "cache, a metric's value, a timer) went into the burst's partly used pools first, "
                "and one such object keeps a whole arena: +23-38% RSS, also with no updates after "
                "the close. Since `system_allocator` (on by default), the server's new small "
                "objects come from the C library's malloc once it has started; what it made while "
                "starting stays in pymalloc. After the burst the trim gives the freed pages back "
                "one by one. And the trimmer's own timers no longer keep closed streams: made in "
                "the closing requests' contexts, which hold the Jupyter server's handler of each, "
                "they kept 300-900 of the 2,000 reachable at its collection in about one burst of "
                "three (+30% then); they are now made in an empty context. Measured side "
                "by side with it off, 3 runs each: the same server CPU "
                "per delivered event (2.67 vs 2.70 µs at 1,000 subscribers, 1.72 vs 1.72 µs at "
                "2,000), the same ingest, and an idle subscriber 21.2 KiB instead of 19.7.",
                "",
            ]
    ing = r.get("ingest")
    if isinstance(ing, list) and ing:
        lines += [
            "## 5. Ingest: 10 publishing processes, POSTs as fast as answered",
            "",
            "| job updates per POST | updates/s | POSTs/s | server CPU % | updates per server CPU-second | target | |",
            "|---|---|---|---|---|---|---|",
        ]
        for x in ing:
            tgt = "20,000+/s" if x["batch"] > 1 else "(unbatched, for contrast)"
            ok = x["updates_per_s"] >= 20000 if x["batch"] > 1 else None
            lines.append(
                f"| {x['batch']}{' (new jobs that end, with a log line)' if x.get('kind') == 'durable' else ''} | "
                f"{x['updates_per_s']:,.0f} | {x['posts_per_s']:,.0f} | "
                f"{x['server_cpu_pct']:.0f} | {x.get('updates_per_server_cpu_s', 0):,.0f} | {tgt} | {verdict(ok)} |"
            )
        lines.append("")
    hist = r.get("history")
    if isinstance(hist, dict) and hist.get("storms"):
        lines += [
            f"## 6. History: {hist['jobs']:,} jobs kept ({hist['running']} running, the rest finished)",
            "",
            f"Filled with {hist['jobs'] // 1000} POSTs of 1,000 jobs in {hist['fill_s']:.1f} s; server RSS "
            f"{hist['rss_mib']:.0f} MiB (+{hist['rss_growth_mib']:.0f} MiB). `GET jobs` answers "
            f"{hist['first_page_jobs']} of {hist['first_page_total']:,} jobs in {hist['page_ms']:.1f} ms "
            f"(the first call, which builds the index: {hist['first_page_ms']:.0f} ms); all "
            f"{hist['pages_of_1000']} pages of 1,000 in {hist['all_pages_s']:.2f} s.",
            "",
            f"{SUBSCRIBERS_HISTORY} subscribers connecting at once, each reading its first sync (every running job and "
            "the 100 most recently finished); `/api/status` every 10 ms meanwhile, from another process:",
            "",
            "| storm | all synced ms | sync p50 ms | bytes each | server CPU ms | /api/status p50 ms before the storm "
            "| p50 ms | p99 ms | max ms | target | |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for i, s in enumerate(hist["storms"], 1):
            lines.append(
                f"| {i} | {s['all_synced_ms']:.0f} | {s['sync_ms_p50']:.0f} | {s['bytes_each']:,.0f} | "
                f"{s['server_cpu_ms']:.0f} | {fmt(s.get('status_ms_p50_before'), '.1f')} | "
                f"{s['status_ms_p50']:.1f} | {s['status_ms_p99']:.1f} | "
                f"{s['status_ms_max']:.1f} | max < 100 ms | {verdict(s['status_ms_max'] < 100)} |"
            )
        lines += [
            "",
            "Before: every subscriber was sent all 100,001 snapshots (45 MB) and 50 at once blocked the loop 17 s; "
            "then, with bounded syncs, full passes of Python's cycle collector over the jobs' objects (and the "
            "server's own) still stopped it 100-220 ms, in the storms too (the heap trim after a burst of closes "
            "starts one). Kept jobs are now out of its passes, and what the server made while starting is frozen "
            f"({fmt(hist.get('gc_frozen_objects'), ',')} objects here). `/api/status` waits behind the 50 requests "
            "that arrive with it (about 1 ms of server time each; their syncs run one per turn of the loop, so it "
            "gets in between) and, on a shared machine, for a core. tests/server/test_server_history_load.py "
            "checks the loop's longest steps with asyncio's debug mode.",
            "",
        ]
    if r.get("loadavg"):
        lines += [
            "Load average (1, 5, 15 min) at the end of each section (2 cores; above ~2 other work shared the "
            "machine): " + ", ".join(f"{k} {v[0]:.1f}/{v[1]:.1f}/{v[2]:.1f}" for k, v in r["loadavg"].items()),
            "",
        ]
    errs = r.get("errors") or {}
    if errs:
        lines += ["## Errors", ""] + [f"- {k}: {v.splitlines()[-1] if v else v}" for k, v in errs.items()] + [""]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=80)
    ov = r.get("overhead")
    ax = axes[0]
    if isinstance(ov, dict) and "kinds" in ov:
        kinds = list(ov["kinds"])
        methods = [
            ("bare_ns", "bare"),
            ("tqdm_ns", "tqdm"),
            ("progress_ns", "progress"),
            ("progress_live_ns", "progress, live server"),
        ]
        w = 0.2
        for i, (key, label) in enumerate(methods):
            ax.bar(
                [k + (i - 1.5) * w for k in range(len(kinds))],
                [ov["kinds"][k].get(key, 0) for k in kinds],
                w,
                label=label,
            )
        ax.set_xticks(range(len(kinds)), kinds)
        ax.set_ylabel("ns per item")
        ax.set_title("Loop overhead")
        ax.legend(fontsize=8)
    ax = axes[1]
    fo = r.get("fanout")
    if isinstance(fo, list):
        for kind, label, color in (
            ("jupyter", "jupyter-sse", "C0"),
            ("hub", "hub (memory)", "C2"),
            ("hub-redis", "hub (Redis)", "C1"),
            ("baseline", "FastAPI + sse-starlette", "C3"),
        ):
            pts = sorted(
                (x["subscribers"], x["p50_ms"], x["p99_ms"])
                for x in fo
                if x.get("server") == kind and "error" not in x and x.get("p99_ms")
            )
            if pts:
                ax.plot([p[0] for p in pts], [p[2] for p in pts], "o-", color=color, label=f"{label} p99")
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "x--", color=color, label=f"{label} p50")
        ax.axhline(100, color="grey", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("SSE subscribers (20 jobs x 10 Hz)")
        ax.set_ylabel("publish → receipt, ms")
        ax.set_title("Fan-out latency")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the CI smoke run: small sizes, < 60 s")
    p.add_argument("--only", action="append", choices=list(SECTIONS), help="run only these sections")
    p.add_argument("--out", type=Path, help="output directory (default bench/results, or bench/results/quick)")
    args = p.parse_args()
    raise_fd_limit()
    out = args.out or (HERE / "results" / "quick" if args.quick else HERE / "results")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    r: dict[str, Any] = {"quick": args.quick, "date": now, "machine": machine(), "errors": {}}
    previous = out / "results.json"
    if args.only and previous.exists():
        # Re-running some sections updates them in the last full run's results instead of dropping the others;
        # the markdown says which sections came later, and from which revision.
        base = json.loads(previous.read_text())
        reruns = base.get("reruns", {})
        reruns.update({name: {"date": now, "git": r["machine"].get("git")} for name in args.only})
        r = {**base, "errors": {}, "reruns": reruns}
    for name in args.only or list(SECTIONS):
        print(f"[{name}]", flush=True)
        ts = time.monotonic()
        try:
            r[name] = SECTIONS[name](args.quick)
        except Exception:
            r["errors"][name] = traceback.format_exc()
            print(r["errors"][name], file=sys.stderr, flush=True)
        r.setdefault("loadavg", {})[name] = [round(x, 2) for x in os.getloadavg()]
        print(f"[{name}] {time.monotonic() - ts:.1f} s, load average {os.getloadavg()[0]:.2f}", flush=True)
    if not args.only:
        r["wall_s"] = time.monotonic() - t0
    (out / "results.json").write_text(json.dumps(r, indent=1))
    (out / "results.md").write_text(markdown(r))
    try:
        plot(r, out / "results.png")
    except Exception:
        r["errors"]["plot"] = traceback.format_exc()
        print(r["errors"]["plot"], file=sys.stderr)
    print(f"wrote {out}/results.json, results.md, results.png in {time.monotonic() - t0:.0f} s")
    return 1 if r["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
