"""The job model: ``parse_update_batch`` accepts what protocol v1 allows and refuses the rest with the right error."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jupyter_sse.core import (
    MAX_BODY_BYTES,
    STATES,
    TERMINAL_STATES,
    Job,
    ProtocolError,
    UpdateBatch,
    check_job_id,
    is_valid_job_id,
    parse_update_batch,
)

PROTOCOL_JOB_FIELDS = [
    "id",
    "name",
    "state",
    "n",
    "total",
    "unit",
    "message",
    "created",
    "updated",
    "finished",
    "elapsed",
    "rate",
    "eta",
    "error",
    "kernel_id",
    "cell_id",
    "path",
    "parent",
    "owner",
    "metadata",
    "cancel_requested",
]


def _body(value: Any) -> bytes:
    return json.dumps(value).encode()


def _job(**fields: Any) -> bytes:
    return _body({"jobs": [{"id": "a1", **fields}]})


def _refused(body: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_update_batch(body)
    exc = info.value
    # Whatever the reason, the error body is JSON and does not echo a large input back.
    encoded = json.dumps(exc.body(), allow_nan=False)
    assert len(encoded) < 2000, encoded[:200]
    return exc


def _locs(exc: ProtocolError) -> list[list[Any]]:
    assert isinstance(exc.detail, list), exc.detail
    return [err["loc"] for err in exc.detail]


def _assert_invalid_update(body: bytes, *loc: Any) -> ProtocolError:
    """Refused as ``invalid_update`` with a problem whose location starts with ``loc``."""
    exc = _refused(body)
    assert (exc.status, exc.error) == (400, "invalid_update"), exc
    assert any(list(found[: len(loc)]) == list(loc) for found in _locs(exc)), (loc, exc.detail)
    for err in exc.detail:
        assert isinstance(err["msg"], str) and err["msg"]
    return exc


# ---- good bodies -------------------------------------------------------------------------------------------


def test_empty_body_object_is_an_empty_batch() -> None:
    batch = parse_update_batch(b"{}")
    assert batch.jobs == [] and batch.logs == []


def test_a_full_update_is_accepted_with_every_field() -> None:
    update = {
        "id": "job_1-A",
        "name": "train",
        "state": "running",
        "n": 3,
        "total": 10.5,
        "unit": "batch",
        "message": "loss 0.3",
        "elapsed": 1.25,
        "rate": 0,
        "error": {"type": "ValueError", "message": "boom"},
        "kernel_id": "k-1",
        "cell_id": "c-1",
        "path": "notebooks/a b.ipynb",
        "parent": "outer",
        "metadata": {"lr": 0.1, "tags": ["a", None, True], "nested": {"x": 1}},
    }
    batch = parse_update_batch(_body({"jobs": [update], "logs": [{"job": "job_1-A", "lines": ["a", ""]}]}))
    assert batch.jobs[0].model_dump(exclude_unset=True) == {**update}
    assert batch.logs[0].lines == ["a", ""]


@pytest.mark.parametrize("state", ["pending", "running", "succeeded", "failed", "cancelled"])
def test_every_publishable_state_is_accepted(state: str) -> None:
    assert parse_update_batch(_job(state=state)).jobs[0].state == state


def test_fields_left_out_are_not_set() -> None:
    (update,) = parse_update_batch(_job(n=2)).jobs
    assert update.model_fields_set == {"id", "n"}


@pytest.mark.parametrize("value", [0, 0.0, 1, 2.5, 10**18])
def test_finite_non_negative_numbers_are_accepted(value: float) -> None:
    assert parse_update_batch(_job(n=value, total=value, rate=value, elapsed=value)).jobs[0].n == value


def test_unicode_and_surrogate_pairs_are_accepted() -> None:
    body = b'{"jobs": [{"id": "a1", "name": "\\ud83d\\ude80 caf\\u00e9", "message": "\xe2\x9c\x93"}]}'
    (update,) = parse_update_batch(body).jobs
    assert update.name == "🚀 café"
    assert update.message == "✓"


@pytest.mark.parametrize(
    ("name", "limit"),
    [("name", 256), ("unit", 256), ("message", 4096), ("path", 4096), ("kernel_id", 256), ("cell_id", 256)],
)
def test_strings_at_their_limit_are_accepted(name: str, limit: int) -> None:
    assert getattr(parse_update_batch(_job(**{name: "é" * limit})).jobs[0], name) == "é" * limit


def test_a_log_line_at_its_limit_is_accepted() -> None:
    body = _body({"jobs": [{"id": "a1"}], "logs": [{"job": "a1", "lines": ["x" * 8192]}]})
    assert parse_update_batch(body).logs[0].lines == ["x" * 8192]


def test_limits_on_counts_are_inclusive() -> None:
    body = _body(
        {
            "jobs": [{"id": f"j{i}"} for i in range(1000)],
            "logs": [{"job": "j0", "lines": ["l"] * 5000}, {"job": "j1", "lines": ["l"] * 5000}],
        }
    )
    batch = parse_update_batch(body)
    assert len(batch.jobs) == 1000
    assert sum(len(b.lines) for b in batch.logs) == 10_000


def test_a_body_of_exactly_one_mebibyte_is_accepted() -> None:
    body = b'{"jobs": []}'
    body += b" " * (MAX_BODY_BYTES - len(body))
    assert len(body) == MAX_BODY_BYTES
    assert parse_update_batch(body).jobs == []


def test_metadata_up_to_4_kib_encoded_is_accepted() -> None:
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
    metadata = {"k": "x" * (4096 - overhead)}
    assert len(json.dumps(metadata, separators=(",", ":")).encode()) == 4096
    assert parse_update_batch(_job(metadata=metadata)).jobs[0].metadata == metadata


# ---- bad bodies --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b'{"jobs": [', b"not json", b"{'jobs': []}", b'{"jobs": []} trailing', b'{"jobs": [{"id": "a1",}]}'],
)
def test_malformed_json_is_invalid_json(body: bytes) -> None:
    exc = _refused(body)
    assert (exc.status, exc.error) == (400, "invalid_json")
    assert exc.detail


def test_invalid_utf8_is_invalid_json() -> None:
    exc = _refused(b'{"jobs": [{"id": "a1", "name": "\xff\xfe"}]}')
    assert (exc.status, exc.error) == (400, "invalid_json")


@pytest.mark.parametrize("body", [b"[]", b"null", b"3", b'"jobs"'])
def test_a_body_that_is_not_an_object_is_invalid_update(body: bytes) -> None:
    _assert_invalid_update(body)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_invalid_json(token: str) -> None:
    # docs/protocol.md: 400 invalid_json "the body is not JSON (or has NaN/Infinity, which JSON does not have)".
    exc = _refused(b'{"jobs": [{"id": "a1", "rate": %s}]}' % token.encode())
    assert (exc.status, exc.error) == (400, "invalid_json"), exc


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["n", "total", "rate", "elapsed"])
def test_nan_and_infinity_are_refused_naming_the_field_or_the_position(field: str, token: str) -> None:
    # Whichever error name: refused, and the detail says where (the field, or the JSON position).
    exc = _refused(b'{"jobs": [{"id": "a1", "%s": %s}]}' % (field.encode(), token.encode()))
    assert exc.status == 400
    assert exc.error in ("invalid_json", "invalid_update")
    text = json.dumps(exc.detail)
    assert field in text or "column" in text, text


def test_nan_inside_metadata_is_invalid_json() -> None:
    exc = _refused(b'{"jobs": [{"id": "a1", "metadata": {"x": NaN}}]}')
    assert (exc.status, exc.error) == (400, "invalid_json"), exc


@pytest.mark.parametrize("field", ["n", "total", "rate", "elapsed"])
def test_a_number_that_overflows_to_infinity_is_refused(field: str) -> None:
    # 1e400 is valid JSON text, but not a finite double: refused, naming the field.
    _assert_invalid_update(b'{"jobs": [{"id": "a1", "%s": 1e400}]}' % field.encode(), "jobs", 0, field)


@pytest.mark.parametrize("value", [-1, -0.5, -1e-300])
@pytest.mark.parametrize("field", ["n", "total", "rate", "elapsed"])
def test_negative_numbers_are_refused(field: str, value: float) -> None:
    exc = _assert_invalid_update(_job(**{field: value}), "jobs", 0, field)
    assert any("greater than or equal to 0" in err["msg"] for err in exc.detail)


@pytest.mark.parametrize("value", [True, False, "3", [1], {"n": 1}])
@pytest.mark.parametrize("field", ["n", "total", "rate", "elapsed"])
def test_non_numbers_where_a_number_is_wanted_are_refused(field: str, value: Any) -> None:
    _assert_invalid_update(_job(**{field: value}), "jobs", 0, field)


@pytest.mark.parametrize(
    ("field", "limit"),
    [("name", 256), ("unit", 256), ("message", 4096), ("path", 4096), ("kernel_id", 256), ("cell_id", 256)],
)
def test_strings_over_their_limit_are_refused(field: str, limit: int) -> None:
    exc = _assert_invalid_update(_job(**{field: "x" * (limit + 1)}), "jobs", 0, field)
    assert any(str(limit) in err["msg"] for err in exc.detail)


def test_error_type_and_message_are_bounded() -> None:
    _assert_invalid_update(_job(error={"type": "E" * 257}), "jobs", 0, "error", "type")
    _assert_invalid_update(_job(error={"type": "E", "message": "m" * 4097}), "jobs", 0, "error", "message")
    _assert_invalid_update(_job(error={"message": "no type"}), "jobs", 0, "error", "type")


def test_a_log_line_over_8192_characters_is_refused() -> None:
    body = _body({"jobs": [{"id": "a1"}], "logs": [{"job": "a1", "lines": ["ok", "x" * 8193]}]})
    _assert_invalid_update(body, "logs", 0, "lines", 1)


@pytest.mark.parametrize("field", ["foo", "cancel_requested", "owner", "created", "eta", "finished"])
def test_unknown_or_server_owned_job_fields_are_refused(field: str) -> None:
    _assert_invalid_update(_job(**{field: 1}), "jobs", 0, field)


def test_unknown_top_level_and_log_fields_are_refused() -> None:
    _assert_invalid_update(_body({"jobs": [], "cancel": []}), "cancel")
    _assert_invalid_update(_body({"logs": [{"job": "a1", "lines": [], "level": "info"}]}), "logs", 0, "level")
    _assert_invalid_update(_job(error={"type": "E", "traceback": "..."}), "jobs", 0, "error", "traceback")


BAD_IDS = {
    "empty": "",
    "65 chars": "a" * 65,
    "slash": "a/b",
    "space": "a b",
    "non-ascii": "é",
    "non-ascii digit": "\u0661",
    "newline": "a\n",
    "dot": "a.b",
    "percent": "a%20b",
}


@pytest.mark.parametrize("job_id", list(BAD_IDS.values()), ids=list(BAD_IDS))
def test_bad_job_ids_are_refused_everywhere(job_id: str) -> None:
    _assert_invalid_update(_body({"jobs": [{"id": job_id}]}), "jobs", 0, "id")
    _assert_invalid_update(_body({"logs": [{"job": job_id, "lines": []}]}), "logs", 0, "job")
    _assert_invalid_update(_job(parent=job_id), "jobs", 0, "parent")
    assert not is_valid_job_id(job_id)
    with pytest.raises(ProtocolError) as info:
        check_job_id(job_id)
    assert (info.value.status, info.value.error) == (400, "invalid_job_id")


@pytest.mark.parametrize("job_id", ["a", "A-z_09", "a" * 64, "-", "_"])
def test_good_job_ids_are_accepted(job_id: str) -> None:
    assert parse_update_batch(_body({"jobs": [{"id": job_id}]})).jobs[0].id == job_id
    assert is_valid_job_id(job_id)
    assert check_job_id(job_id) == job_id


def test_a_missing_job_id_is_refused() -> None:
    _assert_invalid_update(_body({"jobs": [{"n": 1}]}), "jobs", 0, "id")


@pytest.mark.parametrize("state", ["lost", "bogus", "RUNNING", ""])
def test_a_publisher_cannot_send_lost_or_unknown_states(state: str) -> None:
    _assert_invalid_update(_job(state=state), "jobs", 0, "state")


def test_metadata_over_4_kib_is_refused() -> None:
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
    exc = _assert_invalid_update(_job(metadata={"k": "x" * (4097 - overhead)}), "jobs", 0, "metadata")
    assert any("4096" in err["msg"] for err in exc.detail)


@pytest.mark.parametrize("metadata", [[], "x", 1])
def test_metadata_must_be_an_object(metadata: Any) -> None:
    _assert_invalid_update(_job(metadata=metadata), "jobs", 0, "metadata")


def test_more_than_1000_jobs_are_refused() -> None:
    _assert_invalid_update(_body({"jobs": [{"id": f"j{i}"} for i in range(1001)]}), "jobs")


def test_more_than_10000_lines_in_one_log_batch_are_refused() -> None:
    _assert_invalid_update(_body({"logs": [{"job": "a1", "lines": ["l"] * 10_001}]}), "logs", 0, "lines")


def test_more_than_10000_lines_across_log_batches_are_refused() -> None:
    body = _body({"logs": [{"job": "a1", "lines": ["l"] * 5000}, {"job": "a2", "lines": ["l"] * 5001}]})
    exc = _assert_invalid_update(body, "logs")
    assert any("10000" in err["msg"] for err in exc.detail)


def test_a_body_over_one_mebibyte_is_413_before_parsing() -> None:
    body = b'{"jobs": []}'
    body += b" " * (MAX_BODY_BYTES + 1 - len(body))
    exc = _refused(body)
    assert (exc.status, exc.error) == (413, "body_too_large")
    # Even garbage: the size is checked first, so a huge body is never parsed.
    assert _refused(b"x" * (2 * MAX_BODY_BYTES)).status == 413


@pytest.mark.parametrize(
    "escaped",
    [b"\\ud800", b"\\udfff", b"x\\ud800y", b"\\ud800\\ud800", b"\\ude80\\ud83d"],
)
@pytest.mark.parametrize("where", ["name", "message", "log"])
def test_lone_surrogate_escapes_are_refused(where: str, escaped: bytes) -> None:
    # Valid JSON grammar, but not Unicode text: it could not be encoded to UTF-8 for the SSE stream later.
    if where == "log":
        body = b'{"jobs": [{"id": "a1"}], "logs": [{"job": "a1", "lines": ["%s"]}]}' % escaped
    else:
        body = b'{"jobs": [{"id": "a1", "%s": "%s"}]}' % (where.encode(), escaped)
    exc = _refused(body)
    assert (exc.status, exc.error) == (400, "invalid_json"), exc


def test_every_problem_of_a_batch_is_listed() -> None:
    exc = _refused(_body({"jobs": [{"id": "ok", "n": -1}, {"id": "a b", "rate": "fast"}]}))
    locs = _locs(exc)
    assert ["jobs", 0, "n"] in locs
    assert ["jobs", 1, "id"] in locs
    assert any(loc[:3] == ["jobs", 1, "rate"] for loc in locs)


# ---- the stored job ----------------------------------------------------------------------------------------


def test_job_to_dict_has_exactly_the_protocol_fields() -> None:
    job = Job(id="a1", created=1.0, updated=2.0)
    as_dict = job.to_dict()
    assert set(as_dict) == set(PROTOCOL_JOB_FIELDS)
    assert json.loads(json.dumps(as_dict, allow_nan=False)) == as_dict


def test_a_new_job_has_the_protocol_defaults() -> None:
    d = Job(id="a1", created=1.0, updated=1.0).to_dict()
    assert d["state"] == "running"
    assert (d["n"], d["total"], d["unit"], d["message"], d["name"]) == (0, None, "it", "", "")
    assert (d["finished"], d["rate"], d["eta"], d["error"]) == (None, None, None, None)
    assert d["metadata"] == {} and d["cancel_requested"] is False


def test_metadata_default_is_not_shared_between_jobs() -> None:
    a = Job(id="a", created=0, updated=0)
    b = Job(id="b", created=0, updated=0)
    a.metadata["x"] = 1
    assert b.metadata == {}


def test_states_and_terminal_states_match_the_protocol() -> None:
    assert STATES == ("pending", "running", "succeeded", "failed", "cancelled", "lost")
    assert frozenset({"succeeded", "failed", "cancelled", "lost"}) == TERMINAL_STATES


@pytest.mark.parametrize(
    ("state", "n", "total", "rate", "eta"),
    [
        ("running", 2, 10, 4.0, 2.0),
        ("running", 2, None, 4.0, None),
        ("running", 2, 10, None, None),
        ("running", 2, 10, 0, None),
        ("running", 12, 10, 4.0, None),
        ("succeeded", 2, 10, 4.0, None),
        ("pending", 2, 10, 4.0, None),
        ("running", 0, 1e15, 5e-324, None),  # valid numbers whose eta would be infinite: JSON has no infinity
    ],
)
def test_eta_is_computed_only_while_running_with_known_total_and_rate(
    state: str, n: float, total: float | None, rate: float | None, eta: float | None
) -> None:
    job = Job(id="a", created=0, updated=0, state=state, n=n, total=total, rate=rate)
    job.compute_eta()
    assert job.eta == eta
    json.dumps(job.to_dict(), allow_nan=False)


def test_update_batch_model_forbids_extra_and_is_strict() -> None:
    # The schema the parser uses is the strict one (not a lax copy): "3" is no number even in Python input.
    with pytest.raises(ValueError):
        UpdateBatch.model_validate({"jobs": [{"id": "a", "n": "3"}]})
