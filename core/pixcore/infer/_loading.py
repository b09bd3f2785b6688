"""Rebuild a trained model from its checkpoint alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open

from pixcore._config import ModelConfig, validate_config
from pixcore.model._compose import MultiTaskModel, build_model_from_config
from pixcore.plugin._manager import PluginManager
from pixcore.train._checkpoint import CheckpointError, load_checkpoint, read_metadata

__all__ = [
    "EMA_PREFIX",
    "WeightsChoice",
    "checkpoint_model_config",
    "evaluation_used_ema",
    "load_model",
]

#: Key prefix of the moving average of the weights in a checkpoint (see pixcore.train.save_checkpoint).
EMA_PREFIX = "ema."

WeightsChoice = Literal["auto", "model", "ema"]


def checkpoint_model_config(metadata: dict[str, Any], path: str | Path = "checkpoint") -> ModelConfig:
    """The :class:`~pixcore.ModelConfig` a checkpoint was trained with (from its metadata)."""
    if isinstance(metadata.get("config"), dict) and "model" in metadata["config"]:
        data = metadata["config"]["model"]
    elif isinstance(metadata.get("model_config"), dict):
        data = metadata["model_config"]
    else:
        raise CheckpointError(
            f"{path} records no model configuration (metadata 'config' or 'model_config'), so the "
            "model cannot be rebuilt from it. Build the model yourself and use "
            "pixcore.train.load_checkpoint(path, model)."
        )
    config: ModelConfig = validate_config(ModelConfig, data, source=f"{path} (stored model config)")
    return config


def _has_ema(path: Path) -> bool:
    with safe_open(str(path), framework="pt") as handle:
        return any(k.startswith(EMA_PREFIX) for k in handle.keys())  # noqa: SIM118


def evaluation_used_ema(metadata: dict[str, Any]) -> bool:
    """Whether the run that wrote a checkpoint evaluated with its moving-average weights.

    True when the run kept a moving average (``trainer.ema_decay``, recorded as
    ``ema_decay`` in the metadata) and did not turn off ``trainer.ema_eval``.
    """
    trainer = (metadata.get("config") or {}).get("trainer") or {}
    kept = metadata.get("ema_decay") is not None or trainer.get("ema_decay") is not None
    return kept and bool(trainer.get("ema_eval", True))


def load_model(
    checkpoint: str | Path,
    *,
    weights: WeightsChoice = "auto",
    device: str | torch.device = "cpu",
    manager: PluginManager | None = None,
) -> MultiTaskModel:
    """Rebuild the model stored in ``checkpoint``, load its weights, switch to eval mode.

    The architecture comes from the model configuration the checkpoint records (written
    by :class:`pixcore.train.Trainer`), so nothing but the file is needed. Pretrained
    weights named by the configuration (``model.pretrained``, a backbone's
    ``pretrained`` parameter) are not loaded: the checkpoint holds every weight, and
    those files need not exist where the model is loaded.

    Args:
        checkpoint: A ``.safetensors`` checkpoint written by the trainer.
        weights: ``"model"``: the trained weights; ``"ema"``: their exponential moving
            average, kept by a run with ``trainer.ema_decay`` (an error if the checkpoint
            has none); ``"auto"`` (default): the moving average when the run evaluated
            with it (``trainer.ema_eval``, see :func:`evaluation_used_ema`), else the
            trained weights.
        device: Where to put the model.
        manager: Plugin manager to build components with (default: the process-wide one).

    Raises:
        CheckpointError: The file is missing, not a pixcore checkpoint, records no model
            configuration, or its weights do not fit the rebuilt model.

    Example::

        model = pixcore.infer.load_model("runs/a/checkpoint.safetensors")
        predictions = model(images)   # {task: prediction}

    """
    path = Path(checkpoint)
    if weights not in ("auto", "model", "ema"):
        raise CheckpointError(f"weights={weights!r} is unknown; choose 'auto', 'model' or 'ema'")
    metadata = read_metadata(path)
    config = checkpoint_model_config(metadata, path)
    # The checkpoint holds every weight: files of pretrained weights are not read.
    config = config.model_copy(deep=True)
    if "pretrained" in config.backbone.params:
        config.backbone.params["pretrained"] = False
    if getattr(config, "pretrained", None) is not None:
        config.pretrained = None
    has_ema = weights != "model" and _has_ema(path)
    if weights == "ema" and not has_ema:
        raise CheckpointError(
            f"{path} holds no moving average of the weights (its run had no trainer.ema_decay); "
            "load its trained weights with weights='model' (--weights model)"
        )
    use_ema = has_ema and (weights == "ema" or evaluation_used_ema(metadata))
    model = build_model_from_config(config, manager=manager, path=f"{path}: model")
    load_checkpoint(path, model, use_ema=use_ema)
    return model.to(device).eval()
