"""Pretrained weights from local files (report, safety, renaming) and the three recipes."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pixcore
import pytest
import torch
import train_toy
from pixcore import RunConfig, TrainerConfig
from pixcore.train import CheckpointError, load_pretrained, train
from pixcore.train._pretrained import check_recipe
from safetensors.torch import save_file


def _model(seed: int = 0) -> pixcore.MultiTaskModel:
    torch.manual_seed(seed)
    return pixcore.build_model_from_config(train_toy.run_config()["model"], manager=train_toy.toy_manager())


def _config(**changes: Any) -> RunConfig:
    config = train_toy.run_config(steps=2, length=8)
    config["model"].update(changes.pop("model", {}))
    config["trainer"].update(changes)
    return RunConfig.model_validate(config)


def test_report_lists_missing_unexpected_and_mismatched_keys(tmp_path: Path) -> None:
    source = {k: v.clone() for k, v in _model(seed=1).state_dict().items()}
    del source["heads.brightness.output.bias"]                        # missing
    source["heads.brightness.extra.weight"] = torch.ones(2, 2)        # unexpected
    source["backbone.b.0.weight"] = torch.ones(8, 8, 1, 1)           # wrong shape (model: 8x8x3x3)
    path = tmp_path / "weights.safetensors"
    save_file(source, str(path))

    model = _model(seed=0)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_pretrained(model, path)
    assert report.missing == ["heads.brightness.output.bias"]
    assert report.unexpected == ["heads.brightness.extra.weight"]
    assert report.mismatched == [("backbone.b.0.weight", (8, 8, 1, 1), (8, 8, 3, 3))]
    assert not report.complete
    state = model.state_dict()
    for key in initial:
        if key in ("heads.brightness.output.bias", "backbone.b.0.weight"):
            assert torch.equal(state[key], initial[key]), f"{key} must keep its initial value"
        else:
            assert torch.equal(state[key], source[key]), f"{key} was not loaded"
    skipped = {"heads.brightness.output.bias", "backbone.b.0.weight"}
    assert sorted(report.loaded) == sorted(set(initial) - skipped)
    text = report.summary()
    for key in ("heads.brightness.output.bias", "heads.brightness.extra.weight", "backbone.b.0.weight"):
        assert key in text
    assert "[8, 8, 1, 1] vs [8, 8, 3, 3]" in text

    with pytest.raises(CheckpointError, match="strict"):
        load_pretrained(_model(), path, strict=True)


class _Exploit:
    """Unpickling this would create a folder: what a malicious checkpoint could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (str(self.marker),)


def test_a_torch_checkpoint_that_needs_unpickling_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"backbone.a.0.weight": torch.zeros(1)}, "payload": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused to load.*weights_only=True"):
        load_pretrained(_model(), path)
    assert not marker.exists(), "the pickled code must not run"


def test_nested_ddp_torch_checkpoint_prefix_and_remap(tmp_path: Path) -> None:
    donor = _model(seed=3)
    # A DDP-saved training checkpoint: {"state_dict": {"module.<key>": ...}, "epoch": 7}.
    path = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in donor.state_dict().items()}, "epoch": 7}, path)
    model = _model()
    report = load_pretrained(model, path)
    assert report.complete
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), donor.state_dict().values(), strict=True))

    # An encoder saved by another library, keys "encoder.<name>" plus a decoder: take the
    # encoder as the backbone, renaming its stages.
    encoder = {k[len("backbone."):]: v for k, v in donor.state_dict().items() if k.startswith("backbone.")}
    other = {"encoder." + ("stem." + k[2:] if k.startswith("a.") else k): v for k, v in encoder.items()}
    other["decoder.conv.weight"] = torch.zeros(3, 3)
    path = tmp_path / "encoder.safetensors"
    save_file(other, str(path))
    model = _model()
    heads_before = {k: v.clone() for k, v in model.heads.state_dict().items()}
    report = load_pretrained(model, path, part="backbone", prefix="encoder.", remap={"stem.": "a."})
    assert report.complete, report.summary()
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in encoder.items())
    assert all(torch.equal(model.heads.state_dict()[k], v) for k, v in heads_before.items())


def test_pixcore_checkpoint_into_the_backbone_through_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manager = train_toy.toy_manager()
    donor, _ = train(_config(), tmp_path / "donor", manager)
    checkpoint = tmp_path / "donor" / "checkpoint.safetensors"
    pretrained = {"path": str(checkpoint), "part": "backbone"}
    config = _config(steps=1, lr=1e-12, model={"pretrained": pretrained}, recipe="finetune")
    trainer, _ = train(config, None, manager)
    report = trainer.pretrained_report
    assert report is not None and report.complete and report.part == "backbone"
    assert f"pretrained weights {checkpoint} -> model.backbone" in capsys.readouterr().err
    # lr 1e-12: one step leaves the loaded weights where they were (to float precision).
    trained = dict(trainer.model.backbone.named_parameters())
    for key, value in donor.model.backbone.named_parameters():
        torch.testing.assert_close(trained[key], value, msg=key)
    # finetune: the backbone at a tenth of the rate.
    assert sorted({round(g["lr_scale"], 9) for g in trainer.optimizer.param_groups}) == [0.1, 1.0]

    # A plain string is short for {path: ...} (into the whole model).
    short = pixcore.ModelConfig.model_validate({**config.model.model_dump(), "pretrained": str(checkpoint)})
    assert short.pretrained is not None
    assert (short.pretrained.path, short.pretrained.part) == (str(checkpoint), "model")


