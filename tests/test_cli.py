"""`jupyter sse` run in-process (`main([...])`) against the scripted SSE server (tests/_scripted_server.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import jupyter_sse
from jupyter_sse import cli
from jupyter_sse.cli import main


@pytest.fixture
def s(scripted_server):
    """The scripted SSE server of tests/_scripted_server.py, by a short name: the tests call its helpers a lot."""
    return scripted_server


@pytest.fixture
def run(s, capsys):
    def run(*args):
        code = main(["--url", s.url, "--token", s.token, *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_help_in_a_subprocess():
    root = Path(jupyter_sse.__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "jupyter_sse.cli", "--help"], capture_output=True, text=True, env=env, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("list", "follow", "cancel", "hub"):
        assert command in proc.stdout.split("commands:")[1]


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["--help"]) == 0
    assert "usage:" in capsys.readouterr().out


def test_list_table_newest_first(s, run):
    jobs = [
        s.job("b2", "running", n=5, total=None, name="preprocess", rate=12.5, elapsed=3725.0, updated=time.time()),
        s.job("a1", "succeeded", n=10.0, total=10, name="train", rate=None, elapsed=61.0),
    ]
    s.route("GET", "jobs", s.json(200, {"jobs": jobs}))
    code, out, err = run("list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATE", "N/TOTAL", "ELAPSED", "RATE"]
    assert lines[1].split() == ["b2", "preprocess", "running", "5/?", "1:02:05", "12.5", "it/s"]
    assert lines[2].split() == ["a1", "train", "succeeded", "10/10", "01:01"]


def test_list_state_and_json_and_options_after_the_command(s, capsys):
    s.route("GET", "jobs", s.json(200, {"jobs": [s.job("a")]}))
    assert main(["list", "--state", "running", "--json", "--url", s.url, "--token", s.token]) == 0
    assert json.loads(capsys.readouterr().out) == [s.job("a")]
    assert s.requests[0].query == {"state": ["running"], "limit": ["100"]}


def test_list_empty(s, run):
    s.route("GET", "jobs", s.json(200, {"jobs": []}))
    assert run("list") == (0, "", "no jobs\n")


@pytest.mark.parametrize(("state", "code"), [("succeeded", 0), ("failed", 1), ("cancelled", 130), ("lost", 3)])
def test_follow_json_exit_codes(s, run, state, code):
    s.route(
        "GET",
        "jobs/a/events",
        s.stream(
            s.retry(20),
            s.event("job", s.job("a", n=1), id="1"),
            s.comment(),
            s.event("log", {"job": "a", "lines": ["one"]}, id="2"),
            s.event("job", s.job("a", state, n=2), id="3"),
        ),
    )
    result, out, err = run("follow", "a", "--json")
    assert result == code, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x["event"], x["id"]) for x in lines] == [("job", "1"), ("log", "2"), ("job", "3")]
    assert lines[1]["data"] == {"job": "a", "lines": ["one"]}
    assert f"job a (job a) {state}" in err


def test_follow_draws_a_bar_and_prints_logs_and_a_final_line(s, run):
    s.route(
        "GET",
        "jobs/a/events",
        s.stream(
            s.event("job", s.job("a", n=3, total=10, name="train", message="loss 0.5"), id="1"),
            s.event("log", {"job": "a", "lines": ["epoch 1", "epoch 2"]}, id="2"),
            s.event("log", {"job": "a", "lines": [], "dropped": True}, id="3"),
            s.event(
                "job",
                s.job("a", "failed", n=4, name="train", error={"type": "ValueError", "message": "boom"}),
                id="4",
            ),
        ),
    )
    code, out, err = run("follow", "a")
    assert code == 1
    assert out.splitlines() == [
        "epoch 1",
        "epoch 2",
        "[earlier log lines were dropped]",
        "job a (train) failed: 4/10 it in 00:01: ValueError: boom",
    ]
    assert "train" in err
    assert "loss 0.5" in err
    assert "3/10" in err


@pytest.mark.parametrize("total", [None, 0])
def test_follow_a_bar_without_a_total_and_through_a_reconnect(s, run, total):
    s.route(
        "GET",
        "jobs/a/events",
        s.stream(s.retry(20), s.event("job", s.job("a", n=5, total=total, unit="B"), id="1"), s.DROP),
        s.stream(s.event("job", s.job("a", "succeeded", n=7, total=total, unit="B"), id="2")),
    )
    code, out, err = run("follow", "a")
    assert code == 0, err
    assert out == f"job a (job a) succeeded: 7/{'?' if total is None else 0} B in 00:01\n"
    assert "reconnecting" in err
    assert s.requests[1].headers["last-event-id"] == "1"
    assert not logging.getLogger("jupyter_sse.client").handlers


def test_follow_without_a_job_takes_the_newest_running_one(s, run):
    s.route("GET", "jobs", s.json(200, {"jobs": [s.job("new"), s.job("old")]}))
    s.route("GET", "jobs/new/events", s.stream(s.event("job", s.job("new", "succeeded"), id="1")))
    code, _, err = run("follow", "--json")
    assert code == 0
    assert "following job new (job new)" in err
    assert s.requests[0].query == {"state": ["running"], "limit": ["1"]}
    assert [r.path for r in s.requests] == ["jobs", "jobs/new/events"]


def test_follow_without_a_job_waits_for_the_next_one(s, run):
    s.route("GET", "jobs", s.json(200, {"jobs": []}))
    s.route(
        "GET",
        "events",
        s.stream(
            s.event("job", s.job("done", "succeeded"), id="1"),  # history, not what we wait for
            0.1,
            s.event("job", s.job("next", "pending"), id="2"),
            5.0,
        ),
    )
    s.route("GET", "jobs/next/events", s.stream(s.event("job", s.job("next", "cancelled"), id="3")))
    code, _, err = run("follow", "--json")
    assert code == 130
    assert "waiting for the next one" in err
    assert "following job next" in err
    assert [r.path for r in s.requests] == ["jobs", "events", "jobs/next/events"]


def test_cancel(s, run):
    s.route("POST", "jobs/a/cancel", s.json(202, s.job("a", cancel_requested=True)))
    assert run("cancel", "a") == (0, "job a (job a) running (cancel requested)\n", "")


def test_http_errors_are_one_line_and_exit_2(s, run):
    s.route("GET", "jobs/x/events", s.json(404, {"error": "not_found", "detail": "no job x"}))
    code, out, err = run("follow", "x")
    assert (code, out) == (2, "")
    assert err == "jupyter-sse: error: 404 not_found: no job x\n"


def test_wrong_token(s, capsys):
    assert main(["--url", s.url, "--token", "wrong", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jupyter-sse: error: 403 forbidden")
    assert "--token" in err
    assert len(err.splitlines()) == 1


def test_unreachable_and_no_server(tmp_path, monkeypatch, capsys):
    assert main(["--url", "http://127.0.0.1:9/", "--token", "t", "list"]) == 2
    assert "cannot reach http://127.0.0.1:9/" in capsys.readouterr().err
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("JUPYTER_SSE_URL", raising=False)
    assert main(["list"]) == 2
    assert "no running Jupyter server" in capsys.readouterr().err


def test_ctrl_c_exits_130_quietly(s, run, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.Client, "list", interrupted)
    assert run("follow") == (130, "", "")


def test_control_characters_are_escaped_in_the_table_and_the_summary(s, run):
    name = "evil\nname\twith\x1b[31mred\x07"
    jobs = [s.job("a", "succeeded", name=name, unit="B\r"), s.job("b", "failed", name="plain")]
    s.route("GET", "jobs", s.json(200, {"jobs": jobs}))
    code, out, err = run("list")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3, lines  # a header and one line per job: the newline did not split a row
    assert "\x1b" not in out and "\t" not in out and "\x07" not in out and "\r" not in out
    assert lines[1].split()[:3] == ["a", r"evil\nname\twith\x1b[31mred\x07", "succeeded"]
    assert lines[2].split()[:3] == ["b", "plain", "failed"]
    s.route("GET", "jobs/a/events", s.stream(s.event("job", jobs[0], id="1")))
    code, out, err = run("follow", "a")
    assert code == 0, err
    assert out == "job a (evil\\nname\\twith\\x1b[31mred\\x07) succeeded: 0/10 B\\r in 00:01\n"
    assert "\x1b[31m" not in err and "\x07" not in err


def test_a_running_job_that_stopped_reporting_shows_its_rate_decaying_then_stalled(s, run):
    now = time.time()
    jobs = [
        s.job("fresh", name="fresh", rate=50.0, updated=now),
        s.job("quiet", name="quiet", rate=50.0, updated=now - 3),
        s.job("stalled", name="stalled", rate=50.0, updated=now - 125),
        s.job("done", "succeeded", name="done", rate=50.0, updated=now - 3600),
    ]
    s.route("GET", "jobs", s.json(200, {"jobs": jobs}))
    code, out, err = run("list")
    assert code == 0, err
    rates = {line.split()[0]: " ".join(line.split()[5:]) for line in out.splitlines()[1:]}
    assert rates["fresh"] == "50 it/s"
    assert rates["quiet"].endswith(" it/s") and float(rates["quiet"].split()[0]) < 0.6  # 1 / (1/50 + 2 s)
    assert rates["stalled"] == "stalled 02:05"
    assert rates["done"] == "50 it/s"  # the average of a finished job does not decay


def test_follow_gives_up_on_a_server_that_never_answers(capsys):
    from tests._servers import free_port

    url = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    start = time.monotonic()
    code = main(["--url", url, "--token", "t", "follow", "some-job", "--give-up-after", "1.5"])
    took = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"cannot reach {url}" in err, err
    assert 1.0 <= took <= 6.0, took  # it retried for about the bound (the last delay can end it early), no more


def test_follow_gives_up_on_a_proxy_that_only_answers_503(s, run):
    s.route("GET", "jobs/a/events", s.json(503, {"error": "unavailable", "detail": "no upstream"}))
    start = time.monotonic()
    code, _, err = run("follow", "a", "--give-up-after", "1")
    assert code == 2, err
    assert time.monotonic() - start <= 5.0
    assert err.splitlines()[-1] == "jupyter-sse: error: 503 unavailable: no upstream"
    assert len(s.requests_to("jobs/a/events")) >= 2  # it did retry before giving up


def test_follow_reconnects_past_the_bound_once_the_server_was_reached(s, run):
    # The first connection is cut, then the server answers 503 for longer than the bound: a server that answered
    # once is waited for.
    s.route(
        "GET",
        "jobs/a/events",
        s.stream(s.retry(20), s.event("job", s.job("a", n=1), id="1"), s.DROP),
        *[s.json(503, {"error": "unavailable"})] * 6,
        s.stream(s.event("job", s.job("a", "succeeded", n=2), id="2")),
    )
    code, _, err = run("follow", "a", "--json", "--give-up-after", "0.2")
    assert code == 0, err
    assert len(s.requests_to("jobs/a/events")) == 8


def test_help_says_when_follow_gives_up(capsys):
    assert main(["follow", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--give-up-after SECONDS" in text
    assert "never answers is given up on after --give-up-after seconds (exit 2)" in text
    assert main(["follow", "a", "--give-up-after", "nan"]) == 2
    assert "not a number of seconds" in capsys.readouterr().err
