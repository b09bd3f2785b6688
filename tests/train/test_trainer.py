"""The first trainer: optimiser groups, loop, evaluation, non-finite stop, data seeding."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pixcore
import pytest
import torch
import torch.nn.functional as F
from pixcore.train import (
    AugmentedDataset,
    NonFiniteLossError,
    Trainer,
    build_optimizer,
    evaluate,
    evaluate_baselines,
    select_device,
)
from torch import Tensor, nn
from torch.utils.data import DataLoader

# The toy plugin (a two-level conv backbone and a "brightness" task: predict each pixel's
# grey level, learnable in a few steps) is shared with the other trainer tests.
from train_toy import Squares, ToyPlugin  # noqa: E402


@pytest.fixture
def manager() -> pixcore.PluginManager:
    m = pixcore.PluginManager(autoload=False)
    m.register(ToyPlugin(), name="toy")
    return m


def _model(manager: pixcore.PluginManager, **task: Any) -> pixcore.MultiTaskModel:
    torch.manual_seed(0)
    return pixcore.build_model(
        "toy", tasks={"brightness": {"head": {"name": "fpn", "params": {"channels": 8}}, **task}},
        manager=manager,
    )


def _loaders(batch_size: int = 8) -> tuple[DataLoader[Any], DataLoader[Any]]:
    train = DataLoader(Squares(64, size=24), batch_size=batch_size, shuffle=True, drop_last=True,
                       generator=torch.Generator().manual_seed(0))
    val = DataLoader(Squares(16, size=24, seed=1), batch_size=batch_size)
    return train, val


def test_no_weight_decay_on_norms_and_biases(manager: pixcore.PluginManager) -> None:
    model = _model(manager)
    optimizer = build_optimizer(model, pixcore.TrainerConfig(weight_decay=0.05))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    norm_and_bias = {id(p) for m in norms for p in m.parameters()}
    norm_and_bias |= {id(p) for n, p in model.named_parameters() if n.endswith("bias")}
    assert norm_and_bias, "the toy model has norm and bias parameters"
    assert norm_and_bias <= {id(p) for p in plain["params"]}
    assert all(p.ndim >= 2 for p in decayed["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_select_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert select_device("auto").type == expected
    assert select_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(pixcore.PixcoreError, match="CUDA is not available"):
            select_device("cuda")


def test_training_learns_and_logs(manager: pixcore.PluginManager, tmp_path: Path) -> None:
    model = _model(manager)
    train, val = _loaders()
    before = evaluate(model, val, torch.device("cpu"), manager)["brightness"]["mae"]
    config = pixcore.TrainerConfig(steps=60, lr=5e-3, log_every=5, progress=False, warmup_steps=5)
    trainer = Trainer(model, config, train, val, out_dir=tmp_path, manager=manager)
    result = trainer.fit()
    after = result.metrics["brightness"]["mae"]
    assert result.steps == 60
    assert after < 0.5 * before, (before, after)
    assert result.metrics["brightness"]["protocol"] == {"toy_mae": "toy/pixel-pooled"}
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(5, 61, 5))
    assert float(rows[-1]["brightness/loss"]) < float(rows[0]["brightness/loss"])
    assert (tmp_path / "checkpoint.safetensors").exists()
    assert (tmp_path / "metrics.json").exists()
    # The cosine schedule ends at zero learning rate.
    assert math.isclose(float(rows[-1]["lr"]), 0.0, abs_tol=1e-9)


def test_baselines_use_the_same_metrics(manager: pixcore.PluginManager) -> None:
    model = _model(manager)
    train, val = _loaders()
    baselines = evaluate_baselines(model, train, val, manager)
    # Independent reference: mean brightness of the training data, scored on val by numpy.
    train_values = np.concatenate([b["brightness"][:, 0][b["valid"]].numpy() for b in train])
    val_batches = list(val)
    val_values = np.concatenate([b["brightness"][:, 0][b["valid"]].numpy() for b in val_batches])
    expected = np.abs(val_values - train_values.mean()).mean()
    assert baselines["brightness"]["mae"] == pytest.approx(expected, rel=1e-5)


def test_non_finite_loss_stops_and_names_task(manager: pixcore.PluginManager, tmp_path: Path) -> None:
    model = _model(manager)
    train, val = _loaders()
    with torch.no_grad():
        model.heads["brightness"].output.bias.fill_(float("nan"))
    trainer = Trainer(model, pixcore.TrainerConfig(steps=5, progress=False), train, val,
                      out_dir=tmp_path, manager=manager)
    with pytest.raises(NonFiniteLossError, match=r"step 1 \(task: brightness\)"):
        trainer.fit()
    assert not (tmp_path / "checkpoint.safetensors").exists()


def _flip_all(sample: pixcore.Sample, generator: torch.Generator | None = None) -> pixcore.Sample:
    return pixcore.registry("augmentations").create("hflip", {"p": 0.5})(sample, generator)


def test_augmentation_stream_is_independent_of_workers() -> None:
    def stream(workers: int, epoch: int) -> Tensor:
        data = AugmentedDataset(Squares(12), _flip_all, seed=3)  # type: ignore[arg-type]
        data.epoch = epoch
        loader = DataLoader(data, batch_size=4, num_workers=workers)
        return torch.cat([b["image"] for b in loader])

    first = stream(0, epoch=0)
    assert torch.equal(first, stream(2, epoch=0))
    assert not torch.equal(first, stream(0, epoch=1)), "each epoch draws new augmentations"
    unflipped = torch.stack([Squares(12)[i]["image"] for i in range(12)])
    flipped = [not torch.equal(a, b) for a, b in zip(first, unflipped, strict=True)]
    assert any(flipped) and not all(flipped), "p=0.5 flips some samples, not all"


def test_uint8_and_float_images_agree(manager: pixcore.PluginManager) -> None:
    model = _model(manager).eval()
    image = torch.randint(0, 256, (1, 3, 24, 24), dtype=torch.uint8)
    a = model(image)["brightness"]
    b = model(image.float() / 255.0)["brightness"]
    assert torch.allclose(a, b, atol=1e-6)
    assert F.l1_loss(a, b) < 1e-6
