"""The artifact contract shared by training and serving: manifest schema, writer and loader.

One definition of every field (DESIGN.md "The artifact contract"): training imports this module to
write `models/<name>/<version>/manifest.json`; the service imports it to find, verify and describe
the model it serves. Stdlib and pydantic only, so the service never pulls in torch.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

# 2: item content (the catalogue: item features, the content encoder graph, content-only items)
# 3: retrieval (the graph's query output and the catalogue's item vectors: recommend mode)
SCHEMA_VERSION = 3
SUPPORTED_SCHEMAS = (2, 3)  # what the service loads; a 2 serves requests with candidates only
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
CONTENT_FILE = "content.onnx"  # the content encoder: raw item features -> item table rows
QUERY_OUTPUT = "query"  # the graph's [B, d] retrieval query, after the task outputs
USER_STATE_OUTPUT = "user_state"  # then [B, item tasks, D]: what the rank graph reads
ITEM_VECTORS_FILE = "retrieval/items.npy"  # float32 [items, d]: row i is vocabulary line i
RANK_GRAPH_FILE = "retrieval/rank.onnx"  # the item heads alone: user state + item rows -> tasks
PAD = 0  # index of history padding
UNK = 1  # index of an id missing from the vocabulary
FIRST_ID = 2  # index of the first real id

TaskLevel = Literal["item", "user"]
TaskKind = Literal["binary", "multiclass", "multilabel", "regression"]
FeatureKind = Literal["categorical", "multi_categorical", "numeric", "text", "vector"]
TOKEN_KINDS = ("categorical", "multi_categorical")  # token ids through a token vocabulary
DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# a ranked item's keys (and the user's `why`), and the graph's outputs beside the tasks
RESERVED_TASK_NAMES = ("item_id", "score", "why", QUERY_OUTPUT, USER_STATE_OUTPUT)


class ArtifactError(Exception):
    """An artifact is missing, incomplete, tampered with or of another schema."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TaskSpec(_Frozen):
    """One task: its name is its ONNX output, manifest key, response key and metric label.

    Item tasks are answered per candidate (output float32 [N]); user tasks once per user
    (output float32 [B, K], K = len(classes)).

    Attributes:
        name: Identifier, lowercase.
        level: `item` or `user`.
        kind: `binary` | `regression` (item level) or `multiclass` | `multilabel` (user level).
        column: Label column: in `interactions` for item tasks (None = the interaction itself:
            positives 1, sampled negatives 0), in `users` for user tasks.
        classes: Class labels of a user task; empty in a config means "take them from the data".
        weight: The task's lambda in the joint loss.
        threshold: Binary item task on a numeric column: label = value >= threshold.
        bins: Multiclass user task on a numeric column: upper-exclusive class boundaries.
        separator: Multilabel user task: the separator of the labels inside one cell.
    """

    name: str
    level: TaskLevel
    kind: TaskKind
    column: str | None = None
    classes: tuple[str, ...] = ()
    weight: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)
    threshold: float | None = None
    bins: tuple[float, ...] | None = None
    separator: str = "|"

    @property
    def interaction(self) -> bool:
        """The interaction task itself (click): an item task without a label column."""
        return self.level == "item" and self.column is None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not _NAME.match(self.name):
            raise ValueError(f"task name {self.name!r} must match {_NAME.pattern}")
        if self.name in RESERVED_TASK_NAMES:
            raise ValueError(
                f"task name {self.name!r} is reserved ({', '.join(RESERVED_TASK_NAMES)}: a "
                "ranked item's id, score and why sit beside its task outputs, the query beside the "
                "graph's)"
            )
        if self.level == "item" and self.kind not in ("binary", "regression"):
            raise ValueError(f"task {self.name!r}: item tasks are binary or regression")
        if self.level == "user" and self.kind not in ("multiclass", "multilabel"):
            raise ValueError(f"task {self.name!r}: user tasks are multiclass or multilabel")
        if self.level == "user" and not self.column:
            raise ValueError(f"task {self.name!r}: a user task needs a label column")
        if self.kind == "regression" and not self.column:
            raise ValueError(f"task {self.name!r}: a regression task needs a label column")
        if self.threshold is not None and (self.kind != "binary" or not self.column):
            raise ValueError(f"task {self.name!r}: threshold applies to binary tasks on a column")
        if self.kind == "binary" and self.column and self.threshold is None:
            raise ValueError(f"task {self.name!r}: a binary task on a column needs a threshold")
        if self.bins is not None:
            if self.kind != "multiclass":
                raise ValueError(f"task {self.name!r}: bins apply to multiclass tasks")
            if list(self.bins) != sorted(set(self.bins)):
                raise ValueError(f"task {self.name!r}: bins must be strictly increasing")
            if len(self.classes) != len(self.bins) + 1:
                raise ValueError(
                    f"task {self.name!r}: {len(self.bins)} bins need "
                    f"{len(self.bins) + 1} classes, got {len(self.classes)}"
                )
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"task {self.name!r}: duplicate class labels")
        return self


