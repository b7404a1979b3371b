"""The sans-I/O protocol object (vuer_sync.transport.protocol): bytes in, events and bytes out.

No sockets and no threads: every test feeds bytes with ``receive_data`` and reads
``events_received`` / ``data_to_send``.
"""

from __future__ import annotations

import os
import struct
from typing import List, Optional

import pytest

from vuer_sync.transport import CloseCode, ConnectionClosed, Opcode, Protocol, State
from vuer_sync.transport.budget import InboundBudget
from vuer_sync.transport.frames import encode_header, mask_bytes, parse_header
from vuer_sync.transport.protocol import Close, Ping, Pong

# --------------------------------------------------------------------------- helpers


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
          masked: bool = True, length: Optional[int] = None) -> bytes:
    """A frame as a client (masked) or server (unmasked) would write it."""
    n = len(payload) if length is None else length
    if not masked:
        return encode_header(n, opcode, fin=fin, rsv=rsv) + payload
    key = os.urandom(4)
    return encode_header(n, opcode, fin=fin, rsv=rsv, mask_key=key) + mask_bytes(payload, key)


def close_body(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


def unframe(data: bytes) -> List[tuple]:
    """(fin, opcode, unmasked payload) of each frame in ``data``."""
    out = []
    pos = 0
    while pos < len(data):
        h = parse_header(data, pos)
        assert not isinstance(h, int)
        start = pos + h.header_length
        body = data[start : start + h.payload_length]
        if h.mask_key is not None:
            body = mask_bytes(body, h.mask_key)
        out.append((h.fin, h.opcode, body))
        pos = start + h.payload_length
    return out


def sent(p: Protocol) -> List[tuple]:
    """The frames in ``data_to_send()`` (an EOF marker shows as ``"EOF"``)."""
    chunks = p.data_to_send()
    eof = bool(chunks) and chunks[-1] == b""
    frames = unframe(b"".join(chunks))
    return [*frames, "EOF"] if eof else frames


def server(**kw) -> Protocol:
    return Protocol(is_server=True, **kw)


def assert_failed(p: Protocol, code: int) -> None:
    assert p.state is State.CLOSING and p.close_code == code
    out = sent(p)
    assert out[0][:2] == (True, Opcode.CLOSE)
    assert struct.unpack("!H", out[0][2][:2])[0] == code
    assert out[-1] == "EOF"  # a failing endpoint half-closes once its close frame is out
    p.receive_data(frame(Opcode.BINARY, b"ignored"))
    assert p.events_received() == []


# --------------------------------------------------------------------------- enums


def test_enums_have_the_rfc_numbers():
    assert [int(o) for o in Opcode] == [0, 1, 2, 8, 9, 10]
    assert CloseCode.NORMAL_CLOSURE == 1000 and CloseCode.MESSAGE_TOO_BIG == 1009
    assert CloseCode.TRY_AGAIN_LATER == 1013 and CloseCode.NO_STATUS_RCVD == 1005
    assert [s.name for s in State] == ["CONNECTING", "OPEN", "CLOSING", "CLOSED"]


# --------------------------------------------------------------------------- bytes in, events out


def test_binary_and_text_messages_in_one_chunk():
    p = server()
    p.receive_data(frame(Opcode.BINARY, b"\x00\x01") + frame(Opcode.TEXT, "☃".encode()))
    assert p.events_received() == [b"\x00\x01", "☃"]
    assert p.events_received() == []
    assert p.state is State.OPEN and p.data_to_send() == []


def test_bytes_arrive_one_at_a_time():
    p = server()
    data = frame(Opcode.BINARY, os.urandom(300)) + frame(Opcode.PING, b"x")
    data += frame(Opcode.TEXT, b"a", fin=False) + frame(Opcode.CONT, b"b")
    events = []
    for i in range(len(data)):
        p.receive_data(data[i : i + 1])
        events += p.events_received()
    assert len(events) == 3 and events[1] == Ping(b"x") and events[2] == "ab"
    assert sent(p) == [(True, Opcode.PONG, b"x")]


def test_large_masked_payload_is_unmasked():
    payload = os.urandom(200_000)
    p = server()
    p.receive_data(frame(Opcode.BINARY, payload))
    assert p.events_received() == [payload]


def test_client_side_reads_unmasked_frames_and_masks_its_own():
    c = Protocol(is_server=False)
    c.receive_data(frame(Opcode.BINARY, b"from server", masked=False))
    assert c.events_received() == [b"from server"]
    c.send_binary(b"up")
    raw = b"".join(c.data_to_send())
    h = parse_header(raw)
    assert not isinstance(h, int) and h.masked
    assert unframe(raw) == [(True, Opcode.BINARY, b"up")]


# --------------------------------------------------------------------------- fragments


def test_fragmented_binary_with_control_frames_between_fragments():
    p = server()
    p.receive_data(frame(Opcode.BINARY, b"ab", fin=False))
    p.receive_data(frame(Opcode.PING, b"1"))
    p.receive_data(frame(Opcode.CONT, b"cd", fin=False))
    p.receive_data(frame(Opcode.PONG, b"p"))
    assert p.in_message
    p.receive_data(frame(Opcode.CONT, b"ef"))
    assert p.events_received() == [Ping(b"1"), Pong(b"p"), b"abcdef"]
    assert not p.in_message
    assert sent(p) == [(True, Opcode.PONG, b"1")]


def test_utf8_split_across_fragment_boundaries():
    text = "é☃😀"
    raw = text.encode()
    p = server()
    p.receive_data(b"".join(frame(Opcode.TEXT if i == 0 else Opcode.CONT, raw[i : i + 1],
                                  fin=i == len(raw) - 1) for i in range(len(raw))))
    assert p.events_received() == [text]


def test_invalid_utf8_in_a_fragment_fails_at_once_with_1007():
    p = server()
    p.receive_data(frame(Opcode.TEXT, b"ok", fin=False) + frame(Opcode.CONT, b"\xff", fin=False))
    assert p.events_received() == []
    assert_failed(p, 1007)


def test_truncated_utf8_at_the_end_of_the_message_is_1007():
    p = server()
    p.receive_data(frame(Opcode.TEXT, "☃".encode()[:2], fin=False) + frame(Opcode.CONT, b""))
    assert_failed(p, 1007)


def test_invalid_utf8_in_a_single_frame_is_1007():
    p = server()
    p.receive_data(frame(Opcode.TEXT, b"\xc3\x28"))
    assert_failed(p, 1007)


# --------------------------------------------------------------------------- protocol errors


@pytest.mark.parametrize("data", [
    pytest.param(frame(Opcode.BINARY, b"x", rsv=4), id="rsv1"),
    pytest.param(frame(Opcode.BINARY, b"x", rsv=1), id="rsv3"),
    pytest.param(frame(Opcode.BINARY, b"x", masked=False), id="unmasked-from-client"),
    pytest.param(frame(Opcode.CONT, b"x"), id="continuation-without-message"),
    pytest.param(frame(Opcode.BINARY, b"a", fin=False) + frame(Opcode.TEXT, b"b"),
                 id="data-frame-inside-fragmented-message"),
    pytest.param(frame(0x3, b"x"), id="reserved-data-opcode"),
    pytest.param(frame(0xB, b""), id="reserved-control-opcode"),
    pytest.param(frame(Opcode.PING, b"x", fin=False), id="fragmented-control"),
    pytest.param(frame(Opcode.PING, b"x" * 126), id="control-over-125"),
    pytest.param(frame(Opcode.CLOSE, b"\x03"), id="close-body-of-1-byte"),
    pytest.param(frame(Opcode.CLOSE, close_body(1005)), id="close-code-1005"),
    pytest.param(frame(Opcode.CLOSE, close_body(999)), id="close-code-999"),
    pytest.param(b"\x82\xff" + b"\x80" + b"\x00" * 7 + b"keyk", id="64-bit-length-msb"),
])
def test_protocol_errors_fail_with_1002(data):
    p = server()
    p.receive_data(data)
    assert_failed(p, 1002)
    with pytest.raises(ConnectionClosed) as info:
        p.send_binary(b"late")
    assert info.value.code == 1002


def test_masked_frame_from_the_server_is_1002():
    c = Protocol(is_server=False)
    c.receive_data(frame(Opcode.BINARY, b"x", masked=True))
    assert c.state is State.CLOSING and c.close_code == 1002


def test_close_reason_not_utf8_is_1007():
    p = server()
    p.receive_data(frame(Opcode.CLOSE, close_body(1000) + b"\xff"))
    assert_failed(p, 1007)


def test_message_over_the_limit_is_1009_from_the_header_alone():
    p = server(max_message_size=100)
    p.receive_data(frame(Opcode.BINARY, b"", length=101)[:6])  # the header only
    assert_failed(p, 1009)


def test_fragments_over_the_limit_together_are_1009():
    p = server(max_message_size=100)
    p.receive_data(frame(Opcode.BINARY, b"a" * 60, fin=False))
    p.receive_data(frame(Opcode.CONT, b"b" * 40, fin=False))
    assert p.state is State.OPEN
    p.receive_data(frame(Opcode.CONT, b"c"))
    assert_failed(p, 1009)


def test_limit_counts_each_message_apart():
    p = server(max_message_size=100)
    for _ in range(3):
        p.receive_data(frame(Opcode.BINARY, b"a" * 60, fin=False) + frame(Opcode.CONT, b"b" * 40))
    assert p.events_received() == [b"a" * 60 + b"b" * 40] * 3


# --------------------------------------------------------------------------- inbound budget


def test_held_fragments_are_reserved_and_released():
    budget = InboundBudget(limit=1000)
    p = server(inbound_budget=budget)
    p.receive_data(frame(Opcode.BINARY, b"a" * 300, fin=False))
    assert budget.held == 300
    p.receive_data(frame(Opcode.CONT, b"b" * 300, fin=False))
    assert budget.held == 600
    p.receive_data(frame(Opcode.CONT, b"c"))
    assert p.events_received() == [b"a" * 300 + b"b" * 300 + b"c"]
    assert budget.held == 0


def test_budget_exhausted_by_fragments_is_1013_and_gives_everything_back():
    budget = InboundBudget(limit=500)
    other = budget.reserve(100)
    p = server(inbound_budget=budget)
    p.receive_data(frame(Opcode.BINARY, b"a" * 300, fin=False))
    p.receive_data(frame(Opcode.CONT, b"b" * 300, fin=False))
    assert_failed(p, 1013)
    assert other and budget.held == 100 and budget.refused == 1


def test_unparsed_bytes_beyond_64k_are_reserved_from_the_budget():
    budget = InboundBudget(limit=100_000)
    p = server(inbound_budget=budget)
    data = frame(Opcode.BINARY, os.urandom(300_000))
    p.receive_data(data[:90_000])
    assert budget.held == 90_000 - 14 - 65536  # the 14-byte header is parsed
    p.receive_data(data[90_000:200_000])  # more than the budget allows held at once
    assert_failed(p, 1013)
    assert budget.held == 0


def test_a_failure_mid_message_releases_the_held_fragments():
    budget = InboundBudget(limit=10_000)
    p = server(inbound_budget=budget)
    p.receive_data(frame(Opcode.BINARY, b"a" * 300, fin=False) + frame(Opcode.TEXT, b"x"))
    assert_failed(p, 1002)
    assert budget.held == 0


# --------------------------------------------------------------------------- pings and pongs


def test_only_the_latest_unanswered_ping_gets_a_pong():
    p = server()
    p.receive_data(frame(Opcode.PING, b"1") + frame(Opcode.PING, b"2") + frame(Opcode.PING, b"3"))
    assert p.events_received() == [Ping(b"1"), Ping(b"2"), Ping(b"3")]
    assert sent(p) == [(True, Opcode.PONG, b"3")]
    p.receive_data(frame(Opcode.PING, b"4"))
    assert sent(p) == [(True, Opcode.PONG, b"4")]


def test_send_ping_and_the_pong_event():
    p = server()
    p.send_ping(b"hi")
    assert sent(p) == [(True, Opcode.PING, b"hi")]
    p.receive_data(frame(Opcode.PONG, b"hi"))
    assert p.events_received() == [Pong(b"hi")]
    with pytest.raises(ValueError):
        p.send_ping(b"x" * 126)


def test_no_pong_once_closing():
    p = server()
    p.send_close()
    p.receive_data(frame(Opcode.PING, b"late"))
    assert p.events_received() == [Ping(b"late")]
    assert [f[1] for f in sent(p)] == [Opcode.CLOSE]


# --------------------------------------------------------------------------- close paths


def test_this_side_closes_first():
    p = server()
    assert p.send_close(1000, "bye") is True
    assert p.state is State.CLOSING and p.close_code == 1000
    assert p.send_close(1001) is False  # once
    assert sent(p) == [(True, Opcode.CLOSE, close_body(1000, "bye"))]
    assert p.close_sent and p.state is State.CLOSING
    with pytest.raises(ConnectionClosed):
        p.send_binary(b"late")
    p.receive_data(frame(Opcode.BINARY, b"still delivered") + frame(Opcode.CLOSE, close_body(1000)))
    assert p.events_received() == [b"still delivered", Close(1000, "")]
    assert p.state is State.CLOSED and p.close_code == 1000
    assert sent(p) == ["EOF"]  # handshake complete: half-close, no second close frame


def test_peer_closes_first_and_gets_its_code_back():
    p = server()
    p.receive_data(frame(Opcode.CLOSE, close_body(4001, "done")) + frame(Opcode.BINARY, b"x"))
    assert p.events_received() == [Close(4001, "done")]  # nothing after the close frame
    assert p.state is State.CLOSING and (p.close_code, p.close_reason) == (4001, "done")
    assert sent(p) == [(True, Opcode.CLOSE, close_body(4001)), "EOF"]
    assert p.state is State.CLOSED


def test_peer_close_without_a_code_is_1005_and_the_reply_is_empty():
    p = server()
    p.receive_data(frame(Opcode.CLOSE))
    assert p.events_received() == [Close(1005, "")] and p.close_code == 1005
    assert sent(p) == [(True, Opcode.CLOSE, b""), "EOF"]


def test_both_close_at_once():
    p = server()
    p.send_close(1000)
    p.receive_data(frame(Opcode.CLOSE, close_body(1001)))
    assert p.state is State.CLOSING and p.close_code == 1001
    assert sent(p) == [(True, Opcode.CLOSE, close_body(1000)), "EOF"]
    assert p.state is State.CLOSED


def test_eof_without_a_close_frame_is_1006():
    p = server()
    p.receive_data(frame(Opcode.BINARY, b"a", fin=False))
    p.receive_eof()
    assert p.state is State.CLOSED and p.close_code == 1006 and not p.in_message
    assert p.data_to_send() == []


def test_eof_after_failing_ends_the_connection_with_the_failure_code():
    p = server()
    p.receive_data(frame(0x3))
    p.receive_eof()
    assert p.state is State.CLOSED and p.close_code == 1002


def test_abort_is_1006_unless_a_handshake_said_otherwise():
    p = server()
    p.abort()
    assert p.state is State.CLOSED and (p.close_code, p.close_reason) == (1006, "aborted")
    assert p.data_to_send() == []
    q = server()
    q.receive_data(frame(Opcode.CLOSE, close_body(1000)))
    q.abort()
    assert q.state is State.CLOSED and q.close_code == 1000
    assert q.data_to_send() == []  # nothing is written once closed


def test_close_waits_for_the_end_of_a_fragmented_message_being_sent():
    p = server()
    p.send_binary(b"part1", fin=False)
    p.send_ping(b"between")
    p.send_close(1000)
    with pytest.raises(ConnectionClosed):
        p.send_binary(b"new message")
    assert sent(p) == [(False, Opcode.BINARY, b"part1"), (True, Opcode.PING, b"between")]
    p.send_continuation(b"part2", fin=True)
    assert sent(p) == [(True, Opcode.CONT, b"part2"), (True, Opcode.CLOSE, close_body(1000))]


def test_continuation_needs_a_fragmented_message():
    p = server()
    with pytest.raises(ValueError):
        p.send_continuation(b"x", fin=True)


def test_a_failed_write_closes_for_writing_only():
    p = server()
    p.send_ping(b"queued")
    p.write_failed()
    assert p.closed and p.state is State.OPEN and p.write_broken
    assert p.next_control() is None  # queued control frames are dropped
    err = p.closed_error()
    assert (err.code, err.reason) == (1006, "write failed")
    p.receive_data(frame(Opcode.BINARY, b"reads go on"))
    assert p.events_received() == [b"reads go on"]
    assert p.send_close(1001) is True and p.close_code == 1001
    assert p.next_control() is None


def test_close_rejects_codes_that_may_not_be_sent_and_cuts_long_reasons():
    p = server()
    with pytest.raises(ValueError):
        p.send_close(1006)
    assert p.state is State.OPEN
    p.send_close(1000, "é" * 100)
    assert len(p.close_reason.encode()) <= 123
    (close,) = sent(p)
    assert len(close[2]) <= 125


def test_next_control_holds_back_the_close_frame_on_request():
    p = server()
    p.send_ping(b"a")
    p.send_close()
    assert p.next_control(allow_close=False) == (False, unframe_one(Opcode.PING, b"a"))
    assert p.next_control(allow_close=False) is None and p.has_control()
    is_close, raw = p.next_control(allow_close=True)  # type: ignore[misc]
    assert is_close and unframe(raw) == [(True, Opcode.CLOSE, close_body(1000))]
    p.close_frame_written()
    assert p.close_sent and not p.take_eof()  # the peer's close has not arrived yet


def unframe_one(opcode: int, payload: bytes) -> bytes:
    return encode_header(len(payload), opcode) + payload


# --------------------------------------------------------------------------- bytes out


def test_server_frames_are_exact_bytes():
    p = server()
    p.send_binary(b"abc")
    p.send_text("☃")
    p.send_binary(b"x" * 300)
    assert b"".join(p.data_to_send()) == (
        b"\x82\x03abc" + b"\x81\x03" + "☃".encode() + b"\x82\x7e\x01\x2c" + b"x" * 300
    )


def test_frames_of_fragments_and_gathers_parts():
    class Parts:
        parts = (b"ab", memoryview(b"cdef"), bytearray(b"g"))

    p = server(fragment_size=3)
    frames = p.frames_of(Parts(), Opcode.BINARY)
    raw = b"".join(bytes(b) for f in frames for b in f)
    assert unframe(raw) == [(False, Opcode.BINARY, b"abc"), (False, Opcode.CONT, b"def"),
                            (True, Opcode.CONT, b"g")]
    assert unframe(b"".join(bytes(b) for f in p.frames_of(b"", Opcode.TEXT) for b in f)) == [
        (True, Opcode.TEXT, b"")]


def test_encode_many_matches_frame_by_frame():
    p = server(fragment_size=4096)
    payloads = [b"", b"a" * 125, b"b" * 126, b"c" * 2048, b"d" * 5000, bytearray(b"e" * 10)]
    bufs, count = p.encode_many(payloads)
    one_by_one = b"".join(bytes(b) for m in payloads
                          for f in p.frames_of(m, Opcode.BINARY) for b in f)
    assert count == len(payloads) and b"".join(bytes(b) for b in bufs) == one_by_one


def test_client_to_server_round_trip_through_both_objects():
    c, s = Protocol(is_server=False), server()
    big = os.urandom(70_000)
    c.send_binary(big)
    c.send_text("hello")
    c.send_ping(b"?")
    s.receive_data(b"".join(c.data_to_send()))
    assert s.events_received() == [big, "hello", Ping(b"?")]
    c.receive_data(b"".join(s.data_to_send()))
    assert c.events_received() == [Pong(b"?")]
    c.send_close(1000, "done")
    s.receive_data(b"".join(c.data_to_send()))
    c.receive_data(b"".join(x for x in s.data_to_send() if x))
    assert s.state is State.CLOSED and c.state is State.CLOSED
    assert (c.close_code, s.close_code) == (1000, 1000)
