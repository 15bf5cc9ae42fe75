"""Fault injection for the fake server: per operation and request number, or at a seeded rate."""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from attrs import frozen

__all__ = ["DEFAULT_MIX", "Fault", "FaultKind", "Faults"]


class FaultKind(enum.Enum):
    """What goes wrong."""

    #: An HTTP error status (429, 500, 502, 503, 504) with a JSON, HTML or empty body.
    STATUS = "status"
    #: The answer comes late (then normally).
    LATENCY = "latency"
    #: The connection is closed before the request is processed.
    CLOSE_BEFORE_ANSWER = "close before answer"
    #: The request is processed and committed, then the connection is closed without an answer.
    DROP_AFTER_COMMIT = "drop after commit"
    #: The request is committed and the answer is cut short.
    TRUNCATED_BODY = "truncated body"
    #: The request is committed and the answer is not JSON.
    INVALID_JSON = "invalid json"
    #: The request is held and never processed (a stuck proxy): the client waits until it
    #: gives up or dies.
    HOLD = "hold"
    #: The request is committed and answered with the fault's own status, headers and bytes
    #: (a broken or hostile server or proxy).
    RAW = "raw answer"
    #: The request is committed and answered with a 200 whose chunked body never ends.
    ENDLESS = "endless body"
    #: A request that arrives on a reused keep-alive connection finds it closed by the server
    #: (or a load balancer) while it sat idle: not processed, no answer. A request on a fresh
    #: connection is not hit.
    IDLE_CLOSE = "idle keep-alive close"


_AFTER_COMMIT_KINDS = frozenset(
    {
        FaultKind.DROP_AFTER_COMMIT,
        FaultKind.TRUNCATED_BODY,
        FaultKind.INVALID_JSON,
        FaultKind.ENDLESS,
    }
)


@frozen(kw_only=True)
class Fault:
    """One fault; build it with the class methods (``Fault.rate_limited()``, ...)."""

    kind: FaultKind
    status: int = 0
    body: str = "json"
    retry_after: str | None = None
    delay: float = 0.0
    after_commit: bool = False
    #: The body of a raw answer, and its headers.
    raw: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def commits(self) -> bool:
        """Whether the request is processed (and its effect committed) despite the fault."""
        return self.after_commit or self.kind in _AFTER_COMMIT_KINDS

    @property
    def reused_connections_only(self) -> bool:
        """Whether the fault hits only a request on a connection that served an earlier one."""
        return self.kind is FaultKind.IDLE_CLOSE

    @property
    def label(self) -> str:
        """A short human name, e.g. ``"502 html"`` or ``"drop after commit"``."""
        if self.kind is FaultKind.STATUS:
            text = f"{self.status} {self.body}"
            if self.retry_after is not None:
                text += f" Retry-After: {self.retry_after}"
            return text + (" after commit" if self.after_commit else "")
        if self.kind is FaultKind.LATENCY:
            return f"latency {self.delay:g}s"
        if self.kind is FaultKind.RAW:
            return f"raw {self.status} answer of {len(self.raw)} bytes"
        return str(self.kind.value)

    @classmethod
    def rate_limited(cls, retry_after: str | None = "1") -> Fault:
        """429 Too Many Requests, with ``Retry-After`` (seconds or an HTTP date) if given."""
        return cls(kind=FaultKind.STATUS, status=429, retry_after=retry_after)

    @classmethod
    def server_error(cls, status: int = 500, *, after_commit: bool = False) -> Fault:
        """A 5xx with a JSON error envelope; *after_commit* processes the request first."""
        return cls(kind=FaultKind.STATUS, status=status, after_commit=after_commit)

    @classmethod
    def unavailable(cls, retry_after: str | None = None) -> Fault:
        """503 Service Unavailable (maintenance): nothing was processed."""
        return cls(kind=FaultKind.STATUS, status=503, body="empty", retry_after=retry_after)

    @classmethod
    def bad_gateway(cls, *, after_commit: bool = False) -> Fault:
        """502 with nginx's HTML page, as a proxy sends it."""
        return cls(kind=FaultKind.STATUS, status=502, body="html", after_commit=after_commit)

    @classmethod
    def gateway_timeout(cls, *, after_commit: bool = False) -> Fault:
        """504 with an empty body, as a proxy sends it."""
        return cls(kind=FaultKind.STATUS, status=504, body="empty", after_commit=after_commit)

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """Answer *seconds* late."""
        return cls(kind=FaultKind.LATENCY, delay=seconds)

    @classmethod
    def close_before_answer(cls) -> Fault:
        """Close the connection without processing the request."""
        return cls(kind=FaultKind.CLOSE_BEFORE_ANSWER)

    @classmethod
    def drop_after_commit(cls) -> Fault:
        """Process and commit the request, then close the connection without answering."""
        return cls(kind=FaultKind.DROP_AFTER_COMMIT)

    @classmethod
    def truncated_body(cls) -> Fault:
        """Commit, then send half of the answer and close the connection."""
        return cls(kind=FaultKind.TRUNCATED_BODY)

    @classmethod
    def hold(cls) -> Fault:
        """Hold the request without ever processing it, until the server stops."""
        return cls(kind=FaultKind.HOLD)

    @classmethod
    def raw_answer(
        cls,
        body: bytes,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        after_commit: bool = True,
    ) -> Fault:
        """Answer with exactly *status*, *headers* and *body*: a broken or hostile server.

        The request is processed first unless *after_commit* is false. Without a
        ``Content-Type`` header the body goes out as ``application/octet-stream``.
        """
        return cls(
            kind=FaultKind.RAW,
            status=status,
            raw=body,
            headers=tuple((headers or {}).items()),
            after_commit=after_commit,
        )

    @classmethod
    def endless_body(cls) -> Fault:
        """Commit, then answer 200 with a chunked JSON body that never ends."""
        return cls(kind=FaultKind.ENDLESS)

    @classmethod
    def idle_close(cls) -> Fault:
        """The idle keep-alive close race, made deterministic.

        A request sent on a pooled connection that the server (or a load balancer) closed
        while it sat idle: the server closes the connection without processing the request
        or answering. Only a request on a reused connection (one that served an earlier
        request) is hit; on a fresh connection the fault waits for the next request.
        """
        return cls(kind=FaultKind.IDLE_CLOSE)

    @classmethod
    def invalid_json(cls) -> Fault:
        """Commit, then answer 200 with a body that is not JSON."""
        return cls(kind=FaultKind.INVALID_JSON)