class FeatureSpec(_Frozen):
    """One item feature: a column of the items table and how it becomes part of an item's vector.

    Attributes:
        column: Column of the items table (also the content graph's input name).
        kind: `categorical` (one token), `multi_categorical` (tokens split by `separator`,
            masked-mean pooled), `numeric` (standardised; missing -> a learned input), `text`
            (embedded by the sentence encoder `encoder`), `vector` (`dim` floats: a list column
            in Parquet, `<column>_0..<column>_{dim-1}` columns in CSV).
        separator: Token separator of a multi_categorical cell.
        dim: Width of a vector feature (required); of a text feature, the encoder's (set by
            training).
        encoder: Text only: a registered encoder name or a local sentence-transformers folder.
        shuffled: An experiment control: the column's values permuted across items, so it keeps
            its distribution and loses what it says about each item.
        mean: Numeric only, set by training: the mean used to standardise.
        std: Numeric only, set by training: the standard deviation used to standardise.
        encoder_sha256: Text only, set by training: sha256 over the encoder's files.
    """

    column: str
    kind: FeatureKind
    separator: str = "|"
    dim: int | None = Field(default=None, ge=1)
    encoder: str = DEFAULT_TEXT_ENCODER
    shuffled: bool = False
    mean: float | None = None
    std: float | None = Field(default=None, gt=0.0)
    encoder_sha256: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not _COLUMN.match(self.column):
            raise ValueError(f"feature column {self.column!r} must match {_COLUMN.pattern}")
        if self.column in ("item_id", "user_id"):
            raise ValueError(f"feature column {self.column!r} is an id, not content")
        if self.kind == "vector" and self.dim is None:
            raise ValueError(f"feature {self.column!r}: a vector feature needs dim")
        if self.kind == "multi_categorical" and not self.separator:
            raise ValueError(f"feature {self.column!r}: separator must not be empty")
        return self


class CatalogueSpec(_Frozen):
    """The items the graph knows: every item of the items table, with or without interactions.

    Item index i (vocabulary `item_id`) has row i of the graph's item tables; an item whose id
    was never trained (no training interaction, or added by `python -m training catalogue`) is
    represented by the trained unknown-id vector plus its content.

    Attributes:
        features: The item features the content encoder reads, in input order.
        content_graph: The content encoder graph (features -> item table rows), or None for a
            model without item features.
        tables: Graph initializers holding one row per item index ({"item": ..., "profile":
            ...}); `catalogue` appends rows to them.
        n_trained: Items (from index FIRST_ID on) whose id embedding was trained.
    """

    features: tuple[FeatureSpec, ...] = ()
    content_graph: str | None = None
    tables: dict[str, str] = {}
    n_trained: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> Self:
        columns = [f.column for f in self.features]
        if len(set(columns)) != len(columns):
            raise ValueError("feature columns must be unique")
        if bool(self.features) != (self.content_graph is not None):
            raise ValueError("a content graph goes with item features, and only with them")
        return self


