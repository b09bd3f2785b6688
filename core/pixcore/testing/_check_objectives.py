"""Contract checks for losses and metrics."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from pixcore._interfaces import Loss, LossOutput, Metric
from pixcore.testing._contract import ContractError, require, require_finite, same_results
from pixcore.testing._data import replace_invalid

__all__ = ["check_loss", "check_metric"]

#: ``(prediction, target, valid)``, the arguments of ``Loss.forward`` and ``Metric.update``.
Triple = tuple[Tensor, Tensor, Tensor]


def _run(
    loss: Loss, prediction: Tensor, target: Tensor, valid: Tensor, what: str
) -> tuple[LossOutput, Tensor]:
    leaf = prediction.detach().clone().requires_grad_(True)
    out = loss(leaf, target, valid)
    require(
        isinstance(out, LossOutput),
        f"{what} returned {type(out).__name__}, not a pixcore.LossOutput",
    )
    total = out.total
    require(
        isinstance(total, Tensor) and total.ndim == 0 and total.is_floating_point(),
        f"{what}: LossOutput.total must be a floating 0-dim tensor, got "
        f"{getattr(total, 'shape', total)!r}",
    )
    require_finite(total, f"{what}: LossOutput.total")
    for name, part in out.parts.items():
        require(
            isinstance(part, Tensor) and part.ndim == 0,
            f"{what}: LossOutput.parts[{name!r}] must be a 0-dim tensor",
        )
        require_finite(part, f"{what}: LossOutput.parts[{name!r}]")
    require(
        total.requires_grad,
        f"{what}: LossOutput.total has no gradient path to the prediction",
    )
    total.backward()
    grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
    require_finite(grad, f"{what}: gradient w.r.t. the prediction")
    return out, grad


def _value(x: Tensor) -> float:
    return float(x.detach())


def _equal_totals(a: Tensor, b: Tensor) -> bool:
    return math.isclose(_value(a), _value(b), rel_tol=1e-5, abs_tol=1e-7)


def check_loss(
    loss: Loss,
    prediction: Tensor,
    target: Tensor,
    valid: Tensor,
    *,
    other_prediction: Tensor | None = None,
    other_target: Tensor | None = None,
) -> LossOutput:
    """Check the :class:`pixcore.Loss` contract on one batch; return its output.

    ``prediction`` is a decoded prediction ``[B, C, H, W]``, ``target`` the matching
    target and ``valid`` a boolean ``[B, H, W]`` mask with some False pixels. Rules:

    * ``total`` is a finite floating scalar with a gradient path; every part is a finite
      scalar; the gradient w.r.t. the prediction is finite;
    * invalid pixels have no influence: their prediction gradient is exactly zero, and
      replacing their target by ``other_target``, by zero or (for float targets) by NaN,
      or their prediction by ``other_prediction``, leaves ``total`` unchanged (invalid
      pixels may hold anything, NaN included);
    * with every pixel invalid, ``total`` is exactly zero, finite, and still backward-able.

    Raises:
        ContractError: naming the rule that was broken.

    Example::

        task = pixcore.registry("tasks").create("depth")
        loss = pixcore.registry("losses").create("silog")
        raw = torch.randn(2, 1, 16, 16)
        target = torch.rand(2, 1, 16, 16) + 0.5
        valid = torch.rand(2, 16, 16) > 0.3
        check_loss(loss, task.decode(raw), target, valid)

    """
    what = f"loss {type(loss).__name__}"
    require(isinstance(loss, Loss), f"{type(loss).__name__} is not a pixcore.Loss")
    require(
        valid.dtype == torch.bool and valid.ndim == 3,
        f"check_loss needs a boolean [B, H, W] valid mask, got {valid.dtype} {tuple(valid.shape)}",
    )
    require(
        bool((~valid).any()),
        "check_loss needs some invalid pixels to check that they have no influence",
    )
    out, grad = _run(loss, prediction, target, valid, what)
    mask = valid.unsqueeze(1).expand_as(grad) if grad.ndim == valid.ndim + 1 else valid
    if bool((grad[~mask] != 0).any()):
        raise ContractError(
            f"{what}: invalid pixels receive a non-zero gradient; average over valid pixels only"
        )
    again, _ = _run(loss, prediction, target, valid, what)
    require(_equal_totals(out.total, again.total), f"{what} is not deterministic")

    replacements: list[tuple[str, Tensor, Tensor]] = []
    if other_target is not None:
        replacements.append(
            ("other targets", prediction, replace_invalid(target, other_target, valid))
        )
    replacements.append(("zero targets", prediction, replace_invalid(target, 0, valid)))
    if target.is_floating_point():
        replacements.append(("NaN targets", prediction, replace_invalid(target, math.nan, valid)))
    if other_prediction is not None:
        replacements.append(
            ("other predictions", replace_invalid(prediction, other_prediction, valid), target)
        )
    for label, p, t in replacements:
        changed, _ = _run(loss, p, t, valid, f"{what} with {label} on invalid pixels")
        require(
            _equal_totals(out.total, changed.total),
            f"{what}: {label} on invalid pixels change the loss from {_value(out.total):.8g} to "
            f"{_value(changed.total):.8g}; invalid pixels must have no influence",
        )

    none_valid = torch.zeros_like(valid)
    empty, empty_grad = _run(loss, prediction, target, none_valid, f"{what} with no valid pixel")
    require(
        _value(empty.total) == 0.0,
        f"{what}: with no valid pixel the loss must be exactly 0 (got {_value(empty.total)!r})",
    )
    require(bool((empty_grad == 0).all()), f"{what}: with no valid pixel the gradient must be zero")
    return out


def _clone(batches: Sequence[Triple]) -> list[Triple]:
    return [(p.clone(), t.clone(), v.clone()) for p, t, v in batches]


def _unchanged(before: Sequence[Triple], after: Sequence[Triple]) -> bool:
    def same(a: Tensor, b: Tensor) -> bool:
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.is_floating_point():
            return bool(((a == b) | (a.isnan() & b.isnan())).all())
        return torch.equal(a, b)

    return all(
        same(a, b) for x, y in zip(before, after, strict=True) for a, b in zip(x, y, strict=True)
    )


def check_metric(
    make_metric: Callable[[], Metric],
    batches: Sequence[Triple],
    *,
    other_batches: Sequence[Triple] | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
) -> dict[str, float]:
    """Check the :class:`pixcore.Metric` contract on ``batches``; return the results.

    ``make_metric`` creates a fresh metric; ``batches`` are at least two
    ``(prediction, target, valid)`` triples with some invalid pixels. Rules:

    * ``protocol`` names the exact protocol (a non-empty string);
    * ``compute()`` before any update does not raise; after the updates it returns a
      ``dict[str, float]`` with at least one finite value, and calling it again gives the
      same results (computing does not consume state);
    * the state is *summable*: metrics updated on disjoint batches, whose states are
      summed (what :meth:`pixcore.Metric.compute` does across processes), give the same
      results as one metric updated on all batches;
    * ``reset()`` restores the initial state, after which the same updates give the same
      results; ``update`` does not modify its inputs;
    * invalid pixels have no influence: with ``other_batches`` (same shapes), replacing
      the prediction and target of invalid pixels leaves every result unchanged.

    Raises:
        ContractError: naming the rule that was broken.

    Example::

        from pixcore_seg import MeanIoU

        batches = [(logits, mask, valid), (logits2, mask2, valid2)]
        check_metric(lambda: MeanIoU(num_classes=7), batches)

    """
    require(len(batches) >= 2, "check_metric needs at least two batches")
    metric = make_metric()
    what = f"metric {type(metric).__name__}"
    require(isinstance(metric, Metric), f"{type(metric).__name__} is not a pixcore.Metric")
    require(
        isinstance(type(metric).protocol, str) and bool(metric.protocol),
        f"{what}: set the class attribute `protocol` to the name of the exact protocol",
    )
    require(
        all(isinstance(v, Tensor) for v in metric.state.values()),
        f"{what}: every state must be a tensor declared with add_state",
    )
    initial = {k: v.clone() for k, v in metric.state.items()}
    try:
        metric.compute()
    except Exception as error:
        raise ContractError(f"{what}: compute() before any update raised {error!r}") from error

    snapshot = _clone(batches)
    for prediction, target, valid in batches:
        metric.update(prediction, target, valid)
    require(_unchanged(snapshot, batches), f"{what}: update() modified its inputs")
    results = metric.compute()
    require(
        isinstance(results, dict) and len(results) > 0, f"{what}: compute() returned {results!r}"
    )
    for key, value in results.items():
        require(
            isinstance(key, str) and isinstance(value, float),
            f"{what}: result {key!r} = {value!r} must be a str -> float item",
        )
    require(
        any(math.isfinite(v) for v in results.values()),
        f"{what}: every result is NaN or infinite: {results}",
    )
    same_results(results, metric.compute(), f"{what}: second compute()", rtol=rtol, atol=atol)

    parts = []
    for batch in batches:
        part = make_metric()
        part.update(*batch)
        parts.append(part.state)
    require(
        all(set(p) == set(initial) for p in parts),
        f"{what}: fresh metrics declare different states",
    )
    summed = {k: torch.stack([p[k] for p in parts]).sum(0) for k in initial}
    same_results(
        results,
        make_metric()._compute(summed),
        f"{what}: states summed over batches (distributed reduction) vs one metric",
        rtol=rtol, atol=atol,
    )

    metric.reset()
    for key, initial_state in initial.items():
        require(
            torch.equal(metric.state[key].cpu(), initial_state.cpu()),
            f"{what}: reset() did not restore state {key!r}",
        )
    for batch in batches:
        metric.update(*batch)
    same_results(results, metric.compute(), f"{what}: after reset()", rtol=rtol, atol=atol)

    if other_batches is not None:
        mixed = make_metric()
        for (p, t, v), (op, ot, _) in zip(batches, other_batches, strict=True):
            mixed.update(replace_invalid(p, op, v), replace_invalid(t, ot, v), v)
        same_results(
            results, mixed.compute(),
            f"{what}: other predictions and targets on invalid pixels", rtol=rtol, atol=atol,
        )
    return results
