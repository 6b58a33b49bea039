"""Property tests for the wire codec in :mod:`agentrt.protocol`.

The codec's contract: frames are a 4-byte big-endian length plus a msgpack
body; the decoder accepts any chunking, refuses oversized prefixes before the
body arrives, refuses the other direction's messages, and raises nothing but
:class:`FrameError` on hostile input.  Once broken it stays broken.
"""

from __future__ import annotations

import itertools
import tracemalloc
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentrt.protocol import (
    DEFAULT_MAX_FRAME,
    HEADER,
    AgentMessage,
    Call,
    Cancel,
    Failure,
    FrameDecoder,
    FrameEncoder,
    FrameError,
    Heartbeat,
    Log,
    Ready,
    Result,
    Shutdown,
    StartupFailed,
    SupervisorMessage,
)

PROPS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strategies ------------------------------------------------------------

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOATS = st.floats(allow_nan=False)
TEXT = st.text(max_size=20)

SCALARS = st.none() | st.booleans() | INT64 | FLOATS | TEXT | st.binary(max_size=20)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=8,
)
ARGS = st.dictionaries(TEXT, VALUES, max_size=4)

CALLS = st.builds(Call, id=INT64, target=TEXT, args=ARGS, deadline=FLOATS)
CANCELS = st.builds(Cancel, id=INT64)
SHUTDOWNS = st.builds(Shutdown)
HEARTBEATS = st.builds(Heartbeat, t=FLOATS)
READIES = st.builds(Ready, pid=INT64)
STARTUP_FAILEDS = st.builds(StartupFailed, type=TEXT, message=TEXT, traceback=TEXT)
RESULTS = st.builds(Result, id=INT64, value=VALUES)
FAILURES = st.builds(
    Failure,
    id=INT64,
    type=TEXT,
    message=TEXT,
    traceback=TEXT,
    kind=st.sampled_from(["error", "memory", "cancelled", "timeout"]) | TEXT,
)
LOGS = st.builds(Log, level=TEXT, event=TEXT, fields=ARGS)

SUPERVISOR_ONLY = CALLS | CANCELS | SHUTDOWNS
AGENT_ONLY = READIES | STARTUP_FAILEDS | RESULTS | FAILURES | LOGS
SUPERVISOR_MSGS = SUPERVISOR_ONLY | HEARTBEATS
AGENT_MSGS = AGENT_ONLY | HEARTBEATS

# (message strategy, decoder union) for each direction
DIRECTIONS = [
    pytest.param(SUPERVISOR_MSGS, SupervisorMessage, id="supervisor-to-agent"),
    pytest.param(AGENT_MSGS, AgentMessage, id="agent-to-supervisor"),
]
WRONG_DIRECTIONS = [
    pytest.param(SUPERVISOR_ONLY, AgentMessage, id="supervisor-msg-to-agent-decoder"),
    pytest.param(AGENT_ONLY, SupervisorMessage, id="agent-msg-to-supervisor-decoder"),
]

ENC = FrameEncoder()


def _as_chunk(kind: str, data: bytes) -> bytes | bytearray | memoryview:
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(data)
    return bytes(data)


CHUNK_KINDS = st.sampled_from(["bytes", "bytearray", "memoryview"])


def _chunks(data: st.DataObject, stream: bytes) -> list[bytes | bytearray | memoryview]:
    """Split ``stream`` at hypothesis-chosen points (empty chunks allowed)."""
    cuts = data.draw(
        st.lists(st.integers(0, len(stream)), max_size=16),
        label="cuts",
    )
    points = [0, *sorted(cuts), len(stream)]
    return [
        _as_chunk(data.draw(CHUNK_KINDS, label="chunk kind"), stream[a:b])
        for a, b in itertools.pairwise(points)
    ]


def _feed_all(dec: FrameDecoder, chunks: list[Any]) -> list[Any]:
    out: list[Any] = []
    for chunk in chunks:
        out.extend(dec.feed(chunk))
    return out


