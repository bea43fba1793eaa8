"""The event store's contract, on each real backend (an SQLite file, a redis-server started
here): batches stored whole, retries stored once, history in time order whatever the arrival
order, the touched cap, the log in acceptance order, two writers on one user at once, a user
with a million events, a restart; and store URLs and files that are not stores."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

import eventstore
from eventstore import RECENT_CAP, TOUCHED_CAP, Event, Store, StoreError, open_store
from eventstore.redis import PREFIX, RedisStore
from eventstore.sqlite import SQLiteStore
from harness.redis_server import RedisServer


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def test_a_batch_is_stored_and_read_back_per_user_and_as_the_log(store: Store) -> None:
    batch = [
        Event("u1", "i1", 100.0, 4.0, "e1"),
        Event("u2", "i9", 101.0),
        Event("u1", "i2", 102.0, None, "e2"),
    ]
    assert store.add(batch) == 3
    assert store.recent("u1", 10) == ["i1", "i2"]
    assert store.recent("u2", 10) == ["i9"]
    assert store.recent("nobody", 10) == []
    assert sorted(store.touched("u1")) == ["i1", "i2"]
    assert list(store.log()) == batch


def test_a_retried_batch_is_stored_once(store: Store) -> None:
    batch = [Event("u1", "i1", 100.0, event_id="a"), Event("u1", "i2", 101.0, event_id="b")]
    assert store.add(batch) == 2
    assert store.add([*batch, Event("u1", "i3", 102.0, event_id="c")]) == 1
    assert store.recent("u1", 10) == ["i1", "i2", "i3"]
    assert len(list(store.log())) == 3


def test_events_without_an_id_are_each_stored(store: Store) -> None:
    same = Event("u1", "i1", 100.0)
    assert store.add([same, same]) == 2  # no key: the caller said nothing about retries
    assert store.recent("u1", 10) == ["i1", "i1"]


def test_history_is_in_time_order_whatever_the_arrival_order(store: Store) -> None:
    store.add([Event("u1", "late", 300.0), Event("u1", "first", 100.0)])
    store.add([Event("u1", "middle", 200.0)])
    assert store.recent("u1", 10) == ["first", "middle", "late"]
    assert store.recent("u1", 2) == ["middle", "late"]  # the last n, oldest first
    assert [e.item_id for e in store.log()] == ["late", "first", "middle"]  # as accepted


def test_touched_keeps_the_latest_items_up_to_the_cap(store: Store) -> None:
    store.touched_cap = 5
    store.add([Event("u1", f"i{k}", float(k)) for k in range(8)])
    assert sorted(store.touched("u1")) == ["i3", "i4", "i5", "i6", "i7"]
    store.add([Event("u1", "i0", 100.0)])  # touched again: the latest now
    assert sorted(store.touched("u1")) == ["i0", "i4", "i5", "i6", "i7"]
    assert len(store.recent("u1", 100)) == 9  # the history keeps every event
    assert TOUCHED_CAP >= 1_000  # a long-standing user's past fits the default


def test_two_writers_on_one_user_at_once_lose_nothing(store: Store, store_url: str) -> None:
    other = open_store(store_url)  # a second worker's store
    errors: list[BaseException] = []

    def write(target: Store, prefix: str) -> None:
        try:
            for k in range(50):
                target.add([Event("u1", f"{prefix}{k}", float(k), event_id=f"{prefix}{k}")])
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [
        threading.Thread(target=write, args=(store, "a")),
        threading.Thread(target=write, args=(other, "b")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert not errors
    assert len(store.recent("u1", 1000)) == 100
    assert len(set(store.touched("u1"))) == 100


def test_concurrent_batches_are_each_stored_whole_and_counted(store: Store) -> None:
    """Threads of one process adding at once (SQLite commits them in groups): each batch's
    answer counts its own new events, retried ids are counted once over all of them."""
    counts: dict[int, int] = {}

    def write(thread: int) -> None:
        for k in range(40):  # ids shared by pairs of threads: one of each pair stores them
            batch = [Event(f"u{thread}", f"i{k}-{j}", float(k), event_id=f"{thread // 2}-{k}-{j}")
                     for j in range(5)]  # fmt: skip
            counts[thread] = counts.get(thread, 0) + store.add(batch)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts.values()) == 4 * 40 * 5  # every distinct id once
    assert len(list(store.log())) == 4 * 40 * 5
    for pair in range(4):
        assert counts[2 * pair] + counts[2 * pair + 1] == 40 * 5


def test_a_failed_group_fails_every_batch_in_it(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "events.db")
    good, bad = [Event("u1", "i1", 100.0)], [Event("u1", None, 101.0)]  # type: ignore[arg-type]
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def write(batch: list[Event]) -> None:
        barrier.wait()
        try:
            store.add(batch)
            outcomes.append("stored")
        except eventstore.StoreUnavailable:
            outcomes.append("refused")

    threads = [threading.Thread(target=write, args=(b,)) for b in (good, bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log = list(store.log())
    store.close()
    if outcomes.count("refused") == 2:  # committed together: both refused, nothing stored
        assert log == []
    else:  # committed apart: the good one alone is stored
        assert sorted(outcomes) == ["refused", "stored"]
        assert [e.item_id for e in log] == ["i1"]


def test_a_failed_batch_leaves_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "events.db")
    bad = [Event("u1", "i1", 100.0), Event("u1", None, 101.0)]  # type: ignore[arg-type]
    with pytest.raises(eventstore.StoreUnavailable):
        store.add(bad)  # NOT NULL fails on the second row
    assert list(store.log()) == []
    assert store.touched("u1") == []
    store.close()


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="cannot open it as the event store"):
        open_store(f"sqlite:///{path}")


@pytest.mark.parametrize(
    "url", ["postgres://db/1", "sqlite:///", "events.db", "sqlite://relative.db"]
)
def test_an_unknown_url_is_refused(url: str) -> None:
    with pytest.raises(StoreError, match="sqlite:///"):
        open_store(url)


def test_a_restart_keeps_every_event(store_url: str, redis_server: RedisServer) -> None:
    first = open_store(store_url)
    first.add([Event("u1", "i1", 1.0, event_id="x"), Event("u1", "i2", 2.0)])
    first.close()
    if store_url == redis_server.url:  # the server itself restarts, from its append-only file
        redis_server.stop()
        redis_server.start()
    again = open_store(store_url)
    again.ping()
    assert again.recent("u1", 10) == ["i1", "i2"]
    assert again.add([Event("u1", "i1", 1.0, event_id="x")]) == 0  # its key survived too
    again.close()


def test_an_unreachable_redis_is_unavailable_at_once_not_a_failed_start() -> None:
    from harness.processes import free_port

    store = open_store(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    for call in (lambda: store.add([Event("u1", "i1", 1.0)]), lambda: store.recent("u1", 5)):
        with pytest.raises(eventstore.StoreUnavailable, match="redis"):
            call()
    store.close()


def test_a_user_with_a_million_events_keeps_the_caps_and_reads_stay_small(store: Store) -> None:
    n, items = 1_000_000, 50_000  # the user comes back to each item 20 times
    for start in range(0, n, 10_000):
        store.add([Event("heavy", f"i{k % items}", float(k)) for k in range(start, start + 10_000)])
    tracemalloc.start()
    recent, touched = store.history("heavy", 200, touched=True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert recent == [f"i{k % items}" for k in range(n - 200, n)]
    assert len(touched) == TOUCHED_CAP
    assert set(touched) == {f"i{k % items}" for k in range(n - TOUCHED_CAP, n)}  # the latest
    assert peak < 8 * 2**20  # a read holds the window and the cap, not the user's million
    if isinstance(store, RedisStore):  # the per-user keys stay at their caps
        per_user = [f"{PREFIX}recent:heavy", f"{PREFIX}touched:heavy"]
        assert store.client.zcard(per_user[0]) == RECENT_CAP
        assert sum(store.client.memory_usage(k) for k in per_user) < 4 * 2**20
    assert sum(1 for _ in store.log()) == n  # the log keeps every event: the training set
