"""RedisIdempotencyStore: records shared by every process and machine that uses one Redis."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from .._operations import OPERATIONS
from .._serialization import dump_result, load_answer
from ._records import Decision, Intent, Record, State, Verdict

if TYPE_CHECKING:  # pragma: no cover
    from redis.asyncio import Redis

__all__ = ["RedisIdempotencyStore"]

# The rules of _records.decide, run inside Redis so that reading a record and taking the lease
# are one atomic step, timed by the Redis server's clock (the same for every worker).
_BEGIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function take(previous_unknown)
  local taken = {state = 'in_flight', operation = ARGV[1], fingerprint = ARGV[2],
                 once = (ARGV[4] == '1'), owner = ARGV[5],
                 lease_expires = now + tonumber(ARGV[6])}
  redis.call('SET', KEYS[1], cjson.encode(taken), 'EX', ARGV[7])
  return {'acquired', previous_unknown, ''}
end
local raw = redis.call('GET', KEYS[1])
if not raw then return take('0') end
local record = cjson.decode(raw)
if record.state == 'in_flight' then
  if record.lease_expires > now then
    return {'busy', tostring(record.lease_expires - now), raw}
  end
  -- Unknown outcomes wait for a person: no expiry. The holder stays the owner.
  record.state = 'unknown'
  raw = cjson.encode(record)
  redis.call('SET', KEYS[1], raw)
end
if record.operation ~= ARGV[1] or record.fingerprint ~= ARGV[2] then
  if ARGV[3] == '1' then return {'conflict', '0', raw} end
  return take('0')
end
if record.state ~= 'unknown' then return {'replay', '0', raw} end
if record.once then return {'unknown', '0', raw} end
return take('1')
"""

# Remove a record only when it is an unknown outcome, a terminal failure, or a lease whose
# holder is gone.
_FORGET = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local record = cjson.decode(raw)
if record.state == 'unknown' or record.state == 'failed' then return redis.call('DEL', KEYS[1]) end
if record.state == 'in_flight' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if record.lease_expires <= now then return redis.call('DEL', KEYS[1]) end
end
return 0
"""

# Write the outcome (or, with an empty one, drop the record) only while the caller holds the
# key: its lease, or the unknown outcome its expired lease became. ARGV[3] = 0: no expiry.
_FINISH = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local record = cjson.decode(raw)
if record.owner ~= ARGV[1] then return 0 end
if record.state ~= 'in_flight' and record.state ~= 'unknown' then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
elseif ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return 1
"""


