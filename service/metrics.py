"""Every Prometheus metric of the service, on one registry per app (namespace `hydrarec`).

Conventions (STYLE.md, Prometheus naming): base units (seconds), `_total` counters, bounded
labels only (route templates, stages, reasons, id kinds, task names, model name and version;
never an id or a raw path). Every known label set is created at start-up (and a model's series
when it is loaded), so each series exists at 0 before the first request. The request and
prediction series carry `model` and `version` (as Triton's do), so what a new version changes
can be told from drift in the data. With several worker processes, PROMETHEUS_MULTIPROC_DIR is
set before they start (service/__main__.py), every scrape sums the workers' files, and the
supervisor drops a dead worker's live gauges (`forget_worker`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STAGES = ("decode", "encode", "infer", "retrieve", "rank", "explain", "encode_response")
REASONS = (
    "invalid_input",
    "too_large",
    "timeout",
    "unauthorized",
    "overloaded",
    "not_ready",
    "store_unavailable",
    "internal",
)
EVENT_REASONS = ("invalid_input", "too_large", "timeout", "unauthorized", "store_unavailable")
STORE_OPERATIONS = ("add", "history")
STORE_BACKENDS = ("sqlite", "redis")
ID_KINDS = ("user", "history", "candidate")
STATUS_CLASSES = ("2xx", "4xx", "5xx", "499")  # 499: the client went away first (nginx's code)
NO_MODEL = ("", "")  # model and version labels of a request answered before any model loaded
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CANDIDATE_BUCKETS = (1, 10, 50, 100, 200, 500, 1000, 5000, 10_000)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
PROBABILITY_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


def _process_id() -> int:
    return _pid


# In multiprocess mode every metric update asks os.getpid() whether the process forked since
# (a system call, ~30 per /predict: about 3% of a request's CPU here). The same answer, cached
# and renewed in a forked child, through prometheus_client's own `process_identifier` hook.
# The metric objects take their value class when created, so this precedes every `Metrics()`.
os.register_at_fork(after_in_child=_forked)
if getattr(values.ValueClass, "_multiprocess", False):
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_id)  # type: ignore[no-untyped-call]


class Metrics:
    """The metric objects; `create_app` makes one per app."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # `_created` timestamps would be one extra gauge per series; Prometheus does not read
        # them from the text format, and they would clutter every scrape.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "hydrarec_http_requests",
            "HTTP requests answered, by route template, method, status class (2xx, 4xx, 5xx; "
            "499: the client closed the connection first) and the model that answered.",
            ["handler", "method", "status", "model", "version"],
            registry=r,
        )
        self.request_duration = Histogram(
            "hydrarec_http_request_duration_seconds",
            "Time from the complete request body to the end of the response (the upload is "
            "not counted: a slow client is not a slow model).",
            ["handler", "method", "model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_progress = Gauge(
            "hydrarec_http_requests_in_progress",
            "Requests being answered now.",
            ["handler"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.stage_duration = Histogram(
            "hydrarec_predict_stage_duration_seconds",
            "Time of one /predict stage: decode (body to request), encode (ids to indices), "
            "infer (session.run; with dynamic batching including the wait for the batch), "
            "retrieve (recommend mode: the index search), rank, explain (explained requests: the "
            "occlusion run and the why lists), encode_response (to JSON bytes).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.explained = Counter(
            "hydrarec_explained_requests",
            'Requests answered with explanations ("explain": true).',
            registry=r,
        )
        self.candidates = Histogram(
            "hydrarec_predict_candidates",
            "Candidates per /predict request.",
            buckets=CANDIDATE_BUCKETS,
            registry=r,
        )
        self.ids = Counter(
            "hydrarec_ids", "Ids looked up in the vocabularies, by kind.", ["kind"], registry=r
        )
        self.unknown_ids = Counter(
            "hydrarec_unknown_ids",
            "Ids not in the vocabularies (served through the unknown index), by kind.",
            ["kind"],
            registry=r,
        )
        self.failures = Counter(
            "hydrarec_predict_failures",
            "/predict requests not answered with 200, by reason.",
            ["reason"],
            registry=r,
        )
        self.batch_requests = Histogram(
            "hydrarec_batch_requests",
            "Requests answered by one session.run (dynamic batching).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.predictions = Histogram(
            "hydrarec_prediction_probability",
            "Per task: an item task's probability for one random candidate of each request, "
            "a user task's top-class probability (drift shows as a moving distribution).",
            ["task", "model", "version"],
            buckets=PROBABILITY_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "hydrarec_model_info",
            "The model being served (value 1), by name and version.",
            ["model", "version"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.model_loads = Counter(
            "hydrarec_model_loads",
            "Model loads (find, verify, create the session, warm up), by result.",
            ["result"],
            registry=r,
        )
        self.model_load_duration = Gauge(
            "hydrarec_model_load_duration_seconds",
            "Time the last model load took.",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.events_accepted = Counter(
            "hydrarec_events_accepted",
            "Events of POST /events answered 200 (stored now, or already stored by event_id).",
            registry=r,
        )
        self.event_batches_refused = Counter(
            "hydrarec_event_batches_refused",
            "POST /events requests not answered 200 (none of their events stored), by reason.",
            ["reason"],
            registry=r,
        )
        self.store_duration = Histogram(
            "hydrarec_store_duration_seconds",
            "Time of one event-store operation, by operation (add: a batch of events; history: a "
            "user's recent items, and in recommend mode every item they touched) and backend.",
            ["operation", "backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "hydrarec_store_errors",
            "Event-store operations that failed (backend unreachable or failing), by operation "
            "and backend.",
            ["operation", "backend"],
            registry=r,
        )
        if MULTIPROC_ENV not in os.environ:  # per-process figures; see render() for workers
            ProcessCollector(registry=r)
        # The labelled children the hot path uses, resolved once (`labels()` takes a lock and a
        # lookup per call, about 1 µs, some twenty times a request).
        self.stage = {stage: self.stage_duration.labels(stage) for stage in STAGES}
        self.ids_by_kind = {kind: self.ids.labels(kind) for kind in ID_KINDS}
        self.unknown_by_kind = {kind: self.unknown_ids.labels(kind) for kind in ID_KINDS}
        # (model, version) -> task -> child, filled by start_model
        self.prediction: dict[tuple[str, str], dict[str, Histogram]] = {}
        self.handlers: list[tuple[str, str]] = []  # (route template, method), by start_handler
        for reason in REASONS:
            self.failures.labels(reason)
        for result in ("success", "failure"):
            self.model_loads.labels(result)
        for reason in EVENT_REASONS:
            self.event_batches_refused.labels(reason)
        for operation in STORE_OPERATIONS:
            for backend in STORE_BACKENDS:
                self.store_duration.labels(operation, backend)
                self.store_errors.labels(operation, backend)

    def start_handler(self, handler: str, method: str) -> None:
        """Create the series of a route at 0 (called for every route at start-up)."""
        self.handlers.append((handler, method))
        self._start_requests(handler, method, NO_MODEL)
        self.in_progress.labels(handler)

    def start_model(self, ref: Mapping[str, str], tasks: Sequence[str]) -> None:
        """Create a model's request and prediction series at 0 (called before it serves)."""
        model = (ref["name"], ref["version"])
        for handler, method in self.handlers:
            self._start_requests(handler, method, model)
        self.prediction[model] = {task: self.predictions.labels(task, *model) for task in tasks}

    def _start_requests(self, handler: str, method: str, model: tuple[str, str]) -> None:
        for status in STATUS_CLASSES:
            self.requests.labels(handler, method, status, *model)
        self.request_duration.labels(handler, method, *model)

    def observe_predictions(
        self,
        model: Mapping[str, str],
        outputs: Mapping[str, np.ndarray],
        item_tasks: Sequence[str],
        user_tasks: Sequence[str],
    ) -> None:
        """One observation per task and request: a random candidate's probability for item
        tasks (an unbiased sample of the candidates at constant cost), the top-class probability
        for user tasks."""
        children = self.prediction[(model["name"], model["version"])]
        for task in item_tasks:
            values = outputs[task]
            children[task].observe(float(values[random.randrange(len(values))]))
        for task in user_tasks:
            children[task].observe(max(outputs[task][0].tolist()))  # K is small: no numpy call

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type: this process's registry, or with
        several workers the sum over all of them. `process_*` figures are left out then: they
        would be those of whichever worker answered the scrape, jumping from scrape to scrape
        (client_python's multiprocess notes)."""
        if MULTIPROC_ENV not in os.environ:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST


def forget_worker(pid: int) -> None:
    """A worker is gone: drop its live gauges (in-flight requests, the model it served) from
    the sums, so a dead or replaced worker leaves no ghost series (called by the supervisor)."""
    if MULTIPROC_ENV in os.environ:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
