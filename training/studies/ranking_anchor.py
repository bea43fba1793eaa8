"""A model artifact against SASRec, the single-task ranking anchor, on the same test events
(`python -m training sasrec`).

SASRec (training.studies.sasrec) is trained with several seeds on the split the artifact was
trained on (its manifest's config and data), one single-threaded process per seed. The
artifact's graph and every SASRec score the protocol's test sets: each test event's real item
against `eval.n_click_negatives` untouched items (click AUC) and each user's first test item among
`eval.n_rank_negatives` (HR@k, NDCG@k); then that same item among every item the user never
touched (training.evaluation.full_catalogue), where SASRec ranks by its logits over every item and
the artifact is scored by every row of the full-catalogue table (popularity, EASE, its retrieval
score, the two-stage path, its graph over every item). Intervals are the percentile bootstrap
over users (training.evaluation.bootstrap); the difference artifact - SASRec (the mean over
seeds) is resampled paired, the same users for both, so it is far tighter than the two
intervals side by side.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import numpy as np

from service.artifact import Artifact
from training.config_file import from_dict
from training.data.vocab import interaction_task
from training.evaluation.bootstrap import Interval, intervals
from training.evaluation.evaluate import (
    EvalSets,
    Scored,
    ScoredSets,
    graph_predictor,
    score,
    scored_metrics,
)
from training.evaluation.full_catalogue import (
    EVERY_ITEM,
    Ranked,
    catalogue_scorers,
    paired_intervals,
    rank_all,
    two_stage_name,
)
from training.evaluation.retrieval import DEPTHS, graph_retrieval_scorer
from training.pipeline.prepare import Prepared, prepare
from training.studies.artifact_split import artifact_data
from training.studies.sasrec import (
    CLICK,
    SASRecConfig,
    catalogue_scorer,
    fit_sasrec,
    predictor,
)

MODEL = "model"
ANCHOR = "SASRec"
DIFFERENCE = f"{MODEL} - {ANCHOR}"


def test_sets(data: Prepared) -> EvalSets:
    """The test events SASRec can answer: the click events and the ranking events."""
    return EvalSets(data.test.items, data.test.ranking)


def run_seed(
    config: dict[str, Any], source: str, settings: SASRecConfig, seed: int
) -> dict[str, Any]:
    """Train one SASRec (a worker process, one thread) and score the test sets with it: the
    sampled protocol's outputs, and the full-catalogue rank of each user's first test item."""
    import torch

    torch.set_num_threads(1)
    cfg = from_dict(config)
    data = prepare(cfg, source, progress=False)
    start = time.perf_counter()
    model, checks = fit_sasrec(
        data.log, cfg.eval, dataclasses.replace(settings, seed=seed), progress=False
    )
    seconds = time.perf_counter() - start
    scored = score(test_sets(data), predictor(model, data.log, settings.length))
    assert scored.items is not None, "the test sets hold both"
    assert scored.ranking is not None, "the test sets hold both"
    first = scored.ranking.events.index
    full = rank_all(data.log, first, {ANCHOR: catalogue_scorer(model, data.log, settings.length)})
    return {
        "seed": seed,
        "seconds": seconds,
        "checks": checks,
        "kept_epoch": max(checks, key=lambda c: c[f"ndcg@{cfg.eval.k}"])["epoch"],
        "items": scored.items.outputs[CLICK.name],
        "ranking": scored.ranking.outputs[CLICK.name],
        "full": full[ANCHOR].rank,
        "events": events_key(test_sets(data)),
    }


def events_key(sets: EvalSets) -> str:
    """A digest of the test events and their candidates: the seeds' and the artifact's must
    be the same events, row for row."""
    digest = hashlib.sha256()
    for events in (sets.items, sets.ranking):
        if events is not None:
            digest.update(events.index.tobytes())
            digest.update(np.ascontiguousarray(events.candidates).tobytes())
    return digest.hexdigest()


def compare(
    artifact: Artifact,
    settings: SASRecConfig,
    seeds: range,
    jobs: int,
    resamples: int,
) -> dict[str, Any]:
    """Every figure of the artifact and of SASRec per seed, the mean over seeds and the paired
    difference, each with its bootstrap interval; SASRec's validation checks per seed."""
    config, source, data = artifact_data(artifact)
    k = from_dict(config).eval.k
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_seed, config, source, settings, s) for s in seeds]
        runs = [f.result() for f in futures]
    sets = test_sets(data)
    if any(r["events"] != events_key(sets) for r in runs):
        raise RuntimeError("SASRec was scored on other test events than the artifact")
    graph = graph_predictor(
        artifact.path / "model.onnx", data.log, data.tasks, artifact.manifest.history_length
    )
    ours = score(sets, graph)
    assert ours.items is not None, "the test sets hold both"
    assert ours.ranking is not None, "the test sets hold both"
    assert sets.ranking is not None, "the test sets hold both"
    click = interaction_task(data.tasks)

    def outputs(part: str, mine: Scored) -> dict[str, np.ndarray]:
        return {MODEL: mine.outputs[click]} | {f"{ANCHOR} {r['seed']}": r[part] for r in runs}

    scored = ScoredSets(
        items=Scored(sets.items, outputs("items", ours.items)),
        ranking=Scored(sets.ranking, outputs("ranking", ours.ranking)),
    )
    names = [MODEL, *(f"{ANCHOR} {r['seed']}" for r in runs)]

    def figures(resample: ScoredSets) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in names:
            one = ScoredSets(
                **{
                    part: Scored(s.events, {CLICK.name: s.outputs[name]})
                    for part, s in resample.parts().items()
                }
            )
            for metric, value in scored_metrics(data.log, one, [CLICK], k).items():
                out[f"{name}/{metric}"] = value
        for metric in [m.split("/", 1)[1] for m in out if m.startswith(f"{MODEL}/")]:
            anchor = float(np.mean([out[f"{n}/{metric}"] for n in names[1:]]))
            out[f"{ANCHOR}/{metric}"] = anchor
            out[f"{DIFFERENCE}/{metric}"] = out[f"{MODEL}/{metric}"] - anchor
        return out

    found = intervals([scored], lambda s: data.log.user[s.events.index], figures, resamples)
    retrieve = graph_retrieval_scorer(artifact, data.log, data.tasks)
    ranked = rank_all(
        data.log, sets.ranking.index, catalogue_scorers(data.log, data.tasks, graph, retrieve)
    )
    return {
        "artifact": str(artifact.path),
        "data": source,
        "k": k,
        "users": int(len(sets.ranking.index)),
        "sasrec": dataclasses.asdict(settings),
        "seeds": [
            {key: r[key] for key in ("seed", "seconds", "kept_epoch", "checks")} for r in runs
        ],
        "figures": {key: value.to_dict() for key, value in found.items()},
        "full_catalogue": full_catalogue_figures(ranked, runs, resamples),
    }


