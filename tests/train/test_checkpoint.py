"""Checkpoints: round trip, atomic writes, refusal of pickles, clear errors, file permissions."""

from __future__ import annotations

import errno
import os
import pickle
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from pixcore.train import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from pixcore.train import _checkpoint as checkpoint_module
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn


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
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
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
    assert all(
        torch.equal(a, b) for a, b in zip(good.state_dict().values(), restored.state_dict().values(), strict=True)
    )
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


# -- files that are not usable checkpoints say what they are ---------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (lambda good: b"", r"is empty \(0 bytes\)"),
        (lambda good: good[:5], r"is truncated: 5 bytes, fewer than the 8"),
        (lambda good: good[:100], r"is truncated: 100 bytes, but its header alone needs \d+"),
        (lambda good: good[:-10], r"is truncated: \d+ bytes of the \d+ its header describes"),
        (lambda good: bytes(range(256)) * 4, r"is not a safetensors file: its first 8 bytes.*say \d+ bytes"),
        (lambda good: (1 << 40).to_bytes(8, "little") + b"{}", r"say 1099511627776 bytes, more than"),
        (lambda good: (6).to_bytes(8, "little") + b"{oops}", r"is damaged: it does not start with the JSON"),
    ],
    ids=["empty", "shorter-than-8", "truncated-header", "truncated-data", "random", "huge-header", "bad-json"],
)
def test_a_damaged_checkpoint_is_described(
    tmp_path: Path, content: Callable[[bytes], bytes], expected: str
) -> None:
    good = save_checkpoint(tmp_path / "good.safetensors", _model(0)).read_bytes()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content(good))
    for read in (read_metadata, lambda p: load_checkpoint(p, _model(0))):
        with pytest.raises(CheckpointError) as info:
            read(path)
        message = str(info.value)
        assert message.startswith(f"{path} ")
        assert re.search(expected, message), message
        assert "not a usable pixcore checkpoint" in message and "copy it again" in message


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy-pickle"])
def test_a_torch_checkpoint_is_recognised_and_pointed_to_model_pretrained(tmp_path: Path, zipped: bool) -> None:
    path = tmp_path / "weights.pt"
    torch.save(_model(0).state_dict(), path, _use_new_zipfile_serialization=zipped)
    with pytest.raises(CheckpointError) as info:
        read_metadata(path)
    assert str(info.value) == (
        f"{path} is a torch checkpoint (.pt), not a pixcore checkpoint (.safetensors). To start "
        f"training from its weights, use model.pretrained: {path} in the run config"
    )


def test_a_run_folder_given_as_checkpoint_points_to_the_file_inside(tmp_path: Path) -> None:
    inside = save_checkpoint(tmp_path / "run" / "checkpoint.safetensors", _model(0))
    with pytest.raises(CheckpointError, match=f"is a folder, not a checkpoint file; did you mean {inside}"):
        read_metadata(tmp_path / "run")


@pytest.mark.parametrize(("text", "expected"), [
    ("{not json", r"its pixcore metadata \(the header entry 'pixcore'\) is not valid JSON \(Expecting"),
    ("[1, 2]", r"its pixcore metadata is a JSON list, not an object"),
])
def test_metadata_that_is_not_a_json_object_names_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "odd.safetensors"
    save_file({"model.w": torch.zeros(2)}, str(path), metadata={"pixcore": text})
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: {expected}"):
        read_metadata(path)


# -- writing: a full disk, and the permissions of the file -----------------------------------


def _no_space_os(tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str]) -> None:
    Path(filename).write_bytes(b"half a checkpoint")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)


def _no_space_safetensors(tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str]) -> None:
    Path(filename).write_bytes(b"half a checkpoint")
    raise SafetensorError(
        f'Error while serializing: I/O error: No space left on device (os error 28) at path "{filename}"'
    )


@pytest.mark.parametrize("writer", [_no_space_os, _no_space_safetensors], ids=["OSError", "SafetensorError"])
def test_a_full_disk_keeps_the_previous_checkpoint_and_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: Callable[..., None]
) -> None:
    path = save_checkpoint(tmp_path / "c.safetensors", _model(0), metadata={"step": 1})
    monkeypatch.setattr(checkpoint_module, "save_file", writer)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, _model(1), metadata={"step": 2})
    message = str(info.value)
    assert message.startswith(f"cannot write the checkpoint {path}: No space left on device. ")
    assert re.search(r"[\d,.]+ MB are free on that disk and the checkpoint needs about [\d.]+ MB", message)
    assert "previous checkpoint at that path, if any, is unchanged" in message
    assert "Free disk space, or write the run to another folder (--out)" in message
    assert read_metadata(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"], "the temporary file is removed"


def test_a_safetensors_error_that_is_not_about_the_disk_is_not_disguised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str]) -> None:
        raise SafetensorError("Some tensors share memory")

    monkeypatch.setattr(checkpoint_module, "save_file", bug)
    with pytest.raises(SafetensorError, match="share memory"):
        save_checkpoint(tmp_path / "c.safetensors", _model(0))


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_checkpoint_gets_the_permissions_of_any_new_file(tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    checkpoint_module._umask.cache_clear()
    try:
        path = save_checkpoint(tmp_path / "c.safetensors", _model(0))
    finally:
        os.umask(previous)
        checkpoint_module._umask.cache_clear()
    assert stat.S_IMODE(path.stat().st_mode) == mode
