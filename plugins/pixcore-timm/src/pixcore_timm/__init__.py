"""pixcore-timm: every timm model as a pixcore backbone.

Registers the lazily resolved namespace ``timm/`` (``timm/resnet18``,
``timm/convnext_tiny``, ...) through the entry point ``timm`` of group ``pixcore``.

pixcore imports this package at every start (to read the entry point), and importing
timm takes about 0.4 s: :class:`TimmBackbone` is imported on first use only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pixcore_timm._namespace import timm_namespace as timm_namespace

if TYPE_CHECKING:
    from pixcore_timm._backbone import TimmBackbone as TimmBackbone

__all__ = ["TimmBackbone", "timm_namespace"]


def __getattr__(name: str) -> Any:
    if name == "TimmBackbone":
        from pixcore_timm._backbone import TimmBackbone

        return TimmBackbone
    raise AttributeError(f"module 'pixcore_timm' has no attribute {name!r}")
