"""RetryPolicy: the public knobs of the retry middleware."""

from __future__ import annotations

from attrs import field, frozen, validators

__all__ = ["RetryPolicy"]

_non_negative = validators.ge(0.0)


@frozen(kw_only=True)
class RetryPolicy:
    """How often, and how patiently, a failed call is sent again.

    Which failures are retried depends on the operation, not on this policy: ``change`` is resent
    only when its first request provably never reached the server (see the retry-safety classes
    in the docs). This policy says how many times and how long.

    Attributes:
        max_attempts: Requests per call, the first included (``1`` turns retries off).
        initial_delay: Upper bound of the first backoff, in seconds.
        max_delay: Upper bound of any backoff, in seconds. Backoff is exponential with full
            jitter: retry *n* waits a random time in
            ``[0, min(max_delay, initial_delay * 2**(n-1))]``.
        deadline: Seconds that all attempts and waits of one call may take together, or ``None``.
            Each attempt is also bounded by the client's ``timeout``.
        respect_retry_after: Wait as long as the server's ``Retry-After`` says (seconds or an
            HTTP date) instead of the backoff, when it says.
        max_retry_after: A ``Retry-After`` longer than this (or longer than what is left of the
            deadline) is not waited for: the error is raised at once, so that a task queue can
            reschedule the job instead of holding a worker.
        retry_budget: Tokens of a per-client retry budget (a retry costs 5, one after a timeout
            10; a call that succeeds first time gives 1 back). When it runs dry during an outage,
            calls fail fast instead of multiplying the load. ``None`` turns the budget off.
    """

    max_attempts: int = field(default=3, validator=validators.ge(1))
    initial_delay: float = field(default=0.5, validator=_non_negative)
    max_delay: float = field(default=8.0, validator=_non_negative)
    deadline: float | None = 30.0
    respect_retry_after: bool = True
    max_retry_after: float = field(default=60.0, validator=_non_negative)
    retry_budget: int | None = 500

    def __attrs_post_init__(self) -> None:
        if self.deadline is not None and not self.deadline > 0:
            raise ValueError(f"deadline must be positive or None, got {self.deadline!r}")
        if self.retry_budget is not None and self.retry_budget < 0:
            raise ValueError(f"retry_budget must be 0 or more, or None, got {self.retry_budget!r}")

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """A policy that sends every call exactly once."""
        return cls(max_attempts=1, deadline=None, retry_budget=None)

    def backoff(self, retry_number: int, jitter: float) -> float:
        """The wait before retry *retry_number* (1-based), for *jitter* drawn from ``[0, 1)``."""
        ceiling = min(self.max_delay, self.initial_delay * 2.0 ** (retry_number - 1))
        return ceiling * jitter
