"""The service's side of the event store (eventstore): `POST /events` into it, users' stored
history out of it for requests that leave `history` out (`with_history`); each operation timed
and counted by backend, a failing store turned into a 503 `store_unavailable` with Retry-After
(nothing of the request took effect).

The store is opened per worker when the app starts: an SQLite file that cannot be opened is a
configuration error and stops the start; a Redis that is down is not (the client connects per
call), so the service starts, serves every request that carries its history, and answers 503
to those that need the store until Redis is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from eventstore import Event, Store, StoreUnavailable
from service.errors import InvalidInput, StoreDown
from service.metrics import Metrics
from service.schemas import EventsRequest, EventsResponse, PredictRequest

T = TypeVar("T")
REQUEST, STORE = "request", "store"  # where a request's history came from (history_source)


class Memory:
    """The store, timed and counted, its failures as StoreDown."""

    def __init__(self, store: Store, metrics: Metrics, retry_after: int) -> None:
        self.store = store
        self.metrics = metrics
        self.retry_after = retry_after

    def add(self, events: Sequence[Event]) -> int:
        """Store the batch (see eventstore.Store.add); how many were new."""
        return self._timed("add", lambda: self.store.add(events))

    async def history(self, user_id: str, n: int, touched: bool) -> tuple[list[str], list[str]]:
        """The user's last `n` items, oldest first, and when `touched` every item they touched
        (up to the store's cap; else []); the event loop serves other requests meanwhile."""
        backend = self.store.backend
        start = time.perf_counter()
        try:
            return await self.store.history_async(user_id, n, touched)
        except StoreUnavailable as e:
            raise self._down("history", e) from None
        finally:
            self.metrics.store_duration.labels("history", backend).observe(
                time.perf_counter() - start
            )

    def _timed(self, operation: str, call: Callable[[], T]) -> T:
        backend = self.store.backend
        start = time.perf_counter()
        try:
            return call()
        except StoreUnavailable as e:
            raise self._down(operation, e) from None
        finally:
            self.metrics.store_duration.labels(operation, backend).observe(
                time.perf_counter() - start
            )

    def _down(self, operation: str, error: StoreUnavailable) -> StoreDown:
        self.metrics.store_errors.labels(operation, self.store.backend).inc()
        return StoreDown(f"the event store is unavailable: {error}", self.retry_after)


def store_events(body: bytes, max_events: int, memory: Memory) -> EventsResponse:
    """Validate a POST /events body and store all of its events, or none.

    Raises:
        InvalidInput: the body does not follow the schema (the message names the field, e.g.
            events[3].item_id) or holds more than `max_events` events (422).
        StoreDown: the store failed; nothing was stored (503).
    """
    from pydantic import ValidationError

    try:
        request = EventsRequest.model_validate_json(body)
    except ValidationError as e:
        raise InvalidInput.from_pydantic(e.errors()) from None
    n = len(request.events)
    if n > max_events:
        raise InvalidInput.at(
            "events", f"at most {max_events} events per request (HYDRAREC_MAX_EVENTS); got {n}"
        )
    now = time.time()
    events = [
        Event(
            e.user_id, e.item_id, now if e.timestamp is None else e.timestamp, e.rating, e.event_id
        )
        for e in request.events
    ]
    new = memory.add(events)
    memory.metrics.events_accepted.inc(n)
    return EventsResponse(stored=n, new=new, duplicates=n - new)


async def with_history(
    request: PredictRequest, memory: Memory, window: int
) -> tuple[PredictRequest, str]:
    """The request with the history it is answered with, and where that came from.

    A request that carries `history` (even []) keeps it: the body wins and the store is not
    read (REQUEST). Without it, the user's last `window` stored items (the model's window) are
    its history (STORE), and in recommend mode, unless `exclude_touched` is false, every item
    the user touched is excluded besides `exclude`.

    Raises:
        StoreDown: the store failed (503; only requests without `history` read it).
    """
    if request.history is not None:
        return request, REQUEST
    recommend = request.candidates is None and request.exclude_touched
    recent, touched = await memory.history(request.user_id, window, recommend)
    update: dict[str, list[str]] = {"history": recent}
    if touched:
        update["exclude"] = [*request.exclude, *touched]
    return request.model_copy(update=update), STORE