class RetrievalSpec(_Frozen):
    """What scores a user against every catalogue item (recommend mode, schema 3 onward).

    The score is the dot part of the `task` head's logit, <W h_u, e_i>: the graph's `query`
    output (W h_u, one row per user) against each item's vector (e_i, its row of the graph's
    item table, computed from content for an item whose id was never trained). The vectors are
    `item_vectors`, a float32 .npy file [items, dim] whose row i is line i of the item
    vocabulary; `catalogue` appends the rows of the items it adds. The retrieved items are then
    ranked by `rank_graph`, the item heads alone: inputs `user_state` (the graph's output of
    that name, [B, item tasks, state_dim]), `item` (the items' vectors, [N, dim]) and
    `candidate_row` ([N]), outputs the item tasks [N], as the graph's for those candidates.

    Attributes:
        task: The item task whose head the score is part of (the interaction task, click).
        query: The graph output holding the query vectors [B, dim].
        user_state: The graph output holding the item tasks' user representations.
        item_vectors: The .npy file of the item vectors.
        rank_graph: The ONNX graph of the item heads.
        dim: Width of a query and of an item vector.
        state_dim: Width of an item task's user representation.
    """

    task: str
    query: str = QUERY_OUTPUT
    user_state: str = USER_STATE_OUTPUT
    item_vectors: str = ITEM_VECTORS_FILE
    rank_graph: str = RANK_GRAPH_FILE
    dim: int = Field(ge=1)
    state_dim: int = Field(ge=1)


class TensorSpec(_Frozen):
    """A named graph input or output; symbolic dims are strings (B users, N candidates)."""

    name: str
    dtype: Literal["int64", "float32"]
    shape: tuple[int | str, ...]


class VocabSpec(_Frozen):
    """A vocabulary file: line i (0-based) holds the id whose index is FIRST_ID + i."""

    file: str
    size: int = Field(ge=0)


class RankingSpec(_Frozen):
    """Default ranking: score = sum over item tasks of weight * probability; keep top_k."""

    weights: dict[str, float]
    top_k: int = Field(default=10, ge=1)


class FitSpec(_Frozen):
    """What the shipped weights learned from, and so what the manifest's `metrics` are.

    Attributes:
        refit: True: after the evaluated run, the weights were fitted again on all of the data
            (its validation and test events, held-out profile labels and cold items
            included) with what that run chose; `metrics` are then the held-out estimate of
            this recipe, measured on the evaluated run's weights, not on these. False: the
            evaluated run's weights themselves, which `metrics` measure on data they never saw.
        epochs: Epochs the shipped weights were trained for.
        events: Training events (interactions) they learned from.
        users: Users with at least one training event.
        items: Items with at least one training event (the others are served from content).
        user_labels: Per user task, the users whose label training read.
    """

    refit: bool
    epochs: int = Field(ge=0)
    events: int = Field(ge=0)
    users: int = Field(ge=0)
    items: int = Field(ge=0)
    user_labels: dict[str, int] = {}

    @property
    def metrics_are(self) -> str:
        """What the manifest's `metrics` measure, in words."""
        if self.refit:
            return (
                "held-out estimate: the same recipe trained without what the protocol holds "
                "out (validation and test events, cold items, holdout users' labels); these "
                "weights were refit on all of the data"
            )
        return "held-out measurement of these weights: data they never trained on"


