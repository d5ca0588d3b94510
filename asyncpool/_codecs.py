"""Codecs: how a job's envelope and its outcome become bytes on a broker, and back.

Three are offered, chosen by name on the broker (`codec="json"`):

* `JsonCodec` (the default): readable on the wire, safe to decode from
  anyone; arguments must be JSON values (`dict`, `list`, `str`, numbers,
  `bool`, `None`).
* `MsgpackCodec` (`"msgpack"`, extra `msgpack`): smaller and faster; also safe
  to decode; `bytes` travel as they are.
* `PickleCodec(secret=...)`: any picklable argument, but only by explicit
  choice and only signed: every payload carries an HMAC-SHA256 of its bytes
  under the shared secret, checked before anything is unpickled, so a
  worker never unpickles bytes that a holder of the secret did not write.

A payload that does not decode raises `PayloadError`; a worker turns it into a
dead letter, never a crash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
from typing import Any, Final, Protocol, runtime_checkable

__all__ = ("Codec", "JsonCodec", "MsgpackCodec", "PayloadError", "PickleCodec", "codec_named")


class PayloadError(ValueError):
    """Bytes from the broker that do not decode, or decode to the wrong shape.

    Raised by codecs and by the envelope when they read a payload; a worker
    makes the message a dead letter with this error.
    """


@runtime_checkable
class Codec(Protocol):
    """Turns plain values (dicts, lists, strings, numbers) into bytes and back."""

    @property
    def name(self) -> str:
        """The name written beside each payload, so a reader knows how to decode it."""
        ...

    def encode(self, value: Any) -> bytes:
        """Bytes for `value`.

        Raises:
            TypeError: `value` holds something this codec cannot write; the
                message names it.
        """
        ...

    def decode(self, data: bytes) -> Any:
        """The value `data` holds.

        Raises:
            PayloadError: `data` is not a payload of this codec.
        """
        ...


class JsonCodec:
    """JSON (UTF-8): the default codec."""

    name: Final = "json"

    def encode(self, value: Any) -> bytes:
        try:
            return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"the json codec cannot send this value ({exc}); pass JSON values "
                "(dict, list, str, int, float, bool, None), or choose codec='msgpack' "
                "or a PickleCodec on the broker"
            ) from exc

    def decode(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise PayloadError(f"not a JSON payload: {exc}") from exc

    def __repr__(self) -> str:
        return "JsonCodec()"


class MsgpackCodec:
    """MessagePack (extra `msgpack`): compact, and `bytes` travel as they are."""

    name: Final = "msgpack"

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "codec='msgpack' needs the msgpack package: "
                "pip install 'asyncpool-dispatch[msgpack]'"
            ) from exc
        self._msgpack = msgpack

    def encode(self, value: Any) -> bytes:
        try:
            data: bytes = self._msgpack.packb(value, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"the msgpack codec cannot send this value ({exc})") from exc
        return data

    def decode(self, data: bytes) -> Any:
        try:
            return self._msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated types
            raise PayloadError(f"not a msgpack payload: {exc}") from exc

    def __repr__(self) -> str:
        return "MsgpackCodec()"


_DIGEST_SIZE: Final = hashlib.sha256().digest_size


class PickleCodec:
    """Pickle, signed with HMAC-SHA256 under a secret every process shares.

    Opt in only when arguments cannot be plain values, and keep the secret
    secret: whoever holds it can make a worker run code.

    Args:
        secret: At least 16 bytes; the same on producers and workers.

    Raises:
        TypeError: `secret` is not bytes.
        ValueError: `secret` is shorter than 16 bytes.
    """

    name: Final = "pickle-hmac"

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes):
            raise TypeError(f"PickleCodec secret must be bytes, got {type(secret).__name__}")
        if len(secret) < 16:
            raise ValueError(
                f"PickleCodec secret must be at least 16 bytes, got {len(secret)}; "
                "use e.g. secrets.token_bytes(32)"
            )
        self._secret = secret

    def encode(self, value: Any) -> bytes:
        try:
            body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise TypeError(f"the pickle codec cannot send this value ({exc})") from exc
        return hmac.digest(self._secret, body, "sha256") + body

    def decode(self, data: bytes) -> Any:
        signature, body = data[:_DIGEST_SIZE], data[_DIGEST_SIZE:]
        if len(signature) < _DIGEST_SIZE or not hmac.compare_digest(
            signature, hmac.digest(self._secret, body, "sha256")
        ):
            raise PayloadError("pickle payload refused: its signature does not match the secret")
        try:
            return pickle.loads(body)
        except Exception as exc:
            raise PayloadError(f"signed pickle payload does not unpickle: {exc}") from exc

    def __repr__(self) -> str:
        return "PickleCodec(secret=...)"


def codec_named(codec: object) -> Codec:
    """The codec a broker's `codec=` argument names.

    Raises:
        TypeError: `codec` is neither a name nor a `Codec`.
        ValueError: an unknown name, or "pickle" (which needs a secret).
    """
    if isinstance(codec, str):
        if codec == "json":
            return JsonCodec()
        if codec == "msgpack":
            return MsgpackCodec()
        if codec in ("pickle", "pickle-hmac"):
            raise ValueError(
                "codec='pickle' is not accepted by name: pickle runs code when it "
                "decodes, so it needs a shared secret; pass codec=PickleCodec(secret=...)"
            )
        raise ValueError(f"codec must be 'json', 'msgpack' or a Codec, got {codec!r}")
    if isinstance(codec, Codec):
        return codec
    raise TypeError(f"codec must be 'json', 'msgpack' or a Codec, got {codec!r}")
