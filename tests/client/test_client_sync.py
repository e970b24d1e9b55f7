"""The blocking client against a scripted SSE server: requests, errors, and follow's reconnect logic."""

from __future__ import annotations

import itertools
import time

import httpx
import pytest

from jupyter_sse.client import Client, ClientError, Event


@pytest.fixture
def client(scripted_server):
    with Client(scripted_server.url, scripted_server.token, timeout=5.0, read_timeout=2.0) as c:
        yield c


def test_requests_paths_auth_and_bodies(scripted_server, client):
    s = scripted_server
    a, b = s.job("a"), s.job("b", "succeeded")
    s.route("GET", "jobs", s.json(200, {"jobs": [b, a]}))
    s.route("GET", "jobs/a", s.json(200, a))
    s.route("POST", "jobs/a/cancel", s.json(202, {**a, "cancel_requested": True}))
    s.route("DELETE", "jobs/b", s.json(204))

    assert client.list() == [b, a]
    assert client.list(state="running") == [b, a]
    assert client.get("a") == a
    assert client.cancel("a")["cancel_requested"] is True
    assert client.delete("b") is None

    assert [(r.method, r.path) for r in s.requests] == [
        ("GET", "jobs"),
        ("GET", "jobs"),
        ("GET", "jobs/a"),
        ("POST", "jobs/a/cancel"),
        ("DELETE", "jobs/b"),
    ]
    assert s.requests[0].query == {"limit": ["1000"]}
    assert s.requests[1].query == {"state": ["running"], "limit": ["1000"]}
    assert {r.headers["authorization"] for r in s.requests} == {f"token {s.token}"}


def test_base_url_with_a_prefix_and_no_trailing_slash(scripted_server):
    s = scripted_server
    with Client(s.url + "user/alice", s.token) as c, pytest.raises(ClientError):
        c.list()
    # The API lives under the base URL, whatever its path.
    assert s.requests[0].path == "/user/alice/jupyter-sse/api/jobs"


def test_job_ids_are_quoted_into_one_path_segment(scripted_server, client):
    with pytest.raises(ClientError):
        client.get("../events")
    assert scripted_server.requests[0].path == "jobs/..%2Fevents"


def test_error_body_becomes_client_error(scripted_server, client):
    s = scripted_server
    s.route("DELETE", "jobs/a", s.json(409, {"error": "job_running", "detail": "job a is running"}))
    with pytest.raises(ClientError) as info:
        client.delete("a")
    assert (info.value.status, info.value.error, info.value.detail) == (409, "job_running", "job a is running")
    assert str(info.value) == "409 job_running: job a is running"


def test_error_that_is_not_json(scripted_server, client):
    s = scripted_server
    s.route("GET", "jobs", s.json(502, b"<html>bad gateway</html>", content_type="text/html"))
    with pytest.raises(ClientError) as info:
        client.list()
    assert info.value.status == 502
    assert info.value.error == "Bad Gateway"
    assert "bad gateway" in info.value.detail


def test_wrong_token_is_403(scripted_server):
    with Client(scripted_server.url, "wrong") as c, pytest.raises(ClientError) as info:
        c.list()
    assert (info.value.status, info.value.error) == (403, "forbidden")


def test_unreachable_server_raises_httpx_error():
    with Client("http://127.0.0.1:9/", "t", timeout=1.0) as c, pytest.raises(httpx.TransportError):
        c.list()


def test_follow_job_ends_after_terminal_state_and_skips_comments(scripted_server, client):
    s = scripted_server
    s.route(
        "GET",
        "jobs/a/events",
        s.stream(
            s.retry(2000),
            s.event("job", s.job("a", n=1), id="1"),
            s.comment(),
            s.event("log", {"job": "a", "lines": ["hello"]}, id="2"),
            s.event("job", s.job("a", "succeeded", n=10), id="3"),
        ),
    )
    events = list(client.follow("a"))
    assert [(e.event, e.id) for e in events] == [("job", "1"), ("log", "2"), ("job", "3")]
    assert events[1] == Event("log", {"job": "a", "lines": ["hello"]}, "2")
    assert events[2].data["state"] == "succeeded"
    assert len(s.requests) == 1
    assert "last-event-id" not in s.requests[0].headers
    assert s.requests[0].headers["accept"] == "text/event-stream"


