"""Property tests (hypothesis): any text round-trips through the SSE encoder as a spec-following parser reads
it; any payload is either applied or refused with a 4xx that leaves the broker unchanged."""

from __future__ import annotations

import asyncio
import copy
import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_sse.core import Broker, ProtocolError, encode_event, parse_update_batch
from tests.core.test_sse import _normalized, spec_parse

# Text with the characters that break naive encoders: line breaks of every kind, NUL, and anything unicode
# (lone surrogates are excluded here: they cannot be UTF-8, and have their own test of refusal).
TEXT = st.text(
    alphabet=st.one_of(st.sampled_from("\r\n\0:; \t\u2028\x85"), st.characters(blacklist_categories=("Cs",))),
    max_size=200,
)
ID_OR_EVENT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\0"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(data=TEXT, event=ID_OR_EVENT, event_id=ID_OR_EVENT)
def test_any_text_round_trips_through_the_encoder(data: str, event: str, event_id: str) -> None:
    stream = spec_parse(encode_event(data, event=event or None, id=event_id))
    (parsed,) = stream.events
    assert parsed.data == _normalized(data)
    assert parsed.type == (event or "message")
    assert parsed.last_event_id == event_id


NUMBERS = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)
JOB_IDS = st.one_of(st.sampled_from(["a", "b", "c-1", "D_2"]), st.text(max_size=70))
STRINGS = st.one_of(st.text(max_size=50), st.text(min_size=4000, max_size=9000), NUMBERS)
UPDATE = st.fixed_dictionaries(
    {"id": JOB_IDS},
    optional={
        "n": NUMBERS,
        "total": NUMBERS,
        "rate": NUMBERS,
        "elapsed": NUMBERS,
        "state": st.sampled_from(["running", "succeeded", "failed", "cancelled", "lost", "pending", "bogus", None]),
        "name": STRINGS,
        "message": STRINGS,
        "unit": STRINGS,
        "error": st.one_of(st.none(), st.fixed_dictionaries({"type": STRINGS, "message": STRINGS})),
        "metadata": st.one_of(st.none(), st.dictionaries(st.text(max_size=5), NUMBERS, max_size=4)),
        "bogus_field": st.just(1),
    },
)
BODY = st.fixed_dictionaries(
    {},
    optional={
        "jobs": st.lists(UPDATE, max_size=4),
        "logs": st.lists(st.fixed_dictionaries({"job": JOB_IDS, "lines": st.lists(STRINGS, max_size=3)}), max_size=3),
    },
)


def _encode(body: Any) -> bytes:
    # allow_nan: the point is to send NaN and Infinity, which JSON does not have.
    return json.dumps(body, allow_nan=True).encode()


def _state(broker: Broker) -> Any:
    return copy.deepcopy(
        (
            broker.store.current_seq,
            [(e.job.to_dict(), list(e.logs), e.seq) for e in broker.store.entries()],
        )
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies=st.lists(BODY, min_size=1, max_size=6))
def test_any_payload_is_applied_or_refused_with_a_4xx_that_changes_nothing(bodies: list[Any]) -> None:
    broker = Broker(log_lines_kept=5)

    async def run() -> None:
        sub = broker.subscribe()
        for body in bodies:
            before = _state(broker)
            try:
                broker.apply(parse_update_batch(_encode(body)))
            except ProtocolError as exc:
                assert 400 <= exc.status < 500
                assert exc.error and exc.detail
                assert _state(broker) == before
            # Whatever was stored encodes as valid JSON for subscribers: finite numbers, no raw surrogates.
            for event in await sub.next_events(0):
                decoded = json.loads(event.data)
                for value in decoded.values() if isinstance(decoded, dict) else ():
                    if isinstance(value, float):
                        assert math.isfinite(value)
        sub.close()

    asyncio.run(run())


# Valid numbers, extremes included: values that are fine alone can overflow together (a tiny rate and a huge
# total make an infinite eta), which the mixed payloads above rarely reach.
VALID_NUMBERS = st.one_of(
    st.floats(min_value=0, max_value=1e18, exclude_max=True),
    st.integers(min_value=0, max_value=10**18 - 1),
    st.sampled_from([5e-324, 1e-300, 9.99e17]),
)


@settings(max_examples=300, deadline=None)
@given(n=VALID_NUMBERS, total=VALID_NUMBERS, rate=VALID_NUMBERS, elapsed=VALID_NUMBERS)
def test_any_valid_numbers_of_a_running_job_encode_for_subscribers(
    n: float, total: float, rate: float, elapsed: float
) -> None:
    broker = Broker()

    async def run() -> None:
        sub = broker.subscribe()
        body = {"jobs": [{"id": "a", "n": n, "total": total, "rate": rate, "elapsed": elapsed}]}
        broker.apply(parse_update_batch(_encode(body)))
        (event,) = await sub.next_events(0)
        job = json.loads(event.data)
        assert all(math.isfinite(v) for v in job.values() if isinstance(v, float))
        sub.close()

    asyncio.run(run())
