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
import socket
import ssl
import weakref
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from attrs import field, frozen

__all__ = ["RedisConnectionError", "RespClient", "RespError", "RespReader", "RespScript"]

#: The longest reply accepted (Redis's own bound on a bulk string, ``proto-max-bulk-len``).
MAX_BULK = 512 * 1024 * 1024
#: The deepest nesting of arrays accepted (the store's scripts answer two levels).
MAX_DEPTH = 8
_CONNECT_TIMEOUT = 10.0
#: The longest line accepted: a reply's header, a simple string or an error.
_MAX_LINE = 64 * 1024


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
        """``AUTH [user] password``, packed.

        A password from the environment may hold bytes that are not UTF-8: they go as they came.
        """
        password = (self.password or "").encode("utf-8", "surrogateescape")
        if self.username:
            return pack(("AUTH", self.username.encode("utf-8", "surrogateescape"), password))
        return pack(("AUTH", password))

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


class RespReader:
    """Reads replies from a stream of bytes, each byte once however the stream is cut.

    :meth:`read` takes what a buffer holds and returns the replies completed so far, keeping an
    array cut short as the items read of it (never read again from its start). Simple strings
    and bulk strings are bytes, integers int, nil ``None``, arrays lists, error replies
    :class:`RespError` instances (returned, not raised). Malformed input raises
    :class:`RedisConnectionError`: the stream cannot be trusted any more.
    """

    __slots__ = ("_arrays", "needed")

    def __init__(self) -> None:
        # The arrays being read, outermost first: [items left, items read].
        self._arrays: list[list[Any]] = []
        #: The buffer length below which nothing more can be read (at least one byte more).
        self.needed = 1

    def read(self, buffer: bytearray) -> list[Any]:
        """The replies completed by the bytes of *buffer*, which are consumed."""
        replies: list[Any] = []
        position = 0
        try:
            while True:
                value, end = _atom(buffer, position)
                if value is _INCOMPLETE:
                    self.needed = end - position
                    return replies
                position = end
                if type(value) is _ArrayStart:
                    if len(self._arrays) >= MAX_DEPTH:
                        raise _ProtocolError("Redis sent a reply nested deeper than it may be")
                    if value.length:
                        self._arrays.append([value.length, []])
                        continue
                    value = []
                self._place(value, replies)
        finally:
            del buffer[:position]

    def _place(self, value: Any, replies: list[Any]) -> None:
        arrays = self._arrays
        while arrays:
            top = arrays[-1]
            top[1].append(value)
            top[0] -= 1
            if top[0]:
                return
            value = arrays.pop()[1]
        replies.append(value)


class _ArrayStart:
    __slots__ = ("length",)

    def __init__(self, length: int) -> None:
        self.length = length


class _Missing:
    __slots__ = ()


_INCOMPLETE: Any = _Missing()


def _atom(buffer: bytearray, start: int) -> tuple[Any, int]:
    """The value (or an array's start) at *start*, and where it ends.

    Or ``_INCOMPLETE`` and the buffer length it needs.
    """
    line_end = buffer.find(b"\r\n", start)
    if line_end < 0:
        if len(buffer) - start > _MAX_LINE:
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
    if number > MAX_BULK:
        raise _ProtocolError("Redis sent a reply longer than the store accepts")
    if number < 0 or kind == 0x2A:  # nil, or an array's start
        return (None if number < 0 else _ArrayStart(number)), after
    return _bulk(buffer, after, number)


def _bulk(buffer: bytearray, start: int, length: int) -> tuple[Any, int]:
    end = start + length
    if len(buffer) < end + 2:
        return _INCOMPLETE, end + 2
    if buffer[end : end + 2] != b"\r\n":
        raise _ProtocolError("Redis sent a bulk string of another length than announced")
    return bytes(buffer[start:end]), end + 2


def _integer(text: bytes) -> int:
    if len(text) > 20:  # no length or integer of Redis's has more digits
        raise _ProtocolError("Redis sent a malformed number")
    try:
        return int(text)
    except ValueError:
        raise _ProtocolError("Redis sent a malformed number") from None


class _Connection(asyncio.Protocol):
    """One connection: commands written in turn, replies settling their calls in that order.

    Redis silent for *timeout* seconds while calls wait for their replies (a stalled or
    half-open connection): the connection is dropped and those calls fail.
    """

    def __init__(self, timeout: float) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._reader = RespReader()
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._lost: BaseException | None = None
        self._timeout = timeout
        self._heard = 0.0  # the loop's time of the last bytes from Redis, or of the first call
        self._watch: asyncio.TimerHandle | None = None
        self.pid = os.getpid()
        #: An async generator the loop closes at its shutdown, closing this connection.
        self.guard: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream connection
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # a dead peer is found out by the kernel too
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

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
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if not self._waiting:
            self._heard = loop.time()  # the silence that counts starts with a call waiting
            if self._watch is None:
                self._watch = loop.call_at(self._heard + self._timeout, self._check)
        self._transport.write(command)
        self._waiting.append(reply)
        return reply

    def _check(self) -> None:
        self._watch = None
        if not self._waiting or self._lost is not None:
            return
        loop = asyncio.get_running_loop()
        silent_until = self._heard + self._timeout
        if loop.time() >= silent_until:
            self._fail(RedisConnectionError(f"Redis answered nothing for {self._timeout:g} s"))
        else:
            self._watch = loop.call_at(silent_until, self._check)

    def data_received(self, data: bytes) -> None:
        self._heard = asyncio.get_running_loop().time()
        buffer = self._buffer
        buffer += data
        if len(buffer) < self._reader.needed:
            return
        try:
            for reply in self._reader.read(buffer):
                self._settle(reply)
        except _ProtocolError as exc:
            self._fail(exc)
        except BaseException as exc:
            # Interrupted between replies (KeyboardInterrupt in a loop that goes on): which
            # reply is whose is no longer known, so no call gets any.
            self._fail(RedisConnectionError(f"reading Redis's replies was interrupted: {exc!r}"))
            raise

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
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(
                    RedisConnectionError(f"the connection to Redis failed: {_why(exc)}")
                )
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._transport is not None and self.pid == os.getpid():
            self._transport.close()
        self._lost = self._lost or RedisConnectionError("the connection to Redis is closed")


