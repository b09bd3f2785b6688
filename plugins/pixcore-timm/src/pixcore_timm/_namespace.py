"""The lazily resolved ``timm/`` namespace of backbones.

timm is imported on first use, not when the plugin loads, so that ``import pixcore``
with this plugin installed stays as fast as without it.
"""

from __future__ import annotations

import fnmatch
import functools

import pixcore

__all__ = ["PREFIX", "list_names", "resolve", "timm_namespace"]

PREFIX = "timm/"


def list_names(pattern: str) -> list[str]:
    """Full names (``timm/<model>``) of timm architectures matching a glob ``pattern``.

    Only names are listed (``timm.list_models``); no model is created. Pretrained tags
    (``resnet18.a1_in1k``) resolve but are not listed.
    """
    import timm

    pattern = pattern.lower()
    if pattern.startswith(PREFIX):
        return [PREFIX + name for name in timm.list_models(pattern[len(PREFIX):])]
    names = (PREFIX + name for name in timm.list_models())
    return [name for name in names if fnmatch.fnmatchcase(name, pattern)]


def resolve(name: str) -> pixcore.Component | None:
    """The backbone record of ``timm/<model>``, or None if timm has no such model."""
    import timm

    from pixcore_timm._backbone import TimmBackbone

    if not name.startswith(PREFIX):
        return None
    model_name = name[len(PREFIX):]
    if not model_name or not timm.is_model(model_name):
        return None
    return pixcore.Component(
        name,
        functools.partial(TimmBackbone, model_name),
        description=f"timm {model_name} (features_only)",
    )


def timm_namespace() -> pixcore.ComponentNamespace:
    """The record that pixcore-timm's ``pixcore_backbones`` hook yields."""
    return pixcore.ComponentNamespace(
        PREFIX, list_names, resolve,
        description="Every timm model as a multi-scale backbone (features_only)",
    )
