"""The wire rules live in one module: the core, the kernel side and the TypeScript side hold the same values."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_sse import protocol
from jupyter_sse.core import ProtocolError, parse_update_batch
from jupyter_sse.kernel._state import JobState
from jupyter_sse.kernel.publisher import Publisher

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "scripts" / "gen-protocol-ts"
PROTOCOL_TS = ROOT / "labextension" / "src" / "protocol.ts"


def _check(target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), "--check", "--target", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_protocol_ts_holds_what_protocol_py_says() -> None:
    done = _check(PROTOCOL_TS)
    assert done.returncode == 0, done.stderr


def test_the_check_fails_when_a_value_differs_and_not_when_only_the_layout_does(tmp_path: Path) -> None:
    text = PROTOCOL_TS.read_text(encoding="utf-8")
    reformatted = tmp_path / "reformatted.ts"
    # what a formatter may do: other quotes, arrays on one line, no trailing commas
    reformatted.write_text(re.sub(r",\n\s*", ", ", text).replace("'", '"'), encoding="utf-8")
    assert _check(reformatted).returncode == 0, _check(reformatted).stderr

    changed = tmp_path / "changed.ts"
    assert "export const JOB_ID_MAX_LENGTH = 64;" in text
    changed.write_text(text.replace("JOB_ID_MAX_LENGTH = 64;", "JOB_ID_MAX_LENGTH = 63;"), encoding="utf-8")
    done = _check(changed)
    assert done.returncode == 1
    assert "differs from jupyter_sse/protocol.py" in done.stderr

    without_lost = tmp_path / "without_lost.ts"
    terminal = text[text.index("export const TERMINAL_STATES") :]
    assert "'lost'" in terminal.split(";")[0]
    without_lost.write_text(text.replace(terminal, terminal.replace("'lost',", "", 1)), encoding="utf-8")
    assert _check(without_lost).returncode == 1

    assert _check(tmp_path / "missing.ts").returncode == 1


def test_the_protocol_module_imports_only_the_standard_library() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import jupyter_sse.protocol\n"
        "print('\\n'.join(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded = {name.split(".")[0] for name in done.stdout.split()}
    assert loaded - set(sys.stdlib_module_names) == {"jupyter_sse"}
    # nothing of the parts either: they import it, not the other way round
    ours = {name for name in done.stdout.split() if name.startswith("jupyter_sse")}
    assert ours <= {"jupyter_sse", "jupyter_sse._version", "jupyter_sse.protocol"}


@pytest.mark.parametrize(
    ("job_id", "valid"),
    [
        ("a", True),
        ("A-z_09", True),
        ("x" * protocol.JOB_ID_MAX_LENGTH, True),
        ("x" * (protocol.JOB_ID_MAX_LENGTH + 1), False),
        ("", False),
        ("a/b", False),
        ("a.b", False),
        ("é", False),
        ("a\n", False),
    ],
)
def test_job_ids_follow_one_rule_in_the_pattern_and_the_check(job_id: str, valid: bool) -> None:
    assert protocol.is_valid_job_id(job_id) is valid
    # the anchored pattern (schemas, JavaScript) says the same as the check
    assert (re.fullmatch(protocol.JOB_ID_PATTERN.strip("^$"), job_id) is not None) is valid


def test_terminal_has_one_meaning_and_lost_is_in_it() -> None:
    assert {"succeeded", "failed", "cancelled", "lost"} == protocol.TERMINAL_STATES
    assert protocol.TERMINAL_STATES - {"lost"} == protocol.FINAL_STATES
    assert set(protocol.PUBLISHED_STATES) == set(protocol.STATES) - {"lost"}
    assert set(protocol.STATES) >= protocol.TERMINAL_STATES
    assert [str(kind) for kind in protocol.EventKind] == ["job", "log", "removed", "reset"]


def test_every_public_name_is_exported_and_typed_as_the_generator_expects() -> None:
    public = {name for name in vars(protocol) if not name.startswith("_") and name.isupper()}
    assert public <= set(protocol.__all__)


def test_what_the_kernel_clips_to_is_what_the_server_accepts() -> None:
    """A kernel's job with every string past its bound: the batch it sends passes the server's validation whole
    (before, a longer string got the whole batch refused), and each string is at its bound."""
    job = JobState("n" * 100_000, 10, "u" * 10_000)
    job.message = "m" * 100_000
    job.path = "p" * 100_000
    job.state = "running"
    job.add_log("l" * 100_000)
    publisher = Publisher(None, threaded=False)
    try:
        body, _, _ = publisher.build([job], 0.0)
    finally:
        publisher.close()
    batch = parse_update_batch(json.dumps(body).encode())
    (update,) = batch.jobs
    assert update.name is not None and len(update.name) == protocol.NAME_MAX_LENGTH
    assert update.unit is not None and len(update.unit) == protocol.NAME_MAX_LENGTH
    assert update.message is not None and len(update.message) == protocol.TEXT_MAX_LENGTH
    assert update.path is not None and len(update.path) == protocol.TEXT_MAX_LENGTH
    assert [len(line) for line in batch.logs[0].lines] == [protocol.LOG_LINE_MAX_LENGTH]

    # and one character more is refused, with the field named
    too_long = {"jobs": [{"id": "j", "name": "n" * (protocol.NAME_MAX_LENGTH + 1)}]}
    with pytest.raises(ProtocolError) as refused:
        parse_update_batch(json.dumps(too_long).encode())
    assert refused.value.status == 400
    assert "name" in json.dumps(refused.value.detail)


@pytest.mark.parametrize(
    ("event_id", "valid"),
    [
        ("ab12.5", True),
        ("7", True),
        ("e" * 64 + "." + "9" * 30, True),
        ("e" * 65 + ".1", False),
        ("ab.", False),
        ("a-b.1", False),
        ("²", False),  # a digit to str.isdigit(), not to the protocol
        ("", False),
    ],
)
def test_event_ids_follow_one_rule(event_id: str, valid: bool) -> None:
    assert (re.fullmatch(protocol.EVENT_ID_PATTERN.strip("^$"), event_id) is not None) is valid
    assert (re.fullmatch(protocol.EVENT_ID_PATTERN, event_id) is not None) is valid
