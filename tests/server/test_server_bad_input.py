"""Bad input through both real servers (the extension and the hub): a clear 4xx JSON error, nothing stored
changes, and the server keeps serving."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import SSEServer

pytestmark = pytest.mark.timeout(60)

MIB = 1024 * 1024


def _j(value: Any) -> bytes:
    return json.dumps(value).encode()


# A valid update to a job that exists rides along in most bad bodies: it must not be applied either.
GOOD_PART = {"id": "run", "n": 99, "message": "should not be stored"}


def _with(*jobs: dict[str, Any], logs: list[dict[str, Any]] | None = None) -> bytes:
    body: dict[str, Any] = {"jobs": [GOOD_PART, *jobs]}
    if logs is not None:
        body["logs"] = logs
    return _j(body)


def _padded(size: int) -> bytes:
    body = _j({"jobs": [GOOD_PART]})
    return body + b" " * (size - len(body))


# name: (body, status, error, a word the detail must contain, or None)
BAD_BODIES: dict[str, tuple[bytes, int, str, str | None]] = {
    "malformed json": (b'{"jobs": [{"id": "run", "n": 99}', 400, "invalid_json", None),
    "not json": (b"n=99", 400, "invalid_json", None),
    "NaN": (b'{"jobs": [{"id": "run", "n": NaN}]}', 400, "invalid_json", None),
    "Infinity": (b'{"jobs": [{"id": "run", "rate": Infinity}]}', 400, "invalid_json", None),
    "1e400": (b'{"jobs": [{"id": "run", "n": 99}, {"id": "x", "total": 1e400}]}', 400, "invalid_update", "total"),
    "negative n": (_with({"id": "x", "n": -1}), 400, "invalid_update", "n"),
    "negative total": (_with({"id": "x", "total": -5}), 400, "invalid_update", "total"),
    "negative rate": (_with({"id": "x", "rate": -0.1}), 400, "invalid_update", "rate"),
    "negative elapsed": (_with({"id": "x", "elapsed": -1}), 400, "invalid_update", "elapsed"),
    "bool n": (_with({"id": "x", "n": True}), 400, "invalid_update", "n"),
    "string total": (_with({"id": "x", "total": "10"}), 400, "invalid_update", "total"),
    "long name": (_with({"id": "x", "name": "x" * 257}), 400, "invalid_update", "name"),
    "long message": (_with({"id": "x", "message": "x" * 4097}), 400, "invalid_update", "message"),
    "long log line": (_with(logs=[{"job": "run", "lines": ["x" * 8193]}]), 400, "invalid_update", "lines"),
    "unknown field": (_with({"id": "x", "progress": 1}), 400, "invalid_update", "progress"),
    "unknown top-level field": (_j({"jobs": [GOOD_PART], "extra": 1}), 400, "invalid_update", "extra"),
    "empty id": (_with({"id": ""}), 400, "invalid_update", "id"),
    "65-char id": (_with({"id": "a" * 65}), 400, "invalid_update", "id"),
    "id with slash": (_with({"id": "a/b"}), 400, "invalid_update", "id"),
    "id with space": (_with({"id": "a b"}), 400, "invalid_update", "id"),
    "non-ascii id": (_with({"id": "caf\u00e9"}), 400, "invalid_update", "id"),
    "bad log job id": (_with(logs=[{"job": "a b", "lines": []}]), 400, "invalid_update", "job"),
    "state lost": (_with({"id": "x", "state": "lost"}), 400, "invalid_update", "state"),
    "metadata over 4 KiB": (_with({"id": "x", "metadata": {"k": "v" * 4100}}), 400, "invalid_update", "metadata"),
    "1001 jobs": (_j({"jobs": [GOOD_PART] + [{"id": f"j{i}"} for i in range(1000)]}), 400, "invalid_update", "jobs"),
    "10001 lines": (
        _with(logs=[{"job": "run", "lines": ["l"] * 5000}, {"job": "run", "lines": ["l"] * 5001}]),
        400,
        "invalid_update",
        "logs",
    ),
    "lone surrogate": (b'{"jobs": [{"id": "run", "n": 99, "name": "\\ud800"}]}', 400, "invalid_json", None),
    "not an object": (b"[]", 400, "invalid_update", None),
    "body over 1 MiB": (_padded(MIB + 1), 413, "body_too_large", None),
    "revives a finished job": (_with({"id": "done", "state": "running"}), 409, "job_finished", "done"),
    "logs for an unknown job": (_with(logs=[{"job": "ghost", "lines": ["boo"]}]), 404, "not_found", "ghost"),
}


async def _setup(server: SSEServer) -> None:
    body = {
        "jobs": [{"id": "run", "n": 1}, {"id": "done", "state": "succeeded"}],
        "logs": [{"job": "run", "lines": ["a"]}],
    }
    async with httpx.AsyncClient(headers=server.publish_auth) as client:
        assert (await client.post(server.api + "updates", json=body)).status_code == 200


async def _jobs(client: httpx.AsyncClient, server: SSEServer) -> Any:
    response = await client.get(server.api + "jobs", headers=server.auth)
    assert response.status_code == 200
    return response.json()


def _check_error(response: httpx.Response, status: int, error: str, word: str | None) -> str | None:
    """None if the response is the expected JSON error, else what is wrong."""
    if response.status_code != status:
        return f"status {response.status_code}, body {response.text[:300]!r}"
    if not response.headers.get("content-type", "").startswith("application/json"):
        return f"content-type {response.headers.get('content-type')}"
    body = response.json()
    if body.get("error") != error or "detail" not in body:
        return f"body {body!r:.300}"
    if word is not None and word not in json.dumps(body["detail"]):
        return f"detail does not name {word!r}: {body['detail']!r:.300}"
    return None


async def test_each_bad_update_is_refused_changes_nothing_and_the_server_keeps_serving(api_server: SSEServer) -> None:
    await _setup(api_server)
    problems: dict[str, str] = {}
    async with httpx.AsyncClient(headers=api_server.publish_auth, timeout=30) as client:
        before = await _jobs(client, api_server)
        seq = api_server.broker.store.current_seq
        for name, (body, status, error, word) in BAD_BODIES.items():
            response = await client.post(
                api_server.api + "updates", content=body, headers={"Content-Type": "application/json"}
            )
            problem = _check_error(response, status, error, word)
            if problem:
                problems[name] = problem
            if await _jobs(client, api_server) != before or api_server.broker.store.current_seq != seq:
                problems[name] = (problems.get(name, "") + " | stored state changed").strip(" |")
        # Still serving, and the good request works.
        good = await client.post(api_server.api + "updates", json={"jobs": [{"id": "run", "n": 2}]})
        after = await _jobs(client, api_server)
    assert not problems, json.dumps(problems, indent=1)
    assert (good.status_code, good.json()) == (200, {"cancel": []})
    assert {job["id"]: job["n"] for job in after["jobs"]} == {"run": 2, "done": 0}


async def test_a_body_of_exactly_one_mebibyte_is_accepted(api_server: SSEServer) -> None:
    await _setup(api_server)
    async with httpx.AsyncClient(headers=api_server.publish_auth, timeout=30) as client:
        response = await client.post(
            api_server.api + "updates", content=_padded(MIB), headers={"Content-Type": "application/json"}
        )
    assert (response.status_code, response.json()) == (200, {"cancel": []})


BAD_IDS = ["a%20b", "a" * 65, "a%2Fb", "caf%C3%A9", "a.b", "%00"]


@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("GET", "jobs/{}"),
        ("DELETE", "jobs/{}"),
        ("POST", "jobs/{}/cancel"),
        ("GET", "jobs/{}/events"),
    ],
)
async def test_bad_job_ids_in_paths_are_400_invalid_job_id(api_server: SSEServer, method: str, template: str) -> None:
    await _setup(api_server)
    async with httpx.AsyncClient(headers=api_server.auth, timeout=10) as client:
        before = await _jobs(client, api_server)
        for job_id in BAD_IDS:
            response = await client.request(method, api_server.api + template.format(job_id))
            assert _check_error(response, 400, "invalid_job_id", None) is None, (job_id, response.text[:200])
        assert await _jobs(client, api_server) == before
        # A well-formed id that is not there is a 404, not a 400.
        response = await client.request(method, api_server.api + template.format("a" * 64))
    assert _check_error(response, 404, "not_found", None) is None


@pytest.mark.parametrize("state", ["bogus", "RUNNING", "", "finished"])
async def test_a_bad_state_filter_is_400_invalid_query(api_server: SSEServer, state: str) -> None:
    async with httpx.AsyncClient(headers=api_server.auth) as client:
        response = await client.get(api_server.api + "jobs", params={"state": state})
    assert _check_error(response, 400, "invalid_query", "state") is None, response.text


@pytest.mark.parametrize("state", ["pending", "running", "succeeded", "failed", "cancelled", "lost"])
async def test_every_state_is_a_good_filter(api_server: SSEServer, state: str) -> None:
    await _setup(api_server)
    async with httpx.AsyncClient(headers=api_server.auth) as client:
        response = await client.get(api_server.api + "jobs", params={"state": state})
    assert response.status_code == 200
    assert all(job["state"] == state for job in response.json()["jobs"])


async def test_a_bad_job_filter_on_the_stream_is_400_invalid_query(api_server: SSEServer) -> None:
    # docs/protocol.md: invalid_query is "a bad query argument (state, job, last_event_id)";
    # invalid_job_id is for "a job id in the path".
    async with httpx.AsyncClient(headers=api_server.auth) as client:
        response = await client.get(api_server.api + "events", params=[("job", "run"), ("job", "a b")])
    assert _check_error(response, 400, "invalid_query", None) is None, response.text


BAD_EVENT_IDS: list[str | bytes] = ["abc", "-1", "1.5.1", ".5", "a-b.1", "a.", "0x1f", "1" * 31, "1 2"]
BAD_EVENT_IDS += [b"\xb2", b"\xd9\xa1"]


@pytest.mark.parametrize("where", ["header", "query", "job-stream-header"])
async def test_a_bad_last_event_id_is_400(api_server: SSEServer, where: str) -> None:
    await _setup(api_server)
    url = api_server.api + ("jobs/run/events" if where == "job-stream-header" else "events")
    async with httpx.AsyncClient(headers=api_server.auth, timeout=10) as client:
        for last_event_id in BAD_EVENT_IDS:
            if where == "query":
                value = last_event_id.decode("latin-1") if isinstance(last_event_id, bytes) else last_event_id
                response = await client.get(url, params={"last_event_id": value})
            else:
                response = await client.get(url, headers={"Last-Event-ID": last_event_id})
            assert _check_error(response, 400, "invalid_query", None) is None, (last_event_id, response.text[:300])
            assert api_server.broker.subscriber_count == 0
        # Still serving streams.
        async with client.stream("GET", url) as stream:
            assert stream.status_code == 200


async def test_a_body_over_one_mebibyte_is_413_even_with_the_server_token(api_server: SSEServer) -> None:
    await _setup(api_server)
    async with httpx.AsyncClient(headers=api_server.auth, timeout=30) as client:
        before = await _jobs(client, api_server)
        response = await client.post(
            api_server.api + "updates", content=b"x" * (2 * MIB), headers={"Content-Type": "application/json"}
        )
        assert _check_error(response, 413, "body_too_large", None) is None
        assert await _jobs(client, api_server) == before


async def test_wrong_methods_are_json_errors(api_server: SSEServer) -> None:
    async with httpx.AsyncClient(headers=api_server.auth) as client:
        put = await client.put(api_server.api + "jobs", json={})
        get_updates = await client.get(api_server.api + "updates")
    for response in (put, get_updates):
        assert response.status_code == 405
        assert response.json()["error"] == "method_not_allowed"
