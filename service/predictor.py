"""Predictor: one loaded model and the /predict pipeline over it (encode -> infer -> rank).

Everything that belongs to one artifact lives in one immutable object (artifact, session,
vocabulary lookups), so the service swaps models by replacing a single reference.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import numpy as np

from service import ranking
from service.artifact import FIRST_ID, Artifact, ArtifactError
from service.batching import Batcher
from service.config import Settings
from service.encoding import Encoded, RequestEncoder
from service.engine import InferenceEngine
from service.errors import InvalidInput, ModelFault
from service.explain import Explainer, ExplainLimits
from service.metrics import Metrics
from service.rank_graph import RankGraph
from service.repository import load_artifact
from service.retrieval import IndexSettings, Retriever
from service.schemas import PredictRequest

VOCABULARIES = ("user_id", "item_id")
T = TypeVar("T")


@dataclass(frozen=True)
class Predictor:
    """A verified, warmed-up model ready to answer requests."""

    artifact: Artifact
    engine: InferenceEngine
    encoder: RequestEncoder
    explainer: Explainer
    batcher: Batcher | None = None  # dynamic batching (HYDRAREC_BATCH_MAX_CANDIDATES > 0)
    retriever: Retriever | None = None  # recommend mode (a model with retrieval)
    ranker: RankGraph | None = None  # recommend mode's second stage
    depth: int = 100  # recommend mode: items retrieved and re-ranked (HYDRAREC_RETRIEVE)

    @classmethod
    def load(
        cls, settings: Settings, metrics: Metrics | None = None, version: int | None = None
    ) -> Predictor:
        """Find, verify, load and warm up a version of the configured model (by default the
        configured version, else the highest).

        Raises:
            ArtifactError: what is missing, tampered with or incompatible.
        """
        artifact = load_artifact(
            settings.model_dir, settings.model_name, version or settings.model_version
        )
        declared = artifact.manifest.vocabularies
        vocabs: dict[str, list[str]] = {}
        for name in VOCABULARIES:
            if name not in declared:
                raise ArtifactError(f"{artifact.path}: the manifest has no {name} vocabulary")
            vocabs[name] = artifact.read_vocab(name)
            if len(vocabs[name]) != declared[name].size:
                raise ArtifactError(
                    f"{artifact.path}: {declared[name].file} has {len(vocabs[name])} ids, "
                    f"the manifest says {declared[name].size}"
                )
        engine = InferenceEngine(artifact, settings.threads)
        engine.warmup()
        retrieval = artifact.manifest.retrieval
        retriever, ranker = None, None
        if retrieval is not None:
            retriever = Retriever.load(artifact, index_settings(settings))
            ranker = RankGraph(artifact, settings.threads)
        batcher = None
        if settings.batch_max_candidates:
            batcher = Batcher(
                engine.run,
                artifact.manifest.per_user_outputs,
                settings.batch_max_candidates,
                settings.batch_max_delay_ms / 1000,
                None if metrics is None else metrics.batch_requests.observe,
            )
        encoder = RequestEncoder(
            vocabs["user_id"], vocabs["item_id"], artifact.manifest.history_length
        )
        limits = ExplainLimits(
            settings.explain_history, settings.explain_top, settings.explain_max_items
        )
        explainer = Explainer(engine, encoder, limits)
        return cls(
            artifact, engine, encoder, explainer, batcher, retriever, ranker, settings.retrieve
        )

    @cached_property
    def ref(self) -> dict[str, str]:
        """Name and version of the model (the response's `model`)."""
        manifest = self.artifact.manifest
        return {"name": manifest.name, "version": str(manifest.version)}

    @cached_property
    def item_tasks(self) -> list[str]:
        """Names of the tasks answered per candidate, in manifest order."""
        return [t.name for t in self.artifact.manifest.tasks if t.level == "item"]

    @cached_property
    def item_fields(self) -> tuple[str, ...]:
        """The keys of each ranked item of a response, in order."""
        return ("item_id", "score", *self.item_tasks)

    @cached_property
    def user_classes(self) -> dict[str, tuple[str, ...]]:
        """The tasks answered once per user, with their class labels."""
        return {t.name: t.classes for t in self.artifact.manifest.tasks if t.level == "user"}

    def weights(self, requested: Mapping[str, float] | None) -> Mapping[str, float]:
        """The ranking weights of a request: its own, checked, or the manifest default.

        Raises:
            InvalidInput: a weight names something that is not an item task.
        """
        if requested is None:
            return self.artifact.manifest.ranking.weights
        item_tasks = self.item_tasks
        for name in requested:
            if name not in item_tasks:
                raise InvalidInput.at(
                    f"weights.{name}",
                    f"not an item task; the item tasks are {', '.join(item_tasks)}",
                )
        return requested

    def predict(self, request: PredictRequest, metrics: Metrics) -> dict[str, Any]:
        """Every task's output for one user and their candidates, ranked: the PredictResponse
        body as plain data, ready to serialise (one session.run of its own)."""
        return self.rank(self.infer(request, metrics), metrics, self.body)

    async def predict_batched(self, request: PredictRequest, metrics: Metrics) -> dict[str, Any]:
        """The same answer, with the session run shared with concurrent requests (the `infer`
        stage then includes the wait for the batch)."""
        return self.rank(await self.infer_batched(request, metrics), metrics, self.body)

    def recommend(self, request: PredictRequest, metrics: Metrics) -> dict[str, Any]:
        """Recommend mode: the graph for the user alone (the user tasks, the query vector and
        the item tasks' user state) -> the `depth` items the index scores highest, the history
        and `exclude` dropped -> the rank graph scores them from the user state and their
        vectors -> ranked as `predict` ranks candidates; the answer also says how many were
        retrieved.

        Raises:
            InvalidInput: the model has no retrieval (it answers requests with candidates only).
        """
        if self.retriever is None or self.ranker is None:
            raise InvalidInput.at(
                "candidates",
                f"model {self.ref['name']} version {self.ref['version']} has no retrieval "
                "(its artifact predates recommend mode, schema 3); send candidates",
            )
        retrieval = self.artifact.manifest.retrieval
        assert retrieval is not None
        weights = self.weights(request.weights)
        with metrics.stage["encode"].time():
            user = self.encoder.encode(request.user_id, request.history or (), ())
        start = time.perf_counter()
        outputs = self.engine.run(user.inputs)
        inferring = time.perf_counter() - start
        with metrics.stage["retrieve"].time():
            excluded = self.encoder.known_items(request.history or (), request.exclude)
            found = self.retriever.search(outputs[retrieval.query][0], self.depth, excluded)
            ids = [self.encoder.item_ids[i] for i in (found - FIRST_ID).tolist()]
        start = time.perf_counter()
        vectors = self.retriever.vectors[found - FIRST_ID]
        outputs |= self.ranker.run(outputs[retrieval.user_state], vectors)
        metrics.stage["infer"].observe(inferring + time.perf_counter() - start)  # both runs
        counts = user.counts | {"candidate": (len(ids), 0)}
        retrieved = Inferred(
            request.model_copy(update={"candidates": ids}),
            weights,
            dataclasses.replace(user, counts=counts),
            outputs,
        )
        answer = self.rank(retrieved, metrics, self.body)
        answer["retrieved"] = len(ids)
        return answer

    def explained(self, request: PredictRequest, metrics: Metrics) -> dict[str, Any]:
        """An explained request's answer (its own session runs, never batched): `predict` or
        `recommend`, then `why` for every ranked item and for the user (service.explain).

        Raises:
            InvalidInput: the model cannot explain, or the request would return more items
                than an explained request may.
        """
        k = request.top_k or self.artifact.manifest.ranking.top_k
        n = self.depth if request.candidates is None else len(request.candidates)
        self.explainer.check(min(k, n))
        weights = self.weights(request.weights)
        if request.candidates is None:
            answer = self.recommend(request, metrics)
        else:
            answer = self.predict(request, metrics)
        with metrics.stage["explain"].time():
            self.explainer.explain(request.user_id, request.history or (), weights, answer)
        metrics.explained.inc()
        return answer

    def infer(self, request: PredictRequest, metrics: Metrics) -> Inferred:
        """The model's raw outputs for one request (a session.run of its own)."""
        weights, encoded = self._encode(request, metrics)
        with metrics.stage["infer"].time():
            outputs = self.engine.run(encoded.inputs)
        return Inferred(request, weights, encoded, outputs)

    async def infer_batched(self, request: PredictRequest, metrics: Metrics) -> Inferred:
        """The same, the session run shared with concurrent requests (dynamic batching)."""
        assert self.batcher is not None, "dynamic batching is off"
        weights, encoded = self._encode(request, metrics)
        start = time.perf_counter()
        outputs = await self.batcher.run(encoded.inputs)
        metrics.stage["infer"].observe(time.perf_counter() - start)
        return Inferred(request, weights, encoded, outputs)

    def _encode(
        self, request: PredictRequest, metrics: Metrics
    ) -> tuple[Mapping[str, float], Encoded]:
        weights = self.weights(request.weights)  # invalid weights fail before any work
        with metrics.stage["encode"].time():
            return weights, self.encoder.encode(
                request.user_id, request.history or (), request.candidates or ()
            )

    def rank(self, inferred: Inferred, metrics: Metrics, assemble: Callable[[Scored], T]) -> T:
        """Score and order the candidates, then `assemble` the answer (both timed as the
        `rank` stage); the request's ids and predictions are counted.

        Raises:
            ModelFault: an output is not finite.
            InvalidInput: the weights make a score that is not finite.
        """
        request, outputs = inferred.request, inferred.outputs
        k = request.top_k or self.artifact.manifest.ranking.top_k
        broken = [name for name, values in outputs.items() if not all_finite(values)]
        if broken:  # a 200 never carries null where its schema says number
            raise ModelFault(f"the model's {', '.join(broken)} output is not finite")
        with metrics.stage["rank"].time():
            n = len(request.candidates or ())
            scores = ranking.score(outputs, inferred.weights, n)
            if not np.isfinite(scores).all():  # a regression output times a large weight
                raise InvalidInput.at("weights", "the ranking score is not finite; lower them")
            answer = assemble(Scored(inferred, scores, ranking.top_k(scores, k)))
        _count_ids(metrics, inferred.encoded)
        metrics.candidates.observe(n)
        metrics.observe_predictions(self.ref, outputs, self.item_tasks, list(self.user_classes))
        return answer

    def body(self, scored: Scored) -> dict[str, Any]:
        """The PredictResponse body of a scored request."""
        request, outputs, order = scored.inferred.request, scored.inferred.outputs, scored.order
        candidates = request.candidates or ()
        ids = [candidates[i] for i in order.tolist()]
        columns = [
            scored.scores[order].tolist(),
            *(outputs[t][order].tolist() for t in self.item_tasks),
        ]
        items = [
            dict(zip(self.item_fields, row, strict=True)) for row in zip(ids, *columns, strict=True)
        ]
        user = {
            name: dict(zip(classes, outputs[name][0].tolist(), strict=True))
            for name, classes in self.user_classes.items()
        }
        encoded = scored.inferred.encoded
        return {
            "model": self.ref,
            "user": user,
            "items": items,
            "unknown": {
                "user_id": encoded.unknown_user,
                "history": encoded.unknown_history,
                "candidates": encoded.unknown_candidates,
            },
        }


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a request ~1 µs
class Inferred:
    """One request's model outputs: item tasks [N], user tasks [1, K]."""

    request: PredictRequest
    weights: Mapping[str, float]
    encoded: Encoded
    outputs: dict[str, np.ndarray]


@dataclass(slots=True)
class Scored:
    """A request's outputs with every candidate's ranking score and the ranked positions."""

    inferred: Inferred
    scores: np.ndarray  # [N] in candidate order
    order: np.ndarray  # candidate positions, highest score first, cut to top_k


def index_settings(settings: Settings) -> IndexSettings:
    """The retrieval index's part of the settings."""
    return IndexSettings(
        exact_max=settings.index_exact_max,
        nlist=settings.index_nlist,
        nprobe=settings.index_nprobe,
        threads=settings.threads,
    )


def all_finite(values: np.ndarray) -> bool:
    """No NaN or infinity in the float32 `values`: exactly when their float64 sum is finite (no
    float32 values can overflow it); one reduction instead of a mask and a reduction."""
    return math.isfinite(values.sum(dtype=np.float64))


def _count_ids(metrics: Metrics, encoded: Encoded) -> None:
    """Looked-up and unknown ids by kind (their ratio is the out-of-vocabulary rate)."""
    for kind, (total, unknown) in encoded.counts.items():
        metrics.ids_by_kind[kind].inc(total)
        if unknown:  # usually none: a write to the workers' shared file saved
            metrics.unknown_by_kind[kind].inc(unknown)
