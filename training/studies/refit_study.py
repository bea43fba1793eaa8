"""`python -m training refit-study`: does the refit serve a user's next interactions better?

A data folder is cut from a source with each user's next interactions kept aside (the last
max(1, n // 10) of the user's n interactions by time, then item id, as the protocol orders
them). `train` runs on the folder once: the evaluated run (held out: validation, test, cold
items, holdout users' labels) and its refit on all of the folder, each published. Both are
then asked through the service's own `/predict` (the app in process, onnxruntime, default
ranking weights) about the kept-aside interactions, with each user's folder interactions as
history:
- next item: the first kept-aside item among `n_negatives` catalogue items the user never
  touched (in the whole source), HR@k and NDCG@k of its place when ranked by the interaction
  task's probability (click: the protocol's ranking) and by the served `score` (the default
  ranking weights: what a caller gets); ties against it;
- each binary item task with a label column (like): AUC over every kept-aside interaction.
The difference (refit - held out) is paired over users with a percentile bootstrap interval
(training.evaluation.bootstrap: the user is the unit). -> reports/refit-<config>.{md,json,png}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from service.artifact import TaskSpec
from training.config import Config, SyntheticConfig
from training.evaluation.bootstrap import LEVEL, UserRows
from training.evaluation.metrics import auc, hit_rate_and_ndcg

HELD_OUT, REFIT = "held out", "refit"
MODELS = (HELD_OUT, REFIT)
DIFFERENCE = f"{REFIT} - {HELD_OUT}"


@dataclass(frozen=True)
class Cut:
    """A source with its next interactions kept aside."""

    folder: Path  # the data folder trained on
    next: pd.DataFrame  # the kept-aside interactions, chronological per user
    touched: dict[str, set[str]]  # user -> every item of the source the user touched
    items: tuple[str, ...]  # the catalogue


@dataclass(frozen=True)
class Answers:
    """Per user (row), the served ranking figures; per labelled task, every event's output."""

    users: np.ndarray  # [U] user ids
    ranking: dict[str, np.ndarray]  # "hr@k (click)", ...: [U] each user's HR or NDCG
    event_user: np.ndarray  # [E] row in `users` of each kept-aside event
    labels: dict[str, np.ndarray]  # task -> [E] 0/1
    outputs: dict[str, np.ndarray]  # task -> [E] the task's probability


