"""Parameter groups (decay, backbone multiplier, layer decay, freezing) and schedules."""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pixcore
import pytest
import torch
import train_toy
from pixcore import TrainerConfig
from pixcore._config import validate_config
from pixcore.train import Trainer, build_optimizer, build_scheduler
from torch import Tensor, nn
from torch.utils.data import DataLoader


def _toy_model(**backbone: Any) -> pixcore.MultiTaskModel:
    torch.manual_seed(0)
    config = train_toy.run_config()["model"]
    config["backbone"]["params"].update(backbone)
    return pixcore.build_model_from_config(config, manager=train_toy.toy_manager())


def _lr_of(optimizer: torch.optim.Optimizer) -> dict[int, tuple[float, float]]:
    """id(parameter) -> (lr, weight decay) of the group that holds it (each parameter once)."""
    found: dict[int, tuple[float, float]] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert id(p) not in found, "a parameter is in two groups"
            found[id(p)] = (group["lr"], group["weight_decay"])
    return found


def test_backbone_lr_mult_and_decay_membership() -> None:
    model = _toy_model()
    config = TrainerConfig(lr=0.01, weight_decay=0.05, backbone_lr_mult=0.1)
    found = _lr_of(build_optimizer(model, config))
    assert len(found) == len(list(model.parameters()))
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    norm_params = {id(p) for m in model.modules() if isinstance(m, norms) for p in m.parameters()}
    assert norm_params, "the toy model has normalisation layers"
    for name, p in model.named_parameters():
        # Expected, written out: the backbone at a tenth; no decay on norms and biases.
        lr = 0.001 if name.startswith("backbone.") else 0.01
        decay = 0.0 if id(p) in norm_params or name.endswith(".bias") else 0.05
        assert found[id(p)][0] == pytest.approx(lr) and found[id(p)][1] == decay, name


def test_weighting_parameters_are_never_decayed() -> None:
    class WithWeighting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Conv2d(3, 4, 3)
            self.head = nn.Linear(4, 2)
            self.weighting = nn.Module()
            self.weighting.log_vars = nn.Parameter(torch.zeros(3, 1))  # 2-d on purpose

    model = WithWeighting()
    found = _lr_of(build_optimizer(model, TrainerConfig(weight_decay=0.1)))
    assert found[id(model.weighting.log_vars)][1] == 0.0
    assert found[id(model.head.weight)][1] == 0.1 and found[id(model.backbone.weight)][1] == 0.1


def test_layer_decay_by_feature_level_for_a_plain_backbone() -> None:
    # The toy backbone: `a` makes level 0 (stride 2), `b` makes level 1 from it. Layers:
    # a = 0, b = 1, heads = 2, so a trains at decay**2, b at decay**1 (times the multiplier).
    model = _toy_model()
    decay, mult, lr = 0.5, 0.2, 0.01
    state = torch.get_rng_state()
    optimizer = build_optimizer(model, TrainerConfig(lr=lr, layer_decay=decay, backbone_lr_mult=mult))
    assert torch.equal(state, torch.get_rng_state()), "grouping must not draw random numbers"
    assert model.training, "grouping leaves the model in its mode"
    found = _lr_of(optimizer)
    for name, p in model.named_parameters():
        if name.startswith("backbone.a."):
            expected = lr * mult * decay**2
        elif name.startswith("backbone.b."):
            expected = lr * mult * decay
        else:
            expected = lr
        assert found[id(p)][0] == pytest.approx(expected), name


def _resnet_layer(name: str) -> int:
    """Hand-written layer of a resnet18 parameter: stem 0, then one layer per basic block."""
    match = re.match(r"model\.layer(\d)[._](\d)\.", name)
    if match is None:
        assert re.match(r"model\.(conv1|bn1)\.", name), name
        return 0
    stage, block = int(match.group(1)), int(match.group(2))
    return 1 + 2 * (stage - 1) + block


