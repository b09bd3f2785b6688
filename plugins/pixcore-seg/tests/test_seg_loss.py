"""The cross_entropy loss against torch's reference and the Loss contract."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

import pixcore
from pixcore.testing import check_loss, isolated_manager
from pixcore_seg import CrossEntropyLoss
from pixcore_seg import _plugin as seg_plugin

C, IGNORE = 5, 255


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _batch(seed: int, size: tuple[int, int] = (9, 13)) -> Batch:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, C, *size, generator=g)
    target = torch.randint(0, C, (3, *size), generator=g)
    target[torch.rand(3, *size, generator=g) < 0.15] = IGNORE
    valid = torch.rand(3, *size, generator=g) > 0.3
    return logits, target, valid


def _reference(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, **kwargs: Any
) -> torch.Tensor:
    # Independent: gather the valid pixels first, let torch handle the ignore index.
    flat = logits.permute(0, 2, 3, 1)[valid]
    return F.cross_entropy(flat.double(), target[valid], ignore_index=IGNORE, **kwargs)


@pytest.mark.parametrize("weights", [None, [0.5, 1.0, 2.0, 0.1, 3.0]])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_equals_torch_cross_entropy_on_valid_pixels(
    weights: list[float] | None, smoothing: float
) -> None:
    logits, target, valid = _batch(0)
    loss = CrossEntropyLoss(num_classes=C, class_weights=weights, label_smoothing=smoothing)
    out = loss(logits, target, valid)
    w = None if weights is None else torch.tensor(weights, dtype=torch.float64)
    expected = _reference(logits, target, valid, weight=w, label_smoothing=smoothing)
    assert float(out.total) == pytest.approx(float(expected), rel=1e-6, abs=1e-7)
    assert torch.equal(out.parts["cross_entropy"], out.total.detach())


def test_contract_and_invalid_pixels_have_no_influence() -> None:
    logits, target, valid = _batch(1)
    other_logits, other_target, _ = _batch(2)
    loss = CrossEntropyLoss(num_classes=C, class_weights=[1, 2, 3, 4, 5], label_smoothing=0.1)
    check_loss(
        loss, logits, target, valid, other_prediction=other_logits, other_target=other_target
    )


def test_no_kept_pixel_gives_zero_with_a_gradient_path() -> None:
    logits, target, _ = _batch(3)
    logits.requires_grad_(True)
    loss = CrossEntropyLoss()
    for valid, t in ((torch.zeros_like(target, dtype=torch.bool), target),
                     (torch.ones_like(target, dtype=torch.bool), torch.full_like(target, IGNORE))):
        out = loss(logits, t, valid)
        assert out.total.item() == 0.0 and out.total.requires_grad
        out.total.backward()
        assert logits.grad is not None and torch.all(logits.grad == 0)


def test_ignore_index_inside_the_class_range() -> None:
    logits, target, valid = _batch(4)
    target[target == IGNORE] = 0
    out = CrossEntropyLoss(ignore_index=0)(logits, target, valid)
    flat, t = logits.permute(0, 2, 3, 1)[valid], target[valid]
    expected = F.cross_entropy(flat, t, ignore_index=0).item()
    assert out.total.item() == pytest.approx(expected, rel=1e-6)


def test_out_of_range_class_names_the_value() -> None:
    logits, target, valid = _batch(5)
    target[0, 0, 0], valid[0, 0, 0] = 9, True
    with pytest.raises(ValueError, match=r"class id 9 is outside \[0, 5\)"):
        CrossEntropyLoss()(logits, target, valid)


def test_parameters_are_validated_with_the_task_context() -> None:
    registry = isolated_manager(seg_plugin).registry("losses")
    context = {"num_classes": 3, "ignore_index": 255}
    with pytest.raises(pixcore.ConfigError, match="class_weights has 2 entries for 3 classes"):
        registry.create("cross_entropy", {"class_weights": [1.0, 2.0]}, context=context)
    with pytest.raises(pixcore.ConfigError, match="label_smoothing"):
        registry.create("cross_entropy", {"label_smoothing": 1.5}, context=context)
    loss = registry.create("cross_entropy", {"class_weights": [1, 2, 3]}, context=context)
    assert isinstance(loss, CrossEntropyLoss) and loss.num_classes == 3
