"""Example tests pinning the exact wire format and error behaviour of the codec."""

from __future__ import annotations

import pytest

from agentrt.protocol import (
    HEADER,
    AgentMessage,
    Call,
    Cancel,
    FrameDecoder,
    FrameEncoder,
    FrameError,
    Heartbeat,
    Log,
    Result,
    Shutdown,
    SupervisorMessage,
    iter_frames,
)


class Unencodable:
    pass


# --- byte layout -----------------------------------------------------------


def test_small_frame_is_big_endian_length_then_msgpack_array_of_tag_and_fields() -> None:
    frame = FrameEncoder().encode(Cancel(id=7))
    # fixarray(2) ["cancel", 7]
    body = b"\x92" + b"\xa6cancel" + b"\x07"
    assert bytes(frame) == b"\x00\x00\x00\x09" + body
    assert FrameDecoder(SupervisorMessage).feed(frame) == [Cancel(id=7)]


def test_fieldless_message_is_a_one_element_array_of_its_tag() -> None:
    assert bytes(FrameEncoder().encode(Shutdown())) == b"\x00\x00\x00\x0a\x91\xa8shutdown"


def test_header_is_big_endian_for_bodies_over_255_bytes() -> None:
    frame = FrameEncoder().encode(Log(level="info", event="x" * 300))
    body_len = len(frame) - HEADER
    assert body_len == 0x13A
    assert bytes(frame[:HEADER]) == b"\x00\x00\x01\x3a"


def test_defaults_are_sent_not_omitted() -> None:
    # array_like + omit_defaults=False: every field is on the wire.
    assert bytes(FrameEncoder().encode(Heartbeat())) == (
        b"\x00\x00\x00\x14\x92\xa9heartbeat\xcb" + b"\x00" * 8
    )


def test_encode_returns_a_fresh_buffer_each_time() -> None:
    enc = FrameEncoder()
    first = enc.encode(Cancel(id=1))
    second = enc.encode(Cancel(id=1))
    first[:] = b""
    assert bytes(second) == b"\x00\x00\x00\x09\x92\xa6cancel\x01"


# --- empty and oversized frames --------------------------------------------


def test_empty_frame_is_rejected() -> None:
    dec = FrameDecoder(AgentMessage)
    with pytest.raises(FrameError, match="empty frame"):
        dec.feed(b"\x00\x00\x00\x00")


def test_empty_frame_after_a_valid_one_is_rejected() -> None:
    dec = FrameDecoder(AgentMessage)
    assert dec.feed(FrameEncoder().encode(Heartbeat(t=2.0))) == [Heartbeat(t=2.0)]
    with pytest.raises(FrameError, match="empty frame"):
        dec.feed(b"\x00\x00\x00\x00")


def test_encoding_a_body_over_max_frame_raises_frame_error() -> None:
    msg = Log(level="info", event="x" * 100)
    size = len(FrameEncoder().encode(msg)) - HEADER
    assert len(FrameEncoder(max_frame=size).encode(msg)) == HEADER + size  # at the limit: ok
    with pytest.raises(FrameError, match="max_frame"):
        FrameEncoder(max_frame=size - 1).encode(msg)
    with pytest.raises(FrameError, match="max_frame"):
        FrameEncoder(max_frame=size - 1).encode_many([Heartbeat(), msg])


def test_decoder_accepts_a_frame_of_exactly_max_frame_and_refuses_one_byte_more() -> None:
    frame = FrameEncoder().encode(Result(id=1, value="payload"))
    size = len(frame) - HEADER
    assert FrameDecoder(AgentMessage, max_frame=size).feed(frame) == [Result(id=1, value="payload")]
    with pytest.raises(FrameError, match="max_frame"):
        FrameDecoder(AgentMessage, max_frame=size - 1).feed(frame[:HEADER])


# --- unsupported values ----------------------------------------------------


def test_encoding_an_instance_of_an_unsupported_class_raises_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="Unencodable"):
        FrameEncoder().encode(Call(id=1, target="", args={"x": Unencodable()}))


def test_encoding_an_unsupported_builtin_raises_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="complex"):
        FrameEncoder().encode(Result(id=1, value=[1j]))


def test_encode_many_raises_type_error_naming_the_unsupported_type() -> None:
    with pytest.raises(TypeError, match="Unencodable"):
        FrameEncoder().encode_many([Heartbeat(), Result(id=1, value=Unencodable())])


def test_encoder_is_reusable_after_a_type_error() -> None:
    enc = FrameEncoder()
    with pytest.raises(TypeError):
        enc.encode(Result(id=1, value=Unencodable()))
    assert bytes(enc.encode(Cancel(id=7))) == b"\x00\x00\x00\x09\x92\xa6cancel\x07"


# --- hostile bodies that must still surface as FrameError -------------------


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(HEADER, "big") + body


def test_invalid_utf8_in_a_string_field_raises_frame_error() -> None:
    # ["result", 1, <fixstr of 1 byte: 0xff>]
    with pytest.raises(FrameError):
        FrameDecoder(AgentMessage).feed(_frame(b"\x93\xa6result\x01\xa1\xff"))


def test_invalid_utf8_in_a_tag_raises_frame_error() -> None:
    with pytest.raises(FrameError):
        FrameDecoder(AgentMessage).feed(_frame(b"\x92\xa3\xff\xff\xff\x01"))


def test_deeply_nested_value_raises_frame_error_not_recursion_error() -> None:
    # ["result", 1, [[[...[nil]...]]]]: a few KiB a hostile agent can send.
    body = b"\x93\xa6result\x01" + b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(FrameError):
        FrameDecoder(AgentMessage).feed(_frame(body))


# --- convenience -----------------------------------------------------------


def test_iter_frames_decodes_a_complete_stream_and_refuses_a_truncated_one() -> None:
    msgs = [Heartbeat(t=1.0), Result(id=3, value={"k": [1, 2.5, None]})]
    stream = bytes(FrameEncoder().encode_many(msgs))
    assert list(iter_frames(stream)) == msgs
    with pytest.raises(FrameError):
        list(iter_frames(stream[:-1]))
