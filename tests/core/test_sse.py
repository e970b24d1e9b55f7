"""The SSE encoder against the WHATWG HTML "event stream interpretation" rules, and against httpx-sse's parser.

The parser below follows the spec text line by line (section 9.2.6 of the HTML standard): the stream is UTF-8
(a leading BOM is dropped), lines end at CRLF, LF or CR, a line starting with ":" is a comment, a field's value
loses one leading space, ``data`` lines are joined with LF, an ``id`` containing NUL is ignored, ``retry`` must
be ASCII digits, a blank line dispatches the event unless the data buffer is empty, and an unterminated event
at the end of the stream is discarded.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import pytest
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from jupyter_sse.core import encode_comment, encode_event, encode_retry


@dataclass
class ParsedEvent:
    type: str
    data: str
    last_event_id: str


@dataclass
class ParsedStream:
    events: list[ParsedEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    last_event_id: str = ""


_EOL = re.compile(r"\r\n|\r|\n")


def spec_parse(raw: bytes) -> ParsedStream:
    """Interpret a whole event stream exactly as a browser's EventSource does."""
    text = raw.decode("utf-8")  # the spec's "UTF-8 decode" (errors would be U+FFFD; our bytes must be valid)
    if text.startswith("\ufeff"):
        text = text[1:]
    *lines, _incomplete = _EOL.split(text)  # what follows the last line ending is not a line yet
    out = ParsedStream()
    data = ""
    event_type = ""
    for line in lines:
        if line == "":
            # Dispatch: the last event id buffer becomes the event source's last event id.
            if data == "":
                event_type = ""
                continue
            if data.endswith("\n"):
                data = data[:-1]
            out.events.append(ParsedEvent(event_type or "message", data, out.last_event_id))
            data = ""
            event_type = ""
            continue
        if line.startswith(":"):
            out.comments.append(line[1:])
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id":
            if "\0" not in value:
                out.last_event_id = value
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            out.retry = int(value)
        # any other field is ignored
    return out  # data still buffered here is discarded, as the spec says at end of file


def httpx_sse_parse(raw: bytes, chunk_sizes: list[int] | None = None) -> list[tuple[str, str, str, int | None]]:
    """What httpx-sse makes of the same bytes, fed as text chunks the way its ``aiter_sse`` does."""
    text = raw.decode("utf-8")
    chunks: list[str] = []
    if chunk_sizes is None:
        chunks = [text]
    else:
        i = 0
        for size in chunk_sizes:
            if i >= len(text):
                break
            chunks.append(text[i : i + size])
            i += size
        if i < len(text):
            chunks.append(text[i:])
    line_decoder = SSELineDecoder()
    decoder = SSEDecoder()
    events = []
    lines = [line for chunk in chunks for line in line_decoder.decode(chunk)]
    lines += line_decoder.flush()
    for line in lines:
        sse = decoder.decode(line.rstrip("\n"))
        if sse is None:
            continue
        if sse.event == "message" and sse.data == "" and sse.retry is None:
            # httpx-sse 0.4 keeps the last id and so "dispatches" the blank line after a comment once an id
            # was seen; such a message has no data line, which the spec does not dispatch, and which the
            # jupyter-sse client skips (client/_common.py). Not an event of ours.
            continue
        events.append((sse.event, sse.data, sse.id, sse.retry))
    return events


DATA_CASES = {
    "plain": "hello",
    "json": '{"id": "a1", "n": 3, "message": "x: y"}',
    "empty": "",
    "one space": " ",
    "leading space": "  two leading spaces",
    "leading colon": ":not a comment",
    "lf": "line 1\nline 2\nline 3",
    "crlf": "line 1\r\nline 2",
    "lone cr": "line 1\rline 2",
    "mixed breaks": "a\r\nb\nc\rd\n\re",
    "trailing lf": "ends with a break\n",
    "only lf": "\n",
    "two lf": "\n\n",
    "blank lines inside": "a\n\n\nb",
    "nul": "before\0after",
    "unicode": "héllo wörld — ✓ 你好 🚀",
    "not spec line breaks": "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg",
    "field-like": "id: 7\nevent: evil\nretry: 1",
}


def _normalized(data: str) -> str:
    """An SSE stream cannot carry CR in data: every line break comes back as LF."""
    return _EOL.sub("\n", data)


@pytest.mark.parametrize("data", list(DATA_CASES.values()), ids=list(DATA_CASES))
def test_data_round_trips_through_a_spec_parser(data: str) -> None:
    parsed = spec_parse(encode_event(data, event="job", id="42"))
    assert parsed.events == [ParsedEvent("job", _normalized(data), "42")]
    assert parsed.comments == []


@pytest.mark.parametrize("data", list(DATA_CASES.values()), ids=list(DATA_CASES))
def test_data_round_trips_through_httpx_sse(data: str) -> None:
    raw = encode_event(data, event="job", id="42")
    assert httpx_sse_parse(raw) == [("job", _normalized(data), "42", None)]