class RedisIdempotencyStore:
    """Idempotency records in Redis, for workers in several processes or on several machines.

    Needs the ``redis`` extra (``pip install 'rees46-loyalty[redis]'``). One round trip before
    a call (an atomic script that reads the record and takes the lease) and one after it.

    Args:
        redis: A ``redis://`` URL, or a ``redis.asyncio.Redis`` client of your own (left open).
        ttl: Seconds a record is kept (default 24 h).
        lease: Seconds a call may hold a key before another may take it over (default 60 s).
            A worker that dies holding it blocks the key this long at most.
        namespace: Prefix of every key; the client adds its shop id after it.
        poll_interval: Seconds between two looks at a busy key.
        max_connections: Connections to Redis at most, for a store made from a URL; past it,
            calls wait for a free one. (A client of your own: give it a
            ``BlockingConnectionPool``, or it fails past its pool's size.)
    """

    #: Every method is a round trip to Redis.
    suspends = True

    def __init__(
        self,
        redis: str | Redis,
        *,
        ttl: float = 24 * 3600,
        lease: float = 60.0,
        namespace: str = "rees46_loyalty:idempotency",
        poll_interval: float = 0.02,
        max_connections: int = 100,
    ) -> None:
        if ttl <= 0 or lease <= 0 or poll_interval <= 0:
            raise ValueError("ttl, lease and poll_interval must be positive")
        try:
            from redis.asyncio import BlockingConnectionPool, Redis  # noqa: PLC0415 - optional
        except ImportError as exc:  # pragma: no cover - the extra is installed in tests
            raise ImportError(
                "RedisIdempotencyStore needs redis: pip install 'rees46-loyalty[redis]'"
            ) from exc
        self._owned = isinstance(redis, str)
        if isinstance(redis, str):
            pool = BlockingConnectionPool.from_url(redis, max_connections=max_connections)
            self._redis: Redis = Redis(connection_pool=pool)
        else:
            self._redis = redis
        self.ttl = ttl
        self.lease = lease
        self._namespace = namespace
        self._poll = poll_interval
        self._begin = self._redis.register_script(_BEGIN)
        self._finish = self._redis.register_script(_FINISH)
        self._forget = self._redis.register_script(_FORGET)

    def __repr__(self) -> str:
        return f"RedisIdempotencyStore(namespace={self._namespace!r}, lease={self.lease:g})"

    def _key(self, key: str) -> str:
        return f"{self._namespace}:{key}"

    async def begin(self, key: str, intent: Intent, owner: str) -> Decision:
        """Decide what a call with *intent* does under *key*, taking the lease if it may send."""
        verdict, extra, raw = await self._begin(
            keys=[self._key(key)],
            args=[
                intent.operation,
                intent.fingerprint,
                int(intent.explicit),
                int(intent.once),
                owner,
                int(self.lease * 1000),
                max(1, int(self.ttl)),
            ],
        )
        verdict = Verdict(_text(verdict))
        if verdict is Verdict.ACQUIRED:
            return Decision(verdict=verdict, previous_unknown=_text(extra) == "1")
        record = _decode(raw)
        wait = int(extra) / 1000 if verdict is Verdict.BUSY else 0.0
        return Decision(verdict=verdict, record=record, wait=wait)

    async def finish(self, key: str, owner: str, record: Record) -> bool:
        """Store the outcome of *owner*'s call; False when *owner* no longer holds the lease."""
        ttl = 0 if record.state is State.UNKNOWN else max(1, int(self.ttl))
        written = await self._finish(keys=[self._key(key)], args=[owner, _encode(record), ttl])
        return bool(written)

    async def release(self, key: str, owner: str) -> None:
        """Drop *owner*'s lease and its record."""
        await self._finish(keys=[self._key(key)], args=[owner, "", 1])

    async def wait(self, key: str, timeout: float) -> None:  # noqa: ARG002 - polled, not watched
        """Sleep a poll interval (at most *timeout*): the caller then looks again."""
        await asyncio.sleep(min(timeout, self._poll))

    async def get(self, key: str) -> Record | None:
        """The record under *key*, if any."""
        raw = await self._redis.get(self._key(key))
        return None if raw is None else _decode(raw)

    async def forget(self, key: str) -> None:
        """Remove the record under *key* if it is an unknown outcome or a terminal failure.

        A call in flight and a success are kept: clearing them could let a request go twice.
        """
        await self._forget(keys=[self._key(key)], args=[])

    async def close(self) -> None:
        """Close the Redis client if the store created it."""
        if self._owned:
            await self._redis.aclose()
            await self._redis.connection_pool.disconnect()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _encode(record: Record) -> str:
    # A success keeps the answer's own bytes: decoding them again gives an equal result, to the
    # last digit, whatever fields the models hold.
    answer = record.answer
    if answer is None and record.result is not None:
        answer = dump_result(record.result)
    document: dict[str, Any] = {
        "state": record.state.value,
        "operation": record.operation,
        "fingerprint": record.fingerprint,
        "once": record.once,
        "owner": None,
        "answer": None if answer is None else answer.decode(),
        "error": record.error,
    }
    # An error payload was read with Decimals: kept as their exact text.
    return json.dumps(document, default=str)


def _decode(raw: bytes | str) -> Record:
    document = json.loads(raw)
    answer = document.get("answer")
    result = None
    if isinstance(answer, str):
        result = load_answer(answer.encode(), OPERATIONS[document["operation"]].result_type)
    expires = document.get("lease_expires")
    return Record(
        state=State(document["state"]),
        operation=document["operation"],
        fingerprint=document["fingerprint"],
        once=bool(document.get("once")),
        owner=document.get("owner"),
        lease_expires=None if expires is None else expires / 1000,
        result=result,
        error=document.get("error") or None,
    )
