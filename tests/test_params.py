"""Parameters are declared once, in the factory's signature (``pixcore.plugin._params``).

The model is derived from the signature (types, defaults, ``Annotated`` constraints,
docstring descriptions); context facts reach every factory whose signature declares
them, whichever model validates the user's parameters; cross-field rules run through
``check_params``; every first-party component declares its parameters this way.
"""

from __future__ import annotations

import functools
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import pixcore
import pytest
import torch
from pixcore import Component, ComponentNamespace, Registry
from pixcore.plugin._params import params_model
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

if TYPE_CHECKING:
    from collections.abc import Sequence as OnlyForTypeCheckers

PLUGINS_MD = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def registry_with(*records: Component, family: str = "losses") -> Registry:
    reg: Registry = Registry(family)
    for record in records:
        reg.register(record)
    return reg


# --------------------------------------------------------------------------------------
# Toy components
# --------------------------------------------------------------------------------------


class ToyHead(pixcore.Head):
    """A 1x1 conv over the finest level.

    Args:
        in_features: The backbone's feature levels (given by pixcore).
        out_channels: Raw output channels (given by the task).
        scale: Factor on the output.
        width: Hidden width, e.g. 8 or 16.

    """

    def __init__(
        self,
        in_features: list[pixcore.FeatureLevel],
        out_channels: int,
        scale: Annotated[float, Field(gt=0)] = 1.0,
        width: Annotated[int, Field(ge=1, description="Overrides the docstring.")] = 4,
    ) -> None:
        super().__init__()
        self.in_features, self.out_channels, self.scale, self.width = (
            in_features, out_channels, scale, width
        )
        self.output = nn.Conv2d(in_features[0].channels, out_channels, 1)

    def forward(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        return self.scale * self.output(features[0])


class IgnoringLoss(pixcore.Loss):
    """Counts the pixels it keeps; declares the task fact ``ignore_index``."""

    def __init__(self, ignore_index: int = 255, gain: float = 1.0) -> None:
        super().__init__()
        self.ignore_index, self.gain = ignore_index, gain

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        kept = (valid & (target != self.ignore_index)).sum().float()
        return pixcore.LossOutput(self.gain * kept + 0.0 * prediction.sum())


class GainParams(BaseModel):
    """An explicit model with the constraint only: it does not list ``ignore_index``."""

    model_config = ConfigDict(extra="forbid")
    gain: float = Field(1.0, gt=0)


class RangeLoss(pixcore.Loss):
    """Two parameters with a rule between them, and a fact.

    Args:
        low: Lower end.
        high: Upper end, above ``low``.
        num_classes: Given by the task.

    """

    def __init__(self, low: float = 0.0, high: float = 1.0, num_classes: int | None = None) -> None:
        super().__init__()
        self.check_params(low, high)
        self.low, self.high, self.num_classes = low, high, num_classes

    @staticmethod
    def check_params(low: float, high: float) -> None:
        if high <= low:
            raise ValueError(f"high ({high}) must be greater than low ({low})")

    def forward(self, prediction: Tensor, target: Tensor, valid: Tensor) -> pixcore.LossOutput:
        return pixcore.LossOutput(prediction.sum() * 0.0)


class Unresolvable:
    """One annotation names a type that exists only for type checkers."""

    def __init__(
        self, items: OnlyForTypeCheckers[int] | None = None,
        count: Annotated[int, Field(ge=1)] = 1,
    ) -> None:
        self.items, self.count = items, count


# --------------------------------------------------------------------------------------
# The four cases of the issue
# --------------------------------------------------------------------------------------


def test_explicit_model_passes_facts_the_signature_declares() -> None:
    # docs/plugins.md's old FPNParams advice: an explicit model of the own parameters only.
    class ToyHeadParams(BaseModel):
        model_config = ConfigDict(extra="forbid")
        scale: float = Field(1.0, gt=0)

    heads = registry_with(Component("toy", ToyHead, params=ToyHeadParams), family="heads")
    levels = [pixcore.FeatureLevel(8, 4)]
    head = heads.create("toy", {"scale": 2.0}, context={"in_features": levels, "out_channels": 3})
    assert (head.in_features, head.out_channels, head.scale) == (levels, 3, 2.0)
    with pytest.raises(pixcore.ConfigError) as info:
        heads.validate("toy", {"width": 2}, context={"in_features": levels, "out_channels": 3})
    assert "Accepted parameters: scale." in str(info.value)  # the model is the user schema


def test_derived_model_enforces_annotated_constraints() -> None:
    heads = registry_with(Component("toy", ToyHead), family="heads")
    context = {"in_features": [pixcore.FeatureLevel(8, 4)], "out_channels": 1}
    with pytest.raises(pixcore.ConfigError) as info:
        heads.create("toy", {"scale": -5}, path="model.tasks.t.head.params", context=context)
    message = str(info.value)
    assert "model.tasks.t.head.params.scale: Input should be greater than 0 (got -5)" in message
    assert "Accepted parameters: scale, width." in message  # facts are not listed
    assert heads.create("toy", {"scale": 0.5}, context=context).scale == 0.5


def test_task_fact_reaches_a_loss_whose_model_lacks_it(manager: pixcore.PluginManager) -> None:
    class LossPlugin:
        @pixcore.hookimpl
        def pixcore_losses(self) -> Iterator[Component]:
            yield Component("ignoring", IgnoringLoss, params=GainParams)

    manager.register(LossPlugin(), name="loss-plugin")
    model = pixcore.build_model(
        "test_tiny",
        {"c": {"task": "test_classes", "params": {"num_classes": 4, "ignore_index": 7},
               "loss": {"name": "ignoring", "params": {"gain": 2.0}}}},
        manager=manager,
    )
    loss = model.losses["c"]
    assert (loss.ignore_index, loss.gain) == (7, 2.0)  # the task's 7, not the default 255


def test_a_user_parameter_overrides_a_fact_and_is_validated() -> None:
    heads = registry_with(Component("toy", ToyHead), family="heads")
    context = {"in_features": [pixcore.FeatureLevel(8, 4)], "out_channels": 1, "scale": 3.0}
    assert heads.create("toy", {}, context=context).scale == 3.0  # a fact fills it in
    assert heads.create("toy", {"scale": 0.25}, context=context).scale == 0.25  # the user wins
    with pytest.raises(pixcore.ConfigError, match=r"x\.params\.scale: Input should be greater"):
        heads.create("toy", {"scale": 0}, context=context, path="x.params")


# --------------------------------------------------------------------------------------
# The derived model
# --------------------------------------------------------------------------------------


def test_adding_a_parameter_to_a_head_is_one_line() -> None:
    class ToyHeadWithBias(ToyHead):
        def __init__(self, in_features: list[pixcore.FeatureLevel], out_channels: int,
                     bias: Annotated[float, Field(ge=0)] = 0.5) -> None:  # the new line
            super().__init__(in_features, out_channels)
            self.bias = bias

    heads = registry_with(Component("toy", ToyHeadWithBias), family="heads")
    context = {"in_features": [pixcore.FeatureLevel(8, 4)], "out_channels": 1}
    assert heads.create("toy", {}, context=context).bias == 0.5
    assert heads.create("toy", {"bias": "2"}, context=context).bias == 2.0
    with pytest.raises(pixcore.ConfigError, match="bias: Input should be greater than or equal"):
        heads.create("toy", {"bias": -1}, context=context)


def test_descriptions_come_from_the_docstring_unless_the_annotation_has_one() -> None:
    fields = params_model(Component("toy", ToyHead)).model_fields
    assert fields["scale"].description == "Factor on the output."
    assert fields["width"].description == "Overrides the docstring."
    assert fields["in_features"].description == "The backbone's feature levels (given by pixcore)."
    assert fields["in_features"].is_required() and fields["scale"].default == 1.0


def test_multi_line_docstring_entries_are_joined() -> None:
    def factory(alpha: int = 1, beta: int = 2) -> None:
        """Make nothing.

        Args:
            alpha: First line,
                second line.
            beta (int): Typed entry.

        Returns:
            None.

        """

    fields = params_model(Component("f", factory)).model_fields
    assert fields["alpha"].description == "First line, second line."
    assert fields["beta"].description == "Typed entry."


def test_partial_factories_keep_the_wrapped_class_constraints() -> None:
    # A namespace resolves names to functools.partial(cls, name): the constraints still hold.
    factory = functools.partial(ToyHead, out_channels=2)
    heads = registry_with(Component("toy", factory), family="heads")
    with pytest.raises(pixcore.ConfigError, match="width: Input should be greater than or equal"):
        heads.validate("toy", {"width": 0}, context={"in_features": [pixcore.FeatureLevel(8, 4)]})


def test_an_unresolvable_annotation_does_not_drop_the_other_constraints() -> None:
    reg = registry_with(Component("thing", Unresolvable))
    assert reg.validate("thing", {"items": [1]}) == {"items": [1], "count": 1}
    with pytest.raises(pixcore.ConfigError, match="count: Input should be greater than or equal"):
        reg.validate("thing", {"count": 0})


def test_a_parameter_named_like_a_model_method() -> None:
    def opener(root: str, validate: str = "full") -> tuple[str, str]:
        return root, validate

    reg = registry_with(Component("opener", opener), family="datasets")
    assert reg.create("opener", {"root": "r", "validate": "off"}) == ("r", "off")


# --------------------------------------------------------------------------------------
# Cross-field rules
# --------------------------------------------------------------------------------------


def test_check_params_errors_name_the_config_path() -> None:
    reg = registry_with(Component("range", RangeLoss))
    with pytest.raises(pixcore.ConfigError) as info:
        # validate alone (metrics are validated when the model is built) runs the rule too
        reg.validate("range", {"low": 2.0}, path="model.tasks.t.loss.params")
    message = str(info.value)
    assert "model.tasks.t.loss.params: high (1.0) must be greater than low (2.0)" in message
    assert "Accepted parameters: high, low, num_classes." in message
    with pytest.raises(ValueError, match="must be greater"):
        RangeLoss(low=2.0)  # direct construction checks the same rule
    assert reg.create("range", {"high": 5.0}, context={"num_classes": 3}).num_classes == 3


# --------------------------------------------------------------------------------------
# First-party components and the docs
# --------------------------------------------------------------------------------------


def _first_party_records() -> Iterator[tuple[str, Component]]:
    manager = pixcore.PluginManager(strict=True)
    for family in pixcore.FAMILIES:
        registry = manager.registry(family)
        for record in registry.records():
            if isinstance(record, ComponentNamespace):  # one resolved name stands for all
                record = registry.get(next(iter(record.list_names(record.prefix + "*"))))
            yield family, record


def test_first_party_components_declare_parameters_only_in_their_signature() -> None:
    twice = [f"{family}/{c.name}" for family, c in _first_party_records() if c.params is not None]
    assert not twice, f"these register a params model besides their signature: {twice}"


def test_no_first_party_module_defines_a_params_class() -> None:
    root = Path(__file__).resolve().parents[1]
    sources = [*(root / "core/pixcore").rglob("*.py"), *(root / "plugins").glob("*/src/**/*.py")]
    defined = [
        f"{path.relative_to(root)}: {match.group(1)}"
        for path in sources
        for match in re.finditer(r"^class (\w+Params)\(", path.read_text(encoding="utf-8"), re.M)
    ]
    assert not defined, defined


def _parameters_section() -> str:
    text = PLUGINS_MD.read_text(encoding="utf-8")
    start = text.index("### Parameter validation")
    return text[start : text.index("\n## ", start)]


def test_the_docs_parameter_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"^```python\n(.*?)^```$", _parameters_section(), flags=re.M | re.S)
    assert blocks, "the parameters section of docs/plugins.md has no python example"
    module = types.ModuleType("pixcore_docs_parameters_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile("\n".join(blocks), f"{PLUGINS_MD} (parameters)", "exec"), module.__dict__)
    manager = pixcore.PluginManager(autoload=False, strict=True)
    manager.register(module, name="docs-example")
    heads = manager.registry("heads")
    levels = [pixcore.FeatureLevel(8, 4), pixcore.FeatureLevel(16, 8)]
    facts = {"in_features": levels, "out_channels": 2}
    head = heads.create("my_fpn", {"channels": 16}, context=facts)
    out = head([torch.zeros(1, 8, 8, 8), torch.zeros(1, 16, 4, 4)], (32, 32))
    assert out.shape == (1, 2, 32, 32)
    with pytest.raises(pixcore.ConfigError, match=r"channels: Input should be greater than or"):
        heads.validate("my_fpn", {"channels": 4}, context=facts)
    losses = manager.registry("losses")
    context = {"num_classes": 3, "ignore_index": 255}
    with pytest.raises(pixcore.ConfigError, match="x: class_weights has 2 entries for 3 classes"):
        losses.validate("weighted_ce", {"class_weights": [1.0, 2.0]}, context=context, path="x")
    loss = losses.create("weighted_ce", {"class_weights": [1.0, 2.0, 0.5]}, context=context)
    target = torch.tensor([[[0, 1], [2, 1]]])
    out = loss(torch.zeros(1, 3, 2, 2), target, torch.ones(1, 2, 2, dtype=torch.bool))
    assert out.total.item() == pytest.approx(torch.log(torch.tensor(3.0)).item())