def cut_source(
    source: str, synthetic: SyntheticConfig, folder: Path, labelled: list[TaskSpec]
) -> Cut:
    """Write `source` to `folder` (Parquet) without each user's next interactions."""
    from training.data.sources import raw_tables

    raw = raw_tables(source, synthetic)
    inter = raw["interactions"].frame.copy()
    inter["_t"] = pd.to_numeric(inter["timestamp"])
    inter = inter.sort_values(["user_id", "_t", "item_id"], kind="stable").reset_index(drop=True)
    n = inter.groupby("user_id")["item_id"].transform("size").to_numpy()
    place = inter.groupby("user_id").cumcount().to_numpy()
    kept_aside = place >= n - np.maximum(1, n // 10)
    folder.mkdir(parents=True, exist_ok=True)
    inter[~kept_aside].drop(columns="_t").to_parquet(folder / "interactions.parquet", index=False)
    for table in ("users", "items"):
        raw[table].frame.to_parquet(folder / f"{table}.parquet", index=False)
    touched = inter.groupby("user_id")["item_id"].agg(set).to_dict()
    columns = ["user_id", "item_id", *{str(t.column) for t in labelled}]
    return Cut(
        folder,
        inter.loc[kept_aside, columns].reset_index(drop=True),
        touched,
        tuple(raw["items"].frame["item_id"]),
    )


def train_both(cfg: Config, cut: Cut, work: Path, progress: bool) -> dict[str, Any]:
    """Train on the cut folder (evaluated run + refit), publish the held-out model beside the
    refit; the two model repositories and the run's timings."""
    from training.fit.train import HELDOUT_CHECKPOINT
    from training.pipeline.checkpoint import export_checkpoint
    from training.pipeline.run import train_and_export

    result = train_and_export(
        replace(cfg, name="next"), str(cut.folder), work / REFIT, work / "reports", 1, progress
    )
    assert result is not None, "one process trains here"
    heldout = result.report["json"].parent / HELDOUT_CHECKPOINT
    export_checkpoint(heldout, work / "heldout")
    report = result.report["json"].read_text(encoding="utf-8")
    return {"repositories": {REFIT: work / REFIT, HELD_OUT: work / "heldout"}, "report": report}


def trained_in(work: Path) -> dict[str, Any] | None:
    """The models and report an earlier run left in `work`, if it finished training."""
    repositories = {REFIT: work / REFIT, HELD_OUT: work / "heldout"}
    report = work / "reports" / "next" / "1" / "report.json"
    if not report.is_file() or not all((r / "next" / "1").is_dir() for r in repositories.values()):
        return None
    return {"repositories": repositories, "report": report.read_text(encoding="utf-8")}


def ask(
    repository: Path,
    cut: Cut,
    tasks: list[TaskSpec],
    n_negatives: int,
    k: int,
    progress: bool = False,
) -> Answers:
    """Ask the model of `repository` (served by the app in process) about the next events."""
    from fastapi.testclient import TestClient

    from service.config import Settings
    from service.main import create_app

    labelled, clicks = labelled_tasks(tasks), next(t.name for t in tasks if t.interaction)
    settings = Settings.model_validate(
        {"model_dir": repository, "model_name": "next", "ort_threads": 1}
    )
    history = _histories(cut)
    users = np.array(sorted(cut.next["user_id"].unique()))
    rng = np.random.default_rng(0)  # the same negatives for every model
    ranked_by = {clicks: f"({clicks})", "score": "(served score)"}
    ranking = {
        f"{m}@k {said}": np.zeros(len(users)) for said in ranked_by.values() for m in ("hr", "ndcg")
    }
    outputs: dict[str, list[float]] = {t.name: [] for t in labelled}
    rows = []
    with TestClient(create_app(settings)) as client:
        predict = _predictor(client)
        for row, user in enumerate(tqdm(users, desc="ask", disable=not progress)):
            events = cut.next[cut.next["user_id"] == user]
            pool = [i for i in cut.items if i not in cut.touched[user]]
            negatives = [pool[j] for j in rng.choice(len(pool), n_negatives, replace=False)]
            first = str(events["item_id"].iloc[0])
            scores = predict(user, history.get(user, []), [first, *negatives])
            for column, said in ranked_by.items():
                hit, ndcg = hit_rate_and_ndcg(scores[column][None, :], k)
                ranking[f"hr@k {said}"][row], ranking[f"ndcg@k {said}"][row] = hit, ndcg
            served = predict(user, history.get(user, []), list(events["item_id"]))
            for t in labelled:
                outputs[t.name] += list(served[t.name])
            rows += [row] * len(events)
    return Answers(
        users=users,
        ranking=ranking,
        event_user=np.array(rows),
        labels={t.name: _label(t, cut.next).to_numpy() for t in labelled},
        outputs={name: np.array(v) for name, v in outputs.items()},
    )


def _histories(cut: Cut) -> dict[str, list[str]]:
    inter = pd.read_parquet(cut.folder / "interactions.parquet", columns=["user_id", "item_id"])
    return inter.groupby("user_id")["item_id"].agg(list).to_dict()


def _predictor(client: Any) -> Callable[[str, list[str], list[str]], dict[str, np.ndarray]]:
    """POST /predict for one user; per output, its values in candidate order."""

    def predict(user: str, history: list[str], candidates: list[str]) -> dict[str, np.ndarray]:
        body = {"user_id": user, "history": history, "candidates": candidates}
        response = client.post("/predict", json=body | {"top_k": len(candidates)})
        response.raise_for_status()
        served = {item["item_id"]: item for item in response.json()["items"]}
        keys = [k for k in next(iter(served.values())) if k != "item_id"]
        return {key: np.array([served[c][key] for c in candidates]) for key in keys}

    return predict


def _label(task: TaskSpec, events: pd.DataFrame) -> pd.Series:
    values = pd.to_numeric(events[str(task.column)])
    return (values >= (task.threshold if task.threshold is not None else 0.5)).astype(int)


def labelled_tasks(tasks: list[TaskSpec]) -> list[TaskSpec]:
    """The binary item tasks with a label column (like): AUC on the kept-aside events."""
    return [t for t in tasks if t.level == "item" and t.kind == "binary" and t.column]


def compare(
    answers: dict[str, Answers], n_resamples: int, seed: int = 0
) -> dict[str, dict[str, dict[str, float]]]:
    """Per metric: each model's figure and the paired difference, with percentile intervals
    over resamples of the users (the same draw for both models)."""
    held, new = answers[HELD_OUT], answers[REFIT]
    assert list(held.users) == list(new.users), "both models answer the same users"
    events = UserRows(held.event_user, len(held.users))

    def figures(users: np.ndarray) -> dict[str, dict[str, float]]:
        rows = events.rows(users)
        out = {}
        for name in held.ranking:
            out[name] = {m: float(answers[m].ranking[name][users].mean()) for m in MODELS}
        for task in held.labels:
            name = f"{task}_auc"
            out[name] = {
                m: auc(answers[m].labels[task][rows], answers[m].outputs[task][rows])
                for m in MODELS
            }
        for values in out.values():
            values[DIFFERENCE] = values[REFIT] - values[HELD_OUT]
        return out

    rng = np.random.default_rng(seed)
    everyone = np.arange(len(held.users))
    drawn = [figures(rng.choice(everyone, len(everyone))) for _ in range(n_resamples)]
    tail = 100 * (1 - LEVEL) / 2
    result: dict[str, dict[str, dict[str, float]]] = {}
    for metric, values in figures(everyone).items():
        result[metric] = {}
        for key, value in values.items():
            spread = np.array([d[metric][key] for d in drawn])
            low, high = np.nanpercentile(spread, [tail, 100 - tail])
            result[metric][key] = {"value": value, "low": float(low), "high": float(high)}
    return result


def run(
    cfg: Config,
    label: str,
    source: str,
    work: Path,
    n_negatives: int = 100,
    n_resamples: int = 1000,
    progress: bool = True,
) -> dict[str, Any]:
    """The whole study in `work`: cut, train both (unless `work` holds them from an earlier
    run of the same study), ask both, compare."""
    import json

    labelled = labelled_tasks(cfg.tasks)
    cut = cut_source(source, cfg.synthetic, work / "data", labelled)
    trained = trained_in(work) or train_both(cfg, cut, work, progress)
    answers = {
        m: ask(trained["repositories"][m], cut, cfg.tasks, n_negatives, cfg.eval.k, progress)
        for m in MODELS
    }
    report = json.loads(trained["report"])
    return {
        "config": label,
        "source": source,
        "k": cfg.eval.k,
        "n_negatives": n_negatives,
        "resamples": n_resamples,
        "users": len(answers[REFIT].users),
        "events": len(cut.next),
        "figures": compare(answers, n_resamples),
        "seconds": report["seconds"],
        "evaluated_epochs": len(report["epochs"]),
        "fit": report["fit"],
    }
