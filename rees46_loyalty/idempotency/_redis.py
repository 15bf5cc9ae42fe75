"""RedisIdempotencyStore: books shared by every process and machine that uses one Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from attrs import evolve

from .._scrub import scrubbed_init
from ._records import (
    Book,
    Decision,
    Finish,
    Intent,
    Outcome,
    Verdict,
    book_from_json,
    check_durations,
    intent_to_json,
    outcome_from_json,
)
from ._resp import RespClient
from ._resp import text_of as _text

if TYPE_CHECKING:  # pragma: no cover
    from redis.asyncio import Redis

__all__ = ["RedisIdempotencyStore"]

logger = logging.getLogger("rees46_loyalty")

# The rules of _records (decide, finish, release, forget), run inside Redis so that reading a
# book and writing it back are one atomic step, timed by the Redis server's clock (the same for
# every worker). A book is a hash: field `book` holds the JSON document of _records (times in
# milliseconds), field `a:<intent id>` the answer of that intent. Deciding reads the document
# only; an answer travels back only to be replayed.
_LIBRARY = """
local DURABLE = {once = true, cancel = true}
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function id_of(intent)
  if intent.key then return 'k:' .. intent.key end
  return intent.operation .. ':' .. intent.fingerprint
end
local function load(key)
  local raw = redis.call('HGET', key, 'book')
  if not raw then return nil end
  local book = cjson.decode(raw)
  if type(book.outcomes) ~= 'table' then book.outcomes = {} end
  return book
end
-- Expired outcomes dropped; a lease that ran out turned into an unknown outcome (its holder
-- stays the owner, so that a holder that was only slow can still record what happened).
local function current(key, book, now, ttl)
  if not book then return nil, false end
  local changed = false
  for name, o in pairs(book.outcomes) do
    if o.expires and o.expires <= now then
      book.outcomes[name] = nil
      redis.call('HDEL', key, 'a:' .. name, 'b:' .. name, 'r:' .. name)
      changed = true
    end
  end
  local lease = book.lease
  if lease and lease.expires <= now then
    local o = {state = 'unknown', intent = lease.intent, owner = lease.owner}
    if not DURABLE[lease.intent.safety] then o.expires = now + ttl end
    book.outcomes[id_of(lease.intent)] = o
    book.lease = nil
    changed = true
  end
  return book, changed
end
local function drop_noted(key, name)
  redis.call('HDEL', key, 'b:' .. name, 'r:' .. name)
end
-- Write the book back; a lease or an unknown change / cancel keeps it from expiring.
local function save(key, book, now)
  if not book.lease and next(book.outcomes) == nil then
    redis.call('DEL', key)
    return
  end
  redis.call('HSET', key, 'book', cjson.encode(book))
  local durable, last = book.lease ~= nil, 0
  for _, o in pairs(book.outcomes) do
    if not o.expires then durable = true elseif o.expires > last then last = o.expires end
  end
  if durable then
    redis.call('PERSIST', key)
  else
    redis.call('PEXPIRE', key, math.max(1, math.floor(last - now)))
  end
end
"""

_BEGIN = (
    _LIBRARY
    + """
local key, owner = KEYS[1], ARGV[2]
local intent = cjson.decode(ARGV[1])
local lease_ms, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local book, changed = current(key, load(key), now, ttl)
local function answer(verdict, a, b)
  if changed then save(key, book, now) end
  return {verdict, a, b}
end
local outcomes = book and book.outcomes or {}
local id = id_of(intent)
local mine = outcomes[id]
if mine then
  if mine.intent.operation ~= intent.operation or mine.intent.fingerprint ~= intent.fingerprint then
    return answer('conflict', cjson.encode(mine), '')
  end
  if mine.state ~= 'unknown' then
    return answer('replay', cjson.encode(mine), redis.call('HGET', key, 'a:' .. id) or '')
  end
end
if book and book.lease then
  if book.lease.owner == owner then return answer('acquired', '', '') end
  return answer('busy', tostring(book.lease.expires - now), '')
end
for _, o in pairs(outcomes) do
  if o.state == 'unknown' and o.intent.safety == 'once' and not o.not_applied then
    return answer('unknown', cjson.encode(o), '')
  end
end
if not book then book = {outcomes = {}} end
book.lease = {owner = owner, intent = intent, expires = now + lease_ms}
save(key, book, now)
if mine then
  -- The same intent after an unknown outcome: what is known of it goes back with the lease.
  return {'acquired', cjson.encode(mine), redis.call('HGET', key, 'b:' .. id) or '',
          redis.call('HGET', key, 'r:' .. id) or ''}
