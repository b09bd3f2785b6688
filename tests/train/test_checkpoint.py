"""Checkpoints: round trip, atomic writes, refusal of pickles, clear errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from pixcore.train import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from pixcore.train import _checkpoint as checkpoint_module


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def _trained(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = _model(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(2, 3, 8, 8)).square().mean().backward()
        optimizer.step()
    return model, optimizer


def test_round_trip_restores_weights_optimizer_and_metadata(tmp_path: Path) -> None:
    model, optimizer = _trained(0)
    path = save_checkpoint(tmp_path / "c.safetensors", model, optimizer, metadata={"step": 3, "config": {"a": [1, 2]}})
    fresh = _model(1)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1.0)
    report = load_checkpoint(path, fresh, fresh_optimizer)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    original, restored = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert restored["param_groups"][0]["lr"] == pytest.approx(1e-2)
    for pid, state in original["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(restored["state"][pid][key])), key
    assert report.metadata["step"] == 3 and report.metadata["config"] == {"a": [1, 2]}
    assert read_metadata(path)["format"] == 1


def test_rng_state_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(123)
    path = save_checkpoint(tmp_path / "c.safetensors", _model(0))
    expected = torch.rand(5)
    torch.manual_seed(999)
    load_checkpoint(path, restore_rng=True)
    assert torch.equal(torch.rand(5), expected)


def test_a_crash_during_save_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.safetensors"
    good, _ = _trained(0)
    save_checkpoint(path, good, metadata={"step": 1})

    real_save = checkpoint_module.save_file

    def dies_half_way(tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str]) -> None:
        real_save(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as handle:  # a torn write, then the process "dies"
            handle.truncate(os.path.getsize(filename) // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module, "save_file", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _model(5), metadata={"step": 2})

    restored = _model(7)
    report = load_checkpoint(path, restored)
    assert report.metadata["step"] == 1
    assert all(torch.equal(a, b) for a, b in zip(good.state_dict().values(), restored.state_dict().values()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"], "no temporary file left"


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch pwned",))


def test_a_pickle_is_refused_not_executed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"model.weight": _Exploit()}))
    with pytest.raises(CheckpointError, match="evil.safetensors"):
        load_checkpoint(path, _model(0))
    assert not (tmp_path / "pwned").exists()


def test_missing_and_mismatched_checkpoints_explain_themselves(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors", _model(0))
    path = save_checkpoint(tmp_path / "c.safetensors", _model(0))
    other = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(CheckpointError, match="missing keys|unexpected keys"):
        load_checkpoint(path, other)
    report = load_checkpoint(path, other, strict=False)
    assert "1.weight" in report.unexpected_keys
