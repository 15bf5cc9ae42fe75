"""Client-side idempotency: the stores that remember mutating calls.

See ``rees46_loyalty.middleware.idempotency`` for what is done with the records, and the
"Idempotency" page of the docs for the guarantees and their limits.
"""

from ._memory import MemoryIdempotencyStore
from ._records import (
    Book,
    Decision,
    Finish,
    IdempotencyStore,
    Intent,
    Lease,
    Outcome,
    State,
    Verdict,
)
from ._redis import RedisIdempotencyStore
from ._sqlite import SqliteIdempotencyStore

__all__ = [
    "Book",
    "Decision",
    "Finish",
    "IdempotencyStore",
    "Intent",
    "Lease",
    "MemoryIdempotencyStore",
    "Outcome",
    "RedisIdempotencyStore",
    "SqliteIdempotencyStore",
    "State",
    "Verdict",
]
