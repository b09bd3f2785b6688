"""The miou metric against per-class numpy loops and against torchmetrics."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pixcore
import pytest
import torch
from pixcore.testing import check_metric, isolated_manager
from pixcore_seg import MeanIoU
from pixcore_seg import _plugin as seg_plugin
from torch.profiler import ProfilerActivity, profile
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

C, IGNORE = 6, 255
ABSENT = 4  # never in the ground truth and never predicted
PREDICTED_ONLY = 3  # never in the ground truth, sometimes predicted
POLICIES = ("nonzero_union", "present_in_target", "all_classes")
SUMMARY = ("miou", "miou_all_classes", "pixel_acc", "mean_acc", "fwiou")

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _batches(seed: int, n: int = 3) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        logits = torch.randn(2, C, 11, 7, generator=g)
        logits[:, ABSENT] = -1e3
        target = torch.randint(0, C, (2, 11, 7), generator=g)
        target[(target == ABSENT) | (target == PREDICTED_ONLY)] = 0
        target[:, 0, :][target[:, 0, :] == 5] = 1  # class 5: rarer in the ground truth
        target[torch.rand(2, 11, 7, generator=g) < 0.1] = IGNORE
        valid = torch.rand(2, 11, 7, generator=g) > 0.25
        out.append((logits, target, valid))
    return out


def _numpy_reference(batches: list[Batch], average_over: str) -> dict[str, float]:
    """Per-class boolean loops over the pooled, kept pixels."""
    pred = np.concatenate([b[0].argmax(1).numpy().ravel() for b in batches])
    gt = np.concatenate([b[1].numpy().ravel() for b in batches])
    keep = np.concatenate([b[2].numpy().ravel() for b in batches]) & (gt != IGNORE)
    pred, gt = pred[keep], gt[keep]
    out: dict[str, float] = {}
    ious, accs, in_target, weights = [], [], [], []
    for c in range(C):
        inter = np.sum((gt == c) & (pred == c))
        union = np.sum((gt == c) | (pred == c))
        support = np.sum(gt == c)
        out[f"iou/{c}"] = inter / union if union else math.nan
        ious.append(out[f"iou/{c}"])
        accs.append(inter / support if support else math.nan)
        in_target.append(support > 0)
        weights.append(support)
    ious_a, accs_a, in_target_a = np.array(ious), np.array(accs), np.array(in_target)
    zeros_for_nan = np.nan_to_num(ious_a, nan=0.0)
    if average_over == "nonzero_union":
        out["miou"] = float(np.nanmean(ious_a))
    elif average_over == "present_in_target":
        out["miou"] = float(np.mean(ious_a[in_target_a]))
    else:
        out["miou"] = float(np.mean(zeros_for_nan))
    if average_over == "all_classes":
        out["mean_acc"] = float(np.mean(np.nan_to_num(accs_a, nan=0.0)))
    else:
        out["mean_acc"] = float(np.nanmean(accs_a))
    out["miou_all_classes"] = float(np.mean(zeros_for_nan))
    out["pixel_acc"] = float(np.mean(pred == gt))
    out["fwiou"] = float(np.sum(np.array(weights) * zeros_for_nan) / np.sum(weights))
    return out


def _assert_same(results: dict[str, float], expected: dict[str, float], tol: float) -> None:
    assert set(results) == set(expected)
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(results[key]), key
        else:
            assert results[key] == pytest.approx(value, abs=tol), key


def _run(batches: list[Batch], **params: Any) -> dict[str, float]:
    metric = MeanIoU(num_classes=C, **params)
    for batch in batches:
        metric.update(*batch)
    return metric.compute()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("average_over", POLICIES)
def test_matches_per_class_loops(seed: int, average_over: str) -> None:
    batches = _batches(seed)
    results = _run(batches, average_over=average_over)
    _assert_same(results, _numpy_reference(batches, average_over), tol=1e-12)
    assert math.isnan(results[f"iou/{ABSENT}"])
    assert results[f"iou/{PREDICTED_ONLY}"] == 0.0


def test_the_three_policies_differ_as_documented() -> None:
    batches = _batches(2)
    r = {policy: _run(batches, average_over=policy) for policy in POLICIES}
    ious = [r["nonzero_union"][f"iou/{c}"] for c in range(C)]
    defined = [v for v in ious if not math.isnan(v)]
    # nonzero_union counts the predicted-only class (IoU 0), leaves the absent one out.
    assert r["nonzero_union"]["miou"] == pytest.approx(sum(defined) / (C - 1))
    # present_in_target leaves both out.
    assert r["present_in_target"]["miou"] == pytest.approx(sum(defined) / (C - 2))
    # all_classes counts both as 0.
    assert r["all_classes"]["miou"] == pytest.approx(sum(defined) / C)
    for policy in POLICIES:
        assert r[policy]["miou_all_classes"] == r["all_classes"]["miou"]
        assert r[policy]["pixel_acc"] == r["nonzero_union"]["pixel_acc"]
        assert r[policy]["fwiou"] == r["nonzero_union"]["fwiou"]


def _torchmetrics_view(batches: list[Batch]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Invalid pixels become ignored pixels: torchmetrics has no validity mask."""
    return [(logits, torch.where(valid, target, IGNORE)) for logits, target, valid in batches]


