from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vuer_sync import codec
from vuer_sync.errors import ProtocolError


def test_outbound_matches_vuer_settings():
    data = codec.encode({"ts": 1.5, "etype": "SET", "data": {"x": 0.1, "n": 3, "b": b"\x00\x01"}})
    # float32 (0xca) as Vuer's use_single_float, bytes as bin 8 (0xc4)
    assert b"\xca" in data and b"\xc4\x02\x00\x01" in data
    msg = msgpack.unpackb(data, raw=False)
    assert msg["ts"] == 1500 and isinstance(msg["ts"], int)
    assert msg["data"]["x"] == pytest.approx(0.1, abs=1e-7) and msg["data"]["x"] != 0.1


def test_numpy_values_every_scalar_kind():
    value = {
        "arr": np.array([[1.0, 2.0], [3.0, 4.0]]),
        "bool": np.bool_(True),
        "i64": np.int64(7),
        "u8": np.uint8(255),
        "f16": np.float16(0.5),
        "f32": np.float32(0.25),
        "str": np.str_("hi"),
        "mv": memoryview(b"abc"),
        "ba": bytearray(b"xyz"),
    }
    msg = codec.decode(codec.encode({"etype": "X", "data": value}))["data"]
    assert msg == {"arr": [[1.0, 2.0], [3.0, 4.0]], "bool": True, "i64": 7, "u8": 255,
                   "f16": 0.5, "f32": 0.25, "str": "hi", "mv": b"abc", "ba": b"xyz"}


def test_unpackable_names_field_path():
    with pytest.raises(TypeError, match=r"data\.nodes\[0\]\.position"):
        codec.encode({"etype": "UPSERT", "data": {"nodes": [{"key": "a", "position": object()}]}})
    with pytest.raises(TypeError, match=r"data\.s"):
        codec.encode({"etype": "X", "data": {"s": {1, 2}}})
    # the packer is still usable after a failure
    assert codec.decode(codec.encode({"etype": "OK"}))["etype"] == "OK"


def test_elements_nested_in_data_are_serialized():
    class Fake:
        def serialize(self):
            return {"key": "k", "tag": "Box"}

    msg = codec.decode(codec.encode({"etype": "X", "data": {"el": Fake()}}))
    assert msg["data"]["el"] == {"key": "k", "tag": "Box"}


def test_inbound_js_undefined_and_timestamp():
    raw = msgpack.packb({"etype": "CLICK", "key": msgpack.ExtType(0, b"\x00"),
                         "value": msgpack.Timestamp(1700000000, 5 * 10**8)})
    msg = codec.decode(raw)
    assert msg["key"] is None
    assert msg["value"] == pytest.approx(1700000000.5)


@pytest.mark.parametrize("ts,expected", [
    (1795315617546, 1795315617.546),       # int ms (python peers)
    (1795315617.546, 1795315617.546),      # float seconds (browser)
    (1795315617546.0, 1795315617.546),     # float ms (HEAD_MOVE)
    (1795315617, 1795315617.0),            # int seconds
    (-1795315617546, -1795315617.546),     # int ms before 1970
])
def test_ts_normalisation(ts, expected):
    assert codec.normalize_ts(ts) == pytest.approx(expected)


def test_missing_or_bad_ts_uses_receive_time():
    assert codec.normalize_ts(None, now=42.0) == 42.0
    assert codec.normalize_ts("x", now=42.0) == 42.0
    assert codec.normalize_ts(float("nan"), now=42.0) == 42.0
    assert codec.normalize_ts(True, now=42.0) == 42.0


@pytest.mark.parametrize("payload,match", [
    ("text", "text frame"),
    (b"", "empty"),
    (msgpack.packb([1, 2, 3]), "map"),
    (msgpack.packb({"value": 1}), "etype"),
    (msgpack.packb({"etype": 5}), "etype"),
    (msgpack.packb({1: 2, "etype": "X"}, strict_types=False), "keys|malformed"),
    (msgpack.packb({"etype": "X", "value": "y" * 100})[:-10], "truncated"),
    (msgpack.packb({"etype": "X"}) + b"\x01", "trailing"),
    (b"\xc1", "malformed"),
])
def test_bad_input_is_one_protocol_error(payload, match):
    with pytest.raises(ProtocolError, match=match):
        codec.decode(payload)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, width=64) | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