class RespClient:
    """Commands to one Redis over one connection per event loop (see the module docstring).

    *timeout*: seconds Redis may stay silent while commands wait for their replies; past it the
    connection is dropped, those commands fail, and the next one connects again.
    """

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self._endpoint = Endpoint.of(url)
        self._timeout = timeout
        # The loop's connection, or the task making it. A loop that ends (asyncio.run) closes
        # its connection and drops its entry (see _closed_with).
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
        return {text_of(reply[i]): reply[i + 1] for i in range(0, len(reply) - 1, 2)}

    async def aclose(self) -> None:
        """Close this loop's connection, once made if it is being made.

        Connections of other loops close when those loops end (``asyncio.run`` and the sync
        client's loop close them), or now if those loops still run.
        """
        loop = asyncio.get_running_loop()
        opened = self._connections.pop(loop, None)
        if opened is not None:
            with contextlib.suppress(Exception):
                connection = await asyncio.shield(opened)
                connection.close()
                if connection.guard is not None:
                    await connection.guard.aclose()
        for other, pending in list(self._connections.items()):
            if pending.done() and not pending.cancelled() and pending.exception() is None:
                with contextlib.suppress(RuntimeError):  # its loop is closed: so is it
                    other.call_soon_threadsafe(pending.result().close)

    async def _connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        opened = self._connections.get(loop)
        if opened is not None and opened.done():
            if not opened.cancelled() and opened.exception() is None and opened.result().usable:
                return opened.result()
            opened = None
        if opened is None:
            # The connection is made by a task of its own: a caller cancelled while it is made
            # stops waiting, and the others still get it.
            opened = loop.create_task(self._open(loop))
            opened.add_done_callback(_retrieved)
            self._connections[loop] = opened
        return await asyncio.shield(opened)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        task = asyncio.current_task()
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            if task is not None:
                task.cancel()

        timer = loop.call_later(_CONNECT_TIMEOUT, expire)
        try:
            connection = await self._connect(loop)
        except BaseException as exc:
            if self._connections.get(loop) is task:
                del self._connections[loop]
            if isinstance(exc, OSError) or expired:
                reason = f"no connection in {_CONNECT_TIMEOUT:g} s" if expired else _why(exc)
                raise RedisConnectionError(
                    f"could not connect to Redis at {self._where()}: {reason}"
                ) from None
            raise
        finally:
            timer.cancel()
        connection.guard = self._closed_with(loop, connection)
        await connection.guard.asend(None)  # from here on the loop knows it
        return connection

    async def _closed_with(
        self, loop: asyncio.AbstractEventLoop, connection: _Connection
    ) -> AsyncIterator[None]:
        # An async generator the loop's shutdown closes (asyncio.run, and the sync client's
        # loop, run shutdown_asyncgens): the connection closes with its loop, and the loop's
        # entry goes, so that a loop is never kept alive by this table.
        try:
            yield
        finally:
            connection.close()
            entry = self._connections.get(loop)
            if (
                entry is not None
                and entry.done()
                and not entry.cancelled()
                and entry.exception() is None
                and entry.result() is connection
            ):
                del self._connections[loop]

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        endpoint = self._endpoint
        timeout = self._timeout
        if endpoint.path is not None:
            _, connection = await loop.create_unix_connection(
                lambda: _Connection(timeout), endpoint.path
            )
        else:
            _, connection = await loop.create_connection(
                lambda: _Connection(timeout),
                endpoint.host or "localhost",
                endpoint.port,
                ssl=ssl.create_default_context() if endpoint.tls else None,
            )
        try:
            if endpoint.password is not None:  # (held by no local variable here)
                await _login(connection.send(endpoint.auth_command()), "AUTH")
            if endpoint.db:
                await _login(connection.send(pack(("SELECT", endpoint.db))), "SELECT")
        except BaseException:
            connection.close()
            raise
        return connection


def _retrieved(task: asyncio.Future[Any]) -> None:
    # A connect that failed after every caller stopped waiting is not an unhandled error.
    if not task.cancelled():
        task.exception()


async def _login(reply: asyncio.Future[Any], command: str) -> None:
    value = await reply
    if isinstance(value, RespError):
        # Only the error's code: a Redis whose AUTH is renamed echoes the arguments (the
        # password) in its message.
        code = str(value).split(" ", 1)[0][:40]
        raise RedisConnectionError(f"Redis refused the connection's {command} ({code})")


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


def text_of(value: bytes | str) -> str:
    """A reply as text (a client of the user's own may decode replies already)."""
    return value.decode() if isinstance(value, bytes) else value
