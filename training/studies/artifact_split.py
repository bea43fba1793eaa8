"""An artifact's own data and split, prepared again from what its manifest recorded: what the
studies that compare with an artifact or read it (`sasrec`, `relatedness`) start from."""

from __future__ import annotations

from typing import Any

from service.artifact import Artifact
from training.config import ConfigError
from training.config_file import from_dict
from training.pipeline.prepare import Prepared, prepare

NOT_CONFIG_KEYS = ("data", "catalogue_from")  # manifest.training keys beside the config


def artifact_data(
    artifact: Artifact, held_out: bool = True
) -> tuple[dict[str, Any], str, Prepared]:
    """The artifact's training config (as a dict), its data source, and that data prepared.

    Args:
        artifact: a verified artifact.
        held_out: refuse a refit (its test events were training events): for figures measured
            on the test events; reading what the weights do (gates) may take a refit.

    Raises:
        ConfigError: the artifact was refit on all of its data (with `held_out`), the manifest
            names no data source, or the data's vocabularies are not the artifact's (ids a
            catalogue added come after them and are allowed).
    """
    fit = artifact.manifest.fit
    if held_out and fit is not None and fit.refit:
        raise ConfigError(
            f"{artifact.path}: refit on all of its data, so its test events were training "
            "events; compare a held-out model (train --no-refit)"
        )
    stored = dict(artifact.manifest.training)
    source = stored.get("data")
    if not isinstance(source, str):
        raise ConfigError(f"{artifact.path}: its manifest names no data source to train on")
    stored = {k: v for k, v in stored.items() if k not in NOT_CONFIG_KEYS}
    data = prepare(from_dict(stored), source, progress=False)
    for name in ("item_id", "user_id"):
        ids, served = data.vocabs[name].ids, artifact.read_vocab(name)
        if served[: len(ids)] != list(ids):
            raise ConfigError(
                f"{artifact.path}: its {name} vocabulary is not the one of {source!r} as "
                "prepared now, so the two cannot score the same events"
            )
    return stored, source, data
