"""The Redis store's own client, without a server: replies read across any chunking, the
protocol's violations, and URLs (a password never shown)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rees46_loyalty.idempotency import _resp
from rees46_loyalty.idempotency._resp import (
    Endpoint,
    RedisConnectionError,
    RespError,
    _Connection,
    pack,
)

replies = st.recursive(
    st.one_of(
        st.binary(max_size=40),
        st.integers(-(2**63), 2**63 - 1),
        st.none(),
        st.text(alphabet="abc XYZ", max_size=10).map(lambda t: RespError("ERR " + t)),
    ),
    lambda children: st.lists(children, max_size=4),
    max_leaves=12,
)


def _encode(reply: Any) -> bytes:
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, RespError):
        return b"-" + str(reply).encode() + b"\r\n"
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    return b"*%d\r\n" % len(reply) + b"".join(_encode(item) for item in reply)


def _same(got: Any, sent: Any) -> bool:
    if isinstance(sent, RespError):
        return isinstance(got, RespError) and str(got) == str(sent)
    if isinstance(sent, list):
        return isinstance(got, list) and len(got) == len(sent) and all(map(_same, got, sent))
    return bool(got == sent and type(got) is type(sent))


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.aborted = True


def _connection() -> tuple[_Connection, _Transport]:
    connection, transport = _Connection(timeout=10.0), _Transport()
    connection.connection_made(transport)
    return connection, transport


@settings(max_examples=200, deadline=None)
@given(sent=st.lists(replies, min_size=1, max_size=5), cuts=st.lists(st.integers(0, 400)))
async def test_replies_settle_their_calls_in_order_however_they_arrive(
    sent: list[Any], cuts: list[int]
) -> None:
    """Any replies, cut into chunks anywhere: each call gets its own, whole and exact."""
    connection, _ = _connection()
    calls = [connection.send(b"PING") for _ in sent]
    stream = b"".join(map(_encode, sent))
    edges = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    for start, end in itertools.pairwise(edges):
        connection.data_received(stream[start:end])
    assert all(call.done() for call in calls)
    assert all(_same(call.result(), reply) for call, reply in zip(calls, sent, strict=True))


async def test_a_cancelled_calls_reply_is_read_and_never_given_to_the_next() -> None:
    """The first caller gave up; its reply still comes first, and is dropped."""
    connection, _ = _connection()
    first, second = connection.send(b"GET a"), connection.send(b"GET b")
    first.cancel()
    connection.data_received(b"$1\r\na\r\n$1\r\nb\r\n")
    assert second.result() == b"b"


@pytest.mark.parametrize(
    "stream",
    [
        b"?what\r\n",  # an unknown kind
        b"$3\r\nabcd\r\n",  # longer than announced
        b":12x\r\n",  # a malformed number
        b"$9999999999999\r\n",  # beyond the longest reply accepted
        b"*1\r\n" * 9 + b":1\r\n",  # nested beyond the deepest accepted
        b"+OK\r\n+OK\r\n",  # a reply nothing asked for
        b"+" + b"x" * (64 * 1024 + 1),  # a line without an end
    ],
)
async def test_a_server_breaking_the_protocol_fails_the_calls_and_the_connection(
    stream: bytes,
) -> None:
    """No guessing: every waiting call fails, the connection is dropped and never used again."""
    connection, transport = _connection()
    call = connection.send(b"PING")
    connection.data_received(stream)
    if call.done() and not call.exception():  # the first reply was sound; the second was not
        assert stream == b"+OK\r\n+OK\r\n"
    else:
        with pytest.raises(RedisConnectionError):
            call.result()
    assert transport.aborted
    assert not connection.usable
    with pytest.raises(RedisConnectionError):
        connection.send(b"PING")


async def test_a_lost_connection_fails_every_waiting_call() -> None:
    """Redis goes away with calls out: each raises RedisConnectionError (the store's caller then
    knows nothing was recorded), none hangs."""
    connection, _ = _connection()
    calls = [connection.send(b"PING") for _ in range(3)]
    connection.connection_lost(ConnectionResetError(104, "Connection reset by peer"))
    for call in calls:
        with pytest.raises(RedisConnectionError, match="Connection reset by peer"):
            call.result()


async def test_a_long_reply_is_read_once_however_it_is_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An array of a 1 MiB string and 2,000 small ones arriving in 1 KiB chunks: each part is
    read about once (the reader keeps what it read of an array cut short), not again from the
    array's start on every chunk."""
    reply = [b"x" * 2**20, *(b"%d" % n for n in range(2000))]
    stream = _encode(reply)
    looks = 0
    real = _resp._atom

    def counting(buffer: bytearray, start: int) -> Any:
        nonlocal looks
        looks += 1
        return real(buffer, start)

    monkeypatch.setattr(_resp, "_atom", counting)
    connection, _ = _connection()
    call = connection.send(b"GET big")
    for start in range(0, len(stream), 1024):
        connection.data_received(stream[start : start + 1024])
    assert call.result() == reply
    assert looks < 2 * (len(reply) + 1) + len(stream) // 1024 // 100


def test_commands_are_packed_as_arrays_of_bulk_strings() -> None:
    """Bytes, text (UTF-8) and integers, lengths in bytes."""
    assert pack(("SET", "ключ", 12, b"\r\n")) == (
        b"*4\r\n$3\r\nSET\r\n$8\r\n\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87\r\n$2\r\n12\r\n$2\r\n\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost", Endpoint(host="localhost")),
        ("redis://r.example:6380/3", Endpoint(host="r.example", port=6380, db=3)),
        ("redis://:p%40ss@h/0", Endpoint(host="h", password="p@ss")),
        ("redis://app:pw@h?db=2", Endpoint(host="h", username="app", password="pw", db=2)),
        ("rediss://h:6390", Endpoint(host="h", port=6390, tls=True)),
        ("unix:///run/redis.sock?db=1", Endpoint(path="/run/redis.sock", db=1)),
    ],
)
def test_urls_are_read(url: str, expected: Endpoint) -> None:
    """The URLs of redis-py's documentation, read the same way."""
    assert Endpoint.of(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://:hunter2@h", "starts with redis://"),
        ("redis://:hunter2@h/x", "not a number"),
        ("redis://:hunter2@h:99999", "not a number"),
        ("redis://:hunter2@h?socket_timeout=5", "socket_timeout"),
        ("unix://:hunter2@", "socket's path"),
    ],
)
def test_a_url_the_store_cannot_read_is_refused_without_showing_it(url: str, message: str) -> None:
    """A clear ValueError naming what is wrong, never the URL (its password)."""
    with pytest.raises(ValueError, match=message) as caught:
        Endpoint.of(url)
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(Endpoint.of("redis://u:hunter2@h"))