def test_data_without_line_breaks_is_one_data_line() -> None:
    assert encode_event("x", event="log", id="1") == b"id: 1\nevent: log\ndata: x\n\n"
    assert encode_event("", id="2") == b"id: 2\ndata: \n\n"


def test_multi_line_data_is_one_data_line_per_line() -> None:
    assert encode_event("a\r\nb\rc\nd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"


def test_event_without_name_or_id_is_a_message_and_keeps_the_previous_id() -> None:
    raw = encode_event("first", id="1") + encode_event("second")
    parsed = spec_parse(raw)
    assert parsed.events == [ParsedEvent("message", "first", "1"), ParsedEvent("message", "second", "1")]
    assert [(e, d, i) for e, d, i, _ in httpx_sse_parse(raw)] == [("message", "first", "1"), ("message", "second", "1")]


def test_unicode_is_utf8_on_the_wire() -> None:
    raw = encode_event("✓ 🚀", event="é", id="1")
    assert "✓ 🚀".encode() in raw
    assert spec_parse(raw).events == [ParsedEvent("é", "✓ 🚀", "1")]


def test_lone_surrogate_in_data_is_refused_not_sent_as_invalid_utf8() -> None:
    # The broker sends JSON with \\u escapes, so it never gets here; a direct caller must not corrupt the stream.
    with pytest.raises(ValueError):
        encode_event("\ud800")


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\r\nb", "\n", "\r", "a\0b", "\0"])
@pytest.mark.parametrize("field_name", ["id", "event"])
def test_id_and_event_with_cr_lf_or_nul_are_refused(field_name: str, bad: str) -> None:
    with pytest.raises(ValueError, match=field_name):
        encode_event("data", **{field_name: bad})


@pytest.mark.parametrize("value", ["", " ", "job", "with: colon", "  spaced", "x" * 1000, "ünï"])
def test_event_names_round_trip(value: str) -> None:
    parsed = spec_parse(encode_event("d", event=value))
    # An empty event name means the default type, "message".
    assert parsed.events == [ParsedEvent(value or "message", "d", "")]
    assert httpx_sse_parse(encode_event("d", event=value)) == [(value or "message", "d", "", None)]


@pytest.mark.parametrize("value", ["0", "1", "18446744073709551616", "opaque-id", " leading", ""])
def test_ids_round_trip(value: str) -> None:
    raw = encode_event("first", id="previous") + encode_event("d", id=value)
    assert spec_parse(raw).events[-1] == ParsedEvent("message", "d", value)
    assert httpx_sse_parse(raw)[-1] == ("message", "d", value, None)


@pytest.mark.parametrize("text", ["", "jupyter-sse v1", "ping", "a\nb", "a\r\nb\rc", ": nested", "ünï"])
def test_comments_dispatch_nothing(text: str) -> None:
    raw = encode_comment(text)
    parsed = spec_parse(raw)
    assert parsed.events == []
    assert parsed.comments == [" " + line for line in _EOL.split(text)]
    assert httpx_sse_parse(raw) == []


def test_comments_between_events_do_not_disturb_them() -> None:
    raw = (
        encode_comment("hello")
        + encode_event("one\ntwo", event="job", id="1")
        + encode_comment("ping")
        + encode_event("three", event="log", id="2")
        + encode_comment("multi\nline")
    )
    parsed = spec_parse(raw)
    assert parsed.events == [ParsedEvent("job", "one\ntwo", "1"), ParsedEvent("log", "three", "2")]
    assert httpx_sse_parse(raw) == [("job", "one\ntwo", "1", None), ("log", "three", "2", None)]


@pytest.mark.parametrize("ms", [0, 1, 2000, 10**12])
def test_retry_is_read_back(ms: int) -> None:
    raw = encode_retry(ms)
    parsed = spec_parse(raw)
    assert parsed.retry == ms
    assert parsed.events == []
    assert httpx_sse_parse(raw) == [("message", "", "", ms)]


def test_negative_retry_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_retry(-1)


def test_a_full_stream_reads_the_same_in_any_chunking() -> None:
    """The stream the server sends, cut at random places (including between CR and LF): same events."""
    payloads = list(DATA_CASES.values())
    raw = encode_retry(2000) + encode_comment("jupyter-sse v1")
    for i, data in enumerate(payloads):
        raw += encode_event(data, event=("job", "log", "removed")[i % 3], id=str(100 + i))
        if i % 4 == 0:
            raw += b": ping\n\n"
    expected = [
        ParsedEvent(("job", "log", "removed")[i % 3], _normalized(d), str(100 + i)) for i, d in enumerate(payloads)
    ]
    parsed = spec_parse(raw)
    assert parsed.retry == 2000
    # The spec skips events whose data is empty only when no data line came; ours always sends one.
    assert parsed.events == expected
    want = [("message", "", "", 2000)] + [(e.type, e.data, e.last_event_id, None) for e in expected]
    rng = random.Random(1234)
    for _ in range(50):
        sizes = [rng.randint(1, 7) for _ in range(len(raw))]
        assert httpx_sse_parse(raw, sizes) == want
