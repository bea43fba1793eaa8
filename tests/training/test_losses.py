"""The masked joint loss: absent labels contribute nothing, no labels add 0, gradients finite."""

from __future__ import annotations

import dataclasses

import torch

from service.artifact import TaskSpec
from tests.conftest import tiny_config
from training.fit.losses import (
    catalogue_softmax_loss,
    entire_space_loss,
    task_loss,
    task_losses,
    weighted_sum,
)

CLICK = TaskSpec(name="click", level="item", kind="binary")
AGE = TaskSpec(
    name="age", level="user", kind="multiclass", column="age", classes=("a", "b", "c"), weight=0.5
)
TAGS = TaskSpec(name="tags", level="user", kind="multilabel", column="tags", classes=("x", "y"))
STARS = TaskSpec(name="stars", level="item", kind="regression", column="rating")


def test_masked_labels_do_not_change_the_loss() -> None:
    logits = torch.randn(6)
    labels = torch.tensor([1.0, 0, 1, 0, 1, 0])
    mask = torch.tensor([True, True, True, False, False, False])
    flipped = labels.clone()
    flipped[3:] = 1 - flipped[3:]

    assert torch.equal(
        task_loss(CLICK, logits, labels, mask), task_loss(CLICK, logits, flipped, mask)
    )
    assert torch.allclose(
        task_loss(CLICK, logits, labels, mask),
        task_loss(CLICK, logits[:3], labels[:3], torch.ones(3, dtype=bool)),
    )


def test_multiclass_ignores_unknown_label_rows() -> None:
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 2, -1, -1])
    mask = labels >= 0
    expected = torch.nn.functional.cross_entropy(logits[:2], labels[:2])
    assert torch.allclose(task_loss(AGE, logits, labels, mask), expected)


def test_a_task_without_labels_adds_zero_and_finite_gradients() -> None:
    logits = {
        "click": torch.randn(5, requires_grad=True),
        "age": torch.randn(2, 3, requires_grad=True),
    }
    labels = {"click": torch.ones(5), "age": torch.tensor([-1, -1])}
    masks = {"click": torch.ones(5, dtype=bool), "age": torch.zeros(2, dtype=bool)}

    per_task = task_losses([CLICK, AGE], logits, labels, masks)
    total = weighted_sum([CLICK, AGE], per_task)
    total.backward()

    assert per_task["age"].item() == 0.0
    assert torch.isfinite(total)
    assert torch.allclose(total, per_task["click"])
    assert torch.all(logits["age"].grad == 0)
    assert torch.all(torch.isfinite(logits["click"].grad))


def test_the_joint_loss_is_the_weighted_sum() -> None:
    logits = {"click": torch.randn(3), "age": torch.randn(2, 3)}
    labels = {"click": torch.tensor([1.0, 0, 1]), "age": torch.tensor([0, 2])}
    masks = {"click": torch.ones(3, dtype=bool), "age": torch.ones(2, dtype=bool)}
    per_task = task_losses([CLICK, AGE], logits, labels, masks)
    total = weighted_sum([CLICK, AGE], per_task)
    assert torch.allclose(total, per_task["click"] + 0.5 * per_task["age"])


def test_multilabel_and_regression_losses() -> None:
    perfect = torch.tensor([[20.0, -20.0]])
    assert task_loss(TAGS, perfect, torch.tensor([[1.0, 0.0]]), torch.tensor([True])) < 1e-6
    assert torch.allclose(
        task_loss(
            STARS, torch.tensor([3.0, 1.0]), torch.tensor([4.0, 1.0]), torch.tensor([True, True])
        ),
        torch.tensor(0.5),
    )


def test_entire_space_loss_is_bce_of_the_joint_probability() -> None:
    """ESMM: p(click and like) = sigmoid(click) * sigmoid(like), scored on every negative and on
    real items with a like label; the like logits of negatives get a gradient (the point)."""
    torch.manual_seed(0)
    click_logits, like_logits = torch.randn(6), torch.randn(6, requires_grad=True)
    click = torch.tensor([1.0, 0, 0, 1, 0, 1])
    like = torch.tensor([1.0, 1, 1, 0, 1, 1])  # rows 1, 2, 4 copy the event's like: a negative
    known = torch.tensor([True, False, False, True, False, False])  # row 5: real, no rating
    loss = entire_space_loss(click_logits, like_logits, click, like, known)

    joint = torch.sigmoid(click_logits) * torch.sigmoid(like_logits)
    used = torch.tensor([0, 1, 2, 3, 4])
    target = torch.tensor([1.0, 0, 0, 0, 0])
    expected = torch.nn.functional.binary_cross_entropy(joint[used], target)
    assert torch.allclose(loss, expected, atol=1e-5)
    loss.backward()
    assert like_logits.grad is not None
    assert (like_logits.grad[[1, 2, 4]] > 0).all()  # negatives push p(like) down
    assert like_logits.grad[5] == 0


