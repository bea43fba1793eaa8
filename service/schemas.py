"""The HTTP contract (DESIGN.md "API"): request, response and error bodies.

Task names are data, so the response maps them instead of naming them as fields: `user` maps each
user task to its class probabilities, and each ranked item carries one probability per item task
beside `item_id` and `score`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic.config import JsonDict

MAX_ID_LENGTH = 256  # characters; vocabulary ids are short, anything longer is a client bug
MAX_WEIGHT = 1e6  # |ranking weight|: a score (weights x probabilities) stays finite

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]

REQUEST_EXAMPLE: JsonDict = {
    "user_id": "196",
    "history": ["242", "302", "377"],
    "candidates": ["1", "50", "181"],
    "top_k": 10,
    "weights": {"click": 1.0, "like": 1.0},
}
RESPONSE_EXAMPLE: JsonDict = {
    "model": {"name": "movielens", "version": "1"},
    "user": {"gender": {"F": 0.31, "M": 0.69}},
    "items": [{"item_id": "50", "score": 1.59, "click": 0.93, "like": 0.66}],
    "unknown": {"user_id": False, "history": [], "candidates": []},
    "history_source": "request",
}


RECOMMEND_EXAMPLE: JsonDict = {"user_id": "196", "history": ["242", "302", "377"], "top_k": 5}
STORED_EXAMPLE: JsonDict = {"user_id": "196", "top_k": 5}  # the history from POST /events
EXPLAIN_EXAMPLE: JsonDict = {  # why each item, why each profile answer
    "user_id": "196",
    "history": ["242", "302", "377", "51", "346"],
    "candidates": ["1", "50", "181"],
    "top_k": 2,
    "explain": True,
}


class PredictRequest(BaseModel):
    """One user and the candidate items to score and rank, or, without candidates, to
    recommend from the whole catalogue (recommend mode)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [REQUEST_EXAMPLE, RECOMMEND_EXAMPLE, STORED_EXAMPLE, EXPLAIN_EXAMPLE]
        },
    )

    user_id: Id = Field(description="the user's id (unknown ids are served, and listed)")
    history: list[Id] | None = Field(
        default=None,
        description="the user's recent item ids, oldest first; the last L are used. Omitted "
        "or null: the user's last L events in the service's store (POST /events); given, even "
        "[], it wins and the store is not read",
    )
    candidates: list[Id] | None = Field(
        default=None,
        min_length=1,
        description="item ids to score and rank, distinct (HYDRAREC_MAX_CANDIDATES); omitted "
        "or null: recommend from the whole catalogue (HYDRAREC_RETRIEVE retrieved, then ranked)",
    )
    exclude: list[Id] = Field(
        default_factory=list,
        description="recommend mode: ids never to recommend, besides the history "
        "(HYDRAREC_MAX_EXCLUDE)",
    )
    exclude_touched: bool = Field(
        default=True,
        description="recommend mode with the history from the store: also leave out every "
        "item the user ever touched (up to the store's cap of 10,000); false: only the history "
        "window and `exclude`",
    )
    top_k: int | None = Field(
        default=None, ge=1, description="how many ranked items to return (manifest default)"
    )
    weights: (
        dict[str, Annotated[float, Field(allow_inf_nan=False, ge=-MAX_WEIGHT, le=MAX_WEIGHT)]]
        | None
    ) = Field(
        default=None,
        description="ranking score = sum of weight x probability over these item tasks "
        "(replaces the manifest default); each weight within +-1e6",
    )
    explain: bool = Field(
        default=False,
        description="add `why` to each ranked item (its score by task, the history items that "
        "move its item tasks most) and to `user` (the history items that move each task's top "
        "class most), by occlusion: one more graph run (HYDRAREC_EXPLAIN_*; at most "
        "HYDRAREC_EXPLAIN_MAX_ITEMS ranked items)",
    )

    @field_validator("candidates")
    @classmethod
    def _distinct(cls, candidates: list[str] | None) -> list[str] | None:
        if candidates is not None and len(set(candidates)) != len(candidates):
            repeated = sorted({c for c in candidates if candidates.count(c) > 1})[:5]
            raise ValueError(f"ids must be distinct; repeated: {', '.join(repeated)}")
        return candidates


class ModelRef(BaseModel):
    """Which artifact computed a response."""

    name: str
    version: str


class HistoryEffect(BaseModel):
    """What one history item does to one output (occlusion)."""

    item_id: str
    change: float = Field(
        description="the output with this item in the history minus the output with it left "
        "out (every occurrence): > 0 it raises the output, < 0 it lowers it"
    )


class ItemWhy(BaseModel):
    """Why an item ranks where it does (`"explain": true`)."""

    score: dict[str, float] = Field(
        description="item task -> its weight x its output: the parts that sum to `score`"
    )
    history: dict[str, list[HistoryEffect]] = Field(
        description="item task -> the history items that change its output most, largest "
        "|change| first (HYDRAREC_EXPLAIN_TOP of the HYDRAREC_EXPLAIN_HISTORY tried)"
    )


class RankedItem(BaseModel):
    """A candidate with its ranking score and one probability per item task (extra keys)."""

    model_config = ConfigDict(
        extra="allow", json_schema_extra={"additionalProperties": {"type": "number"}}
    )

    item_id: str
    score: float
    why: ItemWhy | None = Field(default=None, description='only with `"explain": true`')


