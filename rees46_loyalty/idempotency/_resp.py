"""A small Redis client for the Redis store: scripts over one multiplexed connection per loop.

The store sends a few commands per call (an ``EVALSHA`` before and after it), each a few hundred
bytes. A general client's machinery (a pool checkout and a health read per command, timeouts
around every read) cost more client CPU than the commands themselves: about 130 µs per command
with redis-py here, against 30 to 45 µs with this one (see the performance page). Commands of
every task of a loop share one connection: each is written at once, and the replies, which
Redis sends in the order of the commands, settle the waiting calls in that order. A call
cancelled while its command is out still has its reply read (and dropped), so no reply is ever
taken for another's.

It speaks RESP2 to one server: ``redis://``, ``rediss://`` (TLS, verified) and ``unix://``
URLs, with a user name, a password and a database. For anything else (Sentinel, Cluster, client
certificates, timeouts of your own), pass the store a ``redis.asyncio.Redis`` client instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import ssl
import weakref
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from attrs import field, frozen

__all__ = ["RedisConnectionError", "RespClient", "RespError", "RespScript", "parse_reply"]

#: The longest reply accepted (Redis's own bound on a bulk string, ``proto-max-bulk-len``).
MAX_BULK = 512 * 1024 * 1024
#: The deepest nesting of arrays accepted (the store's scripts answer two levels).
MAX_DEPTH = 8
_CONNECT_TIMEOUT = 10.0


class RespError(Exception):
    """An error reply of Redis (``-ERR ...``, ``-NOSCRIPT ...``)."""


class RedisConnectionError(ConnectionError):
    """Redis could not be reached, or its connection failed; says where, never the password."""


class _ProtocolError(RedisConnectionError):
    """The server broke the protocol: the connection is dropped."""


@frozen(kw_only=True)
class Endpoint:
    """Where a Redis is and how to log in; the password is in no repr."""

    host: str | None = None
    port: int = 6379
    path: str | None = None
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0

    def auth_command(self) -> bytes:
        """``AUTH [user] password``, packed."""
        if self.username:
            return pack(("AUTH", self.username, self.password or ""))
        return pack(("AUTH", self.password or ""))

    @classmethod
    def of(cls, url: str) -> Endpoint:
        """Read a ``redis://``, ``rediss://`` or ``unix://`` URL; its password is never quoted."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"a Redis URL starts with redis://, rediss:// or unix://, not {scheme or '?'}://"
            )
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"db"})
        if unknown:
            raise ValueError(
                f"the Redis URL has options the store does not read ({', '.join(unknown)}); "
                "pass a redis.asyncio.Redis client of your own for them"
            )
        db_text = query["db"][-1] if "db" in query else ""
        if scheme != "unix" and parts.path.strip("/"):
            db_text = parts.path.strip("/")
        try:
            db = int(db_text or 0)
            port = parts.port or 6379
        except ValueError:
            raise ValueError("the Redis URL's port or database is not a number") from None
        if db < 0:
            raise ValueError("the Redis URL's database is not a number >= 0")
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if scheme == "unix":
            if not parts.path:
                raise ValueError("a unix:// Redis URL needs the socket's path")
            return cls(path=parts.path, username=username, password=password, db=db)
        return cls(
            host=parts.hostname or "localhost",
            port=port,
            tls=scheme == "rediss",
            username=username,
            password=password,
            db=db,
        )


