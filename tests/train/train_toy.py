"""A toy plugin and run configuration for the trainer tests; also a script for subprocesses.

The tests import it (their folder is put on ``sys.path``); subprocess tests run it:

* ``python train_toy.py pixcore ARGS...``: the ``pixcore`` command line with the toy
  plugin registered and no entry points loaded (``pixcore train CONFIG --resume``...);
* ``python train_toy.py ddp-two-halves CONFIG OUT HALF``: under torchrun, ``pixcore train``
  for HALF steps and then ``pixcore train --resume`` to the config's steps, in one
  process group (joined here, so that both halves share it);
* ``python train_toy.py save-loop PATH N``: write checkpoints of a model whose every value
  is the iteration number, printing each finished iteration; in iteration N the write
  stops half-way (the first half of the bytes on disk) and waits to be killed.

The toy task is "brightness": predict each pixel's grey level, learnable in a few steps.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import pixcore
import torch
from pixcore.targets import Image, ScalarField, ValidityMask
from torch import Tensor, nn


class ToyBackbone(pixcore.Backbone):
    """Two strided convolutions; optional BatchNorm and dropout (the random part of a step)."""

    def __init__(self, width: int = 8, norm: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, 2, 1)]
        if norm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        self.a = nn.Sequential(*layers)
        self.b = nn.Sequential(nn.Conv2d(width, width, 3, 2, 1), nn.ReLU())
        self.feature_info = [pixcore.FeatureLevel(width, 2), pixcore.FeatureLevel(width, 4)]

    def forward(self, x: Tensor) -> list[Tensor]:
        a = self.a(x)
        return [a, self.b(a)]


class MaskedMSE(pixcore.Loss):
    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        error = ((prediction - target) ** 2)[valid.unsqueeze(1)]
        total = error.mean() if error.numel() else prediction.sum() * 0.0
        return pixcore.LossOutput(total, {"mse": total.detach()})


class MeanAbsError(pixcore.Metric):
    protocol = "toy/pixel-pooled"
    higher_is_better = {"mae": False}

    def __init__(self) -> None:
        super().__init__()
        self.add_state("sum", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.float64))

    def update(self, prediction: Tensor, target: Tensor, valid: Tensor) -> None:
        keep = valid.unsqueeze(1)
        self.state["sum"] += (prediction - target).abs()[keep].double().sum()
        self.state["count"] += keep.sum()

    def _compute(self, state: Any) -> dict[str, float]:
        return {"mae": float(state["sum"] / state["count"].clamp(min=1)), "count": float(state["count"])}


class Brightness(pixcore.Task):
    target_kind = ScalarField
    default_head = "fpn"
    default_loss = "toy_mse"
    default_metrics = ("toy_mae",)

    def __init__(self, target_key: str = "brightness", valid_key: str | None = "valid") -> None:
        super().__init__(target_key, valid_key)

    @property
    def out_channels(self) -> int:
        return 1

    def visualize(self, value: Tensor, valid: Tensor | None = None) -> np.ndarray:
        grey = (value[0].clamp(0, 1) * 255).byte().numpy()
        return np.repeat(grey[..., None], 3, axis=-1)

    def baseline(self, targets: Iterator[tuple[Tensor, Tensor]]) -> Tensor:
        return torch.cat([t[v.unsqueeze(1)] for t, v in targets]).mean().reshape(1)


class Squares(pixcore.Dataset):
    """Random images and their grey level; ``poison`` indices carry a NaN (target or image)."""

    target_kinds = {"image": Image, "brightness": ScalarField, "valid": ValidityMask}

    def __init__(
        self, length: int = 24, size: int = 16, seed: int = 0, poison: list[int] | None = None,
        nan_in: Literal["target", "image"] = "target", delay: float = 0.0,
    ) -> None:
        self.length, self.size, self.seed = length, size, seed
        self.poison, self.nan_in = set(poison or []), nan_in
        self.delay = delay  # seconds per sample: a slow step, for signals that arrive mid-step

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> pixcore.Sample:
        if self.delay:
            import time

            time.sleep(self.delay)
        g = torch.Generator().manual_seed(self.seed * 1000 + index)
        image = torch.randint(0, 256, (3, self.size, self.size), generator=g, dtype=torch.uint8)
        grey = image.float().mean(0, keepdim=True) / 255.0
        valid = torch.ones(self.size, self.size, dtype=torch.bool)
        valid[:2] = False
        picture: Tensor = image
        if self.nan_in == "image":  # float images in [0, 1]: the model then skips normalisation
            picture = image.float() / 255.0
        if index in self.poison:
            if self.nan_in == "image":
                picture[0, 0, 0] = float("nan")
            else:
                grey[0, 5, 5] = float("nan")
        return {"image": Image(picture), "brightness": ScalarField(grey), "valid": ValidityMask(valid)}


class ToyPlugin:
    @pixcore.hookimpl
    def pixcore_backbones(self) -> Iterator[pixcore.Component]:
        yield pixcore.Component("toy", ToyBackbone)

    @pixcore.hookimpl
    def pixcore_losses(self) -> Iterator[pixcore.Component]:
        yield pixcore.Component("toy_mse", MaskedMSE)

    @pixcore.hookimpl
    def pixcore_metrics(self) -> Iterator[pixcore.Component]:
        yield pixcore.Component("toy_mae", MeanAbsError)

    @pixcore.hookimpl
    def pixcore_tasks(self) -> Iterator[pixcore.Component]:
        yield pixcore.Component("brightness", Brightness)

    @pixcore.hookimpl
    def pixcore_datasets(self) -> Iterator[pixcore.Component]:
        yield pixcore.Component("squares", Squares)


def toy_manager() -> pixcore.PluginManager:
    """Built-ins (heads, hflip) plus the toy plugin; no entry points."""
    manager = pixcore.PluginManager(autoload=False)
    manager.register(ToyPlugin(), name="toy")
    return manager


def run_config(
    *, steps: int = 8, batch_size: int = 4, length: int = 24, workers: int = 0, dropout: float = 0.0,
    norm: bool = True, head: str = "fpn", augment: bool = True, train_params: dict[str, Any] | None = None,
    **trainer: Any,
) -> dict[str, Any]:
    """A run config (plain data, as in a JSON file) for the toy task."""
    head_config: dict[str, Any] = {"name": head, "params": {"channels": 8} if head == "fpn" else {}}
    return {
        "model": {
            "backbone": {"name": "toy", "params": {"width": 8, "norm": norm, "dropout": dropout}},
            "tasks": {"brightness": {"head": head_config}},
        },
        "data": {
            "train": {"name": "squares", "params": {"length": length, **(train_params or {})}},
            "val": {"name": "squares", "params": {"length": 6, "seed": 1}},
            "augmentations": ["hflip"] if augment else [],
            "batch_size": batch_size,
            "num_workers": workers,
        },
        "trainer": {"steps": steps, "lr": 5e-3, "progress": False, "log_every": 1, "device": "cpu",
                    "schedule": "constant", **trainer},
    }


def _use_toy_plugin() -> None:
    from pixcore.plugin._manager import reset_plugin_manager

    reset_plugin_manager(toy_manager())


def _save_loop(path: str, pause_at: int) -> None:
    import os
    import time

    from pixcore.train import _checkpoint, save_checkpoint
    from safetensors.torch import save as serialize

    model = nn.Linear(1024, 2048)  # 8 MiB
    iteration = 0
    real_save_file = _checkpoint.save_file

    def save_file(tensors: dict[str, Tensor], filename: str, metadata: dict[str, str] | None = None) -> None:
        if iteration != pause_at:
            return real_save_file(tensors, filename, metadata=metadata)
        # Write half the bytes, make sure they are on disk, then wait to be killed.
        data = serialize(tensors, metadata=metadata)
        with open(filename, "wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            os.fsync(handle.fileno())
            print(f"{iteration} half-written", flush=True)
            time.sleep(60)
            handle.write(data[len(data) // 2:])
        return None

    _checkpoint.save_file = save_file  # type: ignore[assignment]
    while True:
        iteration += 1
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(float(iteration))
        save_checkpoint(path, model, metadata={"iteration": iteration})
        print(iteration, flush=True)


def _ddp_two_halves(config: str, out: str, half: int) -> int:
    import torch.distributed as dist
    from pixcore._cli import main

    dist.init_process_group("gloo")  # joined here, so the two halves share the process group
    try:
        first = main(["train", config, "--out", out, "--set", f"trainer.steps={half}"])
        second = main(["train", config, "--out", out, "--resume"])
        return first or second
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    _use_toy_plugin()
    command, arguments = sys.argv[1], sys.argv[2:]
    if command == "pixcore":
        from pixcore._cli import main

        sys.exit(main(arguments))
    if command == "ddp-two-halves":
        sys.exit(_ddp_two_halves(arguments[0], arguments[1], int(arguments[2])))
    if command == "save-loop":
        _save_loop(arguments[0], int(arguments[1]))
    print(json.dumps({"error": f"unknown command {command!r}"}), file=sys.stderr)
    sys.exit(2)
