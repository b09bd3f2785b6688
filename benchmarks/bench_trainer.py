"""The trainer's overhead: pixcore's Trainer against a hand-written PyTorch loop, on CPU.

Usage::

    python benchmarks/bench_trainer.py [--rounds 7] [--steps 60] [--size 64] [--batch 8]
    python benchmarks/bench_trainer.py --quick        # a smoke run: 2 rounds of 5 steps

Both loops train the same model (a small convolutional backbone and an FPN head on a
per-pixel regression task, built with the same seed) on the same batches, already in
memory (a list of samples behind a ``DataLoader`` without workers, in order), with AdamW
(no decay on biases and norms) at a constant learning rate. The cases:

* ``plain``: ``for batch in loader: forward, loss, zero_grad, backward, step``;
* ``plain + finite check``: the same, plus ``torch.isfinite(loss)`` read on the host every
  step (the one synchronisation the trainer adds);
* ``trainer``: ``Trainer.fit()`` with no output folder (no logs or checkpoints to write),
  ``log_every`` 10;
* ``trainer + 10 callbacks``: the same with ten no-op ``Callback`` objects.

Timing: every round runs each case once, in a rotated order, so that load from other
processes hits all of them alike; the table gives the median over rounds of the time per
step: the loop from its first batch to the end of its last step, divided by the steps
(building the model and the optimiser is left out; for the trainer, the time from
``on_fit_start`` to ``on_fit_end``). The goal is a trainer/plain ratio of at most 1.03.
After the rounds the final weights of ``plain`` and ``trainer`` are compared: they
should be bitwise equal (the exit status is 1 if they are not).
"""

from __future__ import annotations

import os

# One thread everywhere, before numpy / torch start their pools: steadier timings.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

try:
    import pixcore
except ImportError:  # running from a source checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
    import pixcore

from _common import cpu_name  # noqa: E402  (benchmarks/, the script's own folder)
from pixcore.targets import Image, ScalarField, ValidityMask  # noqa: E402
from pixcore.train import Callback, Trainer  # noqa: E402

# -- the model: a benchmark-local plugin (backbone, task, loss) -----------------------------


