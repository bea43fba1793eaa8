"""Training configuration: a TOML file plus `--section.key=value` overrides, validated once.

Parsed, never executed (nanoGPT's configurator `exec`s files into globals; we do not). The whole
config is saved in the checkpoint and the manifest so an artifact says how it was made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from service.artifact import FeatureSpec, TaskSpec

ENCODERS = ("mean", "gru", "lstm", "attention")
BLOCKS = ("shared_bottom", "mmoe", "ple")  # training.network.multitask.ARCHITECTURES
WEIGHTINGS = ("fixed", "uncertainty", "gradnorm")  # training.fit.weighting
DEVICES = ("auto", "cpu", "cuda")
LR_SCHEDULES = ("constant", "cosine")  # training.fit.schedule


class ConfigError(ValueError):
    """A config file or flag is invalid; the message names the key."""


@dataclass
class SyntheticConfig:
    """Size and seed of the synthetic generator (used with `--data synthetic`)."""

    n_users: int = 600
    n_items: int = 300
    n_interactions: int = 40  # per user, on average
    n_factors: int = 4
    seed: int = 0


@dataclass
class NetworkConfig:
    """Shape of the network; read by `network.recommender.build_model`."""

    encoder: str = "attention"  # mean | gru | lstm | attention
    block: str = "mmoe"  # one of BLOCKS
    history_length: int = 200  # L: the last L items before an event (the means read them all)
    encoder_length: int = 50  # the sequence encoder reads the last min(this, L) of them
    d_embedding: int = 64
    d_hidden: int = 64  # D: width of each task's representation out of the block
    n_experts: int = 4  # mmoe: experts; ple: shared experts per level
    n_task_experts: int = 1  # ple only: each task's own experts per level
    n_levels: int = 2  # ple only: extraction layers
    n_heads: int = 2  # attention encoder only
    n_layers: int = 1  # attention encoder only
    d_tower: int = 32  # hidden units of each task's tower
    dropout: float = 0.1
    user_embedding: bool = True  # a learned user-id embedding, read by item tasks only
    profile_item_dropout: float = 0.5  # training: share of history items the user tasks miss
    # user heads add a linear map of the pooled profile vector to the tower (wide & deep): what
    # logistic regression on the bag of watched items has, beside the deep path
    wide_profile: bool = True
    # item heads add the dot product of the projected user vector and the item vector to the
    # tower's logit (matrix factorisation's score beside the MLP; see Quality)
    item_dot: bool = True
    # Training: share of item and user ids read as unknown (DropoutNet), so the unknown rows are
    # trained and item content alone must carry an item whose id is unknown.
    id_dropout: float = 0.25
    unknown_item_dropout: float = 0.02  # share of candidates seen as wholly unknown (id, content)
    token_dropout: float = 0.05  # share of categorical tokens read as unknown
    # share of items whose text and vector features are read as missing in training, so the
    # content path cannot memorise the training items by a vector unique to each of them
    content_dropout: float = 0.8


@dataclass
class OptimConfig:
    """Optimisation, sampling and early stopping."""

    epochs: int = 20
    batch_size: int = 256  # events (users x time steps) per batch
    lr: float = 1e-3
    # constant | cosine: from lr at the first epoch down half a cosine to about 0 at `epochs`
    # (training.fit.schedule)
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    n_negatives: int = 8  # sampled negatives per positive for `click`, fresh each epoch
    # Events per user and epoch that carry the user's profile labels (0 = every event). A user's
    # label repeated on each of their ~100 overlapping history windows is memorised within two
    # epochs; a few random windows per epoch generalise to unseen users.
    user_task_events: int = 2
    # like as p(click and like) = p(click) p(like | click) over every candidate (ESMM), not
    # p(like) over clicked items only; the served `like` stays p(like | click)
    esmm: bool = False
    # weight of a sampled-softmax term in the interaction task's loss: the real item against its
    # own n_negatives in one softmax (training.fit.losses.sampled_softmax_loss), beside the binary
    # loss; 0 = binary only
    sampled_softmax: float = 1.0
    # weight of a full-catalogue softmax term in the interaction task's loss: each event's real
    # item against every item with training interactions, scored by the item head's dot product
    # (training.fit.losses.catalogue_softmax_loss; needs network.item_dot); 0 = off
    catalogue_softmax: float = 0.0
    weighting: str = "uncertainty"  # fixed | uncertainty | gradnorm (training.fit.weighting)
    gradnorm_alpha: float = 1.5  # gradnorm: how hard slow tasks are pulled up
    gradnorm_lr: float = 0.025  # gradnorm: Adam step of the task weights
    patience: int = 3  # epochs without improvement of `monitor` before stopping
    monitor: str = "click_auc"  # a validation metric (higher is better) or `loss` (lower)
    # after the joint fit, tune each other item task's own head alone on the kept body for up
    # to this many epochs, kept at its best validation epoch (training.fit.head_tuning; 0 = off)
    head_epochs: int = 0
    # share of the training users whose profile labels are held back from training to fit a
    # temperature per multiclass user task on afterwards (training.fit.calibration; 0 = off)
    calibration_users: float = 0.0
    seed: int = 0
    # torchrun: how long a collective waits for the other ranks before the run fails (a dead
    # or hung rank ends it with an error instead of a hang)
    collective_timeout_s: float = 300.0
    device: str = "auto"  # auto (a GPU per rank when torch sees one, else the CPU) | cpu | cuda
    # a prepared folder (`train --data PREP`): DataLoader worker processes per rank (0 = read
    # in the training process) and the events each slice is shuffled through
    loader_workers: int = 0
    shuffle_buffer: int = 10_000
    max_batches: int = 0  # batches per epoch at most (0 = every event): epochs of a huge log
    # a prepared folder: also write the training state every this many batches (0 = at the end
    # of each epoch only), so a run of a huge log resumes within its epoch
    state_every_batches: int = 0
    # batches per epoch on which the task losses' gradients on the shared parameters are
    # compared (cosine per pair, in the report: training.fit.gradients; 0 = off; one process)
    grad_cosine_batches: int = 8


@dataclass
class EvalConfig:
    """Evaluation protocol knobs (DESIGN.md "Evaluation protocol")."""

    holdout_fraction: float = 0.2  # users whose profile labels are hidden in training
    # k-fold profile holdout (`python -m training crossval`): with n_folds >= 2 the users are
    # split into n_folds fixed random folds and fold `fold` is the holdout (holdout_fraction is
    # then unused); fold 0 of 5 is the holdout_fraction = 0.2 holdout itself
    n_folds: int = 0
    fold: int = 0
    n_rank_negatives: int = 100
    k: int = 10
    n_click_negatives: int = 4  # negatives per test event for click AUC
    seed: int = 1234
    # Cold items (DESIGN.md): this share of the items with >= cold_item_min_interactions lose
    # every interaction from training and validation; their test figures are the cold ones.
    cold_item_fraction: float = 0.15
    cold_item_min_interactions: int = 5
    n_cold_rank_negatives: int = 99  # HR@k on cold items: the first cold item among 99 others
    # Evaluate the events of a fixed random sample of this many users (0 = every user): a log
    # of a million users is evaluated on a sample, as a figure's interval says how many it took
    max_users: int = 0


@dataclass
class Config:
    """Everything `python -m training train` needs besides the data source and output folder."""

    name: str = ""  # the artifact's name (models/<name>/); empty: see model_name()
    tasks: list[TaskSpec] = field(default_factory=list)
    features: list[FeatureSpec] = field(default_factory=list)  # item features ([[features]])
    network: NetworkConfig = field(default_factory=NetworkConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the checkpoint and the manifest)."""
        out = asdict(self)
        out["tasks"] = [t.model_dump(mode="json", exclude_defaults=True) for t in self.tasks]
        out["features"] = [f.model_dump(mode="json", exclude_defaults=True) for f in self.features]
        return out


BUILT_IN_SOURCES = ("movielens", "synthetic")  # named after themselves when the config is not


def model_name(cfg: Config, source: str) -> str:
    """The name a run publishes under: the config's (or --name), else a built-in source's own.

    Raises:
        ConfigError: a user's data folder with no name given; publishing it as `movielens`
            would let a service that polls models/movielens swap it in.
    """
    if cfg.name:
        return cfg.name
    if source in BUILT_IN_SOURCES:
        return source
    raise ConfigError(
        f'name the model trained on {source}: --name NAME, or name = "..." in the config '
        "(it is published as models/<name>/<version>/)"
    )