end
return {'acquired', '', ''}
"""
)

_FINISH = (
    _LIBRARY
    + """
local key, owner = KEYS[1], ARGV[1]
local outcome = cjson.decode(ARGV[2])
local ttl = tonumber(ARGV[5])
local now = now_ms()
local book, changed = current(key, load(key), now, ttl)
if not book then book = {outcomes = {}} end
local lease = book.lease
local mine = lease ~= nil and lease.owner == owner
if mine then book.lease = nil end
local id = id_of(outcome.intent)
local existing = book.outcomes[id]
if existing and existing.state ~= 'unknown' then
  if existing.owner == owner then
    if changed then save(key, book, now) end
    return 'recorded'
  end
  if mine or changed then save(key, book, now) end
  return 'superseded'
end
local kept_by_me = mine or (existing ~= nil and existing.owner == owner)
outcome.owner = owner
if outcome.state == 'unknown' then
  if not DURABLE[outcome.intent.safety] or outcome.not_applied then outcome.expires = now + ttl end
  if ARGV[6] == '1' then
    -- What the call noted, written again: the store may have lost the lease that held it.
    redis.call('HSET', key, 'b:' .. id, ARGV[7], 'r:' .. id, ARGV[8])
  end
else
  outcome.expires = now + ttl
  drop_noted(key, id)
  local succeeded = outcome.intent
  for name, other in pairs(book.outcomes) do
    local stale = other.state == 'failed' or (
      other.state == 'succeeded' and succeeded.safety == 'safe' and not succeeded.key
      and not other.intent.key and other.intent.operation == succeeded.operation)
    if stale then
      book.outcomes[name] = nil
      redis.call('HDEL', key, 'a:' .. name, 'b:' .. name, 'r:' .. name)
    end
  end
end
book.outcomes[id] = outcome
if ARGV[3] == '1' then
  redis.call('HSET', key, 'a:' .. id, ARGV[4])
else
  redis.call('HDEL', key, 'a:' .. id)
end
save(key, book, now)
if kept_by_me then return 'recorded' end
return 'recorded after loss'
"""
)

_RELEASE = (
    _LIBRARY
    + """
local key, owner = KEYS[1], ARGV[1]
local intent = cjson.decode(ARGV[2])
local now = now_ms()
local book, changed = current(key, load(key), now, tonumber(ARGV[3]))
if not book then return 0 end
local id = id_of(intent)
if book.lease and book.lease.owner == owner then
  drop_noted(key, id_of(book.lease.intent))
  book.lease = nil
  changed = true
end
local mine = book.outcomes[id]
if mine and mine.state == 'unknown' and mine.owner == owner then
  book.outcomes[id] = nil
  drop_noted(key, id)
  changed = true
end
if changed then save(key, book, now) end
return 1
"""
)

_FORGET = (
    _LIBRARY
    + """
local key, wanted = KEYS[1], ARGV[1]
local now = now_ms()
local book, changed = current(key, load(key), now, tonumber(ARGV[2]))
if not book then return {} end
local dropped = {}
for name, o in pairs(book.outcomes) do
  if o.state ~= 'succeeded' and (wanted == '' or name == wanted) then
    table.insert(dropped, cjson.encode(o))
    book.outcomes[name] = nil
    redis.call('HDEL', key, 'a:' .. name, 'b:' .. name, 'r:' .. name)
    changed = true
  end
end
if changed then save(key, book, now) end
return dropped
"""
)

# The book as the rules read it now (a lease that ran out is an unknown outcome), with answers.
_GET = (
    _LIBRARY
    + """
local key = KEYS[1]
local now = now_ms()
local book, changed = current(key, load(key), now, tonumber(ARGV[1]))
if not book then return {} end
if changed then save(key, book, now) end
local reply = {cjson.encode(book)}
local all = redis.call('HGETALL', key)
for i = 1, #all, 2 do
  if all[i] ~= 'book' then
    table.insert(reply, all[i])
    table.insert(reply, all[i + 1])
  end
end
return reply
"""
)

# Keep with the caller's lease what it noted: the order as it was, and the request.
_NOTE = (
    _LIBRARY
    + """
local key, owner = KEYS[1], ARGV[1]
local now = now_ms()
local book, changed = current(key, load(key), now, tonumber(ARGV[4]))
if not book or not book.lease or book.lease.owner ~= owner then
  if changed then save(key, book, now) end
  return 0