def full_catalogue_figures(
    ranked: dict[str, Ranked], runs: list[dict[str, Any]], resamples: int
) -> dict[str, Any]:
    """The full-catalogue figures of the artifact's rows and of SASRec (each seed, the mean over
    seeds), and the paired differences of the two-stage path at the first depth (the served
    one; or, without retrieval, the model over every item) and of the model over every item
    against SASRec's mean, all resampled with the same users."""
    n = ranked[EVERY_ITEM].n_candidates
    per_seed = {f"{ANCHOR} {r['seed']}": Ranked(np.asarray(r["full"]), n) for r in runs}
    per_user = {
        f"{row}/{metric}": values
        for row, one in (ranked | per_seed).items()
        for metric, values in one.figures().items()
    }
    metrics = list(ranked[EVERY_ITEM].figures())
    for metric in metrics:
        per_user[f"{ANCHOR}/{metric}"] = np.mean([per_user[f"{s}/{metric}"] for s in per_seed], 0)
    served = two_stage_name(DEPTHS[0]) if two_stage_name(DEPTHS[0]) in ranked else EVERY_ITEM
    differences = list(dict.fromkeys((served, EVERY_ITEM)))
    for row in differences:
        for metric in metrics:
            per_user[f"{row} - {ANCHOR}/{metric}"] = (
                per_user[f"{row}/{metric}"] - per_user[f"{ANCHOR}/{metric}"]
            )
    found = paired_intervals(per_user, resamples)
    return {
        "users": len(n),
        "metrics": metrics,
        "rows": [*ranked, *per_seed, ANCHOR],
        "differences": [f"{row} - {ANCHOR}" for row in differences],
        "figures": {key: value.to_dict() for key, value in found.items()},
    }


def verdict(difference: Interval) -> str:
    """The verdict of a paired difference: ahead or behind when its interval leaves out 0,
    else a tie."""
    if difference.low > 0:
        return "ahead"
    return "behind" if difference.high < 0 else "tie"


def stem(loss: str) -> str:
    """The report files' name: sasrec (the paper's loss) or sasrec-<loss>."""
    return "sasrec" if loss == "bce" else f"sasrec-{loss}"
