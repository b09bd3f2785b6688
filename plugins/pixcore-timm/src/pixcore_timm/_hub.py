"""Where a timm backbone's pretrained weights come from: a local file, or the local caches.

``pretrained: true`` (or a pretrained tag) is looked up, with no network access at all, in
the two caches that ``timm.create_model(name, pretrained=True)`` fills on a machine that
has network access:

* the Hugging Face hub cache (``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``), repository ``hf_hub_id`` of the tag's pretrained cfg,
  files ``model.safetensors`` then ``pytorch_model.bin`` (what timm's
  ``load_state_dict_from_hf`` tries), read with ``huggingface_hub.try_to_load_from_cache``;
* timm's download cache for cfgs with a ``url``: ``torch.hub.get_dir()/checkpoints/<file
  name of the url>`` (``TORCH_HOME`` moves it).

Like timm, the hub cache comes first (the download cache first when ``TIMM_USE_OLD_CACHE``
is set). Every location is read from the environment at call time. Nothing here calls
``hf_hub_download`` or anything else that may open a socket; weights that are not cached
are a :class:`pixcore.ConfigError` that names the directories searched and the command
that fills them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlparse

import pixcore
from pydantic import BeforeValidator

if TYPE_CHECKING:
    from timm.models import PretrainedCfg

__all__ = ["Pretrained", "Weights", "hf_hub_cache", "resolve_weights", "timm_download_cache"]

#: Endings that make a ``pretrained`` string a file rather than a pretrained tag.
WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")

#: What timm's ``load_state_dict_from_hf`` reads from a hub repository, in its order.
_HF_SAFE_WEIGHTS_NAME = "model.safetensors"
_HF_WEIGHTS_NAME = "pytorch_model.bin"

#: At most this many pretrained tags are listed in a message.
_SHOWN_TAGS = 8


def _path_to_str(value: object) -> object:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


#: ``pretrained``: False; True (the model name's pretrained tag, else timm's default tag,
#: from the local caches); a pretrained tag (``"a1_in1k"`` or ``"resnet18.a1_in1k"``); or a
#: local weights file (a path object is taken as its string).
Pretrained = Annotated[bool | str, BeforeValidator(_path_to_str)]


@dataclass(frozen=True)
class Weights:
    """Pretrained weights found on this machine, and how timm must be asked to load them.

    A path-like object: ``os.fspath(weights)`` and ``str(weights)`` are the file.

    Attributes:
        file: A local file for timm's file override (``pretrained_cfg_overlay={"file": ...}``).
        model_name: The name to give ``timm.create_model``: for cached weights the
            architecture with its pretrained tag (``"resnet18.a1_in1k"``), so that timm
            applies that tag's pretrained cfg and checkpoint filter; for a local file the
            backbone's model name unchanged.
        source: Where the file came from, for messages.
        custom_load: The file is in a model-specific format (a cached ``.npz`` of original
            JAX weights, say) that timm reads with ``model.load_pretrained`` rather than as
            a state dict.

    """

    file: Path
    model_name: str
    source: str
    custom_load: bool = False

    def __fspath__(self) -> str:
        return str(self.file)

    def __str__(self) -> str:
        return str(self.file)

    @property
    def pretrained_cfg_overlay(self) -> dict[str, Any]:
        """The ``pretrained_cfg_overlay`` for ``timm.create_model``."""
        overlay: dict[str, Any] = {"file": str(self.file)}
        if self.custom_load:
            # timm resets custom_load when a file is given, unless it is set explicitly.
            overlay["custom_load"] = True
        return overlay


def resolve_weights(model_name: str, pretrained: bool | str) -> Weights | None:
    """The pretrained weights of ``timm/<model_name>``: None for ``pretrained=False``.

    Args:
        model_name: A timm model name, optionally with a pretrained tag.
        pretrained: False; True: the tag in ``model_name``, else timm's default tag for the
            architecture; a pretrained tag, bare (``"a1_in1k"``) or with the architecture
            (``"resnet18.a1_in1k"``); or a local file: a string with a path separator, that
            starts with ``~`` or ``.``, ends with a weights suffix (``.safetensors``, ``.pt``,
            ``.pth``, ``.bin``, ``.ckpt``) or names an existing file.

    Raises:
        pixcore.ConfigError: A tag timm does not know, an architecture without pretrained
            weights, weights that are not in the local caches, a file that does not exist.
        pixcore.CheckpointError: The file cannot be read as weights.

    """
    if pretrained is False:
        return None
    if isinstance(pretrained, str) and _names_a_file(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise pixcore.ConfigError(
                f"timm/{model_name}: pretrained weights file {str(path)!r} does not exist (or is not a "
                "file). `pretrained` takes a local .safetensors file or torch checkpoint, true (timm's "
                "weights from the local caches), a pretrained tag, or false."
            )
        weights = Weights(file=path, model_name=model_name, source=f"local file {str(path)!r}")
    else:
        weights = _cached(model_name, _pretrained_cfg(model_name, pretrained))
    if not weights.custom_load:
        _check_readable(model_name, weights.file)
    return weights


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, from the environment now (``huggingface_hub`` reads it at import)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        value = os.environ.get(variable)
        if value:
            return Path(os.path.expandvars(os.path.expanduser(value)))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def timm_download_cache() -> Path:
    """The folder of timm's downloads from a url: ``torch.hub.get_dir()/checkpoints``, read now."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _names_a_file(text: str) -> bool:
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return (
        not text
        or any(separator in text for separator in separators)
        or text.startswith(("~", "."))
        or text.lower().endswith(WEIGHTS_SUFFIXES)
        or Path(text).is_file()
    )


