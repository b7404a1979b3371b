"""Tests for vuer_sync.transport.frames: headers, masking, close payloads, the websocket-client
patch."""

from __future__ import annotations

import os
import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vuer_sync import client_transport as wsc
from vuer_sync.transport import frames as F
from vuer_sync.transport.frames import (
    FrameError,
    FrameHeader,
    apply_mask,
    encode_close_payload,
    encode_header,
    is_valid_close_code,
    mask_bytes,
    parse_close_payload,
    parse_header,
    truncate_reason,
)


def ref_mask(data: bytes, key: bytes, offset: int = 0) -> bytes:
    """Pure-Python reference for RFC 6455 §5.3 masking."""
    return bytes(b ^ key[(i + offset) % 4] for i, b in enumerate(data))


# --------------------------------------------------------------------------- headers

LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 2**32 + 1, 2**63 - 1]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize(("opcode", "fin"), [(F.OP_BINARY, True), (F.OP_TEXT, False), (0x0, True)])
def test_header_round_trip(length, masked, opcode, fin):
    key = b"\x01\x02\x03\xfe" if masked else None
    raw = encode_header(length, opcode, fin=fin, mask_key=key)
    base = 2 if length < 126 else 4 if length < 65536 else 10
    expected_len = base + (4 if masked else 0)
    assert len(raw) == expected_len
    h = parse_header(raw)
    assert isinstance(h, FrameHeader)
    assert h == FrameHeader(fin, False, False, False, opcode, masked, key, length, expected_len)
    # the same header after some unrelated bytes, parsed with an offset, payload bytes following
    h2 = parse_header(b"junk" + raw + b"payload", 4)
    assert h2 == h


def test_header_exact_bytes():
    assert encode_header(0, F.OP_PING) == b"\x89\x00"
    assert encode_header(125, F.OP_BINARY) == b"\x82\x7d"
    assert encode_header(126, F.OP_BINARY) == b"\x82\x7e\x00\x7e"
    assert encode_header(65535, F.OP_TEXT, fin=False) == b"\x01\x7e\xff\xff"
    assert encode_header(65536, F.OP_BINARY) == b"\x82\x7f" + struct.pack("!Q", 65536)
    assert encode_header(5, F.OP_TEXT, mask_key=b"abcd") == b"\x81\x85abcd"
    assert encode_header(3, F.OP_BINARY, rsv=4) == b"\xc2\x03"


@pytest.mark.parametrize("length", [0, 200, 70000])
@pytest.mark.parametrize("masked", [False, True])
def test_header_partial_buffers_ask_for_more(length, masked):
    raw = encode_header(length, F.OP_BINARY, mask_key=b"wxyz" if masked else None)
    for cut in range(len(raw)):
        need = parse_header(raw[:cut])
        assert isinstance(need, int) and not isinstance(need, bool)
        assert 0 < need <= len(raw) - cut
    assert isinstance(parse_header(raw), FrameHeader)


def test_header_flags_and_rsv():
    h = parse_header(bytes([0x70 | F.OP_PING, 0x00]))
    assert isinstance(h, FrameHeader)
    assert (h.fin, h.rsv1, h.rsv2, h.rsv3) == (False, True, True, True)
    assert h.rsv == 7 and h.is_control
    h = parse_header(bytes([0x80 | 0x40 | F.OP_BINARY, 0x00]))
    assert h.rsv1 and not h.rsv2 and h.rsv == 4 and not h.is_control


def test_header_64bit_msb_rejected():
    raw = b"\x82\x7f" + struct.pack("!Q", 1 << 63)
    with pytest.raises(FrameError) as ei:
        parse_header(raw)
    assert ei.value.code == F.CLOSE_PROTOCOL_ERROR


@pytest.mark.parametrize(
    "kwargs",
    [
        {"payload_length": -1, "opcode": 2},
        {"payload_length": 1 << 63, "opcode": 2},
        {"payload_length": 1, "opcode": 16},
        {"payload_length": 1, "opcode": 2, "mask_key": b"abc"},
        {"payload_length": 1, "opcode": 2, "rsv": 8},
    ],
)
def test_encode_header_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        encode_header(**kwargs)


# --------------------------------------------------------------------------- masking


@settings(max_examples=400, deadline=None, database=None)
@given(
    size=st.one_of(st.integers(0, 70), st.integers(900, 1100), st.integers(1100, 6000)),
    seed=st.integers(0, 2**32 - 1),
    key=st.binary(min_size=4, max_size=4),
    offset=st.integers(min_value=0, max_value=11),
    start=st.integers(min_value=0, max_value=7),
)
def test_apply_mask_matches_reference(size, seed, key, offset, start):
    # sizes cover the big-int path (<= 1024 bytes) and the numpy path (> 1024)
    data = random.Random(seed).randbytes(size)
    # `start` shifts the data inside a larger buffer, so the numpy path sees every alignment
    backing = bytearray(b"\xaa" * start + data + b"\x55" * 3)
    view = memoryview(backing)[start : start + len(data)]
    apply_mask(view, key, offset)
    assert bytes(view) == ref_mask(data, key, offset)
    assert backing[:start] == b"\xaa" * start  # neighbours untouched
    assert backing[start + len(data) :] == b"\x55" * 3
    assert mask_bytes(data, key, offset) == ref_mask(data, key, offset)


