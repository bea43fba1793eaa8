"""Redis reads on an event loop (eventstore/redis_reads.py), against a real redis-server: the
same answers as the blocking client, many reads in flight on one connection each get their own,
AUTH and SELECT as the URL asks, and a server that goes away fails the reads in flight and is
used again once it is back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from eventstore import Event, StoreUnavailable, open_store
from harness.redis_server import running_redis


def fill(url: str) -> None:
    store = open_store(url)
    store.add([Event(f"u{u}", f"i{u}-{k}", float(k)) for u in range(20) for k in range(30)])
    store.close()


def test_reads_in_flight_together_each_get_their_own_answer(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        fill(server.url)
        store = open_store(server.url)
        expected = {u: store.history(f"u{u}", 10, touched=u % 2 == 0) for u in range(20)}

        async def read_all() -> dict[int, tuple[list[str], list[str]]]:
            answers = await asyncio.gather(
                *(store.history_async(f"u{u}", 10, touched=u % 2 == 0) for u in range(20))
            )
            return dict(enumerate(answers))

        assert asyncio.run(read_all()) == expected
        assert expected[3][0] == [f"i3-{k}" for k in range(20, 30)]
        store.close()


@pytest.mark.parametrize("db", [0, 3])
def test_the_password_and_database_of_the_url_are_used(tmp_path: Path, db: int) -> None:
    with running_redis(tmp_path, password="s3cret") as server:
        url = server.url.removesuffix("/0") + f"/{db}"
        fill(url)
        store = open_store(url)
        recent, _ = asyncio.run(store.history_async("u1", 5, touched=False))
        assert recent == [f"i1-{k}" for k in range(25, 30)]
        wrong = open_store(url.replace("s3cret", "wrong"))
        with pytest.raises(StoreUnavailable, match="WRONGPASS|invalid"):
            asyncio.run(wrong.history_async("u1", 5, touched=False))
        store.close()
        wrong.close()


def test_a_server_that_goes_away_fails_the_reads_and_is_used_again_when_back(
    tmp_path: Path,
) -> None:
    with running_redis(tmp_path) as server:
        fill(server.url)
        store = open_store(server.url)

        async def scenario() -> tuple[list[str], str, list[str]]:
            before, _ = await store.history_async("u2", 3, touched=False)
            server.kill()
            try:
                await store.history_async("u2", 3, touched=False)
                failed = ""
            except StoreUnavailable as e:
                failed = str(e)
            server.start()  # the same port and data
            after, _ = await store.history_async("u2", 3, touched=False)
            return before, failed, after

        before, failed, after = asyncio.run(scenario())
        assert failed.startswith(f"redis {server.url}")
        assert before == after == ["i2-27", "i2-28", "i2-29"]
        store.close()