def pack(args: tuple[bytes | str | int, ...]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    chunks = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        chunks.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(chunks)


def parse_reply(buffer: bytes | bytearray, start: int = 0, depth: int = 0) -> Any:
    """``(reply, end)`` of the reply at *start*, or ``(_INCOMPLETE, needed length)``.

    The needed length is what the buffer must hold before a look can get further (at least one
    byte more), so that a long reply is not read again on every chunk of it.

    Simple strings and bulk strings are bytes, integers int, nil ``None``, arrays lists, error
    replies :class:`RespError` instances (returned, not raised). Malformed input raises
    :class:`_ProtocolError`.
    """
    line_end = buffer.find(b"\r\n", start)
    if line_end < 0:
        if len(buffer) - start > 64 * 1024:  # no header line is this long
            raise _ProtocolError("Redis sent a reply line without an end")
        return _INCOMPLETE, len(buffer) + 1
    kind, head = buffer[start], bytes(buffer[start + 1 : line_end])
    after = line_end + 2
    if kind in (0x2B, 0x2D):  # + simple string, - error
        return (head if kind == 0x2B else RespError(head.decode("utf-8", "replace"))), after
    number = _integer(head)
    if kind == 0x3A:  # : integer
        return number, after
    if kind not in (0x24, 0x2A):
        raise _ProtocolError(f"Redis sent a reply of an unknown kind (byte {kind})")
    if number < 0:  # nil
        return None, after
    if kind == 0x24:  # $ bulk string
        return _bulk(buffer, after, number)
    return _array(buffer, after, number, depth)


def _bulk(buffer: bytes | bytearray, start: int, length: int) -> Any:
    if length > MAX_BULK:
        raise _ProtocolError("Redis sent a reply longer than the store accepts")
    end = start + length
    if len(buffer) < end + 2:
        return _INCOMPLETE, end + 2
    if buffer[end : end + 2] != b"\r\n":
        raise _ProtocolError("Redis sent a bulk string of another length than announced")
    return bytes(buffer[start:end]), end + 2


def _array(buffer: bytes | bytearray, start: int, length: int, depth: int) -> Any:
    if depth >= MAX_DEPTH or length > MAX_BULK:
        raise _ProtocolError("Redis sent a reply nested or long beyond what the store reads")
    items = []
    position = start
    for _ in range(length):
        item, position = parse_reply(buffer, position, depth + 1)
        if item is _INCOMPLETE:
            return _INCOMPLETE, position
        items.append(item)
    return items, position


class _Missing:
    __slots__ = ()


_INCOMPLETE: Any = _Missing()


def _integer(text: bytes) -> int:
    try:
        return int(text)
    except ValueError:
        raise _ProtocolError("Redis sent a malformed number") from None


class _Connection(asyncio.Protocol):
    """One connection: commands written in turn, replies settling their calls in that order."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._needed = 1
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._lost: BaseException | None = None
        self.pid = os.getpid()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream connection
        self._transport = transport

    @property
    def usable(self) -> bool:
        """Open, and this process's own (a forked child opens its own)."""
        transport = self._transport
        return (
            self._lost is None
            and transport is not None
            and not transport.is_closing()
            and self.pid == os.getpid()
        )

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self._lost is not None or self._transport is None:
            raise RedisConnectionError("the connection to Redis is closed")
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._transport.write(command)
        self._waiting.append(reply)
        return reply

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if len(buffer) < self._needed:
            return
        start = 0
        try:
            while start < len(buffer):
                reply, end = parse_reply(buffer, start)
                if reply is _INCOMPLETE:
                    self._needed = end - start
                    break
                start = end
                self._settle(reply)
            else:
                self._needed = 1
        except _ProtocolError as exc:
            self._fail(exc)
            return
        del buffer[:start]

    def _settle(self, reply: Any) -> None:
        if not self._waiting:
            raise _ProtocolError("Redis sent a reply nothing asked for")
        waiter = self._waiting.popleft()
        if not waiter.done():  # a cancelled call's reply is read, and dropped
            waiter.set_result(reply)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._fail(RedisConnectionError("Redis closed the connection") if exc is None else exc)

    def _fail(self, exc: BaseException) -> None:
        if self._lost is None:
            self._lost = exc
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(
                    RedisConnectionError(f"the connection to Redis failed: {_why(exc)}")
                )
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None and self.pid == os.getpid():
            self._transport.close()
        self._lost = self._lost or RedisConnectionError("the connection to Redis is closed")


class RespClient:
    """Commands to one Redis over one connection per event loop (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self._endpoint = Endpoint.of(url)
        self._connections: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Future[_Connection]
        ] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"RespClient({self._where()}, db={self._endpoint.db})"

    def _where(self) -> str:
        return self._endpoint.path or f"{self._endpoint.host}:{self._endpoint.port}"

    async def call(self, *args: bytes | str | int) -> Any:
        """Send one command and return its reply; an error reply raises :class:`RespError`."""
        connection = await self._connection()
        reply = await connection.send(pack(args))
        if isinstance(reply, RespError):
            raise reply
        return reply

    def script(self, source: str) -> RespScript:
        """A Lua script, run by its digest (and loaded on the first ``NOSCRIPT``)."""
        return RespScript(self, source)

    async def config_get(self, name: str) -> dict[str, bytes]:
        """``CONFIG GET name`` as a mapping."""
        reply = await self.call("CONFIG", "GET", name)
        return {_text(reply[i]): reply[i + 1] for i in range(0, len(reply) - 1, 2)}

    async def aclose(self) -> None:
        """Close this loop's connection (the others close with their loops)."""
        loop = asyncio.get_running_loop()
        opened = self._connections.pop(loop, None)
        if opened is not None and opened.done() and opened.exception() is None:
            opened.result().close()
        for other in list(self._connections.values()):
            if other.done() and other.exception() is None:
                with contextlib.suppress(RuntimeError):  # its loop is closed: so is it
                    other.get_loop().call_soon_threadsafe(other.result().close)

    async def _connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        opened = self._connections.get(loop)
        if opened is not None and opened.done():
            if opened.exception() is None and opened.result().usable:
                return opened.result()
            opened = None
        if opened is None:  # the first of this loop's callers connects; the others wait for it
            opened = loop.create_future()
            self._connections[loop] = opened
            try:
                connection = await asyncio.wait_for(self._open(loop), _CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as exc:
                failure = RedisConnectionError(
                    f"could not connect to Redis at {self._where()}: {_why(exc)}"
                )
                self._connections.pop(loop, None)
                opened.set_exception(failure)
                opened.exception()  # retrieved: waiters see it through their own await
                raise failure from None
            except BaseException as exc:
                self._connections.pop(loop, None)
                opened.set_exception(exc if isinstance(exc, Exception) else RedisConnectionError())
                opened.exception()  # retrieved: waiters see it through their own await
                raise
            opened.set_result(connection)
        return await asyncio.shield(opened)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        endpoint = self._endpoint
        if endpoint.path is not None:
            _, connection = await loop.create_unix_connection(_Connection, endpoint.path)
        else:
            _, connection = await loop.create_connection(
                _Connection,
                endpoint.host or "localhost",
                endpoint.port,
                ssl=ssl.create_default_context() if endpoint.tls else None,
            )
        try:
            if endpoint.password is not None:  # (held by no local variable here)
                await _checked(connection.send(endpoint.auth_command()))
            if endpoint.db:
                await _checked(connection.send(pack(("SELECT", endpoint.db))))
        except BaseException:
            connection.close()
            raise
        return connection


async def _checked(reply: asyncio.Future[Any]) -> Any:
    value = await reply
    if isinstance(value, RespError):
        raise value
    return value


class RespScript:
    """A script of a :class:`RespClient`, called like redis-py's: ``await s(keys=, args=)``."""

    def __init__(self, client: RespClient, source: str) -> None:
        self._client = client
        self._source = source
        self._digest = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis's own id

    async def __call__(
        self, keys: list[str] | tuple[str, ...] = (), args: list[Any] | tuple[Any, ...] = ()
    ) -> Any:
        try:
            return await self._client.call("EVALSHA", self._digest, len(keys), *keys, *args)
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        # A Redis that restarted or flushed its scripts: EVAL runs it and caches it again.
        return await self._client.call("EVAL", self._source, len(keys), *keys, *args)


def _why(exc: BaseException) -> str:
    # The OS's words (never a URL: the password is in it), else the kind of failure.
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, RedisConnectionError):
        return str(exc)
    return type(exc).__name__


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