@settings(max_examples=100, deadline=None, database=None)
@given(
    data=st.binary(min_size=0, max_size=20000),
    key=st.binary(min_size=4, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=20000), max_size=8),
)
def test_apply_mask_in_chunks_with_offset_equals_whole(data, key, cuts):
    points = sorted({0, len(data), *[c % (len(data) + 1) for c in cuts]})
    buf = bytearray(data)
    mv = memoryview(buf)
    for a, b in zip(points, points[1:]):
        apply_mask(mv[a:b], key, a)
    assert bytes(buf) == ref_mask(data, key)
    apply_mask(buf, key)  # masking is an involution
    assert bytes(buf) == data


def test_mask_large_buffers_against_reference_sample():
    key = os.urandom(4)
    data = os.urandom(3 * 2**20 + 3)
    out = mask_bytes(data, key)
    idx = np.random.default_rng(1).integers(0, len(data), 5000)
    keyarr = np.frombuffer(key, np.uint8)
    src = np.frombuffer(data, np.uint8)
    dst = np.frombuffer(out, np.uint8)
    assert np.array_equal(dst[idx], src[idx] ^ keyarr[idx % 4])
    buf = bytearray(data)
    apply_mask(buf, key)
    assert buf == out
    assert mask_bytes(out, key) == data


def test_mask_accepts_other_buffers_and_rejects_read_only():
    arr = np.arange(1000, dtype=np.float32)
    raw = arr.tobytes()
    apply_mask(arr, b"\x00\xff\x10\x01")  # in place on the array's bytes
    assert arr.tobytes() == ref_mask(raw, b"\x00\xff\x10\x01")
    assert mask_bytes(np.arange(10, dtype=np.int64), b"kkkk") == ref_mask(
        np.arange(10, dtype=np.int64).tobytes(), b"kkkk"
    )
    with pytest.raises(TypeError):
        apply_mask(b"read-only bytes", b"abcd")
    with pytest.raises(ValueError):
        apply_mask(bytearray(10), b"abc")
    data = bytes(range(256)) * 10
    before = bytes(data)
    mask_bytes(data, b"abcd")
    assert data == before  # mask_bytes never mutates


# --------------------------------------------------------------------------- close payloads

VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_close_payload_round_trip(code):
    assert is_valid_close_code(code)
    for reason in ["", "bye", "ünïcödé ☃", "x" * 123]:
        payload = encode_close_payload(code, reason)
        assert payload[:2] == struct.pack("!H", code)
        assert parse_close_payload(payload) == (code, reason)


@pytest.mark.parametrize("code", INVALID_CODES)
def test_close_codes_rejected(code):
    assert not is_valid_close_code(code)
    with pytest.raises(ValueError):
        encode_close_payload(code)
    with pytest.raises(FrameError) as ei:
        parse_close_payload(struct.pack("!H", code) + b"reason")
    assert ei.value.code == F.CLOSE_PROTOCOL_ERROR


def test_close_payload_edge_cases():
    assert parse_close_payload(b"") == (F.CLOSE_NO_STATUS, "")
    assert encode_close_payload(None) == b""
    with pytest.raises(ValueError):
        encode_close_payload(None, "reason without code")
    with pytest.raises(FrameError) as ei:
        parse_close_payload(b"\x03")
    assert ei.value.code == F.CLOSE_PROTOCOL_ERROR
    with pytest.raises(FrameError) as ei:
        parse_close_payload(struct.pack("!H", 1000) + b"\xff\xfe")
    assert ei.value.code == F.CLOSE_INVALID_PAYLOAD
    with pytest.raises(FrameError):
        parse_close_payload(struct.pack("!H", 1000) + b"x" * 124)
    with pytest.raises(ValueError):
        encode_close_payload(1000, "x" * 124)
    with pytest.raises(ValueError):
        encode_close_payload(1000, "☃" * 42)  # 126 bytes in UTF-8


def test_truncate_reason_never_splits_characters():
    assert truncate_reason("short") == "short"
    cut = truncate_reason("☃" * 100)  # 3 bytes each
    assert cut == "☃" * 41 and len(cut.encode()) == 123
    cut = truncate_reason("a" + "€" * 60)
    assert len(cut.encode()) <= 123 and cut == "a" + "€" * 40


# --------------------------------------------------------------------------- websocket-client


def test_install_websocket_client_mask_is_idempotent_and_equivalent():
    from websocket import _abnf

    wsc.uninstall_websocket_client_mask()
    original = _abnf.ABNF.mask
    key = os.urandom(4)
    samples = [b"", b"a", os.urandom(37), os.urandom(4096), os.urandom(100_003)]
    stock = [_abnf.ABNF.mask(key, s) for s in samples]
    stock_str = _abnf.ABNF.mask("abcd", "text")
    try:
        assert wsc.install_websocket_client_mask() is True
        patched = _abnf.ABNF.mask
        assert patched is not original
        assert wsc.install_websocket_client_mask() is True
        assert _abnf.ABNF.mask is patched  # second call changed nothing
        assert [_abnf.ABNF.mask(key, s) for s in samples] == stock
        assert _abnf.ABNF.mask("abcd", "text") == stock_str
        assert _abnf.ABNF.mask(key, None) == b""
        import array

        assert _abnf._mask(array.array("B", key), array.array("B", samples[3])) == stock[3]
        # a whole frame still round-trips through websocket-client's own parser code
        frame = _abnf.ABNF.create_frame(samples[4], _abnf.ABNF.OPCODE_BINARY).format()
        h = parse_header(frame)
        assert isinstance(h, FrameHeader) and h.masked
        assert ref_mask(frame[h.header_length :][:64], h.mask_key) == samples[4][:64]
        assert mask_bytes(frame[h.header_length :], h.mask_key) == samples[4]
    finally:
        assert wsc.uninstall_websocket_client_mask() is True
    assert _abnf.ABNF.mask is original
    assert wsc.uninstall_websocket_client_mask() is False