def _pretrained_cfg(model_name: str, pretrained: bool | str) -> PretrainedCfg:
    """The pretrained cfg (timm's) of the tag that ``pretrained`` selects; it has weights."""
    from timm.models import get_pretrained_cfg, split_model_name_tag

    arch, own_tag = split_model_name_tag(model_name)
    tag = own_tag
    if isinstance(pretrained, str):
        head, dot, rest = pretrained.partition(".")
        if dot and head != arch:
            raise pixcore.ConfigError(
                f"timm/{model_name}: `pretrained` {pretrained!r} names weights of architecture {head!r}, "
                f"not {arch!r}. Give a tag of {arch} ({_tags(arch)}), or true for the default."
            )
        tag = rest if dot else pretrained
        if own_tag and tag != own_tag:
            raise pixcore.ConfigError(
                f"timm/{model_name}: the model name already selects the pretrained tag {own_tag!r}, but "
                f"`pretrained` asks for {tag!r}. Name the tag once: `timm/{arch}` with `pretrained: {tag}`, "
                f"or `timm/{arch}.{tag}` with `pretrained: true`."
            )
    name = f"{arch}.{tag}" if tag else arch
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:
        hint = ""
        if isinstance(pretrained, str) and not pretrained.partition(".")[1]:
            hint = f" A local weights file is given by its path (with a folder: './{pretrained}')."
        raise pixcore.ConfigError(
            f"timm/{model_name}: timm has no pretrained tag {tag!r} for {arch}; its tags: {_tags(arch)}.{hint}"
        ) from None
    if cfg is None or not cfg.has_weights:
        which = f"tag {tag!r} of {arch}" if tag else arch
        raise pixcore.ConfigError(
            f"timm/{model_name}: timm has no pretrained weights for {which} (tags of {arch} with weights: "
            f"{_tags(arch)}). Use `pretrained: false` (random initialisation) or a local weights file."
        )
    return cfg


def _tags(arch: str) -> str:
    """A few pretrained tags of ``arch`` that have weights, for messages."""
    from timm.models import get_arch_pretrained_cfgs

    tags = [c.tag for c in get_arch_pretrained_cfgs(arch).values() if c.has_weights and c.tag]
    tags = list(dict.fromkeys(tags))
    if not tags:
        return "none"
    shown = ", ".join(tags[:_SHOWN_TAGS])
    return shown + (f" and {len(tags) - _SHOWN_TAGS} more" if len(tags) > _SHOWN_TAGS else "")


