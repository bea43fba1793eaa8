"""Output shapes for every encoder x block x task kind, including a batch of one user with one
candidate (the normal online request) and users without history."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from service.artifact import PAD, TaskSpec
from training.config import BLOCKS, ENCODERS, NetworkConfig
from training.network.encoders import AttentionEncoder, Block
from training.network.heads import ItemHead
from training.network.multitask import ARCHITECTURES, PLE, BlockSpec
from training.network.recommender import ModelArgs, MultiTaskRecommender

TASKS = (
    TaskSpec(name="click", level="item", kind="binary"),
    TaskSpec(name="rating", level="item", kind="regression", column="rating"),
    TaskSpec(name="age", level="user", kind="multiclass", column="age", classes=("a", "b", "c")),
    TaskSpec(
        name="genres",
        level="user",
        kind="multilabel",
        column="genres",
        classes=("x", "y", "z", "w"),
    ),
)
L = 6


def test_the_config_accepts_exactly_the_registered_blocks() -> None:
    assert sorted(BLOCKS) == sorted(ARCHITECTURES)


def _model(encoder: str, block: str, **network: object) -> MultiTaskRecommender:
    net = NetworkConfig(
        encoder=encoder,
        block=block,
        history_length=L,
        d_embedding=8,
        d_hidden=12,
        n_experts=3,
        n_heads=2,
        d_tower=5,
        **network,
    )
    return MultiTaskRecommender(ModelArgs(n_users=9, n_items=20, network=net, tasks=TASKS)).eval()


def _inputs(n_users: int, n_candidates: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    history = torch.randint(2, 20, (n_users, L))
    history[0, :3] = PAD  # a short history, left-padded
    return {
        "user_id": torch.randint(2, 9, (n_users,)),
        "history": history,
        "candidate": torch.randint(2, 20, (n_candidates,)),
        "candidate_row": torch.arange(n_candidates) % n_users,
    }


@pytest.mark.parametrize("block", sorted(ARCHITECTURES))
@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize(("n_users", "n_candidates"), [(1, 1), (1, 7), (3, 3), (4, 11)])
def test_output_shapes(encoder: str, block: str, n_users: int, n_candidates: int) -> None:
    out = _model(encoder, block)(**_inputs(n_users, n_candidates))

    assert out["click"].shape == (n_candidates,)
    assert out["rating"].shape == (n_candidates,)
    assert out["age"].shape == (n_users, 3)
    assert out["genres"].shape == (n_users, 4)
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("encoder", ENCODERS)
def test_empty_history_gives_finite_outputs(encoder: str) -> None:
    inputs = _inputs(2, 2)
    inputs["history"][:] = PAD
    out = _model(encoder, "mmoe")(**inputs)
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("encoder", ENCODERS)
def test_padding_is_ignored_where_it_should_be(encoder: str) -> None:
    """Mean and attention ignore padding slots entirely; for all encoders a user's outputs
    do not depend on the other users in the batch."""
    model = _model(encoder, "shared_bottom", dropout=0.0)
    inputs = _inputs(3, 6)
    alone = {
        "user_id": inputs["user_id"][:1],
        "history": inputs["history"][:1],
        "candidate": inputs["candidate"][inputs["candidate_row"] == 0],
        "candidate_row": torch.zeros(2, dtype=torch.int64),
    }
    together, single = model(**inputs), model(**alone)
    assert torch.allclose(together["age"][:1], single["age"], atol=1e-6)
    assert torch.allclose(
        together["click"][inputs["candidate_row"] == 0], single["click"], atol=1e-6
    )


def test_user_embedding_can_be_switched_off() -> None:
    with_id = _model("gru", "mmoe")
    without = _model("gru", "mmoe", user_embedding=False)
    assert with_id.user_embedding is not None
    assert without.user_embedding is None
    assert sum(p.numel() for p in without.parameters()) < sum(
        p.numel() for p in with_id.parameters()
    )


def test_a_checkpoint_from_before_a_network_key_rebuilds_the_network_it_was() -> None:
    args = _model("gru", "mmoe").args.to_dict()
    del args["network"]["item_dot"], args["network"]["wide_profile"]
    rebuilt = ModelArgs.from_dict(args).network
    assert not rebuilt.item_dot
    assert not rebuilt.wide_profile


def test_model_args_round_trip() -> None:
    args = _model("attention", "mmoe").args
    again = ModelArgs.from_dict(args.to_dict())
    assert again == args
    assert dataclasses.asdict(again.network)["encoder"] == "attention"


@pytest.mark.parametrize("block", sorted(ARCHITECTURES))
def test_user_tasks_never_read_the_user_id(block: str) -> None:
    model = _model("gru", block, dropout=0.0)
    inputs = _inputs(2, 4)
    other = dict(inputs, user_id=inputs["user_id"] + 1)
    first, second = model(**inputs), model(**other)
    assert torch.equal(first["age"], second["age"])
    assert torch.equal(first["genres"], second["genres"])
    assert not torch.allclose(first["click"], second["click"]), "item tasks do read it"


def test_item_tasks_alone_build_no_profile_table() -> None:
    net = NetworkConfig(encoder="gru", block="mmoe", history_length=L, d_embedding=8)
    model = MultiTaskRecommender(ModelArgs(n_users=9, n_items=20, network=net, tasks=TASKS[:2]))
    assert model.profile_embedding is None
    assert set(model.eval()(**_inputs(2, 3))) == {"click", "rating"}
    assert _model("gru", "mmoe").profile_embedding is not None


@pytest.mark.parametrize("encoder", ENCODERS)
def test_user_rows_compute_the_same_user_outputs_for_those_rows(encoder: str) -> None:
    model = _model(encoder, "mmoe")
    inputs = _inputs(5, 10)
    rows = torch.tensor([3, 0])
    full = model(**inputs)
    part = model(**inputs, user_rows=rows)
    for task in TASKS:
        if task.level == "user":
            assert part[task.name].shape == (2, len(task.classes))
            torch.testing.assert_close(part[task.name], full[task.name][rows])
        else:
            torch.testing.assert_close(part[task.name], full[task.name])


@pytest.mark.parametrize("encoder", ENCODERS)
def test_the_means_read_items_older_than_the_encoder_window(encoder: str) -> None:
    model = _model(encoder, "mmoe", encoder_length=3)
    inputs = _inputs(2, 4)
    older = dict(inputs, history=inputs["history"].clone())
    older["history"][1, 0] = 19 if int(inputs["history"][1, 0]) != 19 else 18  # outside the last 3
    recent, changed = model(**inputs), model(**older)
    assert recent["click"].shape == (4,)
    assert not torch.allclose(recent["age"][1], changed["age"][1])
    torch.testing.assert_close(recent["age"][0], changed["age"][0])


@pytest.mark.parametrize("n_levels", [1, 2, 3])
def test_ple_task_experts_learn_from_their_own_task_only(n_levels: int) -> None:
    """PLE's point: a task's own experts get no gradient from the other tasks' losses, while the
    shared experts get it from every task."""
    block = PLE(5, 2, BlockSpec(d_hidden=4, n_experts=2, n_task_experts=2, n_levels=n_levels))
    first, second = block(torch.randn(7, 5))
    first.sum().backward()

    top = block.levels[-1]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in top.own[0].parameters())
    assert all(p.grad is None for p in top.own[1].parameters())
    assert all(p.grad is not None for p in top.shared.parameters())
    assert second.shape == (7, 4)


def test_a_wide_profile_head_adds_a_linear_map_of_the_pooled_profile_rows() -> None:
    model = _model("gru", "mmoe", wide_profile=True)
    assert _model("gru", "mmoe", wide_profile=False).heads["age"].wide is None
    inputs = _inputs(2, 4)
    head = model.heads["age"]
    with torch.no_grad():
        head.wide.weight.zero_()
        deep = model(**inputs)["age"]
        weight = torch.randn_like(head.wide.weight)
        head.wide.weight.copy_(weight)
        wide = model(**inputs)["age"]
        history = inputs["history"]
        rows = model.profile_embedding(model.items.rows(history))  # [B, L, d]
        seen = (history != PAD).unsqueeze(-1)
        pooled = (rows * seen).sum(1) / seen.sum(1)
    assert torch.allclose(wide - deep, pooled @ weight.T, atol=1e-5)
    assert not torch.allclose(wide, deep)


def test_a_checkpoint_without_temperatures_loads_with_temperature_one() -> None:
    model = _model("gru", "mmoe")
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("temperature")}
    with torch.no_grad():
        model.heads["age"].temperature.fill_(2.0)
    model.load_state_dict(state)  # strict: a missing key would raise
    assert float(model.heads["age"].temperature) == 1.0


def test_a_dot_head_adds_the_dot_product_it_scores_the_whole_catalogue_with() -> None:
    model = _model("attention", "mmoe", item_dot=True)
    inputs = _inputs(3, 8)
    with torch.no_grad():
        dotted = model(**inputs, catalogue="click")
        model.heads["click"].dot = False
        plain = model(**inputs)
    catalogue = dotted["click@catalogue"]  # [B, n_items]
    assert catalogue.shape == (3, 20)
    added = catalogue[inputs["candidate_row"], inputs["candidate"]]  # [N]
    torch.testing.assert_close(dotted["click"] - plain["click"], added)
    assert added.abs().max() > 0
    assert "rating@catalogue" not in dotted


@pytest.mark.parametrize("causal", [False, True])
def test_a_block_of_the_last_position_only_equals_the_full_blocks_last_position(
    causal: bool,
) -> None:
    """The attention encoder's last block computes the most recent position alone (its output
    is read there): the same figures as the whole block at that position, padding included."""
    torch.manual_seed(1)
    block = Block(8, 2, dropout=0.0).eval()
    x = torch.randn(3, L, 8)
    mask = torch.ones(3, L, dtype=torch.bool)
    mask[0, :4] = False  # a short history
    if causal:
        mask = mask[:, None, :] & torch.ones(L, L, dtype=torch.bool).tril()
    full = block(x, mask)
    last = block(x, mask, last_only=True)
    assert last.shape == (3, 1, 8)
    torch.testing.assert_close(last[:, 0], full[:, -1])


def test_the_attention_encoder_with_several_blocks_reads_the_last_position() -> None:
    torch.manual_seed(2)
    encoder = AttentionEncoder(8, L, n_heads=2, n_layers=2, dropout=0.0).eval()
    emb, mask = torch.randn(2, L, 8), torch.ones(2, L, dtype=torch.bool)
    x = emb + encoder.position
    for block in encoder.blocks:
        x = block(x, mask)
    torch.testing.assert_close(encoder(emb, mask), encoder.norm(x[:, -1]))


@pytest.mark.parametrize("dot", [False, True])
def test_an_item_heads_split_first_layer_equals_the_tower_over_each_candidates_row(
    dot: bool,
) -> None:
    """The tower's first layer is computed once per user row and once per item: the same
    logits as the tower over [h_u, e_i, (W h_u) * e_i] row by row."""
    torch.manual_seed(3)
    head = ItemHead(d_user=6, d_item=4, d_tower=5, dropout=0.0, dot=dot).eval()
    users, items = torch.randn(3, 6), torch.randn(7, 4)
    rows = torch.tensor([0, 2, 2, 1, 0, 1, 2])
    per_row = users[rows]
    cross = head.project(per_row) * items
    expected = head.tower(torch.cat([per_row, items, cross], dim=-1)).squeeze(-1)
    if dot:
        expected = expected + cross.sum(dim=-1)
    torch.testing.assert_close(head(users, items, rows), expected)
    torch.testing.assert_close(head(per_row, items), expected)
