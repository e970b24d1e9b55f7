"""The publisher against a real local HTTP server: batching, retries, flush, rejected batches, cancel."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_sse.kernel import JobCancelled, job, progress
from jupyter_sse.kernel import publisher as publisher_mod
from jupyter_sse.kernel._state import JobState
from jupyter_sse.kernel.discovery import ServerInfo, discover
from tests.kernel._recorder import Recorder, server

__all__ = ["server"]  # the fixture, re-exported for pytest


@pytest.fixture
def publish(server: tuple[Recorder, str]) -> Iterator[tuple[Recorder, publisher_mod.Publisher]]:
    rec, url = server
    pub = publisher_mod.configure(url, "secret-token", interval=0.02, flush_timeout=2.0)
    yield rec, pub
    pub.close()
    publisher_mod.configure(None)


def wait_for(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def quiet(iterable: Any = None, **kwargs: Any) -> Any:
    return progress(iterable, file=io.StringIO(), **kwargs)


def test_discovery_reads_the_environment() -> None:
    info = discover({"JUPYTER_SSE_URL": "http://h:9/user/a", "JUPYTER_SSE_TOKEN": "s3cr3t"})
    assert info is not None
    assert (info.api_url, info.updates_path, info.port, info.token) == (
        "http://h:9/user/a/jupyter-sse/api/",
        "/user/a/jupyter-sse/api/updates",
        9,
        "s3cr3t",
    )
    assert "s3cr3t" not in repr(info)
    assert discover({}) is None
    assert discover({"JUPYTER_SSE_URL": "http://h/", "JUPYTER_SSE_DISABLE": "1"}) is None
    assert discover({"JUPYTER_SSE_URL": "ftp://h/"}) is None


def test_first_update_has_every_field_then_only_changes(publish: tuple[Recorder, Any]) -> None:
    rec, _ = publish
    with job("load", total=4, unit="file", leave=False) as j:
        j.update()
        wait_for(lambda: rec.updates(j.id))
        j.message("half")
        j.update()
        wait_for(lambda: any(u.get("message") == "half" for u in rec.updates(j.id)))
    updates = rec.updates(j.id)
    first = updates[0]
    assert set(first) >= {
        "id",
        "name",
        "state",
        "n",
        "total",
        "unit",
        "kernel_id",
        "cell_id",
        "path",
        "parent",
        "elapsed",
        "rate",
        "message",
    }
    assert (first["name"], first["state"], first["total"], first["unit"]) == ("load", "running", 4, "file")
    for later in updates[1:]:
        assert "unit" not in later and "name" not in later  # unchanged fields are not re-sent
        assert set(later) >= {"id", "elapsed", "rate"}
    assert updates[-1]["state"] == "succeeded"
    assert rec.merged(j.id)["n"] == 2
    assert rec.merged(j.id)["message"] == "half"
    assert rec.paths[0] == "/base/jupyter-sse/api/updates"
    assert rec.headers[0]["Authorization"] == "Bearer secret-token"


def test_updates_are_coalesced_into_few_requests(publish: tuple[Recorder, Any]) -> None:
    rec, pub = publish
    p = quiet(total=2000, desc="many")
    for _ in range(2000):
        p.update()
        time.sleep(0.0001)
    p.close()
    assert rec.last_state(p.job_id) == "succeeded"
    assert pub.stats.requests < 200  # 2,000 updates, at most one POST per tick
    assert rec.merged(p.job_id)["n"] == 2000


def test_build_takes_the_latest_state_not_a_queue(publish: tuple[Recorder, Any]) -> None:
    _, pub = publish
    state = JobState("x", 10)
    state.state = "running"
    for _ in range(5):
        state.count += 1
    body, included, _ = pub.build([state], time.monotonic())
    assert len(body["jobs"]) == 1 and body["jobs"][0]["n"] == 5
    pub._acknowledged(included, time.monotonic())
    assert pub.build([state], time.monotonic())[0]["jobs"] == []  # nothing changed: nothing to send
    state.count = 7
    assert pub.build([state], time.monotonic())[0]["jobs"][0]["n"] == 7


def test_numbers_are_always_finite(publish: tuple[Recorder, Any]) -> None:
    _, pub = publish
    state = JobState("x", float("nan"))
    state.state = "running"
    state.count = float("inf")
    state.rate = float("nan")
    update = pub.build([state], time.monotonic())[0]["jobs"][0]
    assert update["total"] is None and update["rate"] is None and update["n"] == 0
    json.dumps(update, allow_nan=False)


def test_final_state_is_flushed_within_the_bound(publish: tuple[Recorder, Any]) -> None:
    rec, _ = publish
    p = quiet(range(50), desc="quick")
    start = time.monotonic()
    for _ in p:
        pass
    took = time.monotonic() - start
    # the loop's end waited for the send: the server has the final state already
    assert rec.last_state(p.job_id) == "succeeded"
    assert rec.merged(p.job_id)["n"] == 50
    assert took < 2.0


def test_server_errors_are_retried_with_backoff(publish: tuple[Recorder, Any]) -> None:
    rec, pub = publish
    rec.fail_next = 3
    with job("retry", leave=False) as j:
        j.update(5)
    wait_for(lambda: rec.last_state(j.id) == "succeeded")
    assert pub.stats.failed >= 3
    assert rec.merged(j.id)["n"] == 5


def test_backoff_grows_and_is_capped() -> None:
    pub = publisher_mod.Publisher(ServerInfo.from_url("http://127.0.0.1:9/"), max_backoff=5.0)
    delays = []
    for _ in range(12):
        before = time.monotonic()
        pub._failed([], "x", 500)
        delays.append(pub._next_send - before)
    assert 0.05 < delays[0] < 0.2
    assert delays[3] > delays[0]
    assert max(delays) <= 5.01


def test_a_rejected_batch_is_dropped_not_retried(publish: tuple[Recorder, Any], caplog: Any) -> None:
    rec, pub = publish
    rec.status = 400
    with job("bad", leave=False) as j:
        j.update()
    wait_for(lambda: pub.stats.rejected >= 1)
    time.sleep(0.2)
    requests = pub.stats.requests
    time.sleep(0.3)
    assert pub.stats.requests == requests  # nothing left pending: no retries of the bad batch
    assert pub.get(j.id) is None
    assert sum("rejected" in r.getMessage() for r in caplog.records) == 1


def test_server_down_never_raises_or_slows_the_loop() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: connection refused
    pub = publisher_mod.configure(f"http://127.0.0.1:{port}/", None, interval=0.02)
    try:
        start = time.monotonic()
        for _ in range(3):
            p = quiet(range(100_000))
            for _ in p:
                pass
            with job("down", leave=False) as j:
                j.update()
                j.log("kept while down")
        assert time.monotonic() - start < 3.0
        assert p._job.state == "succeeded"
        wait_for(lambda: pub.stats.failed >= 2)
        assert pub.stats.succeeded == 0
        assert pub.get(j.id) is not None  # the final state is kept, waiting for the server
    finally:
        pub.close(timeout=0.2)
        publisher_mod.configure(None)


def test_pending_logs_are_bounded_and_count_the_dropped() -> None:
    state = JobState("x")
    for i in range(1500):
        state.add_log(f"line {i}")
    lines = state.take_logs(10_000)
    assert lines[0].startswith("[jupyter-sse: 500 log lines dropped")
    assert lines[1] == "line 500" and lines[-1] == "line 1499"


def test_log_lines_are_sent(publish: tuple[Recorder, Any]) -> None:
    rec, _ = publish
    with job("logs", leave=False) as j:
        j.log("epoch 1\nepoch 2")
        j.log("epoch 3")
    assert rec.lines(j.id) == ["epoch 1", "epoch 2", "epoch 3"]


def test_cancel_in_the_reply_stops_the_loop(publish: tuple[Recorder, Any]) -> None:
    rec, _ = publish
    rec.cancel_all = True
    p = quiet(range(10**9), desc="long")
    start = time.monotonic()
    with pytest.raises(JobCancelled):
        for _ in p:
            pass
    assert time.monotonic() - start < 3.0
    assert rec.last_state(p.job_id) == "cancelled"


def test_cancel_in_the_reply_stops_a_generator_loop(publish: tuple[Recorder, Any]) -> None:
    rec, _ = publish
    rec.cancel_all = True

    def forever() -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1

    p = quiet(forever())
    with pytest.raises(JobCancelled):
        for _ in p:
            pass
    assert rec.last_state(p.job_id) == "cancelled"


def test_an_unchanged_running_job_is_resent_as_a_lease(server: tuple[Recorder, str]) -> None:
    rec, url = server
    pub = publisher_mod.configure(url, None, interval=0.02, lease=0.1)
    try:
        with job("idle", leave=False) as j:
            # unchanged, yet sent again every lease (0.1 s)
            wait_for(lambda: len(rec.updates(j.id)) >= 3)
    finally:
        pub.close()
        publisher_mod.configure(None)


# -- the publisher's decisions, through an injected transport: no sockets, no sleeps ----------------------------


class ScriptedTransport:
    """Records each request; answers from ``replies`` in order (the last one repeats); an exception raises."""

    def __init__(self, *replies: tuple[int, bytes] | Exception) -> None:
        self.replies: list[tuple[int, bytes] | Exception] = list(replies) or [(200, b'{"cancel": []}')]
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.closed = 0

    def post(self, path: str, body: bytes, headers: Any) -> tuple[int, bytes]:
        self.requests.append((path, json.loads(body), dict(headers)))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def close(self) -> None:
        self.closed += 1

    def jobs(self, i: int = -1) -> list[dict[str, Any]]:
        return list(self.requests[i][1]["jobs"])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stepped(transport: ScriptedTransport, **options: Any) -> tuple[publisher_mod.Publisher, Clock]:
    clock = Clock()
    server = ServerInfo.from_url("http://127.0.0.1:9/base/", "tok")
    pub = publisher_mod.Publisher(server, transport=transport, clock=clock, threaded=False, **options)
    return pub, clock


def running(pub: publisher_mod.Publisher, name: str = "j", total: float | None = 10) -> JobState:
    state = JobState(name, total)
    state.state = "running"
    pub.add(state)
    return state


def test_one_request_carries_every_changed_job_then_only_what_changed() -> None:
    transport = ScriptedTransport()
    pub, clock = stepped(transport)
    a, b, c = (running(pub, name) for name in "abc")
    pub.tick()
    assert len(transport.requests) == 1
    path, body, headers = transport.requests[0]
    assert path == "/base/jupyter-sse/api/updates"
    assert headers["Authorization"] == "Bearer tok"
    assert [u["id"] for u in body["jobs"]] == [a.id, b.id, c.id]
    assert body["jobs"][0]["name"] == "a" and body["jobs"][0]["total"] == 10
    pub.tick()
    assert len(transport.requests) == 1  # nothing changed: nothing sent
    b.count = 4
    clock.now += 0.1
    pub.tick()
    (update,) = transport.jobs()
    assert update["id"] == b.id and update["n"] == 4
    assert set(update) == {"id", "n", "elapsed", "rate"}


def test_more_jobs_than_one_request_may_carry_go_in_several() -> None:
    transport = ScriptedTransport()
    pub, _ = stepped(transport)
    for i in range(publisher_mod.MAX_JOBS_PER_REQUEST + 5):
        running(pub, f"j{i}")
    pub.tick()
    assert len(transport.jobs()) == publisher_mod.MAX_JOBS_PER_REQUEST
    assert pub._wake  # asked to go again at once
    pub.tick()
    assert len(transport.jobs()) == 5


def test_failures_back_off_exponentially_then_resend_the_latest_state() -> None:
    transport = ScriptedTransport((500, b""), (503, b""), ConnectionRefusedError("refused"), (200, b"{}"))
    pub, clock = stepped(transport)
    j = running(pub)
    delays = []
    for _ in range(3):
        pub.tick()
        sent = len(transport.requests)
        delay = pub._next_send - clock.now
        delays.append(delay)
        pub.tick()  # before the backoff delay: no request
        assert len(transport.requests) == sent
        clock.now += delay + 0.001
    assert delays[0] < delays[1] < delays[2] <= pub.max_backoff
    assert pub.stats.failed == 3 and pub.stats.last_error == "ConnectionRefusedError: refused"
    j.count = 7
    pub.tick()
    assert pub.stats.succeeded == 1
    assert transport.jobs()[0]["n"] == 7  # the latest state, not a queue of the failed ones
    assert pub._next_send == 0.0


def test_a_rejected_batch_is_dropped_and_a_retryable_status_is_not() -> None:
    transport = ScriptedTransport((429, b""), (400, b'{"error": "invalid_update"}'), (200, b"{}"))
    pub, clock = stepped(transport)
    j = running(pub)
    pub.tick()
    assert pub.stats.failed == 1  # 429: retried
    clock.now = pub._next_send
    pub.tick()
    assert pub.stats.rejected == 1  # 400: dropped, never retried
    clock.now += 1
    pub.tick()
    assert len(transport.requests) == 2
    j.count = 1
    pub.tick()  # a later change is sent as usual
    assert len(transport.requests) == 3


def test_a_running_job_that_does_not_change_is_resent_each_lease() -> None:
    transport = ScriptedTransport()
    pub, clock = stepped(transport, lease=10.0)
    j = running(pub)
    pub.tick()
    clock.now += 9.9
    pub.tick()
    assert len(transport.requests) == 1
    clock.now += 0.2
    pub.tick()
    (lease,) = transport.jobs()
    assert lease["id"] == j.id and set(lease) == {"id", "elapsed", "rate"}


def test_the_final_state_is_sent_then_the_job_is_forgotten() -> None:
    transport = ScriptedTransport((500, b""), (200, b"{}"))
    pub, clock = stepped(transport)
    j = running(pub)
    j.count = 10
    j.state = "succeeded"
    pub.tick()
    assert pub.get(j.id) is j  # not acknowledged: kept, to retry
    clock.now = pub._next_send
    pub.tick()
    assert transport.jobs()[0]["state"] == "succeeded"
    assert pub.get(j.id) is None


def test_the_reply_asks_for_cancellation() -> None:
    pub, _ = stepped(ScriptedTransport((200, b"")))
    j = running(pub)
    pub.transport = ScriptedTransport((200, json.dumps({"cancel": [j.id, "unknown"]}).encode()))
    pub.tick()
    assert j.cancel_requested


def test_an_ending_loop_waits_for_its_final_state_through_the_transport() -> None:
    transport = ScriptedTransport()
    pub = publisher_mod.configure("http://127.0.0.1:9/", None, transport=transport, interval=0.02)
    try:
        p = quiet(range(20), desc="flushed")
        for _ in p:
            pass
        # the loop's end waited: the final state went out before the loop returned
        final = [u for _, body, _ in transport.requests for u in body["jobs"] if u["id"] == p.job_id]
        assert final[-1]["state"] == "succeeded" and final[-1]["n"] == 20
    finally:
        pub.close()
        publisher_mod.configure(None)
    assert transport.closed >= 1


# -- the default transport, over real sockets ---------------------------------------------------------------------


class _OneShotServer:
    """A raw HTTP/1.1 server: each connection answers ``per_connection`` requests, then is closed by the server
    without saying so (as a server closes an idle keep-alive connection)."""

    def __init__(self, per_connection: int) -> None:
        self.per_connection = per_connection
        self.connections = 0
        self.requests = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            # the file made from the socket keeps it open: close both to really close the connection
            with conn, conn.makefile("rb") as reader:
                for _ in range(self.per_connection):
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = reader.readline()
                        if not line:
                            break
                        head += line
                    if not head:
                        break
                    length = next(
                        int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
                    )
                    reader.read(length)
                    self.requests += 1
                    body = b'{"cancel": []}'
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )

    def close(self) -> None:
        # shutdown wakes the accept() blocked in the thread; close alone would leave the port listening
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


def test_http_transport_reuses_its_connection() -> None:
    from jupyter_sse.kernel._transport import HTTPTransport

    srv = _OneShotServer(per_connection=100)
    transport = HTTPTransport("http", "127.0.0.1", srv.port, timeout=5)
    try:
        for _ in range(3):
            assert transport.post("/x", b"{}", {"Content-Type": "application/json"}) == (200, b'{"cancel": []}')
        assert (srv.connections, srv.requests) == (1, 3)
    finally:
        transport.close()
        srv.close()


def test_http_transport_retries_once_on_a_connection_the_server_closed() -> None:
    from jupyter_sse.kernel._transport import HTTPTransport

    srv = _OneShotServer(per_connection=1)
    transport = HTTPTransport("http", "127.0.0.1", srv.port, timeout=5)
    try:
        for _ in range(3):
            assert transport.post("/x", b"{}", {})[0] == 200
        assert (srv.connections, srv.requests) == (3, 3)  # each reused one was found closed: a fresh one
    finally:
        transport.close()
        srv.close()
    with pytest.raises(OSError):
        transport.post("/x", b"{}", {})  # nothing listens any more: the error reaches the publisher


def test_a_stuck_loop_reports_a_falling_rate_not_its_old_speed() -> None:
    job = JobState("stuck", 100)
    job.state = "running"
    t0 = job.start
    for i in range(1, 11):  # 10 steps a second
        job.count = i
        job.sample(t0 + i * 0.1)
    steady = job.wire_fields(t0 + 1.0)["rate"]
    assert steady == pytest.approx(10, rel=0.01)
    assert job.wire_fields(t0 + 1.15)["rate"] == steady  # one late step is not a stall
    assert job.wire_fields(t0 + 6.0)["rate"] == pytest.approx(1 / 5.0)  # quiet 5 s: at most a step per 5 s
    assert job.wire_fields(t0 + 61.0)["rate"] == pytest.approx(1 / 60.0)
    job.count = 11  # the loop moves again: the rate is its moving average again (the long step included)
    moved = job.wire_fields(t0 + 61.1)["rate"]
    assert moved == job.rate
    assert moved > 1 / 60.0