def test_esmm_replaces_only_the_labelled_binary_item_tasks() -> None:
    like = TaskSpec(name="like", level="item", kind="binary", column="rating", threshold=4)
    tasks = (CLICK, like, STARS)
    logits = {"click": torch.randn(4), "like": torch.randn(4), "stars": torch.randn(4)}
    labels = {"click": torch.tensor([1.0, 0, 1, 0]), "like": torch.ones(4), "stars": torch.ones(4)}
    masks = {
        "click": torch.ones(4, dtype=torch.bool),
        "like": torch.tensor([True, False, True, False]),
        "stars": torch.tensor([True, False, True, False]),
    }
    plain = task_losses(tasks, logits, labels, masks)
    chained = task_losses(tasks, logits, labels, masks, esmm=True)
    assert torch.equal(plain["click"], chained["click"])
    assert torch.equal(plain["stars"], chained["stars"])
    assert not torch.allclose(plain["like"], chained["like"])


def test_sampled_softmax_is_the_real_items_cross_entropy_over_its_own_candidates() -> None:
    # two events, three candidates each (column 0 the real item), laid out as the batches do
    logits = torch.tensor([2.0, 0.0, -1.0, 0.5, 1.5, 0.0], requires_grad=True)
    labels = {"click": torch.tensor([1.0, 0, 0, 1, 0, 0])}
    masks = {"click": torch.ones(6, dtype=torch.bool)}
    plain = task_losses((CLICK,), {"click": logits}, labels, masks)["click"]
    mixed = task_losses((CLICK,), {"click": logits}, labels, masks, softmax=0.5)["click"]
    by_hand = -torch.log_softmax(logits.detach().view(2, 3), dim=1)[:, 0].mean()
    assert torch.allclose(mixed - plain, 0.5 * by_hand)
    mixed.backward()
    assert logits.grad is not None
    # the second event's real item scores below a negative: the softmax pulls it up hardest
    assert logits.grad[3] < logits.grad[0] < 0


def test_the_catalogue_softmax_ranks_each_real_item_against_the_allowed_items_only() -> None:
    logits = torch.tensor([[7.0, 7.0, 2.0, 0.0, 9.0], [7.0, 7.0, 1.0, 3.0, 9.0]])  # [B, items]
    candidate = torch.tensor([2, 3, 3, 2])  # two events, C = 2: real items 2 and 3 first
    allowed = torch.tensor([False, False, True, True, False])  # PAD, UNK, an untrained item
    loss = catalogue_softmax_loss(logits, candidate, allowed)
    by_hand = -(
        torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0]
        + torch.log_softmax(torch.tensor([1.0, 3.0]), 0)[1]
    )
    torch.testing.assert_close(loss, by_hand / 2)
    # an event whose real item may not be ranked (item 4: no training interaction) adds nothing
    with_unranked = catalogue_softmax_loss(
        torch.cat([logits, logits[:1]]), torch.tensor([2, 3, 3, 2, 4, 2]), allowed
    )
    torch.testing.assert_close(with_unranked, by_hand / 2)


def test_training_adds_the_catalogue_term_to_the_interaction_task_only() -> None:
    from training.data.samples import batches
    from training.fit.epoch import batch_losses
    from training.pipeline.prepare import prepare
    from training.pipeline.run import new_model

    cfg = tiny_config("network.item_dot=true", "optim.catalogue_softmax=0.5")
    data = prepare(cfg, "synthetic")
    model = new_model(cfg, data).eval()
    batch = next(batches(data.log, data.valid.items, data.tasks, 10, 64, hide_holdout=True))
    with torch.no_grad():
        mixed = batch_losses(model, model, batch.inputs, batch.labels, batch.masks, cfg)
        off = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, catalogue_softmax=0))
        plain = batch_losses(model, model, batch.inputs, batch.labels, batch.masks, off)
        logits = model(**batch.inputs, catalogue="click")["click@catalogue"]
        term = catalogue_softmax_loss(
            logits, batch.inputs["candidate"], model.items.trained_items()
        )
    torch.testing.assert_close(mixed["click"] - plain["click"], 0.5 * term)
    assert term > 0
    assert all(torch.equal(mixed[t.name], plain[t.name]) for t in data.tasks if t.name != "click")
