"""``pretrained: true`` and pretrained tags load timm's weights from the local caches, never the network.

Each test builds a cache in the real on-disk layout in ``tmp_path`` (the Hugging Face hub
cache: ``models--<org>--<name>/{blobs,snapshots,refs}``; timm's download cache:
``$TORCH_HOME/hub/checkpoints/<file of the url>``) holding randomly perturbed weights, and
points the environment at it only after pixcore, timm and huggingface_hub were imported:
the locations must be read at call time. Sockets are blocked and every attempt recorded.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pixcore
import pytest
import safetensors.torch
import timm
import torch
from pixcore.testing import isolated_manager
from pixcore_timm import _plugin as timm_plugin
from pixcore_timm._hub import Weights, resolve_weights
from torch import Tensor, nn

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RESNET18_URL_FILE = "resnet18_a1_0-d63eafa0.pth"  # basename of resnet18.a1_in1k's cfg url
SERESNET18_URL_FILE = "seresnet18-4bb0ce65.pth"  # legacy_seresnet18.in1k: a url and no hf_hub_id


@pytest.fixture
def backbones() -> pixcore.Registry:
    return isolated_manager(timm_plugin).registry("backbones")


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Block sockets and record every attempt; the test asserts the list stays empty.

    HF_HUB_OFFLINE is unset: pixcore must not need it to stay off the network.
    """
    attempts: list[str] = []

    def refuse(what: str) -> object:
        def refused(*args: object, **kwargs: object) -> None:
            attempts.append(f"{what}{args!r}")
            raise OSError(f"network access attempted: {what}")

        return refused

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    yield attempts
    assert attempts == [], f"network access attempted: {attempts}"


@pytest.fixture
def caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path]:
    """Empty hub and torch caches in tmp_path, set now through the environment: (hub, checkpoints)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "TIMM_USE_OLD_CACHE"):
        monkeypatch.delenv(variable, raising=False)
    hub = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return hub, tmp_path / "torch" / "hub" / "checkpoints"


def _perturbed(model_name: str, seed: int) -> dict[str, Tensor]:
    """The full model's state dict, moved away from any initialisation by seeded noise."""
    generator = torch.Generator().manual_seed(seed)
    weights: dict[str, Tensor] = {}
    for name, value in timm.create_model(model_name, pretrained=False).state_dict().items():
        if value.is_floating_point():
            noise = torch.randn(value.shape, generator=generator)
            value = (value + 0.1 * noise) if not name.endswith("running_var") else 0.5 + noise.abs()
        else:
            value = torch.full_like(value, 7)
        weights[name] = value.contiguous()
    return weights


@pytest.fixture(scope="module")
def resnet18_weights() -> dict[str, Tensor]:
    return _perturbed("resnet18", seed=18)