def _close(a, b):
    if isinstance(a, float):
        with np.errstate(over="ignore"):
            f32 = float(np.float32(a))
        # float32 as Vuer sends; a message with a value beyond float32's range goes as float64
        return isinstance(b, float) and (b == f32 or b == a)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_close, a, b))
    return a == b and type(a) is type(b)


@settings(max_examples=300, deadline=None)
@given(value=json_like)
def test_roundtrip_property(value):
    out = codec.decode(codec.encode({"etype": "X", "value": value}))
    assert out["etype"] == "X"
    assert _close(value, out["value"])


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=200))
def test_garbage_only_raises_protocol_error(data):
    try:
        msg = codec.decode(data)
    except ProtocolError:
        return
    assert isinstance(msg, dict) and isinstance(msg["etype"], str)


# -- encode_parts: large bytes referenced, never copied ----------------------------------

BIG = codec.LARGE_BINARY


def _node(key, **props):
    return {"key": key, "tag": "PointCloud", **props}


def test_encode_parts_is_byte_identical_and_references_large_values():
    verts, cols = np.arange(BIG * 3, dtype=np.uint8).tobytes(), bytes(range(256)) * 400
    msg = {"etype": "UPSERT", "ts": 1.25, "data": {
        "nodes": [_node("pc", vertices=verts, colors=cols, size=0.01),
                  {"key": "grp", "children": [_node("inner", vertices=verts)]}],
        "to": None, "img": cols}}
    seg = codec.encode_parts(msg)
    assert isinstance(seg, codec.Segments) and len(seg.large) == 4
    assert bytes(seg) == codec.encode(msg) and len(seg) == len(codec.encode(msg))
    # the large values are the caller's objects themselves (no copy), written as bin32
    assert sum(p is verts for p in seg.parts) == 2 and sum(p is cols for p in seg.parts) == 2
    out = codec.unpack(seg)
    assert out == msgpack.unpackb(codec.encode(msg), raw=False)
    assert out["data"]["nodes"][0]["vertices"] is verts
    assert out["data"]["nodes"][1]["children"][0]["vertices"] is verts
    assert msg["data"]["nodes"][0]["vertices"] is verts  # the caller's message is untouched


def test_encode_parts_falls_back_to_plain_bytes():
    small = {"etype": "UPDATE", "data": {"nodes": [{"key": "b", "position": [1, 2, 3]}]}}
    assert codec.encode_parts(small) == codec.encode(small)
    # mutable buffers are copied (the caller may change them after the call) ...
    mutable = {"etype": "X", "data": {"a": bytearray(BIG), "b": memoryview(bytes(BIG))}}
    assert codec.encode_parts(mutable) == codec.encode(mutable)
    # ... and long node lists are not searched (a 100-node update never carries clouds)
    many = {"etype": "UPDATE", "data": {"nodes": [_node(f"n{i}", v=bytes(BIG)) for i in range(17)]}}
    assert codec.encode_parts(many) == codec.encode(many)
    assert codec.encode_parts({"etype": "X", "data": [bytes(BIG)]}) == \
        codec.encode({"etype": "X", "data": [bytes(BIG)]})
    with pytest.raises(TypeError, match="data.nodes"):
        codec.encode_parts({"etype": "X", "data": {"nodes": [{"v": bytes(BIG), "o": object()}]}})


@settings(max_examples=200, deadline=None)
@given(value=json_like, sizes=st.lists(st.sampled_from([0, 10, BIG - 1, BIG, BIG + 7]),
                                       max_size=4))
def test_encode_parts_property(value, sizes):
    data = {"nodes": [_node(f"k{i}", blob=b"\x01" * n, extra=value) for i, n in enumerate(sizes)],
            "value": value}
    msg = {"etype": "UPSERT", "data": data}
    seg = codec.encode_parts(msg)
    assert bytes(seg) == codec.encode(msg)
    assert codec.unpack(seg) == msgpack.unpackb(codec.encode(msg), raw=False,
                                                 strict_map_key=False)
