"""The depth_errors metric against plain numpy formulas computed image by image."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pixcore
import pytest
import torch
from pixcore.testing import check_metric, isolated_manager
from pixcore_depth import DepthErrors
from pixcore_depth import _plugin as depth_plugin
from pixcore_depth._metric import crop_box

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "delta1", "delta2", "delta3")

#: The crops, written out as in the evaluation scripts they come from:
#: ``(top, bottom, left, right)`` fractions, ``int(fraction * size)``.
CROP_FRACTIONS = {
    "eigen": (0.09375, 0.98125, 0.0640625, 0.9390625),  # [45:471, 41:601] of 480x640
    "eigen_kitti": (0.3324324, 0.91351351, 0.0359477, 0.96405229),
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
}


def _batches(seed: int, n: int = 3, size: tuple[int, int] = (20, 24)) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        shape = (3, 1, *size)
        target = 12 * torch.rand(shape, generator=g)  # some below 0.5, some above 10
        prediction = target * (0.6 + 0.8 * torch.rand(shape, generator=g)) + 0.05
        prediction[0, 0, 10, :3] = torch.tensor([0.01, 50.0, 1e-6])  # beyond the caps
        valid = torch.rand(3, *size, generator=g) > 0.2
        valid[2, : size[0] // 2] = False  # images with different numbers of valid pixels
        target[~valid.unsqueeze(1)] = 0.0
        out.append((prediction, target, valid))
    return out


def _crop_mask(crop: str | None, height: int, width: int) -> np.ndarray:
    mask = np.ones((height, width), dtype=bool)
    if crop is not None:
        top, bottom, left, right = CROP_FRACTIONS[crop]
        mask[:] = False
        mask[int(top * height + 1e-9):int(bottom * height + 1e-9),
             int(left * width + 1e-9):int(right * width + 1e-9)] = True
    return mask


def _align(p: np.ndarray, y: np.ndarray, how: str, space: str, hi: float | None) -> np.ndarray:
    if how == "none":
        return p
    if how == "median":
        return p * np.median(y) / np.median(p)
    x, z = (p, y) if space == "depth" else (1.0 / p, 1.0 / y)
    columns = [x] if how == "lsq_scale" else [x, np.ones_like(x)]
    coefficients, *_ = np.linalg.lstsq(np.stack(columns, axis=1), z, rcond=None)
    fitted = np.stack(columns, axis=1) @ coefficients
    if space == "depth":
        return fitted
    assert hi is not None
    return 1.0 / np.maximum(fitted, 1.0 / hi)


def _errors(p: np.ndarray, y: np.ndarray, lam: float, scale: float) -> dict[str, float]:
    """The errors as the BTS / AdaBins evaluation scripts write them."""
    thresh = np.maximum(y / p, p / y)
    err = np.log(p) - np.log(y)
    return {
        "abs_rel": float(np.mean(np.abs(y - p) / y)),
        "sq_rel": float(np.mean(((y - p) ** 2) / y)),
        "rmse": float(np.sqrt(((y - p) ** 2).mean())),
        "rmse_log": float(np.sqrt(((np.log(y) - np.log(p)) ** 2).mean())),
        "log10": float(np.mean(np.abs(np.log10(y) - np.log10(p)))),
        "silog": float(np.sqrt(np.mean(err**2) - lam * np.mean(err) ** 2) * scale),
        "delta1": float((thresh < 1.25).mean()),
        "delta2": float((thresh < 1.25**2).mean()),
        "delta3": float((thresh < 1.25**3).mean()),
    }


def _reference(
    batches: list[Batch], *, lo: float = 1e-3, hi: float | None = None, crop: str | None = None,
    aggregation: str = "pooled", alignment: str = "none", space: str = "depth",
    lam: float = 1.0, scale: float = 100.0,
) -> dict[str, float]:
    upper = np.inf if hi is None else hi
    images = []
    for prediction, target, valid in batches:
        for b in range(valid.shape[0]):
            p = prediction[b, 0].double().numpy()
            y = target[b, 0].double().numpy()
            v = valid[b].numpy()
            keep = v & np.isfinite(y) & (y > lo) & (y < upper) & _crop_mask(crop, *y.shape)
            if keep.sum() == 0:
                continue
            pk = np.clip(_align(p[keep], y[keep], alignment, space, hi), lo, upper)
            images.append((pk, y[keep]))
    if aggregation == "pooled":
        p = np.concatenate([i[0] for i in images])
        y = np.concatenate([i[1] for i in images])
        return _errors(p, y, lam, scale)
    per_image = [_errors(p, y, lam, scale) for p, y in images]
    return {key: float(np.mean([e[key] for e in per_image])) for key in KEYS}


def _run(batches: list[Batch], **params: Any) -> dict[str, float]:
    metric = DepthErrors(**params)
    for batch in batches:
        metric.update(*batch)
    return metric.compute()


def _assert_close(results: dict[str, float], expected: dict[str, float]) -> None:
    assert set(results) == set(expected)
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


# --------------------------------------------------------------------------------------
# every option against numpy
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("aggregation", ["pooled", "per_image"])
@pytest.mark.parametrize("alignment", ["none", "median", "lsq_scale", "lsq_scale_shift"])
@pytest.mark.parametrize("crop", [None, "eigen", "eigen_kitti", "garg"])
def test_matches_numpy(aggregation: str, alignment: str, crop: str | None) -> None:
    batches = _batches(0)
    options = {"aggregation": aggregation, "alignment": alignment, "crop": crop}
    results = _run(batches, max_depth=10.0, **options)
    _assert_close(results, _reference(batches, hi=10.0, **options))


@pytest.mark.parametrize(("lo", "hi"), [(1e-3, None), (0.5, 10.0), (1.0, 80.0)])
@pytest.mark.parametrize("aggregation", ["pooled", "per_image"])
def test_caps_match_numpy(lo: float, hi: float | None, aggregation: str) -> None:
    batches = _batches(1)
    results = _run(batches, min_depth=lo, max_depth=hi, aggregation=aggregation)
    _assert_close(results, _reference(batches, lo=lo, hi=hi, aggregation=aggregation))


@pytest.mark.parametrize("alignment", ["lsq_scale", "lsq_scale_shift"])
@pytest.mark.parametrize("aggregation", ["pooled", "per_image"])
def test_disparity_alignment_matches_numpy(alignment: str, aggregation: str) -> None:
    batches = _batches(2)
    options = {"aggregation": aggregation, "alignment": alignment}
    results = _run(batches, max_depth=10.0, alignment_space="disparity", **options)
    _assert_close(results, _reference(batches, hi=10.0, space="disparity", **options))


@pytest.mark.parametrize(("lam", "scale"), [(0.85, 10.0), (0.0, 1.0), (0.5, 100.0)])
def test_silog_convention_matches_numpy(lam: float, scale: float) -> None:
    batches = _batches(3)
    for aggregation in ("pooled", "per_image"):
        results = _run(batches, silog_lambda=lam, silog_scale=scale, aggregation=aggregation)
        expected = _reference(batches, lam=lam, scale=scale, aggregation=aggregation)
        assert results["silog"] == pytest.approx(expected["silog"], rel=1e-6)


def test_relative_mode_aligns_by_least_squares_scale_and_shift() -> None:
    batches = _batches(4)
    results = _run(batches, mode="relative", max_depth=10.0)
    _assert_close(results, _reference(batches, hi=10.0, alignment="lsq_scale_shift"))


# --------------------------------------------------------------------------------------
# streaming, aggregation, closed forms
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("aggregation", ["pooled", "per_image"])
def test_streaming_over_batches_equals_one_batch(aggregation: str) -> None:
    batches = _batches(5)
    whole: Batch = (
        torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]),
        torch.cat([b[2] for b in batches]),
    )
    options = {"aggregation": aggregation, "alignment": "median", "crop": "garg"}
    streamed, at_once = _run(batches, **options), _run([whole], **options)
    for key in KEYS:
        assert streamed[key] == pytest.approx(at_once[key], rel=1e-12), key


def test_per_image_and_pooled_differ_where_they_should() -> None:
    # Unequal valid counts per image: every mean differs.
    batches = _batches(6)
    pooled = _run(batches, aggregation="pooled")
    per_image = _run(batches, aggregation="per_image")
    for key in KEYS:
        assert pooled[key] != pytest.approx(per_image[key], rel=1e-9), key
    # Equal counts per image: plain means agree, square roots of means do not (the mean
    # of square roots is smaller, by Jensen's inequality).
    g = torch.Generator().manual_seed(7)
    target = 1 + 5 * torch.rand(4, 1, 6, 6, generator=g)
    prediction = target * (0.5 + torch.rand(4, 1, 6, 6, generator=g))
    prediction[0] *= 3.0  # one image much worse than the others
    valid = torch.ones(4, 6, 6, dtype=torch.bool)
    pooled = _run([(prediction, target, valid)], aggregation="pooled")
    per_image = _run([(prediction, target, valid)], aggregation="per_image")
    for key in ("abs_rel", "sq_rel", "log10", "delta1", "delta2", "delta3"):
        assert pooled[key] == pytest.approx(per_image[key], rel=1e-12), key
    for key in ("rmse", "rmse_log"):
        assert per_image[key] < pooled[key], key


def test_an_image_without_evaluated_pixels_is_left_out_of_the_mean() -> None:
    prediction, target, valid = _batches(8, n=1)[0]
    valid[1] = False
    with_empty = _run([(prediction, target, valid)], aggregation="per_image")
    without = _run([(prediction[::2], target[::2], valid[::2])], aggregation="per_image")
    for key in KEYS:
        assert with_empty[key] == pytest.approx(without[key], rel=1e-12), key


@pytest.mark.parametrize(
    ("alignment", "space", "make"),
    [
        ("none", "depth", lambda y: y),
        ("median", "depth", lambda y: 3.0 * y),
        ("lsq_scale", "depth", lambda y: 0.2 * y),
        ("lsq_scale_shift", "depth", lambda y: 2.0 * y + 1.0),
        ("lsq_scale", "disparity", lambda y: 4.0 * y),
        ("lsq_scale_shift", "disparity", lambda y: y / (2.0 + 3.0 * y)),
    ],
)
def test_an_exactly_alignable_prediction_scores_perfectly(
    alignment: str, space: str, make: Any
) -> None:
    target = torch.linspace(1.0, 9.0, 2 * 48).reshape(2, 1, 6, 8).double()
    valid = torch.ones(2, 6, 8, dtype=torch.bool)
    for aggregation in ("pooled", "per_image"):
        results = _run(
            [(make(target), target, valid)], max_depth=10.0, alignment=alignment,
            alignment_space=space, aggregation=aggregation,
        )
        for key in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"):
            assert results[key] == pytest.approx(0.0, abs=1e-9), (key, aggregation)
        assert results["delta1"] == 1.0


def test_ground_truth_on_a_cap_is_excluded_and_predictions_are_clamped() -> None:
    target = torch.tensor([0.5, 1.0, 2.0, 10.0, 4.0]).view(1, 1, 1, 5).double()
    prediction = torch.tensor([7.0, 7.0, 0.1, 7.0, 20.0]).view(1, 1, 1, 5).double()
    valid = torch.ones(1, 1, 5, dtype=torch.bool)
    results = _run([(prediction, target, valid)], min_depth=0.5, max_depth=10.0)
    # Scored: y = 1 (p = 7), y = 2 (p clamped up to 0.5), y = 4 (p clamped down to 10).
    assert results["abs_rel"] == pytest.approx((6.0 / 1.0 + 1.5 / 2.0 + 6.0 / 4.0) / 3)
    assert results["rmse"] == pytest.approx(math.sqrt((36.0 + 2.25 + 36.0) / 3))
    assert results["delta3"] == 0.0


def test_delta_thresholds_are_strict() -> None:
    target = torch.tensor([1.0, 1.25, 2.0, 1.5625]).view(1, 1, 1, 4).double()
    # ratios 1.25, 1.25, 1 and 1.25^2, all exact in binary
    prediction = torch.tensor([1.25, 1.0, 2.0, 1.0]).view(1, 1, 1, 4).double()
    results = _run([(prediction, target, torch.ones(1, 1, 4, dtype=torch.bool))])
    assert (results["delta1"], results["delta2"], results["delta3"]) == (0.25, 0.75, 1.0)


def test_empty_state_gives_nan() -> None:
    aggregation: Any
    for aggregation in ("pooled", "per_image"):
        metric = DepthErrors(aggregation=aggregation)
        assert set(metric.compute()) == set(KEYS)
        assert all(math.isnan(v) for v in metric.compute().values())
        prediction, target, valid = _batches(9, n=1)[0]
        metric.update(prediction, target, torch.zeros_like(valid))
        assert all(math.isnan(v) for v in metric.compute().values())


def test_crop_boxes_at_the_benchmark_resolutions() -> None:
    assert crop_box("eigen", 480, 640) == (45, 471, 41, 601)  # BTS: eval_mask[45:471, 41:601]
    assert crop_box("garg", 375, 1242) == (153, 371, 44, 1197)
    assert crop_box("eigen_kitti", 375, 1242) == (124, 342, 44, 1197)
    for crop, fractions in CROP_FRACTIONS.items():
        for height, width in ((20, 24), (240, 320), (352, 1216)):
            expected = tuple(
                int(f * s + 1e-9) for f, s in zip(fractions, (height, height, width, width),
                                                  strict=True)
            )
            assert crop_box(crop, height, width) == expected, (crop, height, width)


# --------------------------------------------------------------------------------------
# contract, protocol, parameters
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"max_depth": 10.0},
        {"max_depth": 10.0, "aggregation": "per_image", "crop": "eigen", "alignment": "median"},
        {"max_depth": 80.0, "crop": "garg", "alignment": "lsq_scale"},
        {"mode": "relative", "max_depth": 10.0, "alignment_space": "disparity"},
    ],
)
def test_contract(params: dict[str, Any]) -> None:
    results = check_metric(
        lambda: DepthErrors(**params), _batches(2, n=2), other_batches=_batches(3, n=2)
    )
    assert 0.0 < results["delta1"] <= results["delta2"] <= results["delta3"] <= 1.0


def test_every_result_has_a_direction() -> None:
    results = _run(_batches(4, n=1))
    assert set(DepthErrors.higher_is_better) == set(results)
    assert {k for k, v in DepthErrors.higher_is_better.items() if v} == {
        "delta1", "delta2", "delta3"
    }


def test_protocol_names_every_option() -> None:
    assert DepthErrors.protocol == "pooled/no-crop/cap-[0.001,inf]/not-aligned/silog-l1.0-x100"
    assert DepthErrors().protocol == DepthErrors.protocol
    nyu = DepthErrors(max_depth=10.0, aggregation="per_image", crop="eigen", alignment="median")
    assert nyu.protocol == "per-image/eigen-crop/cap-[0.001,10]/median-aligned/silog-l1.0-x100"
    kitti = DepthErrors(min_depth=1e-3, max_depth=80.0, crop="garg", silog_lambda=0.85)
    assert kitti.protocol == "pooled/garg-crop/cap-[0.001,80]/not-aligned/silog-l0.85-x100"
    relative = DepthErrors(mode="relative", max_depth=10.0, alignment_space="disparity")
    assert relative.protocol.split("/")[3] == "lsq-scale-shift-disparity-aligned"


def test_caps_and_mode_come_from_the_task_context() -> None:
    manager = isolated_manager(depth_plugin)
    tasks, metrics = manager.registry("tasks"), manager.registry("metrics")
    task = tasks.create("depth", {"max_depth": 10.0})
    metric = metrics.create("depth_errors", context=task.context())
    assert (metric.min_depth, metric.max_depth, metric.alignment) == (1e-3, 10.0, "none")
    relative = tasks.create("depth", {"mode": "relative"})
    assert metrics.create("depth_errors", context=relative.context()).alignment == (
        "lsq_scale_shift"
    )
    chosen = metrics.create("depth_errors", {"alignment": "median"}, context=relative.context())
    assert chosen.alignment == "median"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"min_depth": 2.0, "max_depth": 1.0}, "greater than min_depth"),
        ({"mode": "relative", "alignment": "none"}, "alignment 'none'"),
        ({"alignment": "median", "alignment_space": "disparity", "max_depth": 10.0},
         "least-squares alignment only"),
        ({"alignment": "lsq_scale", "alignment_space": "disparity"}, "needs max_depth"),
        ({"crop": "nyu"}, "crop"),
        ({"aggregation": "mean"}, "aggregation"),
        ({"silog_lambda": 2.0}, "silog_lambda"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, Any], message: str) -> None:
    metrics = isolated_manager(depth_plugin).registry("metrics")
    with pytest.raises(pixcore.ConfigError, match=message):
        metrics.create("depth_errors", params)