def test_layer_decay_uses_timm_block_groups() -> None:
    pytest.importorskip("timm")
    timm_plugin = pytest.importorskip("pixcore_timm")

    class Model(nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.backbone = timm_plugin.TimmBackbone(name)
            self.head = nn.Conv2d(self.backbone.feature_info[-1].channels, 2, 1)

    model = Model("resnet18")
    decay, lr = 0.8, 1e-3
    found = _lr_of(build_optimizer(model, TrainerConfig(lr=lr, layer_decay=decay)))
    for name, p in model.backbone.named_parameters():
        # 9 layers (stem + 8 blocks); the heads are layer 9.
        assert found[id(p)][0] == pytest.approx(lr * decay ** (9 - _resnet_layer(name))), name
    assert found[id(model.head.weight)][0] == pytest.approx(lr)
    rates = {n: found[id(p)][0] for n, p in model.backbone.named_parameters()}
    names = ("conv1.weight", "layer1.0.conv1.weight", "layer4.1.conv2.weight")
    stem, first, last = (rates[f"model.{n}"] for n in names)
    assert stem < first < last

    # A feature extractor that renames modules (stem.0 -> stem_0): still timm's groups,
    # many more than the four feature levels, deeper ones faster.
    model = Model("convnext_atto")
    found = _lr_of(build_optimizer(model, TrainerConfig(lr=lr, layer_decay=decay)))
    rates = {n: found[id(p)][0] for n, p in model.backbone.named_parameters()}
    assert len(set(rates.values())) > 4
    stem = max(v for n, v in rates.items() if n.startswith("model.stem"))
    last = min(v for n, v in rates.items() if n.startswith("model.stages_3.blocks.1."))
    assert stem < last <= lr * decay


CORE = Path(pixcore.__file__).resolve().parent
PLUGIN_MODULES = ("timm", "pixcore_timm", "pixcore_seg", "pixcore_depth", "pixcore_normals")


def _imported_modules(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_the_core_imports_no_plugin() -> None:
    # Backbone-specific knowledge (timm's group_matcher, its renamed feature extractors)
    # lives in the backbone's plugin, behind Backbone.layer_groups().
    found = [
        f"{path.relative_to(CORE.parent)}: {module}"
        for path in sorted(CORE.rglob("*.py"))
        for module in _imported_modules(path)
        if module.split(".")[0] in PLUGIN_MODULES
    ]
    assert len(list(CORE.rglob("*.py"))) > 50, "the core's sources were not found"
    assert not found, found


class _Blocks(pixcore.Backbone):
    """Three blocks at one stride: by feature level they would be one layer."""

    def __init__(self, groups: list[list[str]] | None = None) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block1 = nn.Conv2d(4, 4, 3, padding=1)
        self.block2 = nn.Conv2d(4, 4, 3, padding=1)
        self.feature_info = [pixcore.FeatureLevel(4, 1)]
        self.groups = groups

    def forward(self, x: Tensor) -> list[Tensor]:
        return [self.block2(self.block1(self.stem(x)))]

    def layer_groups(self) -> list[list[str]]:
        if self.groups is not None:
            return self.groups
        return [["stem.weight", "stem.bias"], ["block1.weight", "block1.bias"],
                ["block2.weight", "block2.bias"]]


class _WithBlocks(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv2d(4, 1, 1)


def test_a_backbones_own_layer_groups_are_honoured() -> None:
    model = _WithBlocks(_Blocks())
    model.backbone.block1.bias.requires_grad_(False)  # frozen: left out, its group kept
    decay, mult, lr = 0.5, 0.2, 0.01
    found = _lr_of(build_optimizer(model, TrainerConfig(lr=lr, layer_decay=decay, backbone_lr_mult=mult)))
    expected = {"stem": lr * mult * decay**3, "block1": lr * mult * decay**2, "block2": lr * mult * decay}
    for name, p in model.backbone.named_parameters():
        if p.requires_grad:
            assert found[id(p)][0] == pytest.approx(expected[name.split(".")[0]]), name
    assert id(model.backbone.block1.bias) not in found
    assert found[id(model.head.weight)][0] == pytest.approx(lr)


def test_the_default_layer_groups_are_by_feature_level() -> None:
    backbone = train_toy.ToyBackbone()
    groups = backbone.layer_groups()
    assert [sorted({n.split(".")[0] for n in group}) for group in groups] == [["a"], ["b"]]
    assert sorted(n for group in groups for n in group) == sorted(n for n, _ in backbone.named_parameters())


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (
            [["stem.weight", "stem.bias"], ["block1.weight", "block1.bias"]],
            r"block2\.weight, block2\.bias are in no group",
        ),
        (
            [
                ["stem.weight", "stem.bias", "block1.weight"],
                ["block1.weight", "block1.bias", "block2.weight", "block2.bias"],
            ],
            r"block1\.weight are in several groups",
        ),
        ([["stem.weight", "stem.bias", "stem.scale"], ["block1.weight", "block1.bias", "block2.weight", "block2.bias"]],
         r"names what is not a parameter: stem\.scale"),
        (["stem.weight"], r"must return a list of lists of parameter names"),
    ],
)
def test_layer_groups_that_break_the_contract_are_refused(groups: Any, message: str) -> None:
    model = _WithBlocks(_Blocks(groups))
    with pytest.raises(pixcore.PixcoreError, match=rf"_Blocks\.layer_groups\(\).*{message}"):
        build_optimizer(model, TrainerConfig(layer_decay=0.5))


def test_sgd_with_nesterov_momentum() -> None:
    model = _toy_model()
    optimizer = build_optimizer(model, TrainerConfig(optimizer="sgd", momentum=0.8, nesterov=True, lr=0.1))
    assert isinstance(optimizer, torch.optim.SGD)
    assert all(g["momentum"] == 0.8 and g["nesterov"] for g in optimizer.param_groups)
    with pytest.raises(pixcore.ConfigError, match="nesterov needs optimizer 'sgd'"):
        validate_config(TrainerConfig, {"nesterov": True})


def test_one_sgd_step_matches_the_formula() -> None:
    # SGD with momentum and L2 decay, first step: p <- p - lr * (g + wd * p).
    layer = nn.Linear(3, 2)
    model = nn.Module()
    model.layer = layer
    w0 = layer.weight.detach().clone().double()
    optimizer = build_optimizer(model, TrainerConfig(optimizer="sgd", lr=0.1, weight_decay=0.01))
    x = torch.ones(1, 3)
    layer(x).sum().backward()
    g = layer.weight.grad.detach().clone().double()
    optimizer.step()
    torch.testing.assert_close(layer.weight.detach().double(), w0 - 0.1 * (g + 0.01 * w0))


@pytest.mark.parametrize("schedule", ["constant", "cosine", "poly"])
def test_schedules_against_their_formulas(schedule: str) -> None:
    steps, warmup, power = 20, 4, 0.9
    config = TrainerConfig(lr=1.0, steps=steps, warmup_steps=warmup, schedule=schedule, poly_power=power)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, config)
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for step, lr in enumerate(seen):
        if step < warmup:
            expected = (step + 1) / warmup
        else:
            t = (step - warmup) / (steps - warmup)
            formulas = {"constant": 1.0, "cosine": (1 + math.cos(math.pi * t)) / 2, "poly": (1 - t) ** power}
            expected = formulas[schedule]
        assert lr == pytest.approx(expected), (schedule, step)
    if schedule != "constant":
        assert seen[warmup] == pytest.approx(1.0) and seen[-1] < seen[warmup + 1]


