"""What both servers do around the broker, written once in the core (``core.adapter``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from jupyter_sse.core import Broker, ProtocolError
from jupyter_sse.core.adapter import (
    PING,
    StreamLimits,
    StreamSettings,
    default_owner,
    default_stream_limit,
    job_filter,
    last_event_id,
    lease_check_period,
    open_subscription,
    token_from_authorization,
)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("token abc", "abc"),
        ("Token abc", "abc"),
        ("Basic abc", None),
        ("Bearer ", None),
        ("abc", None),
        ("", None),
        (None, None),
    ],
)
def test_token_from_authorization(header: str | None, token: str | None) -> None:
    assert token_from_authorization(header) == token


def test_job_filter() -> None:
    assert job_filter([]) is None
    assert job_filter(["a", "b-1_c"]) == ["a", "b-1_c"]
    with pytest.raises(ProtocolError) as refused:
        job_filter(["ok", "no/slash"])
    assert refused.value.status == 400
    assert refused.value.error == "invalid_query"
    assert "no/slash" in str(refused.value.detail)
    with pytest.raises(ProtocolError):
        job_filter(["x" * 65])


def test_last_event_id_prefers_the_header() -> None:
    assert last_event_id("e.5", "e.3") == "e.5"
    assert last_event_id(None, "e.3") == "e.3"
    assert last_event_id("", "") is None
    assert last_event_id(None, None) is None


def test_stream_settings() -> None:
    settings = StreamSettings()
    assert settings.preamble == b"retry: 2000\n\n: jupyter-sse v1\n\n"
    assert settings.retry_after == 2
    assert StreamSettings(retry_ms=2001).retry_after == 3
    assert StreamSettings(retry_ms=0).retry_after == 1
    assert settings.lease_period == 5.0
    assert settings.broker_options() == {"wake_delay": 0.02}
    assert PING == b": ping\n\n"
    for bad in ({"heartbeat": 0}, {"send_timeout": -1}, {"publisher_lease": 0}, {"retry_ms": -1}, {"wake_delay": -1}):
        with pytest.raises(ValueError):
            StreamSettings(**bad)  # type: ignore[arg-type]


def test_lease_check_period_is_a_quarter_within_bounds() -> None:
    assert lease_check_period(0.2) == 0.5
    assert lease_check_period(8.0) == 2.0
    assert lease_check_period(3600.0) == 5.0


def test_open_subscription() -> None:
    broker = Broker()
    with pytest.raises(ProtocolError) as missing:
        open_subscription(broker, "nope", (), None)
    assert missing.value.status == 404
    assert broker.subscriber_count == 0  # refused before anything was subscribed
    with pytest.raises(ProtocolError) as bad:
        open_subscription(broker, None, ["a", "b c"], None)
    assert bad.value.status == 400
    assert broker.subscriber_count == 0
    every = open_subscription(broker, None, (), None)
    some = open_subscription(broker, None, ["a"], None)
    assert every.jobs is None and some.jobs == frozenset({"a"})
    with pytest.raises(ProtocolError):
        open_subscription(broker, None, (), "not-an-id")
    assert broker.subscriber_count == 2


def test_stream_limits_per_user_and_in_all() -> None:
    reports: list[str] = []
    limits = StreamLimits(3, 2, report=reports.append, log_every=3600)
    assert limits.refuse("alice") is None
    assert limits.refuse("alice") is None
    refused = limits.refuse("alice")
    assert refused is not None and refused.status == 503 and refused.error == "too_many_streams"
    assert "alice" in str(refused.detail)
    assert limits.refuse("bob") is None
    refused = limits.refuse("carol")
    assert refused is not None and "most event streams (3)" in str(refused.detail)
    assert limits.open == 3  # refusals counted nothing
    # Reported once per period, with a count, however often clients come back.
    assert len(reports) == 1 and "1 since the last report" in reports[0]
    limits.closed("alice")
    assert limits.refuse("carol") is None
    limits.closed("carol")
    limits.closed("alice")
    limits.closed("bob")
    assert limits.open == 0
    assert limits.refuse("alice") is None


def test_configured_limits_read_zero_as_the_default() -> None:
    limits = StreamLimits.configured(0, 0)
    assert limits.total == default_stream_limit() and limits.per_user == limits.total
    limits = StreamLimits.configured(10, 50)
    assert (limits.total, limits.per_user) == (10, 10)
    with pytest.raises(ValueError):
        StreamLimits(0, 1)


def test_default_owner_prefers_jupyterhub_user() -> None:
    assert default_owner({"JUPYTERHUB_USER": "alice"}) == "alice"
    assert default_owner({}) != ""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux's unshare for a user namespace")
def test_default_owner_without_a_passwd_entry() -> None:
    """In a container whose user has no passwd entry and no $USER, getpass.getuser() raises; both servers' default
    owner (this function) still names the user, by uid. A real process in a user namespace as uid 54321."""
    env = {k: v for k, v in os.environ.items() if k not in ("USER", "LOGNAME", "LNAME", "USERNAME", "JUPYTERHUB_USER")}
    code = (
        "import getpass\n"
        "try:\n    getpass.getuser()\nexcept (KeyError, OSError):\n    print('getuser fails')\n"
        "from jupyter_sse.core.adapter import default_owner\nprint(default_owner())\n"
    )
    cmd = ["unshare", "--user", "--map-user=54321", "--map-group=54321", sys.executable, "-c", code]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["getuser", "fails", "uid-54321"]
