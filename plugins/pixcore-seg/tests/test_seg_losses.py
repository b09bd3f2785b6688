"""The segmentation losses against independent numpy / torch references and the Loss contract."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pixcore
import pytest
import torch
import torch.nn.functional as F
from pixcore.testing import check_loss, isolated_manager
from pixcore_seg import (
    CrossEntropyDiceLoss,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    LovaszSoftmaxLoss,
    OhemCrossEntropyLoss,
)
from pixcore_seg import _plugin as seg_plugin

C, IGNORE = 5, 255
ABSENT = 3  # a class that never occurs in the targets of _batch(..., absent=True)

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _batch(seed: int, size: tuple[int, int] = (9, 13), absent: bool = False) -> Batch:
    g = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(3, C, *size, generator=g)
    target = torch.randint(0, C, (3, *size), generator=g)
    if absent:
        target[target == ABSENT] = 0
    target[torch.rand(3, *size, generator=g) < 0.15] = IGNORE
    valid = torch.rand(3, *size, generator=g) > 0.3
    return logits, target, valid


def _kept(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> tuple[
    np.ndarray, np.ndarray
]:
    """Softmax probabilities [N, C] (float64) and class ids [N] of the kept pixels."""
    z = logits.double().permute(0, 2, 3, 1).numpy()
    keep = valid.numpy() & (target.numpy() != IGNORE)
    z = z[keep]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True), target.numpy()[keep]


#: Every loss with non-default parameters, as the registry would build it.
LOSSES: dict[str, Callable[[], pixcore.Loss]] = {
    "cross_entropy": lambda: CrossEntropyLoss(
        num_classes=C, class_weights=[1, 2, 3, 4, 5], label_smoothing=0.1
    ),
    "cross_entropy_dice": lambda: CrossEntropyDiceLoss(
        num_classes=C, class_weights=[1, 2, 3, 4, 5], label_smoothing=0.1, dice_weight=0.5, classes="all"
    ),
    "dice": lambda: DiceLoss(classes="all"),
    "focal": lambda: FocalLoss(num_classes=C, gamma=2.0, alpha=[0.5, 1, 1, 2, 0.25]),
    "lovasz": lambda: LovaszSoftmaxLoss(per_image=True),
    "ohem_cross_entropy": lambda: OhemCrossEntropyLoss(thresh=0.5, min_kept=20),
}


# --------------------------------------------------------------------------------------
# Every loss: contract, ignore pixels, empty batches, registration
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_contract(name: str) -> None:
    logits, target, valid = _batch(1)
    other_logits, other_target, _ = _batch(2)
    out = check_loss(
        LOSSES[name](), logits, target, valid, other_prediction=other_logits,
        other_target=other_target,
    )
    assert out.total.item() > 0.0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_ignored_pixels_have_no_influence(name: str) -> None:
    logits, target, valid = _batch(3)
    loss = LOSSES[name]()
    leaf = logits.clone().requires_grad_(True)
    out = loss(leaf, target, valid)
    out.total.backward()
    ignored = (target == IGNORE)[:, None].expand_as(logits)
    assert leaf.grad is not None and bool((leaf.grad[ignored] == 0).all())
    other = torch.where(ignored, 10.0 * torch.randn_like(logits), logits)
    assert loss(other, target, valid).total.item() == pytest.approx(out.total.item(), rel=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_no_kept_pixel_gives_zero_with_a_gradient_path(name: str) -> None:
    logits, target, _ = _batch(4)
    loss = LOSSES[name]()
    none = torch.zeros_like(target, dtype=torch.bool)
    every = torch.ones_like(target, dtype=torch.bool)
    for valid, t in ((none, target), (every, torch.full_like(target, IGNORE))):
        leaf = logits.clone().requires_grad_(True)
        out = loss(leaf, t, valid)
        assert out.total.item() == 0.0 and out.total.requires_grad
        out.total.backward()
        assert leaf.grad is not None and torch.all(leaf.grad == 0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_out_of_range_class_names_the_value(name: str) -> None:
    logits, target, valid = _batch(5)
    target[0, 0, 0], valid[0, 0, 0] = 9, True
    with pytest.raises(ValueError, match=rf"{name}: class id 9 is outside \[0, 5\)"):
        LOSSES[name]()(logits, target, valid)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_accepts_half_precision_and_one_channel_targets(name: str) -> None:
    logits, target, valid = _batch(6)
    full = LOSSES[name]()(logits, target, valid).total.item()
    half = LOSSES[name]()(logits.bfloat16(), target[:, None], valid)
    assert half.total.dtype == torch.float32
    assert half.total.item() == pytest.approx(full, rel=0.05)


def test_every_loss_is_registered_with_its_parameters() -> None:
    registry = isolated_manager(seg_plugin).registry("losses")
    assert set(LOSSES) <= set(registry.list())
    context = {"num_classes": 3, "ignore_index": 255}
    for name in LOSSES:
        assert isinstance(registry.create(name, {}, context=context), pixcore.Loss)
    with pytest.raises(pixcore.ConfigError, match="class_weights has 2 entries for 3 classes"):
        registry.create("cross_entropy", {"class_weights": [1.0, 2.0]}, context=context)
    with pytest.raises(pixcore.ConfigError, match="label_smoothing"):
        registry.create("cross_entropy", {"label_smoothing": 1.5}, context=context)
    with pytest.raises(pixcore.ConfigError, match="alpha has 4 entries for 3 classes"):
        registry.create("focal", {"alpha": [1, 1, 1, 1]}, context=context)
    with pytest.raises(pixcore.ConfigError, match="non-negative"):
        registry.create("focal", {"alpha": [1, -1, 1]}, context=context)
    with pytest.raises(pixcore.ConfigError, match="set thresh: null"):
        registry.create("ohem_cross_entropy", {"top_k": 0.3}, context=context)
    with pytest.raises(pixcore.ConfigError, match="classes"):
        registry.create("dice", {"classes": "some"}, context=context)
    with pytest.raises(pixcore.ConfigError, match="exponent"):
        registry.create("dice", {"exponent": 3}, context=context)
    with pytest.raises(pixcore.ConfigError, match="class_weights has 4 entries for 3 classes"):
        registry.create("cross_entropy_dice", {"class_weights": [1, 1, 1, 1]}, context=context)
    with pytest.raises(pixcore.ConfigError, match="dice_weight"):
        registry.create("cross_entropy_dice", {"dice_weight": -1.0}, context=context)
    loss = registry.create("cross_entropy", {"class_weights": [1, 2, 3]}, context=context)
    assert isinstance(loss, CrossEntropyLoss) and loss.num_classes == 3
    ohem = registry.create("ohem_cross_entropy", {"thresh": None, "top_k": 0.3}, context=context)
    assert isinstance(ohem, OhemCrossEntropyLoss) and ohem.top_k == 0.3


def test_per_class_lists_are_checked_against_the_logits() -> None:
    logits, target, valid = _batch(7)
    with pytest.raises(ValueError, match="class_weights has 3 entries but the logits have 5"):
        CrossEntropyLoss(class_weights=[1, 2, 3])(logits, target, valid)
    with pytest.raises(ValueError, match="alpha has 2 entries but the logits have 5"):
        FocalLoss(alpha=[1, 2])(logits, target, valid)


# --------------------------------------------------------------------------------------
# cross_entropy
# --------------------------------------------------------------------------------------


def _torch_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, **kwargs: Any
) -> torch.Tensor:
    # Independent: gather the valid pixels first, let torch handle the ignore index.
    flat = logits.permute(0, 2, 3, 1)[valid]
    return F.cross_entropy(flat.double(), target[valid], ignore_index=IGNORE, **kwargs)


@pytest.mark.parametrize("weights", [None, [0.5, 1.0, 2.0, 0.1, 3.0]])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_equals_torch_on_valid_pixels(
    weights: list[float] | None, smoothing: float
) -> None:
    logits, target, valid = _batch(0)
    loss = CrossEntropyLoss(num_classes=C, class_weights=weights, label_smoothing=smoothing)
    out = loss(logits, target, valid)
    w = None if weights is None else torch.tensor(weights, dtype=torch.float64)
    expected = _torch_cross_entropy(logits, target, valid, weight=w, label_smoothing=smoothing)
    assert out.total.item() == pytest.approx(float(expected), rel=1e-6, abs=1e-7)
    assert torch.equal(out.parts["cross_entropy"], out.total.detach())


def test_cross_entropy_class_weights_follow_the_formula() -> None:
    logits, target, valid = _batch(8)
    weights = [0.5, 1.0, 2.0, 0.1, 3.0]
    probs, ids = _kept(logits, target, valid)
    w = np.array(weights)[ids]
    expected = np.sum(-w * np.log(probs[np.arange(len(ids)), ids])) / np.sum(w)
    out = CrossEntropyLoss(class_weights=weights)(logits, target, valid)
    assert out.total.item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_ignore_index_inside_the_class_range() -> None:
    logits, target, valid = _batch(4)
    target[target == IGNORE] = 0
    out = CrossEntropyLoss(ignore_index=0)(logits, target, valid)
    flat, t = logits.permute(0, 2, 3, 1)[valid], target[valid]
    expected = F.cross_entropy(flat, t, ignore_index=0).item()
    assert out.total.item() == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------------------
# dice
# --------------------------------------------------------------------------------------


def _numpy_dice(probs: np.ndarray, ids: np.ndarray, smooth: float, exponent: int,
                classes: str) -> float:
    scores = []
    for c in range(probs.shape[1]):
        y = (ids == c).astype(float)
        p = probs[:, c]
        if classes == "present" and y.sum() == 0:
            continue
        denominator = np.sum(p**exponent) + np.sum(y**exponent) + smooth
        scores.append((2 * np.sum(p * y) + smooth) / denominator)
    return 1.0 - float(np.mean(scores))


@pytest.mark.parametrize("exponent", [1, 2])
@pytest.mark.parametrize("classes", ["present", "all"])
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_dice_matches_the_formula(exponent: Any, classes: Any, smooth: float) -> None:
    logits, target, valid = _batch(9, absent=True)
    probs, ids = _kept(logits, target, valid)
    out = DiceLoss(smooth=smooth, exponent=exponent, classes=classes)(logits, target, valid)
    expected = _numpy_dice(probs, ids, smooth, exponent, classes)
    assert out.total.item() == pytest.approx(expected, rel=1e-5)


def test_dice_present_and_all_differ_by_the_absent_class() -> None:
    logits, target, valid = _batch(10, absent=True)
    present = DiceLoss(classes="present")(logits, target, valid).total.item()
    every = DiceLoss(classes="all")(logits, target, valid).total.item()
    assert present != pytest.approx(every)
    # A near-perfect prediction: Dice loss close to 0 with every class present.
    logits, target, valid = _batch(11)
    perfect = 30.0 * F.one_hot(target.clamp(max=C - 1), C).permute(0, 3, 1, 2).float()
    assert DiceLoss(smooth=0.0)(perfect, target, valid).total.item() < 1e-6


# --------------------------------------------------------------------------------------
# cross_entropy_dice
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dice_weight", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("weights", [None, [0.5, 1.0, 2.0, 0.1, 3.0]])
def test_cross_entropy_dice_is_cross_entropy_plus_weighted_dice(
    dice_weight: float, weights: list[float] | None
) -> None:
    logits, target, valid = _batch(12, absent=True)
    loss = CrossEntropyDiceLoss(num_classes=C, class_weights=weights, label_smoothing=0.1,
                                dice_weight=dice_weight, smooth=0.5, exponent=1, classes="all")
    out = loss(logits, target, valid)
    w = None if weights is None else torch.tensor(weights, dtype=torch.float64)
    ce = float(_torch_cross_entropy(logits, target, valid, weight=w, label_smoothing=0.1))
    dice = _numpy_dice(*_kept(logits, target, valid), smooth=0.5, exponent=1, classes="all")
    assert out.total.item() == pytest.approx(ce + dice_weight * dice, rel=1e-5)
    # The parts are the two terms, unweighted.
    assert out.parts["cross_entropy"].item() == pytest.approx(ce, rel=1e-5)
    assert out.parts["dice"].item() == pytest.approx(dice, rel=1e-5)


def test_cross_entropy_dice_pulls_a_small_class_harder_than_cross_entropy() -> None:
    # One image: a 4-pixel class among 396 background pixels, predicted as background.
    # The gradient on the small class's logits is several times larger with the Dice term
    # (by hand: cross-entropy gives 4 * (1 - p) / 400 = 0.0095 with p = 1 / (1 + e^3)).
    target = torch.zeros(1, 20, 20, dtype=torch.int64)
    target[0, :2, :2] = 1
    valid = torch.ones(1, 20, 20, dtype=torch.bool)
    grads = []
    for loss in (CrossEntropyLoss(), CrossEntropyDiceLoss(dice_weight=1.0)):
        logits = torch.zeros(1, 2, 20, 20)
        logits[:, 0] = 3.0
        logits.requires_grad_(True)
        loss(logits, target, valid).total.backward()
        assert logits.grad is not None
        grads.append(-float(logits.grad[0, 1, :2, :2].sum()))
    assert grads[0] == pytest.approx(4 * (1 - 1 / (1 + math.exp(3))) / 400, rel=1e-5)
    assert grads[1] > 3 * grads[0]


# --------------------------------------------------------------------------------------
# focal
# --------------------------------------------------------------------------------------


def test_focal_with_gamma_zero_is_cross_entropy() -> None:
    logits, target, valid = _batch(12)
    out = FocalLoss(gamma=0.0)(logits, target, valid)
    expected = _torch_cross_entropy(logits, target, valid)
    assert out.total.item() == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("alpha", [None, [0.25, 1.0, 2.0, 0.5, 0.75]])
def test_focal_matches_the_formula(gamma: float, alpha: list[float] | None) -> None:
    logits, target, valid = _batch(13)
    probs, ids = _kept(logits, target, valid)
    pt = probs[np.arange(len(ids)), ids]
    a = np.ones(len(ids)) if alpha is None else np.array(alpha)[ids]
    expected = np.mean(-a * (1 - pt) ** gamma * np.log(pt))
    out = FocalLoss(gamma=gamma, alpha=alpha)(logits, target, valid)
    assert out.total.item() == pytest.approx(expected, rel=1e-5)


def test_focal_gradient_is_finite_on_confident_pixels() -> None:
    logits, target, valid = _batch(14)
    confident = 200.0 * F.one_hot(target.clamp(max=C - 1), C).permute(0, 3, 1, 2).float()
    leaf = confident.requires_grad_(True)
    out = FocalLoss(gamma=0.5)(leaf, target, valid)
    out.total.backward()
    assert leaf.grad is not None and bool(torch.isfinite(leaf.grad).all())
    assert out.total.item() == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------------------
# lovasz
# --------------------------------------------------------------------------------------


def _lovasz_extension(errors: np.ndarray, fg: np.ndarray) -> float:
    """Lovasz extension of the Jaccard loss as the integral over thresholds t of
    Delta({i : m_i >= t}) dt, with Delta(M) = |M| / |G u M| (Berman et al. eq. 3)."""
    levels = np.unique(errors)[::-1]  # decreasing
    value = 0.0
    for k, level in enumerate(levels):
        below = levels[k + 1] if k + 1 < len(levels) else 0.0
        chosen = errors >= level
        delta = chosen.sum() / np.sum(chosen | fg)
        value += (level - below) * delta
    return float(value)


def _numpy_lovasz(probs: np.ndarray, ids: np.ndarray, classes: str) -> float | None:
    losses = []
    for c in range(probs.shape[1]):
        fg = ids == c
        if classes == "present" and not fg.any():
            continue
        losses.append(_lovasz_extension(np.abs(fg - probs[:, c]), fg))
    return float(np.mean(losses)) if losses else None


@pytest.mark.parametrize("classes", ["present", "all"])
@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_equals_the_lovasz_extension(classes: Any, per_image: bool) -> None:
    logits, target, valid = _batch(15, size=(4, 5), absent=True)
    valid[1] = False  # an image without kept pixels: left out of the per-image mean
    out = LovaszSoftmaxLoss(classes=classes, per_image=per_image)(logits, target, valid)
    if per_image:
        images = [_kept(logits[b:b + 1], target[b:b + 1], valid[b:b + 1]) for b in (0, 2)]
        expected = float(np.mean([_numpy_lovasz(*image, classes) for image in images]))
    else:
        pooled = _numpy_lovasz(*_kept(logits, target, valid), classes)
        assert pooled is not None
        expected = pooled
    assert out.total.item() == pytest.approx(expected, rel=1e-5)


def test_lovasz_on_hard_predictions_is_the_jaccard_loss() -> None:
    # With one-hot probabilities the errors are 0/1, and the extension equals the set
    # function: the loss is 1 - IoU per class, averaged over present classes.
    g = torch.Generator().manual_seed(16)
    target = torch.randint(0, C, (2, 6, 7), generator=g)
    predicted = torch.where(torch.rand(2, 6, 7, generator=g) < 0.3, (target + 1) % C, target)
    valid = torch.ones_like(target, dtype=torch.bool)
    logits = 100.0 * F.one_hot(predicted, C).permute(0, 3, 1, 2).double()
    ious = []
    for c in range(C):
        t, p = (target == c).numpy(), (predicted == c).numpy()
        if t.any():
            ious.append(np.sum(t & p) / np.sum(t | p))
    out = LovaszSoftmaxLoss()(logits, target, valid)
    assert out.total.item() == pytest.approx(1.0 - float(np.mean(ious)), abs=1e-9)


# --------------------------------------------------------------------------------------
# ohem_cross_entropy
# --------------------------------------------------------------------------------------


def _true_prob_and_ce(batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    probs, ids = _kept(*batch)
    pt = probs[np.arange(len(ids)), ids]
    return pt, -np.log(pt)


def test_ohem_threshold_rule_of_the_reference_implementations() -> None:
    # HRNet / mmsegmentation: keep p_t < max(thresh, n-th smallest p_t), n = min_kept * B.
    batch = _batch(17)
    pt, ce = _true_prob_and_ce(batch)
    for thresh, min_kept in ((0.5, 5), (0.05, 40), (0.9, 0)):
        n = min_kept * 3
        threshold = max(thresh, np.sort(pt)[min(n, len(pt) - 1)])
        expected = ce[pt < threshold].mean()
        out = OhemCrossEntropyLoss(thresh=thresh, min_kept=min_kept)(*batch)
        assert out.total.item() == pytest.approx(expected, rel=1e-5), (thresh, min_kept)
        kept = np.sum(pt < threshold) / len(pt)
        assert float(out.parts["ohem_kept_fraction"]) == pytest.approx(kept)
    assert 0.05 < np.mean(pt < 0.5) < 0.95  # the thresholds above select a real subset


@pytest.mark.parametrize("top_k", [0.1, 0.37, 1.0])
def test_ohem_top_k_keeps_the_largest_cross_entropies(top_k: float) -> None:
    batch = _batch(18)
    _, ce = _true_prob_and_ce(batch)
    expected = np.sort(ce)[::-1][: math.ceil(top_k * len(ce))].mean()
    out = OhemCrossEntropyLoss(thresh=None, top_k=top_k)(*batch)
    assert out.total.item() == pytest.approx(expected, rel=1e-5)


def test_ohem_min_kept_alone_and_keep_all() -> None:
    batch = _batch(19)
    _, ce = _true_prob_and_ce(batch)
    out = OhemCrossEntropyLoss(thresh=None, min_kept=10)(*batch)
    assert out.total.item() == pytest.approx(np.sort(ce)[::-1][:30].mean(), rel=1e-5)
    # min_kept above the number of kept pixels: every kept pixel, i.e. plain cross-entropy.
    out = OhemCrossEntropyLoss(thresh=0.01, min_kept=10_000)(*batch)
    assert out.total.item() == pytest.approx(float(_torch_cross_entropy(*batch)), rel=1e-6)
    assert float(out.parts["ohem_kept_fraction"]) == 1.0
