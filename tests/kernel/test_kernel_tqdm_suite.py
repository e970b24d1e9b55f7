"""tqdm's own test suite, from the sdist of the installed tqdm, run against ``jupyter_sse.tqdm``.

The sdist is fetched once with pip into a cache directory (``$XDG_CACHE_HOME/jupyter-sse``, or
``~/.cache/jupyter-sse``), and its tests run in a child pytest with ``tests/kernel/_tqdm_suite_swap.py``, which
puts our class wherever the suite takes tqdm's. Only the suite's files that exercise the tqdm class run: the
others test tqdm's CLI, its utilities and its other front ends (gui, tk, rich, notebook, keras, dask).

What passes must not shrink, and whatever fails must be one of the tests below, which do not apply to a bar whose
display is the job's rather than the terminal's:
- TERMINAL: they assert bytes tqdm writes to its file while the bar runs (``0/3`` at the start, a line per
  refresh, ``\\r`` and cursor moves, ANSI colours, widths). Our bar writes no terminal line while it runs (the
  job's display shows it, outside a kernel one final text line).
- BY DESIGN: ``disable=None`` keeps the bar on when the file is not a terminal (the display is the job's);
  tqdm raises its ``gui=True`` deprecation error and warns about an unknown colour from its terminal display,
  which ours replaces; ``test_lock_args`` times how a non-blocking lock skips the terminal refresh, and there is
  no terminal refresh to skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import tqdm

pytestmark = pytest.mark.timeout(900)

HERE = Path(__file__).parent
FILES = [
    "tests_asyncio.py",
    "tests_concurrent.py",
    "tests_contrib.py",
    "tests_contrib_logging.py",
    "tests_itertools.py",
    "tests_pandas.py",
    "tests_perf.py",
    "tests_synchronisation.py",
    "tests_tqdm.py",
]
# measured with tqdm 4.70.1 on Python 3.11: 116 of these files' tests pass (160 with tqdm's own class), 4 are
# skipped by tqdm itself either way (no concurrent.interpreters before Python 3.14, no itertools.batched before 3.12)
MIN_PASSED = 116
TERMINAL = {
    "tests_asyncio::test_coroutine_send",
    "tests_concurrent::test_concurrent_map[process_map]",
    "tests_concurrent::test_concurrent_map[thread_map]",
    "tests_tqdm::test_file_output",
    # a bar on a file that is not a terminal logs its 0% line at once (headless logging), where tqdm's test
    # expects the bars to be cleared and redrawn below the written message
    "tests_tqdm::test_write",
    "tests_tqdm::test_min_interval",
    "tests_tqdm::test_max_interval",
    "tests_tqdm::test_delay",  # and its teardown: the bar stays open after the failed assertion
    "tests_tqdm::test_min_iters",
    "tests_tqdm::test_dynamic_min_iters",
    "tests_tqdm::test_smoothed_dynamic_min_iters",
    "tests_tqdm::test_smoothed_dynamic_min_iters_with_min_interval",
    "tests_tqdm::test_ascii_bar",
    "tests_tqdm::test_unicode_bar",
    "tests_tqdm::test_custom_bar[ .oO0]",
    "tests_tqdm::test_custom_bar[ #]",
    "tests_tqdm::test_update",
    "tests_tqdm::test_close",
    "tests_tqdm::test_smoothing",
    "tests_tqdm::test_bar_format",
    "tests_tqdm::test_custom_format",
    "tests_tqdm::test_eta",
    "tests_tqdm::test_unpause",
    "tests_tqdm::test_reset",
    "tests_tqdm::test_position",
    "tests_tqdm::test_set_description",
    "tests_tqdm::test_clear",
    "tests_tqdm::test_refresh",
    "tests_tqdm::test_write_stdout_stderr",
    "tests_tqdm::test_postfix",
    "tests_tqdm::test_postfix_direct",
    "tests_tqdm::test_file_redirection",
    "tests_tqdm::test_external_write",
    "tests_tqdm::test_wrapattr[bytes]",
    "tests_tqdm::test_screen_shape",
    "tests_tqdm::test_initial",
    # the escape character in these ids is written as text in the JUnit report
    r"tests_tqdm::test_colour[#beefed-\x1b[38;2;190;239;237m]",
    r"tests_tqdm::test_colour[blue-\x1b[34m]",
    "tests_tqdm::test_reversed",
}
BY_DESIGN = {
    "tests_tqdm::test_autodisable_nonTTY",
    "tests_tqdm::test_deprecated_gui[update]",
    "tests_tqdm::test_deprecated_gui[iter]",
    "tests_tqdm::test_colour_unknown",
    "tests_perf::test_lock_args",
}


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jupyter-sse"


def _suite() -> Path:
    """tqdm's tests (and the pytest config beside them) from the sdist of the installed version, fetched once."""
    version = tqdm.__version__
    root = _cache_dir() / f"tqdm-{version}-suite"
    if (root / "tests" / "conftest.py").exists():
        return root
    downloads = _cache_dir() / "sdists"
    sdist = downloads / f"tqdm-{version}.tar.gz"
    if not sdist.exists():
        pip = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-q"]
        subprocess.run(
            [*pip, "--disable-pip-version-check", f"tqdm=={version}", "-d", str(downloads)],
            check=True,
            timeout=300,
        )
    staging = root.with_name(root.name + ".tmp")
    with tarfile.open(sdist) as archive:
        prefix = f"tqdm-{version}/"
        members = [
            m
            for m in archive.getmembers()
            if m.name.startswith(prefix + "tests/") or m.name == prefix + "pyproject.toml"
        ]
        archive.extractall(staging, members=members, filter="data")
    (staging / f"tqdm-{version}").rename(root)  # whole or not at all: a second run never sees half a suite
    staging.rmdir()
    return root


def test_tqdms_own_suite_passes_against_jupyter_sse_tqdm(tmp_path: Path) -> None:
    suite = _suite()
    report = tmp_path / "report.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_SSE_")}  # no server: local jobs
    env["PYTHONPATH"] = str(HERE)
    options = ["-p", "_tqdm_suite_swap", "-p", "no:cacheprovider", "-o", "addopts=", "-W", "error", "-q"]
    config = ["--rootdir", str(suite), "-c", str(suite / "pyproject.toml"), f"--junitxml={report}"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *(f"tests/{f}" for f in FILES), *options, *config],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert report.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    passed, not_passed = set(), set()
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').split('.')[1]}::{case.get('name')}"
        outcomes = {child.tag for child in case}
        if outcomes & {"failure", "error"}:
            not_passed.add(name)
        elif "skipped" not in outcomes:
            passed.add(name)
    unexpected = not_passed - TERMINAL - BY_DESIGN
    assert not unexpected, f"tqdm tests that should pass failed: {sorted(unexpected)}\n{result.stdout[-5000:]}"
    assert len(passed) >= MIN_PASSED, (len(passed), result.stdout[-5000:])
