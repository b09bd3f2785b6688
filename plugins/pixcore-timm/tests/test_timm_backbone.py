"""timm models as backbones: contract, lazy listing, local pretrained weights, freezing."""

from __future__ import annotations

import importlib.metadata
import re
import socket
import time
from pathlib import Path

import pixcore
import pytest
import safetensors.torch
import timm
import torch
from pixcore.testing import check_backbone, isolated_manager
from pixcore_timm import TimmBackbone
from pixcore_timm import _plugin as timm_plugin


@pytest.fixture
def backbones() -> pixcore.Registry:
    return isolated_manager(timm_plugin).registry("backbones")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: the hub is offline and any socket connection fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import timm.models._builder as builder

    monkeypatch.setattr(builder, "download_cached_file", refuse)
    monkeypatch.setattr(builder, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(builder, "load_state_dict_from_hf", refuse)


def test_resnet18_contract(backbones: pixcore.Registry) -> None:
    backbone = backbones.create("timm/resnet18")
    assert isinstance(backbone, TimmBackbone)
    assert [(f.channels, f.stride) for f in backbone.feature_info] == [
        (64, 4), (128, 8), (256, 16), (512, 32)
    ]
    check_backbone(backbone, sizes=((64, 64), (61, 83), (35, 33)))


@pytest.mark.parametrize(("name", "strides"), [
    ("timm/test_efficientnet", [4, 8, 16, 32]),
    ("timm/test_convnext", [4, 8, 16, 32]),
    ("timm/test_vit", [16, 16, 16, 16]),
])
def test_other_families(backbones: pixcore.Registry, name: str, strides: list[int]) -> None:
    backbone = backbones.create(name)
    assert [f.stride for f in backbone.feature_info] == strides
    check_backbone(backbone, sizes=((64, 64), (61, 83)))


def test_out_indices_and_drop_path(backbones: pixcore.Registry) -> None:
    backbone = backbones.create("timm/resnet18", {"out_indices": [1, 2], "drop_path_rate": 0.1})
    assert [(f.channels, f.stride) for f in backbone.feature_info] == [(64, 4), (128, 8)]
    check_backbone(backbone, sizes=((30, 41),))
    with pytest.raises(pixcore.ConfigError, match="out_indices"):
        backbones.create("timm/resnet18", {"out_indices": [7]})


def test_listing_is_lazy_and_fast(
    backbones: pixcore.Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("listing names must not create models")

    monkeypatch.setattr(timm, "create_model", refuse)
    start = time.perf_counter()
    names = backbones.list("timm/resnet1*")
    assert time.perf_counter() - start < 1.0
    assert "timm/resnet18" in names and "timm/resnet101" in names
    assert all(n.startswith("timm/resnet1") for n in names)
    assert len(backbones.list()) > 500  # every timm architecture, by name only
    assert "timm/resnet18" in backbones  # resolving does not create a model either


def test_unknown_name_lists_close_matches(backbones: pixcore.Registry) -> None:
    with pytest.raises(pixcore.UnknownComponentError, match="Did you mean 'timm/resnet18'"):
        backbones.get("timm/resnet181")
    assert "timm/resnet18.a1_in1k" in backbones  # pretrained tags resolve


def test_a_name_without_the_timm_prefix_suggests_it(backbones: pixcore.Registry) -> None:
    expected = r"unknown backbone 'resnet18'\. Did you mean 'timm/resnet18'\?"
    with pytest.raises(pixcore.UnknownComponentError, match=expected):
        backbones.get("resnet18")


def test_parameters_are_validated(backbones: pixcore.Registry) -> None:
    with pytest.raises(pixcore.ConfigError, match="out_index"):
        backbones.create("timm/resnet18", {"out_index": [1]})
    with pytest.raises(pixcore.ConfigError, match="drop_path_rate"):
        backbones.create("timm/resnet18", {"drop_path_rate": 2.0})


def test_pretrained_true_without_cached_weights_is_explained(
    backbones: pixcore.Registry, offline: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Loading from the caches: test_timm_pretrained_offline.py.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("TIMM_USE_OLD_CACHE", raising=False)
    with pytest.raises(pixcore.ConfigError, match="not in the local caches, and pixcore never downloads") as info:
        backbones.create("timm/resnet18", {"pretrained": True})
    message = str(info.value)
    assert str(tmp_path / "hub" / "models--timm--resnet18.a1_in1k") in message
    assert "timm.create_model('resnet18.a1_in1k', pretrained=True)" in message and "`pretrained`" in message
    with pytest.raises(pixcore.ConfigError, match="does not exist"):
        backbones.create("timm/resnet18", {"pretrained": "/no/such/weights.safetensors"})


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_from_a_local_file(
    backbones: pixcore.Registry, offline: None, tmp_path: Path, suffix: str
) -> None:
    source = timm.create_model("resnet18")
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file(source.state_dict(), str(path))
    else:
        torch.save({"state_dict": source.state_dict()}, path)
    backbone = backbones.create("timm/resnet18", {"pretrained": path})  # a Path or a str
    reference = source.state_dict()
    loaded = backbone.model.state_dict()
    assert len(loaded) > 50
    for key, value in loaded.items():
        assert torch.equal(value, reference[key]), key
    fresh = backbones.create("timm/resnet18")
    assert not torch.equal(fresh.model.state_dict()["conv1.weight"], reference["conv1.weight"])


def test_a_wrong_weights_file_is_explained(
    backbones: pixcore.Registry, offline: None, tmp_path: Path
) -> None:
    path = tmp_path / "other.safetensors"
    safetensors.torch.save_file({"something.weight": torch.zeros(2)}, str(path))
    with pytest.raises(pixcore.ConfigError, match="does not fit this architecture"):
        backbones.create("timm/resnet18", {"pretrained": str(path)})


@pytest.fixture(scope="module")
def resnet18_weights() -> dict[str, torch.Tensor]:
    return timm.create_model("resnet18").state_dict()


def _damaged(weights: dict[str, torch.Tensor], path: Path, variant: str) -> None:
    """Write ``path`` as one of the ways a weights file goes wrong."""
    if variant == "directory":
        path.mkdir()
        return
    if variant in ("wrong-shape", "missing-key"):
        changed = dict(weights)
        if variant == "wrong-shape":
            changed["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
        else:
            del changed["layer1.0.conv1.weight"]
        safetensors.torch.save_file(changed, str(path))
        return
    whole = safetensors.torch.save(weights)
    path.write_bytes({
        "empty": b"",
        "truncated": whole[: len(whole) // 2],
        "random-bytes": bytes(range(256)) * 64,
        "header-too-large": (1 << 40).to_bytes(8, "little") + b'{"a": 1}',
    }[variant])


@pytest.mark.parametrize(("variant", "expected"), [
    ("empty", r"is empty \(0 bytes\)"),
    ("truncated", r"is truncated: \d+ bytes of the \d+ its header describes"),
    ("random-bytes", r"is not a safetensors file"),
    ("header-too-large", r"header size, say 1099511627776 bytes, more than safetensors allows"),
    ("wrong-shape", r"size mismatch for layer1\.0\.conv1\.weight"),
    ("missing-key", r"does not fit this architecture: it lacks 1 weight\(s\) of the backbone "
                    r"\(layer1\.0\.conv1\.weight\)"),
    ("directory", r"does not exist \(or is not a file\)"),
])
def test_a_damaged_weights_file_names_the_file_and_the_problem(
    backbones: pixcore.Registry, offline: None, tmp_path: Path, resnet18_weights: dict[str, torch.Tensor],
    variant: str, expected: str,
) -> None:
    path = tmp_path / "resnet18.safetensors"
    _damaged(resnet18_weights, path, variant)
    with pytest.raises(pixcore.PixcoreError) as info:
        backbones.create("timm/resnet18", {"pretrained": str(path)})
    message = str(info.value)
    assert message.startswith("timm/resnet18: ") and str(path) in message
    assert re.search(expected, message), message


def test_freeze(backbones: pixcore.Registry) -> None:
    backbone = backbones.create("timm/resnet18", {"freeze": True})
    assert not any(p.requires_grad for p in backbone.parameters())
    check_backbone(backbone, sizes=((32, 32),))
    backbone.train()
    assert not backbone.model.training
    before = backbone.model.bn1.running_mean.clone()
    backbone(torch.randn(2, 3, 64, 64))
    assert torch.equal(backbone.model.bn1.running_mean, before)


def test_entry_point_is_declared() -> None:
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pixcore")}
    assert eps.get("timm") == "pixcore_timm._plugin"


def test_loading_the_plugin_does_not_import_timm() -> None:
    # pixcore reads every entry point at start; timm costs ~0.4 s and only backbones need it.
    import subprocess
    import sys

    code = "import sys, pixcore_timm._plugin; print('timm' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