def _torchmetrics(batches: list[Batch], make: Any, **kwargs: Any) -> torch.Tensor:
    metric = make(num_classes=C, ignore_index=IGNORE, **kwargs)
    for logits, target in _torchmetrics_view(batches):
        metric.update(logits, target)
    return metric.compute().double()


@pytest.mark.parametrize("seed", [3, 4])
def test_matches_torchmetrics(seed: int) -> None:
    batches = _batches(seed)
    # A few integer-valued logits make ties, which both must break towards the first class.
    batches[0][0][:, :, :2] = batches[0][0][:, :, :2].round()
    results = {policy: _run(batches, average_over=policy) for policy in POLICIES}
    base = results["nonzero_union"]
    tol = 1e-6  # torchmetrics divides in float32

    per_class = _torchmetrics(batches, MulticlassJaccardIndex, average=None)
    for c in range(C):
        if c == ABSENT:  # union 0: NaN here, 0 (zero_division) in torchmetrics
            assert math.isnan(base[f"iou/{c}"]) and float(per_class[c]) == 0.0
        else:
            assert base[f"iou/{c}"] == pytest.approx(float(per_class[c]), abs=tol)
    # average="macro" skips zero-union classes: the nonzero_union policy.
    macro = _torchmetrics(batches, MulticlassJaccardIndex, average="macro")
    assert base["miou"] == pytest.approx(float(macro), abs=tol)
    assert results["all_classes"]["miou"] == pytest.approx(float(per_class.mean()), abs=tol)
    # average="weighted" weights by support: the frequency-weighted IoU.
    weighted = _torchmetrics(batches, MulticlassJaccardIndex, average="weighted")
    assert base["fwiou"] == pytest.approx(float(weighted), abs=tol)

    micro = _torchmetrics(batches, MulticlassAccuracy, average="micro")
    assert base["pixel_acc"] == pytest.approx(float(micro), abs=tol)
    # Class accuracies (recalls) from average=None; torchmetrics' average="macro" also
    # counts the predicted-only class (recall 0), which none of our policies does.
    recall = _torchmetrics(batches, MulticlassAccuracy, average=None)
    in_target = [c for c in range(C) if c not in (ABSENT, PREDICTED_ONLY)]
    assert base["mean_acc"] == pytest.approx(float(recall[in_target].mean()), abs=tol)
    assert results["all_classes"]["mean_acc"] == pytest.approx(float(recall.mean()), abs=tol)
    macro_acc = _torchmetrics(batches, MulticlassAccuracy, average="macro")
    assert float(macro_acc) == pytest.approx(float(recall[in_target].sum()) / (C - 1), abs=tol)


@pytest.mark.parametrize("average_over", POLICIES)
def test_contract_protocol_and_directions(average_over: Any) -> None:
    batches, others = _batches(5), _batches(6)
    results = check_metric(
        lambda: MeanIoU(num_classes=C, average_over=average_over),
        batches, other_batches=others,
    )
    metric = MeanIoU(num_classes=C, average_over=average_over)
    assert metric.protocol.startswith("confusion-pooled/")
    assert set(MeanIoU.higher_is_better) == set(SUMMARY)
    assert all(MeanIoU.higher_is_better.values())
    per_class = {f"iou/{c}" for c in range(C)}
    assert set(results) == per_class | set(SUMMARY)
    assert 0.0 <= results["miou"] <= 1.0