end
local id = id_of(book.lease.intent)
redis.call('HSET', key, 'b:' .. id, ARGV[2], 'r:' .. id, ARGV[3])
if changed then save(key, book, now) end
return 1
"""
)


class RedisIdempotencyStore:
    """Idempotency records in Redis, for workers in several processes or on several machines.

    One round trip before a call (an atomic script that reads the order's book and takes its
    lease) and one after it. Made from a URL, the store speaks to Redis itself, every call of an
    event loop over one connection (replies come back in the order of the commands); made from
    a ``redis.asyncio.Redis`` client of your own (the ``redis`` extra), through that client.

    The guarantees hold while Redis keeps what it was told: run it with persistence (AOF,
    ``appendfsync everysec`` or ``always``) and ``maxmemory-policy noeviction``. The store
    checks both on its first call and logs a warning when they are missing. What a Redis that
    loses its data still keeps is on the "Idempotency" page of the docs.

    Args:
        redis: A ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL, with a user name, a
            password and a database (``redis://:secret@host:6379/2``); or a
            ``redis.asyncio.Redis`` client of your own, left open (for Sentinel, Cluster,
            client certificates, timeouts).
        ttl: Seconds a finished outcome is kept (default 24 h); at least ``lease``.
        lease: Seconds a call may hold an order before another may take it over (default 60 s).
            A worker that dies holding it blocks the order this long at most; what it was doing
            then counts as an unknown outcome.
        namespace: Prefix of every key; the client adds its shop id after it.
        poll_interval: Seconds between two looks at a busy order.
        max_connections: Deprecated, and unused: a store made from a URL no longer pools
            connections (above). A client of your own keeps its pool: give it a
            ``BlockingConnectionPool``, or it fails past its pool's size.
        command_timeout: Seconds Redis may stay silent while the store's commands wait for
            their replies (a stalled or half-open connection), for a store made from a URL:
            past it the connection is dropped, those calls fail (``IdempotencyError`` before a
            call; logged after one) and the next command connects again.
    """

    #: Every method is a round trip to Redis.
    suspends = True

    @scrubbed_init  # a wrong option: the URL (and its password) is in no frame's locals
    def __init__(
        self,
        redis: str | Redis,
        *,
        ttl: float = 24 * 3600,
        lease: float = 60.0,
        namespace: str = "rees46_loyalty:idempotency",
        poll_interval: float = 0.02,
        max_connections: int | None = None,
        command_timeout: float = 10.0,
    ) -> None:
        check_durations(ttl=ttl, lease=lease, poll_interval=poll_interval)
        if not 0 < command_timeout < float("inf"):
            raise ValueError(
                f"command_timeout must be a number of seconds > 0, got {command_timeout!r}"
            )
        if max_connections is not None:
            warnings.warn(
                "max_connections is unused: a RedisIdempotencyStore made from a URL sends the "
                "calls of an event loop over one connection",
                DeprecationWarning,
                stacklevel=3,  # the caller's line (scrubbed_init wraps this one)
            )
        self._owned = isinstance(redis, str)
        self._redis: RespClient | Redis = (
            RespClient(redis, timeout=command_timeout) if isinstance(redis, str) else redis
        )
        self.ttl = float(ttl)
        self.lease = float(lease)
        self._namespace = namespace
        self._poll = poll_interval
        self._ttl_ms = max(1, int(self.ttl * 1000))
        self._lease_ms = max(1, int(self.lease * 1000))
        register: Callable[[str], Any] = (
            self._redis.script
            if isinstance(self._redis, RespClient)
            else self._redis.register_script
        )
        self._begin = register(_BEGIN)
        self._finish = register(_FINISH)
        self._release = register(_RELEASE)
        self._forget = register(_FORGET)
        self._get = register(_GET)
        self._note = register(_NOTE)
        self._checked = False

    def __repr__(self) -> str:
        return f"RedisIdempotencyStore(namespace={self._namespace!r}, lease={self.lease:g})"

    def _key(self, key: str) -> str:
        return f"{self._namespace}:{key}"

    async def begin(self, key: str, intent: Intent, owner: str) -> Decision:
        """Decide what a call with *intent* does on the order *key*, taking the lease if it may."""
        if not self._checked:
            self._checked = True
            await self.check()
        reply = await self._begin(
            keys=[self._key(key)],
            args=[json.dumps(intent_to_json(intent)), owner, self._lease_ms, self._ttl_ms],
        )
        verdict_text, extra, answer = reply[0], reply[1], reply[2]
        verdict = Verdict(_text(verdict_text))
        if verdict is Verdict.ACQUIRED:
            if not _text(extra):
                return Decision(verdict=verdict)
            request = _bytes(reply[3]) if len(reply) > 3 else b""
            known = outcome_from_json(_text(extra), None)
            if request:  # noted together: the order before (maybe empty) and the request
                known = evolve(known, before=_bytes(answer), request=request)
            return Decision(verdict=verdict, outcome=known, previous_unknown=True)
        if verdict is Verdict.BUSY:
            return Decision(verdict=verdict, wait=int(float(_text(extra))) / 1000)
        outcome = outcome_from_json(_text(extra), _bytes(answer) or None)
        return Decision(verdict=verdict, outcome=outcome)

    async def finish(self, key: str, owner: str, outcome: Outcome) -> Finish:
        """Record *owner*'s outcome and release its lease (see :class:`Finish`)."""
        document: dict[str, Any] = {
            "state": outcome.state.value,
            "intent": intent_to_json(outcome.intent),
        }
        if outcome.status is not None:
            document["status"] = outcome.status
        if outcome.previous_unknown:
            document["previous_unknown"] = True
        if outcome.not_applied:
            document["not_applied"] = True
        answer = outcome.answer
        noted = outcome.before is not None and outcome.request is not None
        done = await self._finish(
            keys=[self._key(key)],
            args=[
                owner,
                json.dumps(document),
                "0" if answer is None else "1",
                b"" if answer is None else answer,
                self._ttl_ms,
                "1" if noted else "0",
                outcome.before or b"",
                outcome.request or b"",
            ],
        )
        return Finish(_text(done))

    async def note(self, key: str, owner: str, *, before: bytes, request: bytes) -> bool:
        """Keep with *owner*'s lease the order as it was and the request."""
        done = await self._note(keys=[self._key(key)], args=[owner, before, request, self._ttl_ms])
        return bool(done)

    async def release(self, key: str, owner: str, intent: Intent) -> None:
        """Drop *owner*'s lease: its call provably changed nothing."""
        await self._release(
            keys=[self._key(key)], args=[owner, json.dumps(intent_to_json(intent)), self._ttl_ms]
        )

    async def wait(self, key: str, timeout: float) -> None:  # noqa: ARG002 - polled, not watched
        """Sleep a poll interval (at most *timeout*): the caller then looks again."""
        await asyncio.sleep(min(timeout, self._poll))

    async def get(self, key: str) -> Book | None:
        """The book of the order *key*, as the rules read it now."""
        reply = await self._get(keys=[self._key(key)], args=[self._ttl_ms])
        if not reply:
            return None
        fields = {_text(reply[i]): _bytes(reply[i + 1]) for i in range(1, len(reply) - 1, 2)}
        return book_from_json(reply[0], fields)

    async def forget(self, key: str, idempotency_key: str | None = None) -> list[Outcome]:
        """Drop the order's unknown outcomes and terminal failures (only *idempotency_key*'s).

        A call in flight and a success are kept: clearing them could let a request go twice.
        """
        wanted = "" if idempotency_key is None else "k:" + idempotency_key
        dropped = await self._forget(keys=[self._key(key)], args=[wanted, self._ttl_ms])
        return [outcome_from_json(_text(raw), None) for raw in dropped]

    async def check(self) -> list[str]:
        """What in this Redis's settings weakens the guarantees; each also logged as a warning.

        Run by the store's first call. A Redis that refuses ``CONFIG GET`` (some managed ones
        do) cannot be checked: that is logged at INFO.
        """
        try:
            policy = await self._redis.config_get("maxmemory-policy")
            persistence = await self._redis.config_get("appendonly")
            snapshots = await self._redis.config_get("save")
        except Exception as exc:  # noqa: BLE001 - any refusal means "cannot check", said below
            logger.info(
                "could not read the Redis settings of the idempotency store (%s): make sure "
                "it persists its data and never evicts keys",
                type(exc).__name__,
            )
            return []
        problems = []
        evicts = _text(policy.get("maxmemory-policy", "noeviction"))
        if evicts != "noeviction":
            problems.append(
                f"Redis evicts keys under memory pressure (maxmemory-policy {evicts}): an "
                "evicted record lets a redelivered change go twice; set noeviction"
            )
        if (
            _text(persistence.get("appendonly", "no")) != "yes"
            and not _text(snapshots.get("save", "")).strip()
        ):
            problems.append(
                "Redis persists nothing (appendonly no, no save points): a restart loses every "
                "idempotency record, and redelivered changes go twice; turn on appendonly"
            )
        for problem in problems:
            logger.warning("idempotency store: %s", problem)
        return problems

    async def close(self) -> None:
        """Close the Redis client if the store created it."""
        if self._owned:
            await self._redis.aclose()


def _bytes(value: bytes | str) -> bytes:
    # A client of the user's own may decode replies (decode_responses=True).
    return value.encode() if isinstance(value, str) else bytes(value)