class Backbone(pixcore.Backbone):
    """Three strided conv-BN-ReLU stages: strides 2, 4, 8."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.stages = nn.ModuleList([stage(3, width), stage(width, width), stage(width, width)])
        self.feature_info = [pixcore.FeatureLevel(width, 2 ** (i + 1)) for i in range(3)]

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class MaskedMSE(pixcore.Loss):
    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        error = ((prediction - target) ** 2)[valid.unsqueeze(1)]
        return pixcore.LossOutput(error.mean(), {})


class NoMetric(pixcore.Metric):
    protocol = "none"

    def update(self, prediction: Tensor, target: Tensor, valid: Tensor) -> None: ...

    def _compute(self, state: object) -> dict[str, float]:
        return {}


class Brightness(pixcore.Task):
    target_kind = ScalarField
    default_head = "fpn"
    default_loss = "bench_mse"
    default_metrics = ("bench_none",)

    def __init__(self) -> None:
        super().__init__("brightness", "valid")

    @property
    def out_channels(self) -> int:
        return 1

    def visualize(self, value: Tensor, valid: Tensor | None = None) -> np.ndarray:
        return np.zeros((*value.shape[-2:], 3), dtype=np.uint8)

    def baseline(self, targets: Iterator[tuple[Tensor, Tensor]]) -> Tensor:
        return torch.zeros(1)


class BenchPlugin:
    @pixcore.hookimpl
    def pixcore_backbones(self) -> Iterator[pixcore.Component]:
        yield pixcore.Component("bench", Backbone)

    @pixcore.hookimpl
    def pixcore_losses(self) -> Iterator[pixcore.Component]:
        yield pixcore.Component("bench_mse", MaskedMSE)

    @pixcore.hookimpl
    def pixcore_metrics(self) -> Iterator[pixcore.Component]:
        yield pixcore.Component("bench_none", NoMetric)

    @pixcore.hookimpl
    def pixcore_tasks(self) -> Iterator[pixcore.Component]:
        yield pixcore.Component("brightness", Brightness)


MANAGER = pixcore.PluginManager(autoload=False)
MANAGER.register(BenchPlugin(), name="bench")
SEED = 0


def build_model(width: int) -> pixcore.MultiTaskModel:
    torch.manual_seed(SEED)
    return pixcore.build_model(
        {"name": "bench", "params": {"width": width}},
        tasks={"brightness": {"head": {"name": "fpn", "params": {"channels": width}}}},
        manager=MANAGER,
    )


def make_samples(count: int, size: int) -> list[pixcore.Sample]:
    g = torch.Generator().manual_seed(1)
    samples = []
    for _ in range(count):
        image = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
        samples.append({
            "image": Image(image),
            "brightness": ScalarField(image.float().mean(0, keepdim=True) / 255.0),
            "valid": ValidityMask(torch.ones(size, size, dtype=torch.bool)),
        })
    return samples


# -- the cases ------------------------------------------------------------------------------

LR, WEIGHT_DECAY = 1e-3, 1e-4


def plain_loop(model: nn.Module, loader: DataLoader[pixcore.Sample], steps: int, finite_check: bool) -> float:
    """Train ``steps`` steps; returns the seconds the loop took."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}], lr=LR
    )
    model.train()
    start = time.perf_counter()
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    for batch in itertools.islice(batches, steps):
        predictions = model(batch["image"])
        loss, _ = model.compute_loss(predictions, batch)  # type: ignore[operator]
        if finite_check and not bool(torch.isfinite(loss)):
            raise FloatingPointError("non-finite loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


class Stopwatch(Callback):
    """Times the loop: from ``on_fit_start`` to ``on_fit_end``."""

    def on_fit_start(self, trainer: Trainer) -> None:
        self.start = time.perf_counter()

    def on_fit_end(self, trainer: Trainer, result: object) -> None:
        self.seconds = time.perf_counter() - self.start


def trainer_loop(model: nn.Module, loader: DataLoader[pixcore.Sample], steps: int, callbacks: int) -> float:
    """Train ``steps`` steps with ``callbacks`` no-op callbacks; returns the loop's seconds."""
    config = pixcore.TrainerConfig(steps=steps, lr=LR, weight_decay=WEIGHT_DECAY, schedule="constant",
                                   device="cpu", progress=False, log_every=10)
    stopwatch = Stopwatch()
    # The stopwatch first: it starts before and stops after the no-op callbacks run.
    trainer = Trainer(model, config, loader, manager=MANAGER,  # type: ignore[arg-type]
                      callbacks=[stopwatch, *(Callback() for _ in range(callbacks))])
    trainer.fit()
    return stopwatch.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median over them)")
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps per run")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=8, help="batch size")
    parser.add_argument("--width", type=int, default=32, help="channels of the backbone and head")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 5 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps = 2, 5
    torch.set_num_threads(1)

    samples = make_samples(4 * args.batch, args.size)
    loader = DataLoader(samples, batch_size=args.batch, shuffle=False, drop_last=True)  # type: ignore[arg-type]
    cases: dict[str, Callable[[nn.Module], float]] = {
        "plain": lambda m: plain_loop(m, loader, args.steps, finite_check=False),
        "plain + finite check": lambda m: plain_loop(m, loader, args.steps, finite_check=True),
        "trainer": lambda m: trainer_loop(m, loader, args.steps, callbacks=0),
        "trainer + 10 callbacks": lambda m: trainer_loop(m, loader, args.steps, callbacks=10),
    }
    names = list(cases)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    final: dict[str, nn.Module] = {}
    for round_ in range(args.rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            model = build_model(args.width)
            seconds[name].append(cases[name](model) / args.steps)
            final[name] = model

    print(f"pixcore Trainer vs a plain PyTorch loop: {platform.python_version()}, torch {torch.__version__}, "
          f"{cpu_name()}, 1 thread")
    print(f"{args.rounds} rounds x {args.steps} steps, batch {args.batch} x 3x{args.size}x{args.size}, "
          f"width {args.width}\n")
    median = {name: statistics.median(values) for name, values in seconds.items()}
    # Load from other processes moves whole rounds; a ratio within one round cancels most of it.
    paired = {name: statistics.median(a / b for a, b in zip(seconds[name], seconds["plain"], strict=True))
              for name in names}
    print(f"{'case':<26}{'ms/step':>10}{'min':>10}{'max':>10}{'vs plain':>10}{'paired':>10}")
    for name in names:
        values = seconds[name]
        print(f"{name:<26}{median[name] * 1e3:>10.3f}{min(values) * 1e3:>10.3f}{max(values) * 1e3:>10.3f}"
              f"{median[name] / median['plain']:>10.3f}{paired[name]:>10.3f}")
    print("(vs plain: ratio of the medians; paired: median over rounds of the ratio within a round)")
    ratio = paired["trainer"]
    print(f"\ntrainer / plain step time (paired): {ratio:.3f} (goal <= 1.03: {'met' if ratio <= 1.03 else 'NOT met'})")
    finite_cost = median["plain + finite check"] - median["plain"]
    callback_cost = median["trainer + 10 callbacks"] - median["trainer"]
    print(f"cost of the finite check: {finite_cost * 1e6:+.1f} us/step; "
          f"of 10 no-op callbacks: {callback_cost * 1e6:+.1f} us/step (medians; noise is of the same order)")

    plain, trained = final["plain"].state_dict(), final["trainer"].state_dict()
    diffs = [(a.double() - b.double()).abs().max().item() for a, b in zip(plain.values(), trained.values(), strict=True)
             if a.is_floating_point()]
    bitwise = all(torch.equal(a, b) for a, b in zip(plain.values(), trained.values(), strict=True))
    print(f"weights after {args.steps} steps: max abs diff trainer vs plain {max(diffs):.3g}, "
          f"bitwise equal: {bitwise}")
    return 0 if bitwise else 1


if __name__ == "__main__":
    sys.exit(main())
