"""Reads from Redis on the service's event loop: one connection per loop, requests pipelined.

A request without `history` reads the user's history on the hot path. Through redis-py's
client a read is a blocking round trip (about 110 us here, 60 of them this process's CPU), and
the worker's event loop sits idle for the rest of it. Here a read is an asyncio future: the
command is written to the loop's one connection and the loop goes on with other requests until
Redis answers; the answers of every read in flight come back in order on that connection and
are parsed by hiredis. A connection that fails or a read that takes longer than the timeout
fails every read in flight on it (StoreUnavailable) and is dropped; the next read connects
again.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import hiredis

from eventstore import StoreUnavailable


class _Replies(asyncio.Protocol):
    """The connection's answers, matched in order to the reads waiting for them."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(encoding="utf-8")
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future = self.waiting.popleft()
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        lost = exc or ConnectionError("the connection was closed")
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(lost)
                future.exception()  # whoever still awaits it gets it; nobody else need


class LoopReader:
    """Pipelined reads from the Redis of `settings` (redis-py's connection keywords: host,
    port, db, username, password) on `loop`."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, settings: dict[str, Any], url: str, timeout_s: float
    ) -> None:
        self.loop, self.settings, self.url, self.timeout_s = loop, settings, url, timeout_s
        self._transport: asyncio.Transport | None = None
        self._replies: _Replies | None = None
        self._connecting = asyncio.Lock()

    async def read(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The answers to `commands`, sent together.

        Raises:
            StoreUnavailable: Redis cannot be reached, fails, or answers too late.
        """
        try:
            async with asyncio.timeout(self.timeout_s):  # no task per read, as wait_for has
                return await self._read(commands)
        except (OSError, hiredis.ProtocolError, hiredis.ReplyError, TimeoutError) as e:
            self.close()  # a connection whose answers may be out of step is not used again
            reason = str(e) or f"no answer within {self.timeout_s} s"
            raise StoreUnavailable(f"redis {self.url}: {reason}") from None

    async def _read(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        transport, replies = await self._connection()
        futures = [self.loop.create_future() for _ in commands]
        replies.waiting.extend(futures)
        transport.write(b"".join(hiredis.pack_command(c) for c in commands))
        answers = [await f for f in futures]
        for answer in answers:
            if isinstance(answer, hiredis.ReplyError):
                raise answer
        return answers

    async def _connection(self) -> tuple[asyncio.Transport, _Replies]:
        if self._transport is not None and self._replies is not None:
            if not self._transport.is_closing():
                return self._transport, self._replies
        async with self._connecting:  # one connection, however many reads start at once
            if self._transport is None or self._transport.is_closing():
                transport, replies = await self.loop.create_connection(
                    _Replies,
                    self.settings.get("host", "localhost"),
                    self.settings.get("port", 6379),
                )
                self._transport, self._replies = transport, replies
                await self._handshake(transport, replies)
        assert self._transport is not None
        assert self._replies is not None
        return self._transport, self._replies

    async def _handshake(self, transport: asyncio.Transport, replies: _Replies) -> None:
        """AUTH and SELECT as the URL asks, before any read."""
        commands: list[tuple[Any, ...]] = []
        if self.settings.get("password"):
            user = self.settings.get("username")
            commands.append(("AUTH", *([user] if user else []), self.settings["password"]))
        if self.settings.get("db"):
            commands.append(("SELECT", self.settings["db"]))
        if not commands:
            return
        futures = [self.loop.create_future() for _ in commands]
        replies.waiting.extend(futures)
        transport.write(b"".join(hiredis.pack_command(c) for c in commands))
        for future in futures:
            if isinstance(answer := await future, hiredis.ReplyError):
                raise answer

    def close(self) -> None:
        """Drop the connection (the reads in flight on it fail)."""
        # a store closed after its loop ended: the transport cannot be touched, and its socket
        # closes when it is collected
        if self._transport is not None and not self.loop.is_closed():
            self._transport.abort()
        self._transport, self._replies = None, None