class Manifest(_Frozen):
    """Everything the service needs to serve a model, and what it needs to trust it."""

    schema_version: int
    name: str
    version: int = Field(ge=1)
    created_at: str
    tasks: tuple[TaskSpec, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    history_length: int = Field(ge=1)
    # the graph also takes history windows this narrow up to history_length wide (the model
    # reads nothing but padding before them); None: exactly history_length
    history_min_length: int | None = Field(default=None, ge=1)
    pad_index: int = PAD
    unknown_index: int = UNK
    vocabularies: dict[str, VocabSpec]
    ranking: RankingSpec
    catalogue: CatalogueSpec = CatalogueSpec()
    metrics: dict[str, float | None] = {}  # None: undefined on this data (e.g. AUC of one class)
    baselines: dict[str, float | None] = {}
    parity_max_abs_diff: float
    training: dict[str, object] = {}
    fit: FitSpec | None = None  # None: an artifact from before the refit (held-out weights)
    retrieval: RetrievalSpec | None = None  # None: no recommend mode (candidates only)
    files: dict[str, str] = {}

    @field_validator("metrics", "baselines", mode="after")
    @classmethod
    def _nan_is_none(cls, values: dict[str, float | None]) -> dict[str, float | None]:
        return {k: v if v is not None and math.isfinite(v) else None for k, v in values.items()}

    @model_validator(mode="after")
    def _check(self) -> Self:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError("task names must be unique")
        retrieval = self.retrieval
        extra = [retrieval.query, retrieval.user_state] if retrieval else []
        if [o.name for o in self.outputs] != names + extra:
            raise ValueError("outputs must be the tasks, in task order (then query, user_state)")
        if retrieval is not None:
            if self.schema_version < 3:
                raise ValueError("retrieval needs schema_version 3")
            if retrieval.task not in names or self.task(retrieval.task).level != "item":
                raise ValueError(f"retrieval.task {retrieval.task!r} is not an item task")
            n_item = sum(t.level == "item" for t in self.tasks)
            shapes = [("B", retrieval.dim), ("B", n_item, retrieval.state_dim)]
            if [o.shape for o in self.outputs[-2:]] != shapes:
                raise ValueError(f"the query and user_state outputs must be {shapes}")
        if (self.history_min_length or 0) > self.history_length:
            raise ValueError("history_min_length exceeds history_length")
        item_tasks = {t.name for t in self.tasks if t.level == "item"}
        if set(self.ranking.weights) - item_tasks:
            raise ValueError("ranking weights must name item tasks")
        if (self.pad_index, self.unknown_index) != (PAD, UNK):
            raise ValueError(f"index convention must be pad={PAD}, unknown={UNK}")
        items = self.vocabularies.get("item_id")
        if items is not None and self.catalogue.n_trained > items.size:
            raise ValueError("catalogue.n_trained exceeds the item vocabulary")
        for f in self.catalogue.features:
            if f.kind in TOKEN_KINDS and f.column not in self.vocabularies:
                raise ValueError(f"feature {f.column!r} has no token vocabulary")
        return self

    def task(self, name: str) -> TaskSpec:
        """The task called `name`."""
        return next(t for t in self.tasks if t.name == name)

    @property
    def per_user_outputs(self) -> set[str]:
        """The graph outputs with one row per user [B, ...]: the user tasks, the query and the
        user state."""
        retrieval = self.retrieval
        extra = {retrieval.query, retrieval.user_state} if retrieval is not None else set()
        return {t.name for t in self.tasks if t.level == "user"} | extra


class Artifact(_Frozen):
    """A verified artifact folder and its manifest."""

    path: Path
    manifest: Manifest

    def read_vocab(self, name: str) -> list[str]:
        """Ids of vocabulary `name`, in index order (index = FIRST_ID + position)."""
        return read_vocab(self.path / self.manifest.vocabularies[name].file)


def now_iso() -> str:
    """UTC timestamp for `created_at`."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_vocab(path: Path, ids: list[str]) -> None:
    """Write ids one per line ("\\n"); an id may hold any other character (\\r, \\x85, \\u2028
    and the rest of what `str.splitlines` would split on are kept as they are)."""
    if any("\n" in i for i in ids):
        raise ValueError(f"{path.name}: ids must not contain a newline")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(f"{i}\n" for i in ids).encode("utf-8"))


def read_vocab(path: Path) -> list[str]:
    """Read a vocabulary file written by `write_vocab`: bytes split on "\\n" only (no newline
    translation, unlike `read_text`, and none of `splitlines`'s other separators)."""
    text = path.read_bytes().decode("utf-8")
    return text.removesuffix("\n").split("\n") if text else []


def write_manifest(folder: Path, manifest: Manifest) -> Manifest:
    """Hash every file under `folder`, then write manifest.json there.

    Args:
        folder: The (staging) artifact folder, holding model.onnx and the vocab files.
        manifest: The manifest; its `files` are replaced by the hashes found.

    Returns:
        The manifest as written.
    """
    files = {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }
    if MODEL_FILE not in files:
        raise ArtifactError(f"{folder}: no {MODEL_FILE} to describe")
    final = manifest.model_copy(update={"files": files})
    (folder / MANIFEST_FILE).write_text(final.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return final
