"""The text display: the final line headless runs leave, and IPython's post_run_cell resolution."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_sse.kernel import progress
from jupyter_sse.kernel import publisher as publisher_mod
from jupyter_sse.kernel.display import Display, KernelDisplay, format_text, set_display_factory


@pytest.fixture(autouse=True)
def no_server() -> Iterator[publisher_mod.Publisher]:
    pub = publisher_mod.configure(None)
    yield pub
    pub.close()


def run(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_SSE_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=60
    )


def test_script_without_server_prints_a_final_line_with_the_state() -> None:
    proc = run(
        """
        from jupyter_sse.kernel import progress, job
        for x in progress(range(100), desc="train"):
            pass
        with job("load", total=2) as j:
            j.update(2)
        """
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("train: 100%|")
    assert "100/100 [" in lines[0] and lines[0].endswith(" succeeded")
    assert lines[1].startswith("load: 100%|") and lines[1].endswith("2/2 [" + lines[1].split("2/2 [")[1])
    assert lines[1].endswith(" succeeded")
    assert proc.stdout == ""


def test_script_failure_prints_failed() -> None:
    proc = run(
        """
        from jupyter_sse.kernel import job
        with job("step", total=3) as j:
            j.update()
            raise ValueError("boom")
        """
    )
    assert proc.returncode == 1
    assert "step:  33%|" in proc.stderr
    assert "1/3 [" in proc.stderr
    assert " failed: ValueError: boom" in proc.stderr


def test_ipython_resolves_a_loop_left_by_an_exception_after_the_cell() -> None:
    proc = run(
        """
        import io
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_cell("from jupyter_sse.kernel import progress")
        shell.run_cell('''
        for i in progress(range(10), desc="a"):
            if i == 3:
                raise ValueError("boom")
        ''')
        shell.run_cell('''
        for i in progress(range(10), desc="b"):
            if i == 2:
                raise KeyboardInterrupt
        ''')
        shell.run_cell('''
        try:
            for i in progress(range(10), desc="c"):
                if i == 2:
                    raise KeyError
        except KeyError:
            pass
        ''')
        """
    )
    err = proc.stderr
    assert "3/10 [" in err and " failed: ValueError: boom" in err, err
    assert "2/10 [" in err and " cancelled" in err, err
    assert " failed: unknown: the loop was left by an exception that the cell caught" in err, err


def test_format_text_final_states() -> None:
    p = progress(range(4), desc="t", file=io.StringIO())
    list(p)
    assert p._job is not None
    text = format_text(p._job, final=True)
    assert text.startswith("t: 100%|") and "4/4" in text and text.endswith(" succeeded")
    assert "it/s]" in text


def test_leave_false_prints_nothing_at_the_end_off_a_tty() -> None:
    out = io.StringIO()
    list(progress(range(3), file=out, leave=False))
    assert out.getvalue() == ""


def test_the_display_can_be_replaced() -> None:
    seen: list[str] = []

    class Recording(Display):
        def start(self, job: object) -> None:
            seen.append("start")

        def finish(self, job: object) -> None:
            seen.append("finish")

    set_display_factory(lambda job: Recording())
    try:
        list(progress(range(3)))
    finally:
        set_display_factory(None)
    assert seen == ["start", "finish"]


def test_a_script_logging_to_a_file_gets_lines_at_a_bounded_rate_and_its_log_lines() -> None:
    # stderr is a pipe here, as in a CI log or `python train.py 2> log`
    proc = run(
        """
        import time
        from jupyter_sse.kernel import display, job, progress
        display.HEADLESS_LOG_INTERVAL = 0.3
        for i in progress(range(20), desc="piped"):
            time.sleep(0.1)
        with job("noted", total=2) as j:
            j.log("first note")
            j.update(2)
        """
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    piped = [line for line in lines if line.startswith("piped:")]
    assert 3 <= len(piped) <= 2 + 20 * 0.1 / 0.3 + 1, piped  # several, not one per step or per redraw
    assert piped[-1].startswith("piped: 100%|") and piped[-1].endswith(" succeeded")
    assert all(not line.endswith(" succeeded") for line in piped[:-1])
    assert "\r" not in proc.stderr  # a pipe is not redrawn
    # the note comes after the first bar and before the second's final line (on a busy machine the second bar may
    # also be drawn in between, at its bounded rate)
    assert lines[-1].startswith("noted: 100%|") and lines[-1].endswith(" succeeded"), lines
    assert "first note" in lines[lines.index(piped[-1]) + 1 : -1], lines


def test_kernel_text_display_keeps_a_bounded_tail_of_log_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython.display

    from jupyter_sse.kernel import job
    from tests._display_fakes import FakeShell, Handle

    shown: list[dict[str, Any]] = []
    monkeypatch.setattr(IPython.display, "display", lambda data, raw, display_id: Handle(shown, data))
    set_display_factory(lambda job: KernelDisplay(FakeShell()))
    try:
        with job("tail", total=1000) as j:
            for i in range(1000):
                j.log("x" * 500 if i == 999 else f"line {i}")
                j.update()
    finally:
        set_display_factory(None)
    assert len(shown) == 2  # the start and the final update: no message per log line
    final = shown[-1]["update"]["text/plain"].splitlines()
    assert final[:5] == ["[995 earlier log lines]", "line 995", "line 996", "line 997", "line 998"]
    assert len(final[5]) == 200 and final[5].endswith("…")
    assert final[-1].startswith("tail: 100%|") and final[-1].endswith(" succeeded")