def _cached(model_name: str, cfg: PretrainedCfg) -> Weights:
    """The cached weights of ``cfg``; a ConfigError naming where they were looked for if none."""
    arch = cfg.architecture or model_name.partition(".")[0]
    full = f"{arch}.{cfg.tag}" if cfg.tag else arch
    searched: list[str] = []
    lookups = [_in_hf_hub_cache, _in_download_cache]
    if os.environ.get("TIMM_USE_OLD_CACHE", "0").strip() not in ("", "0"):  # timm then prefers its download cache
        lookups.reverse()
    for lookup in lookups:
        found = lookup(full, cfg, searched)
        if found is not None:
            return found
    places = "\n".join(f"  - {place}" for place in searched)
    raise pixcore.ConfigError(
        f"timm/{model_name}: the pretrained weights {full} (tag {cfg.tag or '(none)'!r}) are not in the "
        f"local caches, and pixcore never downloads. Searched:\n{places}\n"
        "Fill the cache on a machine with network access (with the same HF_HUB_CACHE / HF_HOME / "
        "TORCH_HOME, or copy the folder here afterwards):\n"
        f"  python -c \"import timm; timm.create_model('{full}', pretrained=True)\"\n"
        "or pass a local weights file as `pretrained`."
    )


def _in_hf_hub_cache(full: str, cfg: PretrainedCfg, searched: list[str]) -> Weights | None:
    if not cfg.hf_hub_id:
        return None
    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    if cfg.hf_hub_filename and cfg.hf_hub_filename.endswith(".safetensors"):
        filenames = [cfg.hf_hub_filename]
    elif cfg.hf_hub_filename:
        filenames = [*_safe_alternatives(cfg.hf_hub_filename), cfg.hf_hub_filename]
    else:
        filenames = [_HF_SAFE_WEIGHTS_NAME, _HF_WEIGHTS_NAME]
    cache = hf_hub_cache()
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    place = f"{folder} (Hugging Face hub cache: {' or '.join(filenames)} at revision {revision or 'main'})"
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        searched.append(f"{place}: not searched, huggingface_hub is not installed")
        return None
    searched.append(place)
    for filename in filenames:
        # Reads the cache folders only; a cached "does not exist" marker is not a str.
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision or None)
        if isinstance(found, str):
            # timm hands a named hub file to model.load_pretrained only for custom_load "hf".
            custom_load: object = cfg.custom_load  # typed bool; timm also checks for "hf"
            custom = bool(cfg.hf_hub_filename) and custom_load == "hf"
            source = f"Hugging Face hub cache ({repo_id}, {filename})"
            return Weights(file=Path(found), model_name=full, source=source, custom_load=custom)
    return None


def _safe_alternatives(filename: str) -> list[str]:
    """The .safetensors files timm's ``load_state_dict_from_hf`` tries before a .bin file."""
    if filename == _HF_WEIGHTS_NAME:
        return [_HF_SAFE_WEIGHTS_NAME]
    if filename == "open_clip_pytorch_model.bin":
        return ["open_clip_model.safetensors"]
    if filename.endswith(".bin"):
        return [filename[: -len(".bin")] + ".safetensors"]
    return []


def _in_download_cache(full: str, cfg: PretrainedCfg, searched: list[str]) -> Weights | None:
    if not cfg.url:
        return None
    if isinstance(cfg.url, (tuple, list)):
        url, filename = cfg.url
    else:
        url, filename = cfg.url, os.path.basename(urlparse(cfg.url).path)
    path = timm_download_cache() / filename
    searched.append(f"{path} (timm's download cache of {url})")
    if not path.is_file():
        return None
    # timm reads a url's file with model.load_pretrained when the cfg says custom_load.
    source = f"timm's download cache ({url})"
    return Weights(file=path, model_name=full, source=source, custom_load=bool(cfg.custom_load))


def _check_readable(model_name: str, path: Path) -> None:
    """Read ``path`` with the reader of ``model.pretrained`` before timm reads it.

    That reader names the file and what is wrong with it (empty, truncated, not safetensors,
    a pickle that would run code); timm's own would fail with a parser's traceback.
    """
    from pixcore.train import read_state_dict  # lazy: listing must stay fast

    try:
        read_state_dict(path)
    except pixcore.CheckpointError as error:
        raise pixcore.CheckpointError(
            f"timm/{model_name}: cannot use the `pretrained` weights file: {error}. Give a "
            ".safetensors file or torch checkpoint of this architecture, or `pretrained: false`."
        ) from None
