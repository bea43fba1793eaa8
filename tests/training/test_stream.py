"""The streamed sample shards: every (rank, worker) slice disjoint and of one size, shuffled per
epoch, resumable from a batch, negatives never touched by their user."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_config
from training.data.prepare import prepare_folder
from training.data.prepared import open_prepared
from training.data.raw import DataError
from training.data.stream import SampleStream, StreamArgs, loader, slice_bounds
from training.pipeline.prepare import prepare

BATCH = 64


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stream") / "prep"
    prepare_folder(tiny_config(), "synthetic", out, shard_events=700, progress=False)
    return out


def stream(folder: Path, epoch: int, rank: int = 0, world: int = 1, **kw: int) -> SampleStream:
    cfg = tiny_config()
    prepared = open_prepared(folder, cfg)
    args = StreamArgs(
        tasks=prepared.tasks,
        batch_size=BATCH,
        n_negatives=4,
        user_task_events=2,
        history_length=cfg.network.history_length,
        shuffle_buffer=kw.pop("buffer", 300),
        seed=0,
        pool=np.flatnonzero(prepared.log.trained()[0]),
        n_items=prepared.log.n_items,
    )
    return SampleStream(prepared.shards, args, epoch, rank, world, **kw)


def events(s: SampleStream) -> list[np.ndarray]:
    """The event ids of each batch of every worker of a stream, worker after worker."""
    return [rows["event"] for w in range(s.workers) for rows in s.events(w)]


@pytest.mark.parametrize(("world", "workers"), [(1, 0), (2, 1), (2, 3), (3, 2)])
def test_slices_are_disjoint_equal_and_cover_all_but_a_remainder(
    folder: Path, world: int, workers: int
) -> None:
    n_rows = open_prepared(folder, tiny_config()).shards.n_rows
    per_rank = [stream(folder, 1, rank, world, workers=workers) for rank in range(world)]
    batches = [events(s) for s in per_rank]
    assert len({len(b) for b in batches}) == 1  # every rank runs as many batches
    assert all(len(b) == len(s) for b, s in zip(batches, per_rank, strict=True))
    flat = np.concatenate([np.concatenate(b) for b in batches])
    assert len(np.unique(flat)) == len(flat)  # disjoint
    slices = world * max(1, workers)
    assert len(flat) == n_rows - n_rows % slices
    worker_counts = {sum(1 for _ in s.events(w)) for s in per_rank for w in range(s.workers)}
    assert len(worker_counts) == 1  # and every worker of every rank as many


def test_each_epoch_has_its_own_order_and_an_epoch_repeats_exactly(folder: Path) -> None:
    first, again, second = (np.concatenate(events(stream(folder, e))) for e in (1, 1, 2))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)
    # shuffled through the buffer, not read in order
    assert np.mean(np.diff(first) > 0) < 0.7


def test_a_stream_resumes_at_a_batch(folder: Path) -> None:
    whole = [rows["event"] for rows in stream(folder, 3).events(0)]
    resumed = [rows["event"] for rows in stream(folder, 3, start=5).events(0)]
    assert len(resumed) == len(whole) - 5
    for mine, theirs in zip(resumed, whole[5:], strict=True):
        np.testing.assert_array_equal(mine, theirs)
    # with 2 workers the rank's batch j is worker j % 2's: batch 5 is worker 1's third
    full, late = stream(folder, 3, workers=2), stream(folder, 3, workers=2, start=5)
    for worker, skipped in ((0, 3), (1, 2)):  # worker 0 ran batches 0, 2, 4; worker 1 ran 1, 3
        expected = [rows["event"] for rows in full.events(worker)][skipped:]
        got = [rows["event"] for rows in late.events(worker)]
        assert len(got) == len(expected)
        for mine, theirs in zip(got, expected, strict=True):
            np.testing.assert_array_equal(mine, theirs)


def test_negatives_are_trained_items_the_user_never_touched(folder: Path) -> None:
    log = prepare(tiny_config(), "synthetic").log  # every interaction, in memory
    trained = log.trained()[0]
    for rows in stream(folder, 1).events(0):
        users = np.repeat(rows["user"][:, None], rows["negatives"].shape[1], axis=1)
        assert not log.interacted(users, rows["negatives"]).any()
        assert trained[rows["negatives"]].all()


def test_a_dataloader_with_workers_yields_every_batch_once(folder: Path) -> None:
    s = stream(folder, 1, workers=2)
    got = list(loader(s))
    assert len(got) == len(s)
    positives = np.concatenate([b.inputs["candidate"].numpy()[::5] for b in got])
    expected = np.concatenate([rows["item"] for w in range(2) for rows in s.events(w)])
    assert sorted(positives.tolist()) == sorted(expected.tolist())
    assert got[0].inputs["history"].shape[1] == tiny_config().network.history_length


def test_more_slices_than_events_is_an_error_before_training() -> None:
    with pytest.raises(DataError, match="8 \\(rank, worker\\) slices but only 5 training events"):
        slice_bounds(5, 8, 0, 0)
    ranges, m = slice_bounds(10, 3, 2, 7)  # a run that wraps around the end
    assert m == 3
    assert ranges.tolist() == [[3, 6]]
    ranges, _ = slice_bounds(10, 3, 1, 8)
    assert ranges.tolist() == [[1, 4]]
    ranges, _ = slice_bounds(10, 3, 0, 8)
    assert ranges.tolist() == [[8, 10], [0, 1]]
