"""load_model: a model rebuilt from its checkpoint alone, trained or EMA weights."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pixcore
import pytest
import torch
from pixcore.infer import load_model
from pixcore.train import CheckpointError, ModelEMA, save_checkpoint

MODEL_CONFIG: dict[str, Any] = {
    "backbone": {"name": "test_tiny", "params": {"width": 4}},
    "tasks": {"height": {"task": "test_height"}, "classes": {"task": "test_classes"}},
}


def _run_config(model: dict[str, Any] = MODEL_CONFIG) -> dict[str, Any]:
    return pixcore.RunConfig.model_validate(
        {"model": model, "data": {"train": "synthetic"}}
    ).model_dump(mode="json")


def _trained(manager: pixcore.PluginManager, seed: int = 0) -> pixcore.MultiTaskModel:
    torch.manual_seed(seed)
    return pixcore.build_model_from_config(MODEL_CONFIG, manager=manager)


def _save_with_ema(path: Path, model: pixcore.MultiTaskModel, ema_eval: bool) -> dict[str, torch.Tensor]:
    """A checkpoint of a run with a moving average whose every float weight is model + 0.5."""
    ema = ModelEMA(model, 0.9)
    with torch.no_grad():
        for value in ema.module.state_dict().values():
            if value.is_floating_point():
                value.add_(0.5)
    config = _run_config()
    config["trainer"].update(ema_decay=0.9, ema_eval=ema_eval)
    save_checkpoint(path, model, metadata={"config": config, "ema_decay": 0.9}, ema=ema.averaged)
    return {k: v.clone() for k, v in ema.module.state_dict().items()}


def test_the_loaded_model_predicts_what_the_saved_one_did(
    tmp_path: Path, manager: pixcore.PluginManager
) -> None:
    model = _trained(manager).eval()
    path = save_checkpoint(tmp_path / "c.safetensors", model, metadata={"config": _run_config()})
    loaded = load_model(path, manager=manager)
    assert isinstance(loaded, pixcore.MultiTaskModel) and not loaded.training
    assert set(loaded.bindings) == {"height", "classes"}
    image = torch.randint(0, 256, (1, 3, 20, 28), dtype=torch.uint8)
    with torch.no_grad():
        expected, got = model(image), loaded(image)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)


def test_a_checkpoint_with_only_a_model_config_loads(
    tmp_path: Path, manager: pixcore.PluginManager
) -> None:
    model = _trained(manager)
    path = save_checkpoint(tmp_path / "c.safetensors", model, metadata={"model_config": MODEL_CONFIG})
    loaded = load_model(path, manager=manager)
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())


def test_a_checkpoint_without_a_config_is_refused_with_the_fix(
    tmp_path: Path, manager: pixcore.PluginManager
) -> None:
    path = save_checkpoint(tmp_path / "c.safetensors", _trained(manager))
    with pytest.raises(CheckpointError, match="no model configuration") as error:
        load_model(path, manager=manager)
    assert "load_checkpoint" in str(error.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors", manager=manager)


@pytest.mark.parametrize(
    ("weights", "ema_eval", "uses_ema"),
    [
        ("model", True, False),
        ("ema", False, True),
        ("auto", False, False),  # a moving average was kept, but the run evaluated without it
        ("auto", True, True),
    ],
)
def test_ema_weights_are_chosen_by_flag_or_by_what_evaluation_used(
    tmp_path: Path, manager: pixcore.PluginManager, weights: str, ema_eval: bool, uses_ema: bool
) -> None:
    model = _trained(manager)
    path = tmp_path / "c.safetensors"
    ema = _save_with_ema(path, model, ema_eval)
    loaded = load_model(path, weights=weights, manager=manager)  # type: ignore[arg-type]
    state = loaded.state_dict()
    for key, value in model.state_dict().items():
        expected = ema[key] if uses_ema else value
        torch.testing.assert_close(state[key], expected, rtol=0, atol=0, msg=key)
    assert any(not torch.equal(ema[k], v) for k, v in model.state_dict().items())


def test_asking_for_missing_ema_weights_is_an_error(tmp_path: Path, manager: pixcore.PluginManager) -> None:
    metadata = {"config": _run_config()}
    path = save_checkpoint(tmp_path / "c.safetensors", _trained(manager), metadata=metadata)
    with pytest.raises(CheckpointError, match="--weights model"):
        load_model(path, weights="ema", manager=manager)


def test_a_pretrained_weights_file_is_not_needed_to_load(
    tmp_path: Path, manager: pixcore.PluginManager, components: SimpleNamespace
) -> None:
    class NeedsFile(components.TinyTestBackbone):  # type: ignore[misc, name-defined]
        def __init__(self, width: int = 4, pretrained: bool | str = False) -> None:
            if pretrained and not Path(str(pretrained)).is_file():
                raise FileNotFoundError(pretrained)
            super().__init__(width)

    class Plugin:
        @pixcore.hookimpl
        def pixcore_backbones(self) -> Iterator[pixcore.Component]:
            yield pixcore.Component("test_needs_file", NeedsFile)

    manager.register(Plugin(), name="needs-file")
    weights_file = tmp_path / "backbone.bin"
    weights_file.write_bytes(b"")
    backbone = {"name": "test_needs_file", "params": {"pretrained": str(weights_file)}}
    config = {**MODEL_CONFIG, "backbone": backbone}
    model = pixcore.build_model_from_config(config, manager=manager)
    path = save_checkpoint(tmp_path / "c.safetensors", model, metadata={"config": _run_config(config)})
    weights_file.unlink()  # the weights are in the checkpoint; the file is gone
    loaded = load_model(path, manager=manager)
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())