class UserAnswer(BaseModel):
    """Each user task's class probabilities (extra keys: task -> class -> probability)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "additionalProperties": {"type": "object", "additionalProperties": {"type": "number"}}
        },
    )

    why: dict[str, list[HistoryEffect]] | None = Field(
        default=None,
        description='only with `"explain": true`: user task -> the history items that change '
        "the probability of its top class most, largest |change| first",
    )


class Unknown(BaseModel):
    """Ids that are not in the model's vocabularies (served through the unknown index)."""

    user_id: bool
    history: list[str]
    candidates: list[str]


class PredictResponse(BaseModel):
    """Every task's output for one request."""

    model_config = ConfigDict(json_schema_extra={"examples": [RESPONSE_EXAMPLE]})

    model: ModelRef
    user: UserAnswer = Field(description="user task -> class -> probability (and `why`)")
    items: list[RankedItem] = Field(
        description="candidates (recommend mode: the retrieved items) by score, highest first, "
        "top_k of them (fewer where fewer were retrieved)"
    )
    unknown: Unknown
    history_source: Literal["request", "store"] = Field(
        description="where the history came from: the request's `history`, or the service's "
        "store (the request left `history` out)"
    )
    retrieved: int | None = Field(
        default=None,
        description="recommend mode only: items retrieved from the index and re-ranked, after "
        "the history and `exclude` were dropped",
    )


class FieldError(BaseModel):
    """One problem with one field of the request."""

    field: str = Field(description="dotted path into the body, e.g. candidates[3]")
    message: str


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer of the service."""

    error: str = Field(
        description="invalid_input | too_large | timeout | unauthorized | not_ready | "
        "overloaded | store_unavailable | not_found | method_not_allowed | reload_failed | "
        "internal"
    )
    message: str = Field(description="what is wrong, naming the field")
    fields: list[FieldError] = Field(default_factory=list)


class TaskSummary(BaseModel):
    """A task as clients see it."""

    name: str
    level: str
    kind: str
    classes: list[str]


class CatalogueSummary(BaseModel):
    """The items the model knows and what it reads of them."""

    items: int = Field(description="items in the catalogue (the item vocabulary)")
    trained_ids: int = Field(
        description="of them, items whose id was trained; the rest are content"
    )
    features: dict[str, str] = Field(description="item feature column -> kind")


class FitSummary(BaseModel):
    """What the served weights learned from, and so what the model's `metrics` are."""

    refit: bool = Field(
        description="true: refit on all of the data after the evaluated run, so `metrics` are "
        "the held-out estimate of the recipe, not a measurement of these weights"
    )
    metrics_are: str = Field(description="what `metrics` measure, in words")
    epochs: int = Field(description="epochs these weights were trained for")
    events: int = Field(description="training events (interactions) they learned from")
    users: int = Field(description="users with a training event")
    items: int = Field(description="items with a training event")
    user_labels: dict[str, int] = Field(description="per user task, users whose label was read")


class RejectedVersion(BaseModel):
    """A version this worker found and could not serve (tried again when its content changes)."""

    version: str
    reason: str


class ModelSummary(BaseModel):
    """What `/v1/models` says about the loaded model."""

    name: str
    version: str
    created_at: str
    history_length: int
    tasks: list[TaskSummary]
    ranking_weights: dict[str, float]
    top_k: int
    vocabulary_sizes: dict[str, int]
    catalogue: CatalogueSummary
    metrics: dict[str, float | None] = Field(description="held-out figures: see fit.metrics_are")
    fit: FitSummary | None = Field(
        default=None, description="absent for an artifact written before refits existed"
    )
    rejected: list[RejectedVersion] = Field(
        default_factory=list, description="versions that could not be served, and why"
    )


class ModelsResponse(BaseModel):
    """The models this process serves (one)."""

    models: list[ModelSummary]


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` written in place, for a request body given by
    hand in the OpenAPI document (a `#/$defs/...` reference there would point into the
    document's root, where ReDoc and other tools find nothing)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


MAX_TIMESTAMP = 1e11  # Unix seconds (year 5138): a larger one is milliseconds sent by mistake
EVENTS_EXAMPLE: JsonDict = {
    "events": [
        {"user_id": "196", "item_id": "242", "timestamp": 881250949, "rating": 3},
        {"user_id": "196", "item_id": "50", "event_id": "196-50-2026-12-07"},
    ]
}


class EventIn(BaseModel):
    """One interaction a user had with an item."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: Id = Field(description="the user's id (a new user is stored like any other)")
    item_id: Id = Field(description="the item's id (a new item is stored like any other)")
    timestamp: float | None = Field(
        default=None,
        ge=0,
        le=MAX_TIMESTAMP,
        allow_inf_nan=False,
        description="Unix seconds; the server's time when absent",
    )
    rating: float | None = Field(default=None, allow_inf_nan=False, description="if any")
    event_id: Id | None = Field(
        default=None,
        description="idempotency key: an event whose key is already stored is not stored "
        "again (a batch retried after a timeout is stored once)",
    )


class EventsRequest(BaseModel):
    """A batch of interactions, stored whole or not at all."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [EVENTS_EXAMPLE]}
    )

    events: list[EventIn] = Field(
        min_length=1, description="the interactions (HYDRAREC_MAX_EVENTS at most)"
    )


class EventsResponse(BaseModel):
    """Every event of the batch is stored."""

    stored: int = Field(description="events of the batch now in the store")
    new: int = Field(description="of them, those stored by this request")
    duplicates: int = Field(description="of them, those whose event_id was already stored")
