"""The text display: the final line headless runs leave, and IPython's post_run_cell resolution."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from jupyter_sse.kernel import progress
from jupyter_sse.kernel import publisher as publisher_mod
from jupyter_sse.kernel.display import Display, format_text, set_display_factory


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
