"""The refit: the model `train` publishes, fitted on all of the data with what evaluation chose.

The evaluated run holds data out to measure and to choose (DESIGN.md "Evaluation protocol"): the
most recent fifth of every user's events, the holdout users' profile labels and every
interaction of the cold items. Its figures are the estimate. The model that ships is fitted
again on everything, the "refit" of scikit-learn's model search: every interaction a training
event in its user's whole sequence, every profile label read, every item with interactions
trained by its id; for the epochs early stopping kept, at the same learning rates, each head
tuned for the epochs the evaluated run kept, with its temperatures (training.fit.train.Replay).
The task weights are learned again, from the same start, as the evaluated run learned them.
On a prepared folder the refit streams the folder's own refit shards (training.data.prepare).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from service.artifact import FIRST_ID, FitSpec
from training.config import Config
from training.data.prepared import Shards
from training.data.split import TRAIN, Log
from training.distributed import ALONE, Ranks
from training.fit.train import History, Replay, fit
from training.network.recommender import MultiTaskRecommender


@dataclass(frozen=True)
class Whole:
    """All of the data as training events: in memory (`shards` None), or a prepared folder's
    refit shards with a log that carries the whole log's trained ids."""

    log: Log
    shards: Shards | None


def learned_from(log: Log, shards: Shards | None, epochs: int, refit: bool) -> FitSpec:
    """What a model trained on `log` (or on `shards`, streamed) learned from, counted."""
    items, users = log.trained()
    events = shards.n_rows if shards is not None else int(np.count_nonzero(log.part == TRAIN))
    read = users & ~log.hidden
    return FitSpec(
        refit=refit,
        epochs=epochs,
        events=events,
        users=int(np.count_nonzero(users[FIRST_ID:])),
        items=int(np.count_nonzero(items[FIRST_ID:])),
        user_labels={
            name: int(np.count_nonzero(labels.mask & read))
            for name, labels in log.user_labels.items()
        },
    )


def refit(
    model: MultiTaskRecommender,
    whole: Whole,
    cfg: Config,
    evaluated: History,
    progress: bool = True,
    ranks: Ranks = ALONE,
    config: dict[str, Any] | None = None,
) -> tuple[History, FitSpec]:
    """Train the fresh `model` (built for `whole.log`) on all of the data, replaying what the
    evaluated run of `evaluated` chose; its history and what it learned from."""
    replay = Replay.of(evaluated)
    if progress:
        events = whole.shards.n_rows if whole.shards is not None else len(whole.log.part)
        tqdm.write(f"refit on all of the data: {replay.epochs} epochs over {events:,} events")
    history = fit(
        model,
        whole.log,
        None,
        cfg,
        progress,
        ranks,
        config=config,
        shards=whole.shards,
        replay=replay,
    )
    return history, learned_from(whole.log, whole.shards, replay.epochs, refit=True)
