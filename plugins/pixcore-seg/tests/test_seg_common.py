"""Helpers shared by the losses and the metric: the class-plane argmax and input checks."""

from __future__ import annotations

import pytest
import torch
from pixcore_seg._common import argmax_classes, prepare_logits


@pytest.mark.parametrize("num_classes", [1, 2, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_argmax_equals_torch_with_ties(num_classes: int, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(num_classes)
    logits = torch.randn(2, num_classes, 5, 6, generator=g)
    logits[0] = logits[0].round()  # integer values: many ties, the first maximum wins
    logits = logits.to(dtype)
    for out_dtype in (torch.int64, torch.int32):
        ids = argmax_classes(logits, out_dtype)
        assert ids.dtype == out_dtype
        assert torch.equal(ids.long(), logits.argmax(1))


def test_argmax_with_infinities_and_nan_equals_torch() -> None:
    logits = torch.zeros(1, 4, 2, 3)
    logits[0, :, 0, 0] = torch.tensor([float("-inf"), 1.0, float("inf"), float("inf")])
    logits[0, :, 0, 1] = torch.tensor([1.0, float("nan"), 5.0, 2.0])
    logits[0, :, 0, 2] = torch.tensor([float("-inf")] * 4)
    assert torch.equal(argmax_classes(logits), logits.argmax(1))
    assert argmax_classes(logits)[0, 0].tolist() == [2, 1, 0]


def test_argmax_does_not_modify_its_input() -> None:
    logits = torch.randn(2, 3, 4, 4)
    before = logits.clone()
    argmax_classes(logits)
    assert torch.equal(logits, before)


def test_prepare_logits_checks_shapes() -> None:
    valid = torch.ones(2, 4, 4, dtype=torch.bool)
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"dice: the prediction must be floating logits"):
        prepare_logits(torch.zeros(2, 3, 4, 4, dtype=torch.long), target, valid, 255, "dice")
    with pytest.raises(ValueError, match=r"matching the target \(2, 4, 4\), got .*\(2, 3, 4, 5\)"):
        prepare_logits(torch.zeros(2, 3, 4, 5), target, valid, 255, "dice")
    with pytest.raises(ValueError, match=r"integer class ids of shape \(2, 4, 4\)"):
        prepare_logits(torch.zeros(2, 3, 4, 4), target.float(), valid, 255, "dice")
    target[0, 0, 0], target[1, 1, 1] = 255, 2
    valid[1, 1, 1] = False
    logits, safe, keep = prepare_logits(torch.zeros(2, 3, 4, 4).half(), target, valid, 255, "x")
    assert logits.dtype == torch.float32 and safe.dtype == torch.int64
    assert int(safe[0, 0, 0]) == 0 and int(safe[1, 1, 1]) == 0
    assert keep.sum() == 2 * 16 - 2
