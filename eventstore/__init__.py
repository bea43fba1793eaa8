"""The service's memory: users' feedback events, kept per user and as an append-only log,
behind one small interface with two backends: an SQLite file (embedded, the default: the
workers of one machine share it and a restart keeps it) and Redis (shared by replicas).

The service writes it (`POST /events`) and reads it (a user's history for `/predict`);
`python -m training events export` reads its log. This package is the one definition of the
format both sides read, so it sits beside `service` and `training`, importing neither.

A store keeps, per user, the items in time order (the window the model reads; an event with an
older timestamp than the last lands in its place, not at the end) and every item the user
touched, up to TOUCHED_CAP (the most recently touched); and the log of every accepted event, in
the order accepted. A batch is stored whole or not at all; an event whose `event_id` is already
stored is skipped, so a batch retried after a timeout is stored once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

TOUCHED_CAP = 10_000  # items kept per user for recommend mode's exclusion (the latest touched)
RECENT_CAP = 1_000  # items kept per user in time order, where a backend keeps a copy (Redis)


class StoreError(Exception):
    """The store cannot be used as configured (a bad URL, a file that is not a store)."""


class StoreUnavailable(Exception):
    """The backend failed or cannot be reached; nothing of the operation took effect."""


@dataclass(frozen=True)
class Event:
    """One interaction: who, what, when (Unix seconds), the rating if any, and the caller's
    idempotency key if any."""

    user_id: str
    item_id: str
    timestamp: float
    rating: float | None = None
    event_id: str | None = None


class Store(ABC):
    """Where events are kept; every method raises StoreUnavailable when the backend fails."""

    backend: str  # "sqlite" | "redis": the label of the store's metrics
    touched_cap: int = TOUCHED_CAP

    @abstractmethod
    def add(self, events: Sequence[Event]) -> int:
        """Store every event of the batch, durably, or none; returns how many were new (the
        rest had an `event_id` already stored)."""

    @abstractmethod
    def recent(self, user_id: str, n: int) -> list[str]:
        """The user's last `n` items by timestamp, oldest first (what a request's `history`
        holds); [] for a user with no events."""

    @abstractmethod
    def touched(self, user_id: str) -> list[str]:
        """Every item the user touched (at most TOUCHED_CAP: the latest), in no set order."""

    def history(self, user_id: str, n: int, touched: bool) -> tuple[list[str], list[str]]:
        """`recent(user_id, n)` and, when `touched`, `touched(user_id)` (else []): what a
        request without `history` reads; one round trip where the backend allows it."""
        return self.recent(user_id, n), self.touched(user_id) if touched else []

    async def history_async(
        self, user_id: str, n: int, touched: bool
    ) -> tuple[list[str], list[str]]:
        """`history`, for a caller on an event loop (the service): a backend that waits on the
        network lets the loop run other requests meanwhile; an embedded one answers at once."""
        return self.history(user_id, n, touched)

    @abstractmethod
    def log(self) -> Iterator[Event]:
        """Every stored event, in the order they were accepted."""

    @abstractmethod
    def ping(self) -> None:
        """Return when the backend answers; raise StoreUnavailable when it does not."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store is not used after."""


def open_store(url: str) -> Store:
    """The store at `url`: `sqlite:///PATH` (a file, created with its folder when missing) or
    `redis://HOST:PORT/DB`.

    Raises:
        StoreError: another scheme, or a URL without a path or host.
    """
    if url.startswith("sqlite:///"):
        from eventstore.sqlite import SQLiteStore

        path = url.removeprefix("sqlite:///")
        if not path:
            raise StoreError(f"{url!r}: sqlite:/// needs a file path (sqlite:///state/events.db)")
        return SQLiteStore(path)
    if url.startswith("redis://"):
        from eventstore.redis import RedisStore

        return RedisStore(url)
    raise StoreError(f"{url!r}: a store URL is sqlite:///PATH or redis://HOST:PORT/DB")
