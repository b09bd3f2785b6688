"""Deployment: a trained model as an ONNX or torch.export graph, and running it without torch.

* ``_graph``: the exported graph (uint8 images in, one named decoded output per task);
* ``_metadata``: the JSON an exported model carries about itself;
* ``_export``: :func:`export_model` (``pixcore export``);
* ``_runtime``: running an exported ONNX model with ONNX Runtime, numpy and Pillow only
  (``pixcore predict --model``).

Importing this package does not import torch; :func:`export_model` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pixcore.export._export import ExportError as ExportError
    from pixcore.export._export import ExportResult as ExportResult
    from pixcore.export._export import export_model as export_model

__all__ = ["ExportError", "ExportResult", "export_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from pixcore.export import _export

        return getattr(_export, name)
    raise AttributeError(f"module 'pixcore.export' has no attribute {name!r}")