def _assert_same_messages(got: list[Any], want: list[Any]) -> None:
    """Equal, same classes, and byte-identical on re-encoding.

    Re-encoding catches what ``==`` forgives: ``True`` vs ``1``, ``1.0`` vs
    ``1``, ``-0.0`` vs ``0.0``, ``bytes`` vs ``str``.
    """
    assert [type(m) for m in got] == [type(m) for m in want]
    assert got == want
    assert [bytes(ENC.encode(m)) for m in got] == [bytes(ENC.encode(m)) for m in want]


# --- round trip ------------------------------------------------------------


@pytest.mark.parametrize(("messages", "union"), DIRECTIONS)
@PROPS
@given(data=st.data())
def test_every_message_type_round_trips_through_one_frame(
    messages: st.SearchStrategy[Any], union: Any, data: st.DataObject
) -> None:
    msg = data.draw(messages, label="msg")
    frame = FrameEncoder().encode(msg)
    assert int.from_bytes(frame[:HEADER], "big") == len(frame) - HEADER

    dec = FrameDecoder(union)
    _assert_same_messages(dec.feed(frame), [msg])
    assert dec.buffered == 0
    dec.close()


@pytest.mark.parametrize(
    "msg",
    [
        Call(id=1, target="", args={}),
        Cancel(id=1),
        Shutdown(),
        Heartbeat(),
        Ready(pid=1),
        StartupFailed(type="ImportError", message="m", traceback="tb"),
        Result(id=1, value=None),
        Failure(id=1, type="ValueError", message="m"),
        Log(level="info", event="e"),
    ],
    ids=lambda m: type(m).__name__,
)
def test_each_message_class_decodes_in_its_own_direction(msg: Any) -> None:
    # Guards the strategies above: every class of both unions is exercised.
    union = SupervisorMessage if isinstance(msg, Call | Cancel | Shutdown) else AgentMessage
    _assert_same_messages(FrameDecoder(union).feed(ENC.encode(msg)), [msg])


# --- chunking --------------------------------------------------------------


@pytest.mark.parametrize(("messages", "union"), DIRECTIONS)
@PROPS
@given(data=st.data())
def test_any_chunking_of_a_stream_yields_the_same_messages_in_order(
    messages: st.SearchStrategy[Any], union: Any, data: st.DataObject
) -> None:
    msgs = data.draw(st.lists(messages, max_size=8), label="msgs")
    stream = bytes(FrameEncoder().encode_many(msgs))

    dec = FrameDecoder(union)
    _assert_same_messages(_feed_all(dec, _chunks(data, stream)), msgs)
    assert dec.buffered == 0
    dec.close()


@PROPS
@given(msgs=st.lists(AGENT_MSGS, min_size=1, max_size=6))
def test_one_byte_chunks_yield_the_same_messages_in_order(msgs: list[Any]) -> None:
    stream = bytes(ENC.encode_many(msgs))
    dec = FrameDecoder(AgentMessage)
    got = []
    for i in range(len(stream)):
        got.extend(dec.feed(stream[i : i + 1]))
    _assert_same_messages(got, msgs)
    assert dec.buffered == 0
    dec.close()


@PROPS
@given(data=st.data(), msgs=st.lists(AGENT_MSGS, min_size=1, max_size=6))
def test_decoder_keeps_no_reference_to_caller_buffers(data: st.DataObject, msgs: list[Any]) -> None:
    # Scribbling over a bytearray after feed() returns must not change what
    # the decoder yields later (it copies the partial frame it holds back).
    stream = bytes(ENC.encode_many(msgs))
    dec = FrameDecoder(AgentMessage)
    got = []
    for chunk in _chunks(data, stream):
        buf = bytearray(chunk)
        got.extend(dec.feed(buf))
        buf[:] = b"\xff" * len(buf)
    _assert_same_messages(got, msgs)


# --- truncation ------------------------------------------------------------


@PROPS
@given(data=st.data(), msgs=st.lists(AGENT_MSGS, min_size=1, max_size=6))
def test_stream_cut_inside_a_frame_yields_only_earlier_messages_and_close_raises(
    data: st.DataObject, msgs: list[Any]
) -> None:
    frames = [bytes(ENC.encode(m)) for m in msgs]
    i = data.draw(st.integers(0, len(frames) - 1), label="cut frame")
    k = data.draw(st.integers(1, len(frames[i]) - 1), label="bytes of it kept")
    stream = b"".join(frames[:i]) + frames[i][:k]

    dec = FrameDecoder(AgentMessage)
    _assert_same_messages(_feed_all(dec, _chunks(data, stream)), msgs[:i])
    assert dec.buffered == k
    with pytest.raises(FrameError):
        dec.close()


