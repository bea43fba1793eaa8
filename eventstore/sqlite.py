"""The embedded store: one SQLite file in WAL mode, shared by the workers of a machine.

Tables: `events`, the log (its rowid `seq` is the order of acceptance; `event_id` unique, so a
retried event is ignored), indexed by (user, timestamp, seq), which serves a user's recent items
in time order without a copy; `touched`, one row per (user, item) with the latest timestamp,
cut to `touched_cap` per user. Batches are written in `BEGIN IMMEDIATE` transactions,
committed with `synchronous=FULL` (the WAL synced at each commit) before `add` returns: a 200
is never given for an event a power cut could lose. Each thread has its own connection.
Writers commit in groups: the batches of a process's threads that wait while one commits go
into the next transaction together (one fsync for all; each batch still whole or not at all),
and the worker processes sharing the file take turns on an flock of `<file>.lock`; readers
never wait (WAL).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventstore import Event, Store, StoreError, StoreUnavailable

BUSY_TIMEOUT_MS = 5_000
LOG_CHUNK = 10_000  # events read per query when the log is exported
LOCK_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    timestamp REAL NOT NULL,
    rating REAL
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, timestamp, seq);
CREATE TABLE IF NOT EXISTS touched (
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    last REAL NOT NULL,
    PRIMARY KEY (user_id, item_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS touched_by_time ON touched (user_id, last);
"""


@dataclass
class _Batch:
    """One `add` call's rows, waiting for a commit, and its outcome."""

    rows: list[tuple[Any, ...]]
    added: int = 0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class SQLiteStore(Store):
    """The store in one SQLite file."""

    backend = "sqlite"

    def __init__(self, path: str | Path) -> None:
        """Open (or create, with its folder) the store file and its tables.

        Raises:
            StoreError: the file cannot be created or is not an SQLite database.
        """
        self.path = Path(path)
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []  # every thread's, closed by close()
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # this process's writer, one at a time
        self._pending: list[_Batch] = []  # batches waiting for the next commit
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write_fd = os.open(
                self.path.with_name(self.path.name + ".lock"), LOCK_FLAGS, 0o644
            )
            with self._connection() as db:
                db.executescript(SCHEMA)
        except (OSError, sqlite3.DatabaseError) as e:
            raise StoreError(f"{self.path}: cannot open it as the event store: {e}") from None

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # transactions are begun and committed here
                check_same_thread=False,  # close() may run on another thread
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
            with self._lock:
                self._opened.append(db)
        return db

    def add(self, events: Sequence[Event]) -> int:
        batch = _Batch([(e.event_id, e.user_id, e.item_id, e.timestamp, e.rating) for e in events])
        with self._lock:
            self._pending.append(batch)
        with self._writing:  # group commit: whoever writes takes every batch waiting
            if not batch.done.is_set():
                with self._lock:
                    group, self._pending = self._pending, []
                self._commit(group)
        if batch.error is not None:
            raise StoreUnavailable(f"sqlite {self.path}: {batch.error}")
        return batch.added

    def _commit(self, group: list[_Batch]) -> None:
        """Store every batch of `group` in one transaction (one fsync for all of them), each
        batch's new-event count set, or none of them, each with the error."""
        try:
            with self._turn():
                added = self._insert(self._connection(), group)
        except BaseException as e:  # every batch of the group learns it failed
            for batch in group:
                batch.error = e
                batch.done.set()
            if not isinstance(e, sqlite3.Error | OSError):
                raise
            return
        for batch, n in zip(group, added, strict=True):
            batch.added = n
            batch.done.set()

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """This process's turn to write among the processes sharing the file (an flock on
        `<file>.lock`), so writers queue instead of meeting SQLite's busy lock, whose retry
        sleeps (up to 100 ms each) put seconds on the slowest answers under load."""
        fcntl.flock(self._write_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._write_fd, fcntl.LOCK_UN)

    def _insert(self, db: sqlite3.Connection, group: list[_Batch]) -> list[int]:
        """One transaction: each batch's events, then the touched items and the cap; each
        batch's count of new events."""
        rows = [row for batch in group for row in batch.rows]
        users = sorted({user for _, user, _, _, _ in rows})
        db.execute("BEGIN IMMEDIATE")
        try:
            added = []
            for batch in group:
                before = db.total_changes
                db.executemany(
                    "INSERT OR IGNORE INTO events (event_id, user_id, item_id, timestamp, rating)"
                    " VALUES (?, ?, ?, ?, ?)",
                    batch.rows,
                )
                added.append(db.total_changes - before)
            db.executemany(  # a duplicate's row changes nothing: the same item and time
                "INSERT INTO touched (user_id, item_id, last) VALUES (?, ?, ?)"
                " ON CONFLICT DO UPDATE SET last = max(last, excluded.last)",
                [(u, i, t) for _, u, i, t, _ in rows],
            )
            db.executemany(
                "DELETE FROM touched WHERE user_id = ? AND item_id IN (SELECT item_id FROM"
                " touched WHERE user_id = ? ORDER BY last DESC LIMIT -1 OFFSET ?)",
                [(u, u, self.touched_cap) for u in users],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return added

    def recent(self, user_id: str, n: int) -> list[str]:
        rows = self._query(
            "SELECT item_id FROM events WHERE user_id = ? ORDER BY timestamp DESC, seq DESC"
            " LIMIT ?",
            (user_id, n),
        )
        return [item for (item,) in reversed(rows)]

    def touched(self, user_id: str) -> list[str]:
        rows = self._query("SELECT item_id FROM touched WHERE user_id = ?", (user_id,))
        return [item for (item,) in rows]

    def log(self) -> Iterator[Event]:
        after = 0
        while True:
            rows = self._query(
                "SELECT seq, user_id, item_id, timestamp, rating, event_id FROM events"
                " WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, LOG_CHUNK),
            )
            if not rows:
                return
            for _, user, item, timestamp, rating, event_id in rows:
                yield Event(user, item, timestamp, rating, event_id)
            after = rows[-1][0]

    def ping(self) -> None:
        self._query("SELECT 1", ())

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for db in opened:
            db.close()
        os.close(self._write_fd)
        self._local = threading.local()

    def _query(self, sql: str, params: tuple[object, ...]) -> list[Any]:
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise StoreUnavailable(f"sqlite {self.path}: {e}") from None