def test_follow_job_keeps_what_the_stream_sends_after_the_end_but_never_reconnects(scripted_server, client):
    s = scripted_server
    s.route(
        "GET",
        "jobs/a/events",
        s.stream(
            s.event("job", s.job("a", "failed"), id="1"),
            s.event("log", {"job": "a", "lines": ["Traceback"]}, id="2"),
            s.DROP,
        ),
    )
    assert [e.id for e in client.follow("a")] == ["1", "2"]
    assert len(s.requests) == 1


@pytest.mark.parametrize("state", ["succeeded", "failed", "cancelled", "lost"])
def test_every_terminal_state_ends_a_job_stream(scripted_server, client, state):
    s = scripted_server
    s.route("GET", "jobs/a/events", s.stream(s.event("job", s.job("a", state), id="1"), 5.0))
    start = time.monotonic()
    events = []
    for e in client.follow("a"):
        events.append(e)
        if len(events) == 1:
            # The stream is still open: the iterator ends on the state, not on the connection.
            break
    assert events[0].data["state"] == state
    assert time.monotonic() - start < 2


def test_reconnects_after_a_cut_with_last_event_id(scripted_server, client):
    s = scripted_server
    s.route(
        "GET",
        "jobs/a/events",
        s.stream(s.retry(20), s.event("job", s.job("a", n=1), id="1"), s.event("job", s.job("a", n=2), id="2"), s.DROP),
        s.stream(s.retry(20), s.event("job", s.job("a", "succeeded", n=3), id="3")),
    )
    events = list(client.follow("a"))
    assert [e.data["n"] for e in events] == [1, 2, 3]
    assert len(s.requests) == 2
    assert s.requests[1].headers["last-event-id"] == "2"


def test_reconnects_when_a_job_stream_ends_before_the_job(scripted_server, client):
    s = scripted_server
    s.route(
        "GET",
        "jobs/a/events",
        s.stream(s.retry(20), s.event("job", s.job("a"), id="7")),  # a clean end, but the job runs on
        s.stream(s.event("job", s.job("a", "cancelled"), id="8")),
    )
    assert [e.id for e in client.follow("a")] == ["7", "8"]
    assert s.requests[1].headers["last-event-id"] == "7"


def test_a_silent_connection_is_dropped_after_the_read_timeout(scripted_server):
    s = scripted_server
    s.route(
        "GET",
        "jobs/a/events",
        s.stream(s.retry(20), s.event("job", s.job("a"), id="1"), 10.0),  # then silence
        s.stream(s.event("job", s.job("a", "succeeded"), id="2")),
    )
    start = time.monotonic()
    with Client(s.url, s.token, read_timeout=0.3) as c:
        assert [e.id for e in c.follow("a")] == ["1", "2"]
    assert time.monotonic() - start < 2
    assert s.requests[1].headers["last-event-id"] == "1"


def test_heartbeat_comments_keep_a_connection_alive(scripted_server):
    s = scripted_server
    pings = [step for _ in range(6) for step in (0.1, s.comment())]
    s.route(
        "GET",
        "jobs/a/events",
        s.stream(s.event("job", s.job("a"), id="1"), *pings, s.event("job", s.job("a", "succeeded"), id="2")),
    )
    with Client(s.url, s.token, read_timeout=0.3) as c:
        assert [e.id for e in c.follow("a")] == ["1", "2"]
    assert len(s.requests) == 1