def _fill_hub_cache(hub: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Write ``files`` into the hub cache as huggingface_hub does; the snapshot folder."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)  # no newline, as huggingface_hub writes it
    for filename, content in files.items():
        blob = hashlib.sha256(content).hexdigest()
        (repo / "blobs" / blob).write_bytes(content)
        (snapshot / filename).symlink_to(os.path.join("..", "..", "blobs", blob))
    return snapshot


def _resolved(model_name: str, pretrained: bool | str) -> Weights:
    weights = resolve_weights(model_name, pretrained)
    assert weights is not None
    return weights


def _assert_holds(extractor: nn.Module, saved: dict[str, Tensor], minimum: int) -> None:
    """The extractor holds the saved tensors.

    Every extractor tensor whose name maps to a saved one (as is, flattened, or under
    ``model.``) equals it; at least ``minimum`` mapped, every conv and norm weight among them.
    """
    matched: set[str] = set()
    for name, value in extractor.state_dict().items():
        head, dot, rest = name.partition(".")
        candidates = [name, name.removeprefix("model."), head.replace("_", ".", 1) + dot + rest]
        key = next((c for c in candidates if c in saved), None)
        if key is not None:
            assert torch.equal(value, saved[key]), f"{name} differs from the cached {key}"
            matched.add(name)
    assert len(matched) >= minimum, f"only {len(matched)} tensors matched by name"
    layers = [f"{n}.weight" for n, m in extractor.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    assert len(layers) > 20 and set(layers) <= matched


def test_true_loads_the_hub_cache(
    backbones: pixcore.Registry, caches: tuple[Path, Path], connections: list[str],
    resnet18_weights: dict[str, Tensor],
) -> None:
    hub, _ = caches
    snapshot = _fill_hub_cache(
        hub, "timm/resnet18.a1_in1k", {"model.safetensors": safetensors.torch.save(resnet18_weights)}
    )
    backbone = backbones.create("timm/resnet18.a1_in1k", {"pretrained": True})
    _assert_holds(backbone.model, resnet18_weights, minimum=120)
    assert backbone.model.pretrained_cfg["tag"] == "a1_in1k"  # timm applied that tag's cfg
    weights = resolve_weights("resnet18.a1_in1k", True)
    assert weights == Weights(
        file=snapshot / "model.safetensors", model_name="resnet18.a1_in1k",
        source="Hugging Face hub cache (timm/resnet18.a1_in1k, model.safetensors)",
    )


@pytest.mark.parametrize(("name", "pretrained", "tag"), [
    ("timm/resnet18", "a1_in1k", "a1_in1k"),  # a bare tag
    ("timm/resnet18", "resnet18.a1_in1k", "a1_in1k"),  # the full name
    ("timm/resnet18", True, "a1_in1k"),  # timm's default tag of resnet18
    ("timm/resnet18.a1_in1k", "a1_in1k", "a1_in1k"),  # the same tag twice
    ("timm/resnet18", "tv_in1k", "tv_in1k"),  # not the default: timm must be given resnet18.tv_in1k
])
def test_tags_select_the_cached_weights(
    backbones: pixcore.Registry, caches: tuple[Path, Path], connections: list[str],
    resnet18_weights: dict[str, Tensor], name: str, pretrained: bool | str, tag: str,
) -> None:
    hub, _ = caches
    _fill_hub_cache(hub, f"timm/resnet18.{tag}", {"model.safetensors": safetensors.torch.save(resnet18_weights)})
    backbone = backbones.create(name, {"pretrained": pretrained})
    _assert_holds(backbone.model, resnet18_weights, minimum=120)
    assert backbone.model.pretrained_cfg["tag"] == tag  # timm applied that tag's cfg (and checkpoint filter)
    assert backbone.model.pretrained_cfg["hf_hub_id"] == f"timm/resnet18.{tag}"
    assert _resolved(name.removeprefix("timm/"), pretrained).model_name == f"resnet18.{tag}"


def test_hf_home_and_the_torch_pickle_of_the_hub(
    backbones: pixcore.Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    caches: tuple[Path, Path], connections: list[str], resnet18_weights: dict[str, Tensor],
) -> None:
    # Without HF_HUB_CACHE the hub cache is $HF_HOME/hub; without model.safetensors (and past a
    # cached "does not exist" marker for it) timm reads pytorch_model.bin.
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    path = tmp_path / "weights.pth"
    torch.save(resnet18_weights, path)
    snapshot = _fill_hub_cache(
        tmp_path / "home" / "hub", "timm/resnet18.a1_in1k", {"pytorch_model.bin": path.read_bytes()}
    )
    no_exist = tmp_path / "home" / "hub" / "models--timm--resnet18.a1_in1k" / ".no_exist" / COMMIT
    no_exist.mkdir(parents=True)
    (no_exist / "model.safetensors").touch()
    assert _resolved("resnet18", True).file == snapshot / "pytorch_model.bin"
    backbone = backbones.create("timm/resnet18", {"pretrained": True})
    _assert_holds(backbone.model, resnet18_weights, minimum=120)


def test_the_hub_cache_comes_first_unless_timm_prefers_its_old_cache(
    monkeypatch: pytest.MonkeyPatch, caches: tuple[Path, Path], connections: list[str],
    resnet18_weights: dict[str, Tensor],
) -> None:
    hub, checkpoints = caches
    snapshot = _fill_hub_cache(
        hub, "timm/resnet18.a1_in1k", {"model.safetensors": safetensors.torch.save(resnet18_weights)}
    )
    checkpoints.mkdir(parents=True)
    torch.save(resnet18_weights, checkpoints / RESNET18_URL_FILE)
    assert _resolved("resnet18", True).file == snapshot / "model.safetensors"
    monkeypatch.setenv("TIMM_USE_OLD_CACHE", "1")
    assert _resolved("resnet18", True).file == checkpoints / RESNET18_URL_FILE


def test_timm_download_cache_of_a_url_only_cfg(
    backbones: pixcore.Registry, caches: tuple[Path, Path], connections: list[str]
) -> None:
    cfg = timm.models.get_pretrained_cfg("legacy_seresnet18")
    assert cfg is not None and cfg.hf_hub_id is None
    assert isinstance(cfg.url, str) and cfg.url.endswith("/" + SERESNET18_URL_FILE)
    _, checkpoints = caches
    saved = _perturbed("legacy_seresnet18", seed=50)
    checkpoints.mkdir(parents=True)
    torch.save(saved, checkpoints / SERESNET18_URL_FILE)
    backbone = backbones.create("timm/legacy_seresnet18", {"pretrained": "in1k"})
    _assert_holds(backbone.model, saved, minimum=150)
    assert backbone.model.pretrained_cfg["tag"] == "in1k"
    weights = _resolved("legacy_seresnet18", True)
    assert weights.file == checkpoints / SERESNET18_URL_FILE
    assert weights.model_name == "legacy_seresnet18.in1k" and not weights.custom_load


def test_original_weights_in_the_download_cache_keep_timms_custom_loader(
    caches: tuple[Path, Path], connections: list[str], resnet18_weights: dict[str, Tensor]
) -> None:
    # vit augreg: a hub repository of state dicts, and a url of original JAX .npz weights that timm
    # reads with model.load_pretrained (custom_load); a file override resets that unless told.
    from timm.models._builder import resolve_pretrained_cfg

    name = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    hub, checkpoints = caches
    checkpoints.mkdir(parents=True)
    url = timm.models.get_pretrained_cfg_value(name, "url")
    assert isinstance(url, str) and url.endswith(".npz")
    npz = checkpoints / url.rsplit("/", 1)[-1]
    npz.write_bytes(b"PK not read here: timm's model.load_pretrained reads it")
    weights = _resolved("vit_tiny_patch16_224", True)
    assert (weights.file, weights.model_name, weights.custom_load) == (npz, name, True)
    assert resolve_pretrained_cfg(name, pretrained_cfg_overlay=weights.pretrained_cfg_overlay).custom_load is True
    snapshot = _fill_hub_cache(hub, f"timm/{name}", {"model.safetensors": safetensors.torch.save(resnet18_weights)})
    weights = _resolved(name, True)
    assert (weights.file, weights.custom_load) == (snapshot / "model.safetensors", False)
    assert weights.pretrained_cfg_overlay == {"file": str(snapshot / "model.safetensors")}
    assert resolve_pretrained_cfg(name, pretrained_cfg_overlay=weights.pretrained_cfg_overlay).custom_load is False


class _Built(Exception):
    """Raised by the create_model spy: what the backbone asked timm for has been recorded."""


def test_the_backbone_hands_timm_the_custom_loader_of_original_weights(
    backbones: pixcore.Registry, monkeypatch: pytest.MonkeyPatch, caches: tuple[Path, Path],
    connections: list[str],
) -> None:
    _, checkpoints = caches
    name = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    url = timm.models.get_pretrained_cfg_value(name, "url")
    assert isinstance(url, str)
    checkpoints.mkdir(parents=True)
    npz = checkpoints / url.rsplit("/", 1)[-1]
    npz.write_bytes(b"PK original JAX weights")
    calls: list[tuple[str, dict[str, Any]]] = []

    create_model = timm.create_model

    def spy(model_name: str, **kwargs: Any) -> nn.Module:
        calls.append((model_name, kwargs))
        if kwargs.get("pretrained"):
            raise _Built
        return create_model(model_name, **kwargs)  # any probe of the architecture

    monkeypatch.setattr(timm, "create_model", spy)
    with pytest.raises((_Built, pixcore.PixcoreError)):  # the backbone may wrap what timm raised
        backbones.create("timm/vit_tiny_patch16_224", {"pretrained": True})
    loads = [(model_name, kwargs) for model_name, kwargs in calls if kwargs.get("pretrained")]
    assert [model_name for model_name, _ in loads] == [name], calls
    assert loads[0][1]["pretrained_cfg_overlay"] == {"file": str(npz), "custom_load": True}


def test_missing_weights_name_the_model_tag_places_and_command(
    backbones: pixcore.Registry, caches: tuple[Path, Path], connections: list[str]
) -> None:
    hub, checkpoints = caches
    with pytest.raises(pixcore.ConfigError) as info:
        backbones.create("timm/resnet18", {"pretrained": True})
    message = str(info.value)
    assert message.startswith("timm/resnet18: ") and "never downloads" in message
    assert "resnet18.a1_in1k" in message and "'a1_in1k'" in message
    assert str(hub / "models--timm--resnet18.a1_in1k") in message
    assert str(checkpoints / RESNET18_URL_FILE) in message
    assert "python -c \"import timm; timm.create_model('resnet18.a1_in1k', pretrained=True)\"" in message
    assert not hub.exists() and not checkpoints.exists()  # looking creates nothing


def test_a_tagged_cfg_without_a_url_lists_the_hub_cache_only(
    caches: tuple[Path, Path], connections: list[str]
) -> None:
    hub, checkpoints = caches
    with pytest.raises(pixcore.ConfigError) as info:
        resolve_weights("test_vit", "r160_in1k")
    message = str(info.value)
    assert str(hub / "models--timm--test_vit.r160_in1k") in message and str(checkpoints) not in message
    assert "timm.create_model('test_vit.r160_in1k', pretrained=True)" in message


@pytest.mark.parametrize(("name", "pretrained", "expected"), [
    ("resnet18", "resnet50.a1_in1k", r"names weights of architecture 'resnet50', not 'resnet18'"),
    ("resnet18", "no_such_tag", r"no pretrained tag 'no_such_tag' for resnet18; its tags: a1_in1k, .*'\./no_such_tag'"),
    ("resnet18.a1_in1k", "tv_in1k", r"already selects the pretrained tag 'a1_in1k', but `pretrained` asks for "
                                    r"'tv_in1k'"),
    ("resnet50_mlp", True, r"timm has no pretrained weights for resnet50_mlp \(tags of resnet50_mlp with "
                           r"weights: none\)"),
])
def test_tags_are_checked(
    caches: tuple[Path, Path], connections: list[str], name: str, pretrained: bool | str, expected: str
) -> None:
    with pytest.raises(pixcore.ConfigError, match=expected):
        resolve_weights(name, pretrained)


def test_strings_that_look_like_files_stay_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caches: tuple[Path, Path], connections: list[str],
    resnet18_weights: dict[str, Tensor],
) -> None:
    for text in ("./a1_in1k", "weights/a1_in1k", "~/no-such-weights", "a1_in1k.safetensors", "w.pth", ""):
        with pytest.raises(pixcore.ConfigError, match="does not exist"):
            resolve_weights("resnet18", text)
    monkeypatch.chdir(tmp_path)
    torch.save(resnet18_weights, "a1_in1k")  # an existing file wins over the tag
    weights = resolve_weights("resnet18", "a1_in1k")
    assert weights == Weights(file=Path("a1_in1k"), model_name="resnet18", source="local file 'a1_in1k'")
    assert resolve_weights("resnet18", False) is None


def test_a_plain_vit_loads_the_hub_cache_into_its_blocks(
    backbones: pixcore.Registry, caches: tuple[Path, Path], connections: list[str],
) -> None:
    # Plain ViTs are read through forward_intermediates: the full model loads the file
    # strictly, then the classifier is dropped. Every block, embedding and the final norm
    # must hold the cached tensors.
    hub, _ = caches
    saved = _perturbed("test_vit", seed=3)
    _fill_hub_cache(hub, "timm/test_vit.r160_in1k", {"model.safetensors": safetensors.torch.save(saved)})
    backbone = backbones.create("timm/test_vit", {"pretrained": True, "probe": "lin.4"})
    own = backbone.model.model.state_dict()
    assert len(own) > 40
    for name, value in own.items():
        assert torch.equal(value, saved[name]), name
    assert not any(name.startswith("head.") for name in own)  # the classifier is gone


def test_the_linear_probe_recipe_trains_a_frozen_cached_vit(
    caches: tuple[Path, Path], connections: list[str], tmp_path: Path,
) -> None:
    from pixcore.train import train

    hub, _ = caches
    saved = _perturbed("test_vit", seed=4)
    _fill_hub_cache(hub, "timm/test_vit.r160_in1k", {"model.safetensors": safetensors.torch.save(saved)})
    config = pixcore.RunConfig.model_validate({
        "model": {
            "backbone": {"name": "timm/test_vit", "params": {"pretrained": True, "probe": "lin.1"}},
            "tasks": {"semseg": {"task": "segmentation", "params": {"num_classes": 7},
                                 "head": {"name": "linear", "params": {"batch_norm": True}}}},
        },
        "data": {
            "train": {"name": "synthetic", "params": {"split": "train", "length": 4, "height": 48, "width": 48}},
            "val": {"name": "synthetic", "params": {"split": "val", "length": 2, "height": 40, "width": 56}},
            "batch_size": 2, "num_workers": 0,
        },
        "trainer": {"recipe": "linear_probe", "steps": 2, "device": "cpu", "progress": False, "log_every": 1},
    })
    trainer, result = train(config)
    model = trainer.model
    blocks = model.backbone.model.model.state_dict()
    for name, value in blocks.items():  # frozen: the cached weights, untouched by two steps
        assert torch.equal(value, saved[name]), name
    assert result.metrics["semseg"]["protocol"]["features"].startswith("DINOv2 lin.1 (block 5 of 6")
