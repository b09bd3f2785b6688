"""Pretrained weights from local files, and the checks of the three training recipes.

:func:`load_pretrained` reads a state dict from

* a ``.safetensors`` file: plain tensors, or a pixcore checkpoint (its ``model.``
  weights are taken);
* any other file as a torch checkpoint, with ``torch.load(weights_only=True)``: only
  tensors and plain containers are unpickled, so a file that would run code when
  loaded is refused. A checkpoint that nests its weights under ``state_dict``,
  ``model``, ``model_state_dict``, ``module`` or ``net`` is unwrapped;

then renames its keys (a ``module.`` prefix on every key, left by DDP, is stripped;
``prefix`` keeps only the keys under it and strips it; ``remap`` renames prefixes) and
copies every tensor whose name and shape fit into the model or its backbone. What did not
fit is listed in a :class:`PretrainedReport`: missing keys (left at their initial
value), unexpected keys, and shape mismatches (skipped, never a crash).
"""

from __future__ import annotations

import pickle
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor, nn

from pixcore._config import PretrainedConfig, RunConfig
from pixcore._errors import ConfigError
from pixcore.train._checkpoint import CheckpointError, describe_damage

__all__ = [
    "PretrainedReport",
    "apply_pretrained",
    "check_recipe",
    "has_pretrained",
    "load_pretrained",
    "pretrained_to_load",
    "read_state_dict",
]

#: Keys under which torch checkpoints commonly nest their state dict, tried in this order.
NESTED_KEYS = (
    "state_dict", "model", "model_state_dict", "module", "net", "state_dict_ema", "model_ema",
)


