"""A three-task model on timm/resnet18, composed from registry names."""

from __future__ import annotations

import pixcore
import pytest
import torch
from pixcore.testing import isolated_manager, make_batch

pytest.importorskip("pixcore_seg")
pytest.importorskip("pixcore_depth")
pytest.importorskip("pixcore_normals")


def test_three_tasks_on_resnet18_forward_backward_at_an_odd_size() -> None:
    manager = isolated_manager(
        "pixcore_timm._plugin", "pixcore_seg._plugin", "pixcore_depth._plugin",
        "pixcore_normals._plugin",
    )
    torch.manual_seed(0)
    model = pixcore.build_model(
        "timm/resnet18",
        tasks={
            "semseg": {"task": "segmentation", "params": {"num_classes": 7}},
            "depth": {},
            "normals": {"loss": "cosine", "head": {"name": "fpn", "params": {"channels": 32}}},
        },
        manager=manager,
    )
    generator = torch.Generator().manual_seed(0)
    batch: dict[str, torch.Tensor] = {}
    for task in model.tasks.values():
        batch.update(make_batch(task, batch_size=2, size=(61, 83), generator=generator))
    predictions = model(batch["image"])
    assert predictions["semseg"].shape == (2, 7, 61, 83)
    assert predictions["depth"].shape == (2, 1, 61, 83) and bool((predictions["depth"] > 0).all())
    norms = predictions["normals"].norm(dim=1)
    assert predictions["normals"].shape == (2, 3, 61, 83)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)

    total, parts = model.compute_loss(predictions, batch)
    assert set(parts) >= {"semseg/loss", "depth/loss", "normals/loss", "depth/silog"}
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)

    for name, binding in model.bindings.items():
        target, valid = binding.task.target_and_valid(batch)
        for metric in binding.new_metrics(manager).values():
            metric.update(predictions[name].detach(), target, valid)
            assert any(v == v for v in metric.compute().values())  # some non-NaN result
