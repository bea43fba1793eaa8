"""The single-task anchor of the profile tasks: logistic regression on the bag of watched items.

Each user is the set of items of their training interactions (the history a profile event is
scored with), one binary column per item; one multinomial logistic regression per user task is
fitted on the users whose labels training may read (not the profile holdout), with its inverse
regularisation strength picked by 5-fold cross-validated log loss among those users only, and
predicts the holdout users' class probabilities. It runs on the same split and folds as the
model, so the comparison is like for like.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegressionCV

from service.artifact import TaskSpec
from training.data.samples import Events
from training.data.split import TRAIN, Log

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
INNER_FOLDS = 5


def watched_items(log: Log) -> sparse.csr_matrix:
    """[n_users, n_items] 1 where the user has a training interaction with the item."""
    train = log.part == TRAIN
    ones = np.ones(int(train.sum()))
    bag = sparse.csr_matrix(
        (ones, (log.user[train], log.item[train])), shape=(log.n_users, log.n_items)
    )
    bag.data[:] = 1.0  # an item rated twice is still one item
    return bag


def profile_anchor(
    log: Log, tasks: Sequence[TaskSpec], events: Events, seed: int = 0
) -> dict[str, np.ndarray]:
    """Per user task: [E, K] class probabilities for the users of `events` (multiclass tasks;
    others are not anchored here)."""
    bag = watched_items(log)
    users = log.user[events.index]
    out = {}
    for t in tasks:
        if t.level != "user" or t.kind != "multiclass":
            continue
        known = log.user_labels[t.name]
        fit = np.flatnonzero(known.mask & ~log.holdout)
        model = LogisticRegressionCV(
            Cs=list(C_GRID),
            cv=INNER_FOLDS,
            scoring="neg_log_loss",
            max_iter=2000,
            random_state=seed,
            use_legacy_attributes=False,
            l1_ratios=(0.0,),  # plain L2
        )
        with warnings.catch_warnings():  # a rare class has fewer users than inner folds
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            model.fit(bag[fit], known.values[fit])
        probs = np.zeros((len(users), len(t.classes)))
        probs[:, model.classes_] = model.predict_proba(bag[users])
        out[t.name] = probs
    return out