def test_protocol_names_record_the_policy() -> None:
    assert MeanIoU.protocol == "confusion-pooled/nanmean-nonzero-union"
    policies: tuple[Any, ...] = POLICIES
    names = {p: MeanIoU(num_classes=2, average_over=p).protocol for p in policies}
    assert names == {
        "nonzero_union": "confusion-pooled/nanmean-nonzero-union",
        "present_in_target": "confusion-pooled/mean-present-in-target",
        "all_classes": "confusion-pooled/mean-all-classes-absent-as-0",
    }


def test_registered_with_the_task_context() -> None:
    registry = isolated_manager(seg_plugin).registry("metrics")
    context = {"num_classes": 3, "ignore_index": 0}
    metric = registry.create("miou", {"average_over": "present_in_target"}, context=context)
    assert isinstance(metric, MeanIoU) and metric.num_classes == 3 and metric.ignore_index == 0
    assert metric.protocol == "confusion-pooled/mean-present-in-target"
    with pytest.raises(pixcore.ConfigError, match="average_over"):
        registry.create("miou", {"average_over": "present"}, context=context)


def test_integer_predictions_and_target_layouts_equal_logits() -> None:
    batches = _batches(7)
    a, b, c = MeanIoU(num_classes=C), MeanIoU(num_classes=C), MeanIoU(num_classes=C)
    for logits, target, valid in batches:
        a.update(logits, target, valid)
        b.update(logits.argmax(1), target, valid)
        c.update(logits.argmax(1, keepdim=True).to(torch.uint8), target[:, None].to(torch.uint8),
                 valid)
    assert torch.equal(a.state["confusion"], b.state["confusion"])
    assert torch.equal(a.state["confusion"], c.state["confusion"])
    assert a.compute() == pytest.approx(b.compute(), nan_ok=True)


def test_perfect_prediction_empty_state_and_errors() -> None:
    target = torch.tensor([[[0, 1], [2, IGNORE]]])
    valid = torch.ones(1, 2, 2, dtype=torch.bool)
    metric = MeanIoU(num_classes=3)
    metric.update(target.clamp(max=2), target, valid)
    results = metric.compute()
    assert all(results[key] == 1.0 for key in SUMMARY)
    assert metric.state["confusion"].diagonal().tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match=r"class id 7 is outside \[0, 3\)"):
        metric.update(target, torch.tensor([[[0, 7], [2, 1]]]), valid)
    with pytest.raises(ValueError, match=r"class id -2 is outside \[0, 3\)"):
        metric.update(target, torch.tensor([[[0, -2], [2, 1]]]), valid)
    with pytest.raises(ValueError, match=r"predicted class ids .* \[0, 3\), got \[0, 5\]"):
        metric.update(torch.tensor([[[0, 5], [2, 1]]]), target, valid)
    with pytest.raises(ValueError, match=r"logits must be \[B, 3, H, W\]"):
        metric.update(torch.randn(1, 4, 2, 2), target, valid)
    # Out-of-range ids on pixels that are not scored are fine.
    metric.update(torch.tensor([[[0, 1], [2, 9]]]), target, valid)
    empty = MeanIoU(num_classes=3).compute()
    assert all(math.isnan(empty[key]) for key in SUMMARY)


def test_state_is_a_c_by_c_int64_matrix_and_the_update_is_linear_in_pixels() -> None:
    num_classes, shape = 150, (4, 512, 512)
    g = torch.Generator().manual_seed(8)
    target = torch.randint(0, num_classes, shape, generator=g)
    target[torch.rand(shape, generator=g) < 0.1] = IGNORE
    predicted = torch.randint(0, num_classes, shape, generator=g)
    valid = torch.rand(shape, generator=g) > 0.2
    metric = MeanIoU(num_classes=num_classes)
    assert metric.state["confusion"].shape == (num_classes, num_classes)
    assert metric.state["confusion"].dtype == torch.int64
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        metric.update(predicted, target, valid)
    elapsed = time.perf_counter() - start
    largest = max(event.self_cpu_memory_usage for event in prof.events())
    pixels = target.numel()
    # O(N) temporaries of at most 8 bytes per pixel; a one-hot or N x C^2 scheme would
    # need at least N * C bytes.
    assert largest <= 8 * pixels < pixels * num_classes
    assert elapsed < 20.0  # seconds, on a loaded CI machine; about 0.05 s unloaded
    assert metric.state["confusion"].shape == (num_classes, num_classes)
    kept = valid & (target != IGNORE)
    assert int(metric.state["confusion"].sum()) == int(kept.sum())
    assert int(metric.state["confusion"].trace()) == int((kept & (predicted == target)).sum())