@dataclass
class PretrainedReport:
    """What :func:`load_pretrained` did.

    ``loaded``: model keys that received a tensor; ``missing``: model keys the file did
    not provide (they keep their initial values); ``unexpected``: file keys the model does
    not have; ``mismatched``: ``(key, shape in the file, shape in the model)`` of keys
    skipped because the shapes differ. Keys are those after renaming.
    """

    path: str
    part: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every key of the target was loaded and nothing was left over."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 8) -> str:
        """A few lines for people: counts, and the first ``limit`` keys of each kind."""
        target = "model" if self.part == "model" else "model.backbone"
        total = len(self.loaded) + len(self.missing) + len(self.mismatched)
        lines = [f"pretrained weights {self.path} -> {target}: {len(self.loaded)} of {total} tensors loaded"]

        def listed(keys: list[str]) -> str:
            more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
            return ", ".join(keys[:limit]) + more

        if self.missing:
            lines.append(f"  missing (kept at initial values, {len(self.missing)}): {listed(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected (not used, {len(self.unexpected)}): {listed(self.unexpected)}")
        if self.mismatched:
            shown = [f"{k} {list(a)} vs {list(b)}" for k, a, b in self.mismatched]
            lines.append(f"  shape mismatch (skipped, {len(shown)}; file vs model): {listed(shown)}")
        if not self.loaded and self.unexpected and self.missing:
            lines.append(
                f"  no key matched: the file has e.g. {self.unexpected[0]!r}, the {target} expects e.g. "
                f"{self.missing[0]!r}; rename with pretrained.prefix / pretrained.remap"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    boilerplate = ("Weights only load failed", "Check the doc")
    informative = [line for line in lines if not line.startswith(boilerplate)]
    return (informative or lines or [type(error).__name__])[-1][:200]


def _torch_file(path: Path) -> Mapping[str, object]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refuses every global outside its allow-list (classes, functions).
        refused = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        if not refused:
            raise CheckpointError(
                f"{path}: cannot read it as a torch checkpoint (not a pickle of tensors: "
                f"{_last_line(error)}); pretrained weights must be a .safetensors file or a "
                "torch.save'd state dict"
            ) from None
        raise CheckpointError(
            f"{path}: refused to load: this torch checkpoint holds objects other than tensors and "
            f"plain containers, and unpickling them could run arbitrary code ({refused[0]}). pixcore "
            "reads torch checkpoints with torch.load(weights_only=True) only. If you trust the file, "
            "convert it once: `sd = torch.load(path, weights_only=False)['state_dict']; "
            "safetensors.torch.save_file(sd, 'weights.safetensors')`, and load that."
        ) from None
    except Exception as error:
        raise CheckpointError(
            f"{path}: cannot read it as a torch checkpoint ({type(error).__name__}: {error}); "
            "pretrained weights must be a .safetensors file or a torch.save'd state dict"
        ) from None
    if not isinstance(loaded, Mapping):
        raise CheckpointError(
            f"{path}: holds a {type(loaded).__name__}, not a state dict (a mapping of names to tensors)"
        )
    return loaded


def read_state_dict(path: str | Path) -> tuple[dict[str, Tensor], bool]:
    """The tensors of a weights file, and whether it is a pixcore checkpoint.

    See the module docstring for the formats. Raises :class:`CheckpointError` naming the
    file for anything it cannot read safely (a missing, empty, truncated or damaged file, a
    folder, a pickle that would run code). Plugins that load weights files read them here.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"pretrained weights file {str(path)!r} does not exist (or is not a file)")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                is_pixcore = "pixcore" in (handle.metadata() or {})
                names = [k for k in handle.keys() if not is_pixcore or k.startswith("model.")]  # noqa: SIM118
                tensors = {k: handle.get_tensor(k) for k in names}
        except Exception as error:
            damage = describe_damage(path) or f"is not a readable safetensors file ({error})"
            raise CheckpointError(f"{path} {damage}") from None
        if is_pixcore:
            tensors = {k[len("model."):]: v for k, v in tensors.items()}
        return tensors, is_pixcore
    loaded = _torch_file(path)
    if not all(isinstance(v, Tensor) for v in loaded.values()):
        for key in NESTED_KEYS:
            nested = loaded.get(key)
            if isinstance(nested, Mapping) and nested and all(isinstance(v, Tensor) for v in nested.values()):
                loaded = nested
                break
        else:
            raise CheckpointError(
                f"{path}: found no state dict in it: its top-level keys are {sorted(map(str, loaded))[:12]} "
                f"and none of {list(NESTED_KEYS)} holds a mapping of names to tensors. Save the weights "
                "alone (torch.save(model.state_dict(), path)) or as .safetensors."
            )
    return {str(k): v for k, v in loaded.items() if isinstance(v, Tensor)}, False


def _rename(
    tensors: dict[str, Tensor], prefix: str | None, remap: Mapping[str, str]
) -> dict[str, Tensor]:
    if tensors and all(k.startswith("module.") for k in tensors):  # saved from a DDP wrapper
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    if prefix:
        tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if remap:
        order = sorted(remap, key=len, reverse=True)
        renamed: dict[str, Tensor] = {}
        for key, value in tensors.items():
            old = next((p for p in order if key.startswith(p)), None)
            renamed[key if old is None else remap[old] + key[len(old):]] = value
        tensors = renamed
    return tensors


def load_pretrained(
    model: nn.Module,
    path: str | Path,
    *,
    part: str = "model",
    strict: bool = False,
    prefix: str | None = None,
    remap: Mapping[str, str] | None = None,
) -> PretrainedReport:
    """Copy the weights of a local file into ``model`` (``part="model"``) or ``model.backbone``.

    Args:
        model: The model (a :class:`pixcore.MultiTaskModel`, or any module with a
            ``backbone`` when ``part="backbone"``).
        path: A ``.safetensors`` file (pixcore checkpoints included) or a torch
            checkpoint (read with ``weights_only=True``).
        part: ``"model"`` or ``"backbone"``.
        strict: Raise :class:`CheckpointError` unless every key fits exactly.
        prefix: Keep only the keys under this prefix, without it (default: none;
            ``"backbone."`` for a pixcore checkpoint loaded into the backbone).
        remap: ``{old prefix: new prefix}`` renames, longest match first.

    Returns:
        The :class:`PretrainedReport` (tensors with another shape are skipped, not loaded).

    """
    if part not in ("model", "backbone"):
        raise ConfigError(f"pretrained part {part!r} must be 'model' or 'backbone'")
    target = model
    if part == "backbone":
        backbone = getattr(model, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise ConfigError(f"pretrained part 'backbone': {type(model).__name__} has no backbone module")
        target = backbone
    tensors, is_pixcore = read_state_dict(path)
    if prefix is None and part == "backbone" and is_pixcore:
        prefix = "backbone."
    tensors = _rename(tensors, prefix, remap or {})
    expected = target.state_dict()
    report = PretrainedReport(path=str(path), part=part)
    usable: dict[str, Tensor] = {}
    for key, value in tensors.items():
        if key not in expected:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(expected[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(expected[key].shape)))
        else:
            usable[key] = value
    report.loaded = [k for k in expected if k in usable]
    report.missing = [k for k in expected if k not in tensors]
    if strict and not report.complete:
        raise CheckpointError(
            f"{report.summary()}\nmodel.pretrained.strict is true, so every key must fit. Set "
            "strict: false to load what fits, or rename keys with prefix / remap."
        )
    if usable:
        target.load_state_dict(usable, strict=False)
    return report


def has_pretrained(config: RunConfig) -> bool:
    """Whether ``config`` loads pretrained weights: ``model.pretrained`` or a backbone file."""
    backbone_file = config.model.backbone.params.get("pretrained")
    return config.model.pretrained is not None or bool(backbone_file)


def _skipped_by_scratch(config: RunConfig) -> bool:
    """Recipe ``scratch`` with ``model.pretrained.on_scratch: skip``: those weights stay unloaded."""
    weights = config.model.pretrained
    return config.trainer.recipe == "scratch" and weights is not None and weights.on_scratch == "skip"


def pretrained_to_load(config: RunConfig, *, verbose: bool = True) -> PretrainedConfig | None:
    """The ``model.pretrained`` weights a new run loads: none if there are none, or if recipe
    ``scratch`` skips them (``on_scratch: skip``; said on stderr when ``verbose``)."""
    weights = config.model.pretrained
    if weights is None or not _skipped_by_scratch(config):
        return weights
    if verbose:
        print(f"pretrained weights {weights.path} not loaded: trainer.recipe='scratch' "
              "starts from the default initialisation (model.pretrained.on_scratch: skip)",
              file=sys.stderr, flush=True)
    return None


def check_recipe(config: RunConfig) -> None:
    """Refuse recipe and pretrained-weights combinations that contradict each other.

    ``linear_probe`` and ``finetune`` start from pretrained weights, ``scratch`` from
    none: it refuses them, unless ``model.pretrained.on_scratch`` is ``skip`` (then
    :func:`pretrained_to_load` leaves them out; a backbone's own file is refused still).
    A linear probe with another head than ``linear`` is allowed, with a warning.
    """
    recipe = config.trainer.recipe
    if recipe is None:
        return
    pretrained = has_pretrained(config)
    if recipe in ("linear_probe", "finetune") and not pretrained:
        raise ConfigError(
            f"trainer.recipe={recipe!r} starts from pretrained weights, but none are configured: set "
            "model.pretrained (e.g. {path: weights.safetensors, part: backbone}) or the backbone's own "
            "`pretrained` parameter (timm backbones), or use recipe 'scratch'"
        )
    backbone_file = bool(config.model.backbone.params.get("pretrained"))
    if recipe == "scratch" and (backbone_file or (pretrained and not _skipped_by_scratch(config))):
        where = "the backbone's `pretrained`" if backbone_file else "model.pretrained"
        raise ConfigError(
            f"trainer.recipe='scratch' trains from the default initialisation, but pretrained weights are "
            f"configured ({where}); remove them, or use recipe 'finetune'"
            + ("" if backbone_file else ". To keep one config for every recipe (a sweep over trainer.recipe), "
               "set model.pretrained.on_scratch: skip: scratch runs then leave these weights out")
        )
    if recipe == "linear_probe":
        heads = {key: task.head.name if task.head else "the task's default"
                 for key, task in config.model.tasks.items()}
        others = {key: name for key, name in heads.items() if name != "linear"}
        if others:
            warnings.warn(
                f"trainer.recipe='linear_probe' with heads {others}: a linear probe measures the frozen "
                "features with a linear head; set head: linear for each task to measure that",
                UserWarning,
                stacklevel=2,
            )


def apply_pretrained(model: nn.Module, config: PretrainedConfig, *, verbose: bool = True) -> PretrainedReport:
    """:func:`load_pretrained` with the settings of ``model.pretrained``; prints the report."""
    report = load_pretrained(model, config.path, part=config.part, strict=config.strict,
                             prefix=config.prefix, remap=config.remap)
    if verbose:
        print(report.summary(), file=sys.stderr, flush=True)
    return report
