"""The envelope and the outcome record (asyncpool._envelope): what travels, and what is refused."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncpool import Retry
from asyncpool._codecs import Codec, JsonCodec, MsgpackCodec, PayloadError, PickleCodec
from asyncpool._envelope import (
    FORMAT,
    Envelope,
    Outcome,
    check_remote_key,
    partition_of,
    retry_numbers,
)

JSON = JsonCodec()
CODECS: list[Codec] = [JSON, MsgpackCodec(), PickleCodec(b"0123456789abcdef")]


def wire(**overrides: Any) -> dict[str, Any]:
    """A well-formed envelope as the codec sees it, with some fields changed."""
    raw: dict[str, Any] = {
        "v": FORMAT,
        "id": "abc.1",
        "task": "app.add",
        "args": [1, 2],
        "kwargs": {"z": 3},
        "timeout": None,
        "retry": None,
        "priority": 0,
        "key": None,
        "max_deliver": None,
        "at": 1700000000.5,
        "result": True,
    }
    raw.update(overrides)
    return raw


def full_envelope() -> Envelope:
    return Envelope(
        id="abc.7",
        task="app.resize",
        args=["a.png", 3],
        kwargs={"quality": 0.5, "tags": ["x"]},
        timeout=2.5,
        retry=retry_numbers(Retry(attempts=3, backoff=0.5)),
        priority=-2,
        key="user-7",
        max_deliver=4,
        enqueued_at=1700000000.25,
        result=False,
    )


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_envelope_round_trips_every_field(codec: Codec) -> None:
    """decode(encode(e)) == e with every field set, under every codec."""
    envelope = full_envelope()
    assert Envelope.decode(envelope.encode(codec), codec) == envelope


def test_envelope_wire_layout_is_versioned() -> None:
    """The wire form carries the format version `v` and the enqueue time as `at`."""
    raw = JSON.decode(full_envelope().encode(JSON))
    assert raw["v"] == FORMAT == 1
    assert raw["at"] == 1700000000.25
    assert set(raw) == set(wire())


def test_envelope_defaults_are_a_plain_job() -> None:
    """A new envelope has no limit, no retry, priority 0, no key, and wants its result."""
    envelope = Envelope(id="x.1", task="t", args=[], kwargs={})
    assert (envelope.timeout, envelope.retry, envelope.priority, envelope.key) == (
        None,
        None,
        0,
        None,
    )
    assert envelope.max_deliver is None
    assert envelope.result is True
    assert envelope.enqueued_at > 1.6e9


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(
    job_id=st.text(min_size=1),
    task=st.text(min_size=1),
    args=st.lists(_json_values, max_size=4),
    kwargs=st.dictionaries(st.text(), _json_values, max_size=4),
    timeout=st.none() | st.floats(min_value=1e-6, max_value=1e9),
    priority=st.integers(min_value=-(2**31), max_value=2**31),
    key=st.none() | st.text() | st.integers(min_value=-(2**63), max_value=2**63),
    max_deliver=st.none() | st.integers(min_value=1, max_value=1000),
    enqueued_at=st.floats(min_value=0, max_value=4e9),
    result=st.booleans(),
)
def test_envelope_json_round_trip_property(
    job_id: str,
    task: str,
    args: list[Any],
    kwargs: dict[str, Any],
    timeout: float | None,
    priority: int,
    key: str | int | None,
    max_deliver: int | None,
    enqueued_at: float,
    result: bool,
) -> None:
    """Any envelope whose arguments are JSON values survives the json codec unchanged."""
    envelope = Envelope(
        id=job_id,
        task=task,
        args=args,
        kwargs=kwargs,
        timeout=timeout,
        priority=priority,
        key=key,
        max_deliver=max_deliver,
        enqueued_at=enqueued_at,
        result=result,
    )
    assert Envelope.decode(envelope.encode(JSON), JSON) == envelope


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"[1, 2]", b'"a string"', b"null", b"42"],
    ids=repr,
)
def test_envelope_decode_refuses_garbage(data: bytes) -> None:
    """Bytes that are not a JSON mapping raise PayloadError."""
    with pytest.raises(PayloadError):
        Envelope.decode(data, JSON)


@pytest.mark.parametrize("version", [None, 0, 2, "1", [1]], ids=repr)
def test_envelope_decode_refuses_unknown_format_version(version: Any) -> None:
    """An envelope of another (or no) format version is refused, naming the version."""
    raw = wire(v=version)
    if version is None:
        del raw["v"]
    with pytest.raises(PayloadError, match="unknown envelope format"):
        Envelope.decode(JSON.encode(raw), JSON)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", 7),
        ("id", None),
        ("task", ["app.add"]),
        ("args", "1,2"),
        ("args", {"0": 1}),
        ("kwargs", [["z", 3]]),
        ("kwargs", None),
        ("priority", True),
        ("priority", 1.5),
        ("priority", "1"),
        ("at", "yesterday"),
        ("at", None),
        ("result", 1),
        ("result", "yes"),
        ("key", 1.5),
        ("key", True),
        ("key", ["k"]),
        ("max_deliver", 0),
        ("max_deliver", True),
        ("max_deliver", 2.0),
        ("retry", "three"),
        ("retry", [1, 2]),
        ("retry", {"attempts": 0}),
        ("retry", {"attempts": 2, "on": "ValueError"}),
        ("retry", {"attempts": 2, "jitter": 5}),
    ],
    ids=lambda v: repr(v)[:20],
)
def test_envelope_decode_refuses_fields_of_the_wrong_type(field: str, value: Any) -> None:
    """A field of the wrong type or value (a bool priority, a float key...) is a PayloadError."""
    with pytest.raises(PayloadError, match="malformed envelope"):
        Envelope.decode(JSON.encode(wire(**{field: value})), JSON)


def test_envelope_decode_refuses_a_missing_field() -> None:
    """An envelope without one of its required fields is a PayloadError."""
    for field in ("id", "task", "args", "kwargs", "priority", "at", "result"):
        raw = wire()
        del raw[field]
        with pytest.raises(PayloadError, match="malformed envelope"):
            Envelope.decode(JSON.encode(raw), JSON)


@pytest.mark.parametrize("timeout", [0, -1, "5", True, [5]], ids=repr)
def test_envelope_decode_refuses_bad_timeout(timeout: Any) -> None:
    """A timeout that is not a number of seconds > 0 is a PayloadError."""
    with pytest.raises(PayloadError, match="malformed envelope: timeout must be"):
        Envelope.decode(JSON.encode(wire(timeout=timeout)), JSON)


def test_envelope_decode_refuses_kwargs_with_non_str_keys() -> None:
    """Keyword argument names that are not strings (possible in msgpack) are refused."""
    codec = MsgpackCodec()
    with pytest.raises(PayloadError, match="keyword argument names must be strings"):
        Envelope.decode(codec.encode(wire(kwargs={1: "one"})), codec)


def test_envelope_decode_takes_tuple_args_from_a_codec_as_a_list() -> None:
    """Positional arguments decoded as a tuple (pickle) come out as a list."""
    codec = PickleCodec(b"0123456789abcdef")
    envelope = Envelope.decode(codec.encode(wire(args=(1, 2))), codec)
    assert envelope.args == [1, 2]


def test_envelope_decode_accepts_an_int_enqueue_time() -> None:
    """`at` written as an int is read as a float."""
    envelope = Envelope.decode(JSON.encode(wire(at=1700000000)), JSON)
    assert envelope.enqueued_at == 1700000000.0
    assert isinstance(envelope.enqueued_at, float)


def test_retry_numbers_carry_a_policy_without_its_code() -> None:
    """retry_numbers keeps the numbers of a Retry, and retry_policy rebuilds it."""
    policy = Retry(attempts=4, backoff=0.25, backoff_max=3, multiplier=3, jitter=0.5)
    numbers = retry_numbers(policy)
    assert numbers == {
        "attempts": 4,
        "backoff": 0.25,
        "backoff_max": 3,
        "multiplier": 3,
        "jitter": 0.5,
    }
    envelope = Envelope(id="x.1", task="t", args=[], kwargs={}, retry=numbers)
    assert envelope.retry_policy() == policy


def test_retry_numbers_refuse_a_policy_with_on() -> None:
    """A Retry with its own on= cannot travel: ValueError pointing to the task's policy."""
    with pytest.raises(ValueError, match=r"@broker.task\(retry=Retry\(\.\.\., on=\.\.\.\)\)"):
        retry_numbers(Retry(attempts=2, on=ValueError))


