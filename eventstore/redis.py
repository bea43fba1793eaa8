"""The shared store: Redis, for several replicas (or machines) that must see the same users.

Keys, under PREFIX: `log`, a stream of every accepted event (its entry ids are the order of
acceptance); `ids`, the set of stored `event_id`s; `seq`, a counter; per user `recent:<user>`, a
sorted set of "<seq>:<item>" scored by timestamp (equal timestamps in acceptance order, the
sequence being fixed-width), cut to RECENT_CAP, and `touched:<user>`, items scored by their
latest timestamp, cut to `touched_cap`. A batch is one Lua script, which Redis runs atomically
(no other client sees half of it). Durability is the server's: with `appendonly yes` and
`appendfsync always` (the compose and Kubernetes files) a write is on disk before Redis answers,
so before the service answers 200.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import redis

from eventstore import RECENT_CAP, Event, Store, StoreError, StoreUnavailable
from eventstore.redis_reads import LoopReader

PREFIX = "hydrarec:"
TIMEOUT_S = 1.0  # connect and read: an unreachable Redis is a 503 within a second, not a hang
LOG_CHUNK = 10_000
SEQ_WIDTH = 16  # hex digits of the sequence in a recent-items member

# ARGV: the prefix, the recent and touched caps, then 5 fields per event (the keys are derived
# from the prefix in the script: one Redis, not a cluster).
ADD = """
local prefix, recent_cap, touched_cap = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local added, users = 0, {}
for i = 4, #ARGV, 5 do
  local user, item, ts, rating, id = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if id == '' or redis.call('SADD', prefix .. 'ids', id) == 1 then
    local seq = redis.call('INCR', prefix .. 'seq')
    redis.call('XADD', prefix .. 'log', '*', 'user', user, 'item', item, 'ts', ts,
               'rating', rating, 'id', id)
    redis.call('ZADD', prefix .. 'recent:' .. user, ts, string.format('%016x', seq) .. ':' .. item)
    redis.call('ZADD', prefix .. 'touched:' .. user, 'GT', ts, item)  -- adds, or raises
    users[user] = true
    added = added + 1
  end
end
for user in pairs(users) do
  redis.call('ZREMRANGEBYRANK', prefix .. 'recent:' .. user, 0, -recent_cap - 1)
  redis.call('ZREMRANGEBYRANK', prefix .. 'touched:' .. user, 0, -touched_cap - 1)
end
return added
"""


class RedisStore(Store):
    """The store in a Redis database."""

    backend = "redis"

    def __init__(self, url: str) -> None:
        """A client of the Redis at `url` (redis://HOST:PORT/DB); it connects on first use, so
        a Redis that is down at start-up is a StoreUnavailable per call, not a failed start.

        Raises:
            StoreError: the URL cannot be parsed.
        """
        try:
            self.client = redis.Redis.from_url(
                url,
                socket_timeout=TIMEOUT_S,
                socket_connect_timeout=TIMEOUT_S,
                decode_responses=True,
            )
        except ValueError as e:
            raise StoreError(f"{url!r}: not a Redis URL ({e})") from None
        self.url = url
        self._add = self.client.register_script(ADD)
        # reads on an event loop (history_async): one pipelined connection per loop (a worker
        # has one; a test suite's loops are few)
        self._readers: dict[asyncio.AbstractEventLoop, LoopReader] = {}

    def add(self, events: Sequence[Event]) -> int:
        args: list[Any] = [PREFIX, RECENT_CAP, self.touched_cap]
        for e in events:
            rating = "" if e.rating is None else repr(e.rating)
            args += [e.user_id, e.item_id, repr(e.timestamp), rating, e.event_id or ""]
        return int(self._call(self._add, args=args))

    def recent(self, user_id: str, n: int) -> list[str]:
        return self.history(user_id, n, touched=False)[0]

    def touched(self, user_id: str) -> list[str]:
        return self.history(user_id, 0, touched=True)[1]

    def history(self, user_id: str, n: int, touched: bool) -> tuple[list[str], list[str]]:
        pipe = self.client.pipeline(transaction=False)  # one round trip
        for _, key, start, stop in _history_commands(user_id, n, touched):
            pipe.zrange(key, start, stop)
        return _history_answer(self._call(pipe.execute), n, touched)

    async def history_async(
        self, user_id: str, n: int, touched: bool
    ) -> tuple[list[str], list[str]]:
        reader = self._readers.get(loop := asyncio.get_running_loop())
        if reader is None:
            settings = self.client.connection_pool.connection_kwargs
            reader = self._readers[loop] = LoopReader(loop, settings, self.url, TIMEOUT_S)
        answers = await reader.read(_history_commands(user_id, n, touched))
        return _history_answer(answers, n, touched)

    def log(self) -> Iterator[Event]:
        start = "-"
        while True:
            entries = self._call(self.client.xrange, f"{PREFIX}log", start, "+", LOG_CHUNK)
            if not entries:
                return
            for _, f in entries:
                rating = float(f["rating"]) if f["rating"] else None
                yield Event(f["user"], f["item"], float(f["ts"]), rating, f["id"] or None)
            start = f"({entries[-1][0]}"

    def ping(self) -> None:
        self._call(self.client.ping)

    def close(self) -> None:
        for reader in list(self._readers.values()):
            reader.close()
        self.client.close()

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as e:
            raise StoreUnavailable(f"redis {self.url}: {e}") from None


def _history_commands(user_id: str, n: int, touched: bool) -> list[tuple[Any, ...]]:
    commands: list[tuple[Any, ...]] = [("ZRANGE", f"{PREFIX}recent:{user_id}", -max(n, 1), -1)]
    if touched:
        commands.append(("ZRANGE", f"{PREFIX}touched:{user_id}", 0, -1))
    return commands


def _history_answer(answers: list[Any], n: int, touched: bool) -> tuple[list[str], list[str]]:
    recent = [m[SEQ_WIDTH + 1 :] for m in answers[0]] if n > 0 else []
    return recent, list(answers[1]) if touched else []