def test_freeze_backbone_keeps_weights_and_batchnorm_statistics(tmp_path: Any) -> None:
    model = _toy_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = DataLoader(train_toy.Squares(16), batch_size=4, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    val = DataLoader(train_toy.Squares(4, seed=1), batch_size=4)
    config = TrainerConfig(steps=4, lr=0.01, freeze_backbone=True, progress=False, device="cpu",
                           eval_every=1)  # evaluation switches modes back and forth
    trainer = Trainer(model, config, loader, val, manager=train_toy.toy_manager())
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in model.backbone.parameters()}
    assert all(not p.requires_grad for p in model.backbone.parameters())
    trainer.fit()
    after = model.state_dict()
    backbone_keys = [k for k in before if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone_keys), "the toy backbone has BatchNorm"
    for key in backbone_keys:
        assert torch.equal(before[key], after[key]), f"{key} moved in a frozen backbone"
    assert not torch.equal(before["heads.brightness.output.weight"], after["heads.brightness.output.weight"])


def test_freeze_backbone_of_a_model_without_one_is_an_error() -> None:
    loader = DataLoader(train_toy.Squares(8), batch_size=4)
    with pytest.raises(pixcore.PixcoreError, match="no `backbone` module"):
        Trainer(nn.Linear(2, 2), TrainerConfig(freeze_backbone=True, device="cpu"), loader)  # type: ignore[arg-type]