def test_recipes_expand_and_explicit_settings_win() -> None:
    assert TrainerConfig(recipe="linear_probe").freeze_backbone is True
    assert TrainerConfig(recipe="finetune").backbone_lr_mult == 0.1
    assert TrainerConfig(recipe="finetune", backbone_lr_mult=0.5).backbone_lr_mult == 0.5
    assert TrainerConfig(recipe="linear_probe", freeze_backbone=False).freeze_backbone is False
    scratch = TrainerConfig(recipe="scratch")
    assert (scratch.freeze_backbone, scratch.backbone_lr_mult) == (False, 1.0)


def test_recipes_check_the_pretrained_weights(tmp_path: Path) -> None:
    weights = {"path": str(tmp_path / "w.safetensors"), "part": "backbone"}
    for recipe in ("linear_probe", "finetune"):
        with pytest.raises(pixcore.ConfigError, match=f"recipe='{recipe}' starts from pretrained weights"):
            check_recipe(_config(recipe=recipe))
    with pytest.raises(pixcore.ConfigError, match="recipe='scratch'.*remove them"):
        check_recipe(_config(recipe="scratch", model={"pretrained": weights}))
    # A backbone's own pretrained file counts as pretrained weights too.
    config = _config(recipe="finetune")
    config.model.backbone.params["pretrained"] = "resnet18.safetensors"
    check_recipe(config)
    with pytest.warns(UserWarning, match="head: linear"):
        check_recipe(_config(recipe="linear_probe", model={"pretrained": weights}))
    linear = _config(recipe="linear_probe", model={"pretrained": weights})
    linear.model.tasks["brightness"].head = pixcore.ComponentConfig(name="linear")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_recipe(linear)  # linear heads: nothing to warn about


def test_scratch_skips_weights_marked_on_scratch_skip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One config for every recipe: `on_scratch: skip` leaves the weights out of scratch runs only."""
    manager = train_toy.toy_manager()
    donor, _ = train(_config(), tmp_path / "donor", manager)
    weights = {"path": str(tmp_path / "donor" / "checkpoint.safetensors"), "part": "backbone", "on_scratch": "skip"}
    scratch = _config(steps=1, lr=1e-12, recipe="scratch", model={"pretrained": weights})
    check_recipe(scratch)  # no error: the weights are skipped
    trainer, _ = train(scratch, None, manager)
    assert trainer.pretrained_report is None
    assert "not loaded: trainer.recipe='scratch'" in capsys.readouterr().err
    # The backbone is the default initialisation of this seed, not the donor's.
    fresh = _model(seed=0).backbone.state_dict()
    for key, value in trainer.model.backbone.named_parameters():
        torch.testing.assert_close(value, fresh[key], msg=key)
        assert not torch.equal(value, donor.model.backbone.state_dict()[key]), key
    # The other recipes still load them.
    finetune, _ = train(_config(steps=1, lr=1e-12, recipe="finetune", model={"pretrained": weights}), None, manager)
    assert finetune.pretrained_report is not None and finetune.pretrained_report.complete
    # A backbone's own file cannot be skipped; without `skip`, scratch refuses as before.
    with_file = _config(recipe="scratch", model={"pretrained": weights})
    with_file.model.backbone.params["pretrained"] = "resnet18.safetensors"
    with pytest.raises(pixcore.ConfigError, match=r"configured \(the backbone's `pretrained`\)"):
        check_recipe(with_file)
    with pytest.raises(pixcore.ConfigError, match="on_scratch: skip"):
        check_recipe(_config(recipe="scratch", model={"pretrained": {**weights, "on_scratch": "refuse"}}))


def test_unreadable_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained(_model(), tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.bin: cannot read it as a torch checkpoint"):
        load_pretrained(_model(), junk)
    listed = tmp_path / "list.pt"
    torch.save({"optimizer": {"lr": 0.1}, "epoch": 3}, listed)
    with pytest.raises(CheckpointError, match="found no state dict.*'epoch', 'optimizer'"):
        load_pretrained(_model(), listed)


@pytest.mark.parametrize(("content", "expected"), [
    (b"", "is empty (0 bytes)"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{", "is truncated: 9 bytes, but its header alone needs 24"),
    ((1 << 40).to_bytes(8, "little") + b"{}", "is not a safetensors file: its first 8 bytes"),
])
def test_a_damaged_safetensors_file_says_what_is_wrong(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "weights.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_pretrained(_model(), path)
    assert str(info.value).startswith(f"{path} {expected}")
