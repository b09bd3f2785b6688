"""pixcore-timm: every timm model as a pixcore backbone.

Registers the lazily resolved namespace ``timm/`` (``timm/resnet18``,
``timm/convnext_tiny``, ...) through the entry point ``timm`` of group ``pixcore``.
"""

from pixcore_timm._backbone import TimmBackbone as TimmBackbone
from pixcore_timm._namespace import timm_namespace as timm_namespace

__all__ = ["TimmBackbone", "timm_namespace"]
