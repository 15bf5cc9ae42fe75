"""SqliteIdempotencyStore: books in a file on the local disk, shared by the host's processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .._clock import Clock
from ._records import (
    Book,
    Decision,
    Finish,
    Intent,
    Outcome,
    as_of,
    book_from_json,
    book_to_json,
    check_durations,
    decide,
    finish,
    forget,
    note,
    release,
)

__all__ = ["SqliteIdempotencyStore"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS books (
    key TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    expires REAL
);
CREATE TABLE IF NOT EXISTS fields (
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (key, name)
);
CREATE INDEX IF NOT EXISTS books_expire ON books (expires);
"""


class SqliteIdempotencyStore:
    """Idempotency records in a SQLite file: for the processes of one host, across restarts.

    A worker that crashes and comes back finds what it recorded; several processes on the host
    share the file (SQLite's own locking, one short transaction per step, in WAL mode with every
    commit synced to disk). Workers on several hosts need :class:`RedisIdempotencyStore`. It
    follows the same rules and the same record format as the other stores.

    The store checks at every step that its file is still the one it opened. Once the file is
    deleted or replaced (an operator, a temp-file cleaner), it would go on writing to a file
    nobody else reads while the other processes start a new one: two records for one order, a
    change sent twice. So every later step fails instead (an ``sqlite3.OperationalError`` that
    says so; a call then sends nothing), and the store is never reopened behind the calls that
    hold leases in it: make a new store (restart the worker) once the cause is understood.
    A store used after :meth:`close` raises a ``RuntimeError``.

    Args:
        path: The database file (created, with its directory, if missing).
        ttl: Seconds a finished outcome is kept (default 24 h); at least ``lease``.
        lease: Seconds a call may hold an order before another may take it over (default 60 s).
        poll_interval: Seconds between two looks at a busy order.
        clock: Tests only: a clock whose ``monotonic()`` stands for the time. The default is the
            wall clock, the one every process of the host shares.
    """

    #: Its steps run in a thread, so that the event loop never waits on the disk.
    suspends = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        ttl: float = 24 * 3600,
        lease: float = 60.0,
        poll_interval: float = 0.02,
        clock: Clock | None = None,
    ) -> None:
        check_durations(ttl=ttl, lease=lease, poll_interval=poll_interval)
        self.path = Path(path)
        self.ttl = float(ttl)
        self.lease = float(lease)
        self._poll = poll_interval
        self._now: Callable[[], float] = time.time if clock is None else clock.monotonic
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened
        self._broken: str | None = None  # why the store refuses every step, once it does
        self._closed = False

    def __repr__(self) -> str:
        return f"SqliteIdempotencyStore(path={str(self.path)!r}, lease={self.lease:g})"

    # -- the steps of the protocol ------------------------------------------------------------

    async def begin(self, key: str, intent: Intent, owner: str) -> Decision:
        """Decide what a call with *intent* does on the order *key*, taking the lease if it may."""

        def step(book: Book | None, now: float) -> tuple[Decision, Book | None, bool]:
            return decide(book, intent, owner=owner, now=now, lease=self.lease, ttl=self.ttl)

        decision, _, _ = await self._run(key, step)
        return decision

    async def finish(self, key: str, owner: str, outcome: Outcome) -> Finish:
        """Record *owner*'s outcome and release its lease (see :class:`Finish`)."""

        def step(book: Book | None, now: float) -> tuple[Finish, Book | None, bool]:
            done, stored = finish(book, owner, outcome, now=now, ttl=self.ttl)
            return done, stored, stored is not book

        done, _, _ = await self._run(key, step)
        return done

    async def note(self, key: str, owner: str, *, before: bytes, request: bytes) -> bool:
        """Keep with *owner*'s lease the order as it was and the request."""

        def step(book: Book | None, now: float) -> tuple[bool, Book | None, bool]:
            stored = note(book, owner, before=before, request=request, now=now, ttl=self.ttl)
            return stored is not book, stored, stored is not book

        noted, _, _ = await self._run(key, step)
        return noted

    async def release(self, key: str, owner: str, intent: Intent) -> None:
        """Drop *owner*'s lease: its call provably changed nothing."""

        def step(book: Book | None, now: float) -> tuple[None, Book | None, bool]:
            stored = release(book, owner, intent, now=now, ttl=self.ttl)
            return None, stored, stored is not book

        await self._run(key, step)

    async def wait(self, key: str, timeout: float) -> None:  # noqa: ARG002 - polled, not watched
        """Sleep a poll interval (at most *timeout*): the caller then looks again."""
        await asyncio.sleep(min(timeout, self._poll))

    async def get(self, key: str) -> Book | None:
        """The book of the order *key*, as the rules read it now."""

        def step(book: Book | None, now: float) -> tuple[None, Book | None, bool]:
            current = as_of(book, now, self.ttl)
            return None, current, current is not book

        _, book, _ = await self._run(key, step)
        return book

    async def forget(self, key: str, idempotency_key: str | None = None) -> list[Outcome]:
        """Drop the order's unknown outcomes and terminal failures (only *idempotency_key*'s)."""

        def step(book: Book | None, now: float) -> tuple[list[Outcome], Book | None, bool]:
            dropped, stored = forget(book, idempotency_key, now=now, ttl=self.ttl)
            return dropped, stored, stored is not book

        dropped, _, _ = await self._run(key, step)
        return dropped

    async def close(self) -> None:
        """Close the database connection; idempotent. The store cannot be used after it."""
        with self._lock:
            self._closed = True
            self._disconnect()

    # -- one transaction per step ---------------------------------------------------------------

    async def _run(
        self, key: str, step: Callable[[Book | None, float], tuple[T, Book | None, bool]]
    ) -> tuple[T, Book | None, bool]:
        return await asyncio.to_thread(self._transaction, key, step)

    def _transaction(
        self, key: str, step: Callable[[Book | None, float], tuple[T, Book | None, bool]]
    ) -> tuple[T, Book | None, bool]:
        with self._lock:
            connection = self._connect()
            self._check_file()  # before waiting for the lock of a file nobody else uses
            # IMMEDIATE: the write lock is taken before the book is read, so that reading it
            # and writing it back are one step for every process on the host.
            connection.execute("BEGIN IMMEDIATE")
            try:
                now = self._now()
                answer, book, changed = step(self._load(connection, key), now)
                if changed:
                    self._save(connection, key, book)
                    self._purge(connection, now)
                self._check_file()  # nothing is committed to a file left behind
                connection.execute("COMMIT")
            except BaseException:
                if self._connection is not None:  # a failed check closed it: nothing to undo
                    connection.execute("ROLLBACK")
                raise
        return answer, book, changed

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError(
                f"this SqliteIdempotencyStore ({str(self.path)!r}) is closed; create a new one"
            )
        if self._broken is not None:
            raise sqlite3.OperationalError(self._broken)
        if self._connection is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            new = not self.path.exists()
            connection = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut
                connection.executescript(_SCHEMA)
                if new:  # the records hold members' phones: the files are for their owner alone
                    _owner_only(self.path)
                # The file is made by now; the one this connection writes to.
                opened = self.path.stat()
            except BaseException:
                connection.close()
                raise
            self._connection, self._identity = connection, (opened.st_dev, opened.st_ino)
        return self._connection

    def _check_file(self) -> None:
        """Fail (for good) if the file at ``path`` is no longer the one the connection opened.

        Closing the connection discards a transaction still open on it.
        """
        try:
            found = self.path.stat()
            what = "replaced" if (found.st_dev, found.st_ino) != self._identity else None
        except FileNotFoundError:
            what = "deleted"
        if what is None:
            return
        self._broken = (
            f"the idempotency records file {str(self.path)!r} was {what} while this store had "
            "it open: its records (and the leases of the calls in flight) are no longer where "
            "the other processes look, so this store refuses every step; create a new store "
            "(restart the worker) once the file is back in its place"
        )
        self._disconnect()
        raise sqlite3.OperationalError(self._broken)

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @staticmethod
    def _load(connection: sqlite3.Connection, key: str) -> Book | None:
        row = connection.execute("SELECT document FROM books WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        fields = dict(
            connection.execute("SELECT name, value FROM fields WHERE key = ?", (key,)).fetchall()
        )
        return book_from_json(row[0], fields)

    @staticmethod
    def _save(connection: sqlite3.Connection, key: str, book: Book | None) -> None:
        connection.execute("DELETE FROM fields WHERE key = ?", (key,))
        if book is None:
            connection.execute("DELETE FROM books WHERE key = ?", (key,))
            return
        document, fields = book_to_json(book)
        connection.execute(
            "INSERT OR REPLACE INTO books (key, document, expires) VALUES (?, ?, ?)",
            (key, document, book.expires),
        )
        connection.executemany(
            "INSERT INTO fields (key, name, value) VALUES (?, ?, ?)",
            [(key, name, value) for name, value in fields.items()],
        )

    @staticmethod
    def _purge(connection: sqlite3.Connection, now: float) -> None:
        # Books whose every outcome expired; a book with a lease or an unknown outcome has no
        # expiry. A few per write keep the file from growing without a sweep.
        expired = [
            row[0]
            for row in connection.execute(
                "SELECT key FROM books WHERE expires IS NOT NULL AND expires <= ? LIMIT 8", (now,)
            )
        ]
        for key in expired:
            connection.execute("DELETE FROM fields WHERE key = ?", (key,))
            connection.execute("DELETE FROM books WHERE key = ?", (key,))


def _owner_only(path: Path) -> None:
    """Make a new database file and its WAL journal readable by their owner alone."""
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError):  # a journal SQLite has not made yet
            name.chmod(0o600)
