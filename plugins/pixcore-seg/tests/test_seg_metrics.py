"""The miou metric against per-class boolean loops in numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pixcore.testing import check_metric
from pixcore_seg import MeanIoU

C, IGNORE = 6, 255
ABSENT = 4  # never in the ground truth and never predicted


def _batches(seed: int, n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        logits = torch.randn(2, C, 11, 7, generator=g)
        logits[:, ABSENT] = -1e3
        target = torch.randint(0, C, (2, 11, 7), generator=g)
        target[target == ABSENT] = 0
        target[:, 0, :][target[:, 0, :] == 5] = 1  # class 5: rarer in the ground truth
        target[torch.rand(2, 11, 7, generator=g) < 0.1] = IGNORE
        valid = torch.rand(2, 11, 7, generator=g) > 0.25
        out.append((logits, target, valid))
    return out


def _reference(batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    pred = np.concatenate([b[0].argmax(1).numpy().ravel() for b in batches])
    gt = np.concatenate([b[1].numpy().ravel() for b in batches])
    keep = np.concatenate([b[2].numpy().ravel() for b in batches]) & (gt != IGNORE)
    ious, accs = [], []
    out: dict[str, float] = {}
    for c in range(C):
        inter = np.sum((gt == c) & (pred == c) & keep)
        union = np.sum(((gt == c) | (pred == c)) & keep)
        iou = inter / union if union else math.nan
        out[f"iou/{c}"] = iou
        ious.append(iou)
        if np.sum((gt == c) & keep):
            accs.append(inter / np.sum((gt == c) & keep))
    out["miou"] = float(np.nanmean(ious))
    out["miou_all_classes"] = float(np.mean(np.nan_to_num(ious, nan=0.0)))
    out["pixel_acc"] = float(np.sum((pred == gt) & keep) / np.sum(keep))
    out["mean_acc"] = float(np.mean(accs))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_per_class_loops(seed: int) -> None:
    batches = _batches(seed)
    metric = MeanIoU(num_classes=C)
    for batch in batches:
        metric.update(*batch)
    results, expected = metric.compute(), _reference(batches)
    assert set(results) == set(expected)
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(results[key]), key
        else:
            assert results[key] == pytest.approx(value, abs=1e-6), key
    assert math.isnan(results[f"iou/{ABSENT}"])
    assert results["miou_all_classes"] < results["miou"]


def test_integer_predictions_equal_logits() -> None:
    batches = _batches(3)
    a, b = MeanIoU(num_classes=C), MeanIoU(num_classes=C)
    for logits, target, valid in batches:
        a.update(logits, target, valid)
        b.update(logits.argmax(1), target, valid)
    assert a.compute() == pytest.approx(b.compute(), nan_ok=True)


def test_contract() -> None:
    batches, others = _batches(4), _batches(5)
    results = check_metric(lambda: MeanIoU(num_classes=C), batches, other_batches=others)
    assert MeanIoU.protocol == "confusion-pooled/nanmean-nonzero-union"
    assert 0.0 <= results["miou"] <= 1.0


def test_perfect_prediction_and_errors() -> None:
    target = torch.tensor([[[0, 1], [2, IGNORE]]])
    valid = torch.ones(1, 2, 2, dtype=torch.bool)
    metric = MeanIoU(num_classes=3)
    metric.update(target.clamp(max=2), target, valid)
    assert metric.compute()["miou"] == 1.0 and metric.compute()["pixel_acc"] == 1.0
    with pytest.raises(ValueError, match=r"class id 7 is outside \[0, 3\)"):
        metric.update(target, torch.tensor([[[0, 7], [2, 1]]]), valid)
    with pytest.raises(ValueError, match=r"logits must be \[B, 3, H, W\]"):
        metric.update(torch.randn(1, 4, 2, 2), target, valid)
    empty = MeanIoU(num_classes=3).compute()
    assert math.isnan(empty["miou"]) and empty["miou_all_classes"] == 0.0