def test_envelope_retry_policy_takes_on_from_the_task() -> None:
    """A job's own retry numbers keep the task policy's on=; with no numbers, the task's policy."""
    base = Retry(attempts=5, on=(ConnectionError,))
    envelope = Envelope(
        id="x.1", task="t", args=[], kwargs={}, retry=retry_numbers(Retry(attempts=2))
    )
    policy = envelope.retry_policy(base)
    assert policy is not None
    assert (policy.attempts, policy.on) == (2, (ConnectionError,))
    plain = Envelope(id="x.2", task="t", args=[], kwargs={})
    assert plain.retry_policy(base) is base
    assert plain.retry_policy() is None


def test_envelope_retry_policy_refuses_infinite_attempts() -> None:
    """Retry numbers with infinite (float) attempts are a ValueError, not an OverflowError."""
    envelope = Envelope(id="x.1", task="t", args=[], kwargs={}, retry={"attempts": math.inf})
    with pytest.raises(ValueError, match="attempts must be an int"):
        envelope.retry_policy()


@pytest.mark.parametrize("key", [None, "user-7", 7, -3, 2**80])
def test_check_remote_key_takes_str_int_and_none(key: str | int | None) -> None:
    """A str, an int or None is a remote key, returned unchanged."""
    assert check_remote_key(key) == key