@PROPS
@given(data=st.data(), msgs=st.lists(AGENT_MSGS, max_size=6))
def test_stream_cut_on_a_frame_boundary_closes_cleanly(
    data: st.DataObject, msgs: list[Any]
) -> None:
    frames = [bytes(ENC.encode(m)) for m in msgs]
    i = data.draw(st.integers(0, len(frames)), label="frames kept")
    dec = FrameDecoder(AgentMessage)
    _assert_same_messages(_feed_all(dec, _chunks(data, b"".join(frames[:i]))), msgs[:i])
    dec.close()


# --- hostile input ---------------------------------------------------------

MAX_FRAMES = st.sampled_from([1, 16, 1024, DEFAULT_MAX_FRAME])
UNIONS = st.sampled_from([SupervisorMessage, AgentMessage])

# msgpack fragments that steer random bodies into the decoder's deeper paths:
# containers, strings (incl. invalid UTF-8), ext/timestamps, floats, the tags.
_TOKENS = [
    b"\x90", b"\x91", b"\x92", b"\x93", b"\x94", b"\x96", b"\x80", b"\x81",
    b"\xa0", b"\xa1", b"\xa2", b"\xc4\x01", b"\xff", b"\x01", b"\x7f", b"\x00",
    b"\xc0", b"\xc2", b"\xc3", b"\xcb", b"\xd3", b"\xd4\x05", b"\xd6\xff",
    b"\xd7\xff", b"\xc7\x0c\xff", b"\xdc\xff\xff", b"\xdf\xff\xff\xff\xff",
    b"\xa4call", b"\xa6cancel", b"\xa6result", b"\xa7failure", b"\xa3log",
    b"\xa5ready", b"\xa9heartbeat", b"\xa8shutdown", b"\xaestartup_failed",
]  # fmt: skip


@st.composite
def _mutated_body(draw: st.DrawFn) -> bytes:
    body = bytearray(ENC.encode(draw(SUPERVISOR_MSGS | AGENT_MSGS))[HEADER:])
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(body) - 1))
        body[pos] = draw(st.integers(0, 255))
    return bytes(body[: draw(st.integers(0, len(body)))])


BODIES = (
    st.binary(max_size=64)
    | st.lists(st.sampled_from(_TOKENS), max_size=24).map(b"".join)
    | _mutated_body()
)
# Correctly length-prefixed garbage reaches the msgpack decoder; raw random
# bytes mostly exercise the prefix checks.
FRAMED_GARBAGE = st.lists(BODIES, min_size=1, max_size=4).map(
    lambda bodies: b"".join(len(b).to_bytes(HEADER, "big") + b for b in bodies)
)
GARBAGE = st.binary(max_size=256) | FRAMED_GARBAGE


@PROPS
@given(data=st.data(), garbage=GARBAGE, union=UNIONS, max_frame=MAX_FRAMES)
def test_garbage_raises_only_frame_error(
    data: st.DataObject, garbage: bytes, union: Any, max_frame: int
) -> None:
    dec = FrameDecoder(union, max_frame=max_frame)
    try:
        for chunk in _chunks(data, garbage):
            for msg in dec.feed(chunk):
                assert isinstance(msg, msgspec.Struct)
        dec.close()
    except FrameError:
        pass


@PROPS
@given(max_frame=st.integers(0, 2**32 - 2), data=st.data())
def test_prefix_over_max_frame_raises_from_the_four_prefix_bytes_alone(
    max_frame: int, data: st.DataObject
) -> None:
    n = data.draw(st.integers(max_frame + 1, 2**32 - 1), label="claimed length")
    prefix = n.to_bytes(HEADER, "big")
    split = data.draw(st.integers(0, HEADER - 1), label="split")
    dec = FrameDecoder(AgentMessage, max_frame=max_frame)
    assert dec.feed(prefix[:split]) == []
    with pytest.raises(FrameError, match="max_frame"):
        dec.feed(prefix[split:])  # no body byte has been sent


def _peak_allocated(fn: Any) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


