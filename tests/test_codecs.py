"""Codecs (asyncpool._codecs): round trips, refusals, and the signed pickle codec."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import pickle
from typing import Any

import pytest

from asyncpool._codecs import (
    Codec,
    JsonCodec,
    MsgpackCodec,
    PayloadError,
    PickleCodec,
    codec_named,
)

SECRET = b"0123456789abcdef-a-test-secret"

PLAIN_VALUES: list[Any] = [
    None,
    True,
    0,
    -(2**53),
    1.5,
    "",
    "naïve ☃",
    [],
    [1, "two", None, [3.0]],
    {"a": 1, "b": [True, {"c": None}]},
]


@dataclasses.dataclass(frozen=True)
class Point:
    """A picklable value no plain codec can send."""

    x: int
    y: int


def all_codecs() -> list[Codec]:
    return [JsonCodec(), MsgpackCodec(), PickleCodec(SECRET)]


@pytest.mark.parametrize("codec", all_codecs(), ids=lambda c: c.name)
@pytest.mark.parametrize("value", PLAIN_VALUES, ids=repr)
def test_codecs_round_trip_plain_values(codec: Codec, value: Any) -> None:
    """decode(encode(v)) == v for every JSON value, under every codec."""
    data = codec.encode(value)
    assert isinstance(data, bytes)
    assert codec.decode(data) == value


def test_codecs_are_codecs_with_distinct_names() -> None:
    """Each codec satisfies the Codec protocol and writes a name of its own beside payloads."""
    codecs = all_codecs()
    assert all(isinstance(c, Codec) for c in codecs)
    assert [c.name for c in codecs] == ["json", "msgpack", "pickle-hmac"]


def test_json_codec_writes_compact_readable_json() -> None:
    """The json codec writes compact UTF-8 JSON, readable by anyone."""
    assert JsonCodec().encode({"a": [1, "é"]}) == b'{"a":[1,"\\u00e9"]}'


@pytest.mark.parametrize(
    "value",
    [b"bytes", {1, 2}, Point(1, 2), float("nan"), float("inf"), {("tuple",): 1}],
    ids=repr,
)
def test_json_codec_encode_refuses_non_json_values_with_type_error(value: Any) -> None:
    """A value JSON cannot carry raises TypeError pointing to the other codecs."""
    with pytest.raises(TypeError, match="the json codec cannot send this value") as caught:
        JsonCodec().encode(value)
    assert "codec='msgpack'" in str(caught.value)


@pytest.mark.parametrize(
    "data", [b"", b"{", b"\xff\xfe\xfd", b"not json", b'{"a": 1} trailing'], ids=repr
)
def test_json_codec_decode_refuses_garbage_with_payload_error(data: bytes) -> None:
    """Bytes that are not JSON raise PayloadError, never another exception."""
    with pytest.raises(PayloadError, match="not a JSON payload"):
        JsonCodec().decode(data)


def test_json_codec_decode_refuses_deeply_nested_payload_with_payload_error() -> None:
    """A payload nested past the recursion limit is a PayloadError (a dead letter), not a crash."""
    with pytest.raises(PayloadError):
        JsonCodec().decode(b"[" * 100_000 + b"]" * 100_000)


def test_msgpack_codec_carries_bytes_and_int_keys() -> None:
    """msgpack sends bytes as bytes and keeps non-str map keys."""
    codec = MsgpackCodec()
    value = {"blob": b"\x00\xff", 7: "seven"}
    assert codec.decode(codec.encode(value)) == value


def test_msgpack_codec_encode_refuses_unpackable_values_with_type_error() -> None:
    """A value msgpack cannot write (an object, an int beyond 64 bits) raises TypeError."""
    codec = MsgpackCodec()
    with pytest.raises(TypeError, match="the msgpack codec cannot send this value"):
        codec.encode(Point(1, 2))
    with pytest.raises(TypeError, match="the msgpack codec cannot send this value"):
        codec.encode(2**70)


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01"], ids=repr)
def test_msgpack_codec_decode_refuses_garbage_with_payload_error(data: bytes) -> None:
    """Bytes that are not one complete msgpack value raise PayloadError."""
    with pytest.raises(PayloadError, match="not a msgpack payload"):
        MsgpackCodec().decode(data)


def test_pickle_codec_round_trips_any_picklable_value() -> None:
    """The pickle codec sends objects that the plain codecs cannot."""
    codec = PickleCodec(SECRET)
    value = {"point": Point(1, 2), "set": {1, 2}, "bytes": b"\x00", "tuple": (1, 2)}
    assert codec.decode(codec.encode(value)) == value


def test_pickle_codec_payload_is_signed_with_hmac_sha256() -> None:
    """A payload is HMAC-SHA256(secret, body) followed by the pickled body."""
    data = PickleCodec(SECRET).encode([1, 2])
    signature, body = data[:32], data[32:]
    assert pickle.loads(body) == [1, 2]
    assert signature == hmac.digest(SECRET, body, hashlib.sha256)


def test_pickle_codec_refuses_payload_signed_with_another_secret() -> None:
    """A payload signed under another secret is refused before it is unpickled."""
    data = PickleCodec(b"another-secret-of-16+bytes").encode([1, 2])
    with pytest.raises(PayloadError, match="signature does not match"):
        PickleCodec(SECRET).decode(data)


def test_pickle_codec_refuses_tampered_and_unsigned_payloads() -> None:
    """A changed body, a bare pickle or a short payload fails the signature check."""
    codec = PickleCodec(SECRET)
    data = codec.encode("hello")
    tampered = data[:-2] + bytes([data[-2] ^ 1]) + data[-1:]
    for bad in (tampered, pickle.dumps("hello"), b"", data[:31]):
        with pytest.raises(PayloadError, match="signature does not match"):
            codec.decode(bad)


def test_pickle_codec_signed_garbage_is_a_payload_error() -> None:
    """A correctly signed body that does not unpickle raises PayloadError, not a pickle error."""
    body = b"definitely not a pickle"
    data = hmac.digest(SECRET, body, hashlib.sha256) + body
    with pytest.raises(PayloadError, match="does not unpickle"):
        PickleCodec(SECRET).decode(data)


def test_pickle_codec_encode_refuses_unpicklable_values_with_type_error() -> None:
    """A value pickle cannot write (a lambda) raises TypeError."""
    with pytest.raises(TypeError, match="the pickle codec cannot send this value"):
        PickleCodec(SECRET).encode(lambda: None)


def test_pickle_codec_refuses_short_secret() -> None:
    """A secret under 16 bytes is refused when the codec is made, saying how long it was."""
    with pytest.raises(ValueError, match="at least 16 bytes, got 15"):
        PickleCodec(b"x" * 15)
    assert PickleCodec(b"x" * 16).decode(PickleCodec(b"x" * 16).encode(1)) == 1


@pytest.mark.parametrize("secret", ["a str secret of 16+ chars", bytearray(32), None], ids=repr)
def test_pickle_codec_refuses_non_bytes_secret(secret: Any) -> None:
    """A secret that is not bytes (a str, a bytearray) is a TypeError."""
    with pytest.raises(TypeError, match="PickleCodec secret must be bytes"):
        PickleCodec(secret)


def test_pickle_codec_repr_hides_the_secret() -> None:
    """repr() of a PickleCodec never shows its secret."""
    assert repr(PickleCodec(SECRET)) == "PickleCodec(secret=...)"
    assert "0123" not in repr(PickleCodec(SECRET))


def test_codec_named_gives_json_and_msgpack_by_name() -> None:
    """'json' and 'msgpack' name their codecs; a Codec instance is taken as it is."""
    assert isinstance(codec_named("json"), JsonCodec)
    assert isinstance(codec_named("msgpack"), MsgpackCodec)
    pickled = PickleCodec(SECRET)
    assert codec_named(pickled) is pickled


@pytest.mark.parametrize("name", ["pickle", "pickle-hmac"])
def test_codec_named_refuses_pickle_by_name_pointing_to_pickle_codec(name: str) -> None:
    """Pickle by name is refused: the message says to pass PickleCodec(secret=...)."""
    with pytest.raises(ValueError, match=r"PickleCodec\(secret=\.\.\.\)"):
        codec_named(name)


def test_codec_named_refuses_unknown_names_and_non_codecs() -> None:
    """An unknown name is a ValueError; a value that is no codec is a TypeError."""
    with pytest.raises(ValueError, match="codec must be 'json', 'msgpack' or a Codec, got 'yaml'"):
        codec_named("yaml")
    with pytest.raises(TypeError, match="codec must be 'json', 'msgpack' or a Codec, got 3"):
        codec_named(3)
    with pytest.raises(TypeError, match="got None"):
        codec_named(None)