@pytest.mark.parametrize("key", [True, 1.5, b"k", ("a",), frozenset()], ids=repr)
def test_check_remote_key_refuses_other_types(key: object) -> None:
    """Any other key (a bool, a float, bytes, a tuple) is a TypeError naming its type."""
    with pytest.raises(TypeError, match=f"must be a str or an int.*got {type(key).__name__}"):
        check_remote_key(key)


def test_partition_of_is_stable_across_processes() -> None:
    """partition_of is crc32 of the typed key: fixed values, the same on every machine."""
    assert partition_of("user-7", 8) == 7
    assert partition_of("a", 8) == 0
    assert partition_of(7, 8) == 3
    assert partition_of(0, 8) == 0


def test_partition_of_tells_str_keys_from_int_keys() -> None:
    """The key "7" and the key 7 are different keys, in different partitions here."""
    assert partition_of("7", 1 << 30) != partition_of(7, 1 << 30)


@given(
    key=st.text() | st.integers(),
    partitions=st.integers(min_value=1, max_value=1024),
)
def test_partition_of_is_in_range_and_deterministic(key: str | int, partitions: int) -> None:
    """0 <= partition_of(key, n) < n, and the same key always gives the same partition."""
    first = partition_of(key, partitions)
    assert 0 <= first < partitions
    assert partition_of(key, partitions) == first


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_outcome_round_trips(codec: Codec) -> None:
    """decode(encode(o)) == o for each terminal state."""
    outcomes = [
        Outcome("succeeded", value={"size": [1, 2]}, attempts=1, finished_at=5.5, worker="h:1"),
        Outcome(
            "failed",
            error={"type": "builtins.ValueError", "message": "bad", "traceback": "", "args": []},
            attempts=3,
            finished_at=6.0,
            worker="h:2",
        ),
        Outcome("cancelled", finished_at=7.0, worker="cancelled by abc"),
        Outcome("dead", error={"type": "UnknownTask"}, attempts=1, finished_at=8.0),
    ]
    for outcome in outcomes:
        assert Outcome.decode(outcome.encode(codec), codec) == outcome


@pytest.mark.parametrize(
    "data",
    [b"garbage", b"[]", b"{}", b'{"state": "running"}', b'{"state": null}'],
    ids=repr,
)
def test_outcome_decode_refuses_what_is_no_outcome(data: bytes) -> None:
    """Bytes that are no terminal record (no known state) raise PayloadError."""
    with pytest.raises(PayloadError):
        Outcome.decode(data, JSON)


def test_outcome_decode_fills_missing_fields() -> None:
    """A record with only its state reads as 0 attempts, no value, no error, no worker."""
    outcome = Outcome.decode(b'{"state": "dead"}', JSON)
    assert outcome == Outcome("dead", value=None, error=None, attempts=0, finished_at=0.0)


@pytest.mark.parametrize(
    "raw",
    [
        {"state": "failed", "attempts": "many"},
        {"state": "failed", "attempts": [1]},
        {"state": "succeeded", "at": "noon"},
        {"state": "failed", "error": "boom"},
    ],
    ids=repr,
)
def test_outcome_decode_refuses_fields_of_the_wrong_shape(raw: dict[str, Any]) -> None:
    """A record whose fields have the wrong shape raises PayloadError, as documented."""
    with pytest.raises(PayloadError):
        Outcome.decode(JSON.encode(raw), JSON)