LOW_WATER = 1 << 20  # 1 MiB: "far less" than the gigabytes a prefix can claim


@pytest.mark.parametrize("claimed", [2**32 - 1, 2**32 - 2**20, DEFAULT_MAX_FRAME + 1])
def test_oversized_prefix_is_refused_without_allocating_the_claimed_size(claimed: int) -> None:
    # Model: msgspec's test_decoding_large_arrays_doesnt_preallocate.
    dec = FrameDecoder(AgentMessage)

    def feed_prefix() -> None:
        with pytest.raises(FrameError):
            dec.feed(claimed.to_bytes(HEADER, "big"))

    assert _peak_allocated(feed_prefix) < LOW_WATER


def test_accepted_huge_prefix_does_not_preallocate_the_body() -> None:
    # A prefix within max_frame is buffered, not acted on: the decoder waits
    # for the body instead of reserving ~4 GiB for it.
    dec = FrameDecoder(AgentMessage, max_frame=2**32 - 1)

    def feed_prefix_and_some_body() -> None:
        assert dec.feed((2**32 - 1).to_bytes(HEADER, "big")) == []
        assert dec.feed(b"\x00" * 1024) == []

    assert _peak_allocated(feed_prefix_and_some_body) < LOW_WATER
    assert dec.buffered == HEADER + 1024


# --- wrong direction and sticky failure ------------------------------------


@pytest.mark.parametrize(("messages", "union"), WRONG_DIRECTIONS)
@PROPS
@given(data=st.data())
def test_message_of_the_wrong_direction_raises_frame_error(
    messages: st.SearchStrategy[Any], union: Any, data: st.DataObject
) -> None:
    dec = FrameDecoder(union)
    hb = Heartbeat(t=1.0)  # valid both ways: the stream was fine until now
    assert dec.feed(ENC.encode(hb)) == [hb]
    with pytest.raises(FrameError):
        dec.feed(ENC.encode(data.draw(messages, label="wrong-way msg")))


def _break_by_oversize(dec: FrameDecoder) -> None:
    dec.feed((dec.max_frame + 1).to_bytes(HEADER, "big"))


def _break_by_empty_frame(dec: FrameDecoder) -> None:
    dec.feed(b"\x00" * HEADER)


def _break_by_garbage_body(dec: FrameDecoder) -> None:
    dec.feed(b"\x00\x00\x00\x01\xc1")  # 0xc1 is never valid msgpack


def _break_by_wrong_direction(dec: FrameDecoder) -> None:
    dec.feed(ENC.encode(Call(id=1, target="", args={})))


BREAKERS = st.sampled_from(
    [_break_by_oversize, _break_by_empty_frame, _break_by_garbage_body, _break_by_wrong_direction]
)


@PROPS
@given(
    breaker=BREAKERS,
    data=st.data(),
    after=st.lists(st.binary(max_size=32) | AGENT_MSGS.map(ENC.encode), min_size=1, max_size=4),
)
def test_after_a_frame_error_every_feed_raises_frame_error(
    breaker: Any, data: st.DataObject, after: list[bytes]
) -> None:
    # ``after`` mixes garbage with perfectly valid frames: neither is read.
    dec = FrameDecoder(AgentMessage, max_frame=1 << 16)
    before = data.draw(st.lists(AGENT_MSGS, max_size=3), label="before")
    _assert_same_messages(dec.feed(ENC.encode_many(before)), before)
    with pytest.raises(FrameError):
        breaker(dec)
    for chunk in [b"", *after]:
        with pytest.raises(FrameError):
            dec.feed(chunk)


# --- encode_many -----------------------------------------------------------


@pytest.mark.parametrize(("messages", "union"), DIRECTIONS)
@PROPS
@given(data=st.data())
def test_encode_many_equals_concatenated_single_encodes(
    messages: st.SearchStrategy[Any], union: Any, data: st.DataObject
) -> None:
    msgs = data.draw(st.lists(messages, max_size=6), label="msgs")
    enc = FrameEncoder()
    many = enc.encode_many(msgs)
    assert bytes(many) == b"".join(bytes(enc.encode(m)) for m in msgs)

    dec = FrameDecoder(union)
    _assert_same_messages(dec.feed(many), msgs)
    dec.close()