def test_heartbeat_sets_the_default_read_timeout(scripted_server):
    s = scripted_server
    s.route(
        "GET",
        "jobs/a/events",
        s.stream(s.retry(20), s.event("job", s.job("a"), id="1"), 10.0),
        s.stream(s.event("job", s.job("a", "succeeded"), id="2")),
    )
    start = time.monotonic()
    with Client(s.url, s.token, heartbeat=0.1) as c:
        assert [e.id for e in c.follow("a")] == ["1", "2"]
    assert 0.3 <= time.monotonic() - start < 2


def test_backoff_doubles_from_the_servers_retry(scripted_server, client):
    s = scripted_server
    unavailable = s.json(503, {"error": "unavailable"})
    s.route(
        "GET",
        "jobs/a/events",
        s.stream(s.retry(50), s.DROP),  # sets the initial delay, delivers nothing
        unavailable,
        unavailable,
        unavailable,
        s.stream(s.event("job", s.job("a", "succeeded"), id="1")),
    )
    assert [e.id for e in client.follow("a")] == ["1"]
    times = [r.time for r in s.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 4
    for i, gap in enumerate(gaps):
        nominal = 0.05 * 2**i
        assert nominal * 0.75 <= gap <= nominal * 1.2 + 0.15, (i, gaps)


def test_events_reset_the_backoff(scripted_server, client):
    s = scripted_server
    cut = s.stream(s.retry(50), s.event("job", s.job("a"), id="1"), s.DROP)
    s.route("GET", "jobs/a/events", cut, cut, cut, cut, s.stream(s.event("job", s.job("a", "succeeded"), id="2")))
    assert len(list(client.follow("a"))) == 5
    times = [r.time for r in s.requests]
    # Each cut came after an event, so each wait is the initial one, not 50, 100, 200, 400 ms.
    assert times[-1] - times[0] < 0.5


@pytest.mark.parametrize(("status", "error"), [(403, "forbidden"), (404, "not_found"), (400, "invalid_query")])
def test_a_4xx_on_connect_raises_at_once(scripted_server, client, status, error):
    s = scripted_server
    s.route("GET", "jobs/a/events", s.json(status, {"error": error, "detail": None}))
    with pytest.raises(ClientError) as info:
        list(client.follow("a"))
    assert (info.value.status, info.value.error) == (status, error)
    assert len(s.requests) == 1


def test_a_wrong_token_on_the_stream_raises_at_once(scripted_server):
    s = scripted_server
    with Client(s.url, "wrong") as c, pytest.raises(ClientError) as info:
        next(c.follow())
    assert info.value.status == 403
    assert len(s.requests) == 1


def test_a_200_that_is_not_an_event_stream_raises(scripted_server, client):
    s = scripted_server
    s.route("GET", "events", s.stream(b"<html>login</html>", content_type="text/html"))
    with pytest.raises(ClientError) as info:
        next(client.follow())
    assert info.value.error == "not_event_stream"


def test_follow_all_sends_filters_and_resumes_from_the_given_id(scripted_server, client):
    s = scripted_server
    s.route(
        "GET",
        "events",
        s.stream(
            s.retry(20),
            s.event("job", s.job("a", "succeeded"), id="8"),  # terminal states do not end this stream
            s.event("removed", {"job": "a"}, id="9"),
            s.DROP,
        ),
        s.stream(s.event("job", s.job("b"), id="10"), 5.0),
    )
    stream = client.follow(jobs=["a", "b"], last_event_id="7")
    events = [next(stream) for _ in range(3)]
    stream.close()
    assert [(e.event, e.id) for e in events] == [("job", "8"), ("removed", "9"), ("job", "10")]
    first, second = s.requests
    assert first.query == {"job": ["a", "b"]}
    assert first.headers["last-event-id"] == "7"
    assert second.headers["last-event-id"] == "9"


def test_data_that_is_not_json_is_kept_as_text(scripted_server, client):
    s = scripted_server
    s.route("GET", "events", s.stream(s.event("note", "not json\nsecond line", id="1"), 5.0))
    stream = client.follow()
    assert next(stream) == Event("note", "not json\nsecond line", "1")
    stream.close()