#: Every kind, for random injection: before and after commit, each status, each body.
DEFAULT_MIX: tuple[Fault, ...] = (
    Fault.rate_limited("0"),
    Fault.server_error(500),
    Fault.server_error(500, after_commit=True),
    Fault.bad_gateway(),
    Fault.unavailable(),
    Fault.gateway_timeout(after_commit=True),
    Fault.latency(0.01),
    Fault.close_before_answer(),
    Fault.drop_after_commit(),
    Fault.truncated_body(),
    Fault.invalid_json(),
)


@frozen
class _Scheduled:
    operation: str
    fault: Fault
    at: frozenset[int] | None


class Faults:
    """The fault plan of a fake server.

    ``on("change", Fault.drop_after_commit())`` hits the next change; ``at=[1, 3]`` hits the 1st
    and 3rd request to that operation (counted from the server's start); ``times=2`` the next
    two. ``"*"`` matches every operation. :meth:`random` adds a seeded rate on top.
    """

    def __init__(self) -> None:
        self._scheduled: list[_Scheduled] = []
        self._rate = 0.0
        self._rng = random.Random(0)  # noqa: S311 - reproducible chaos, not cryptography
        self._mix: tuple[Fault, ...] = DEFAULT_MIX
        self._operations: frozenset[str] | None = None
        #: Every fault injected, as (operation, request number, label).
        self.injected: list[tuple[str, int, str]] = []

    def on(
        self, operation: str, fault: Fault, *, at: Iterable[int] | None = None, times: int = 1
    ) -> None:
        """Inject *fault* into requests to *operation* (``"*"`` for any)."""
        if at is not None:
            self._scheduled.append(_Scheduled(operation, fault, frozenset(at)))
        else:
            self._scheduled.extend(_Scheduled(operation, fault, None) for _ in range(times))

    def random(
        self,
        rate: float,
        *,
        seed: int = 0,
        kinds: Sequence[Fault] = DEFAULT_MIX,
        operations: Iterable[str] | None = None,
    ) -> None:
        """Inject one of *kinds* into a *rate* share of requests, reproducibly from *seed*."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, got {rate}")
        self._rate = rate
        self._rng = random.Random(seed)  # noqa: S311 - reproducible chaos, not cryptography
        self._mix = tuple(kinds)
        self._operations = None if operations is None else frozenset(operations)

    def clear(self) -> None:
        """Remove every planned fault and the random rate."""
        self._scheduled.clear()
        self._rate = 0.0

    def counts(self) -> Counter[str]:
        """How many faults of each label were injected."""
        return Counter(label for _, _, label in self.injected)

    def pick(self, operation: str, number: int, *, reused_connection: bool = False) -> Fault | None:
        """The fault for request *number* of *operation*, if any (called by the server).

        *reused_connection* tells whether the request came on a connection that served an
        earlier request; faults that hit only those pass over the others.
        """
        fault = self._take_scheduled(operation, number, reused_connection)
        if fault is None and self._rate and self._random_applies(operation):
            fault = self._rng.choice(self._mix)
            if fault.reused_connections_only and not reused_connection:
                fault = None
        if fault is not None:
            self.injected.append((operation, number, fault.label))
        return fault

    def _random_applies(self, operation: str) -> bool:
        if self._operations is not None and operation not in self._operations:
            return False
        return self._rng.random() < self._rate

    def _take_scheduled(self, operation: str, number: int, reused: bool) -> Fault | None:
        for index, planned in enumerate(self._scheduled):
            if planned.operation not in (operation, "*"):
                continue
            if planned.fault.reused_connections_only and not reused:
                continue
            if planned.at is None:
                del self._scheduled[index]
                return planned.fault
            if number in planned.at:
                return planned.fault
        return None
