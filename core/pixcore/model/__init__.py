"""Model composition: a backbone, one head per task and a weighting of their losses.

* ``_compose``: :class:`MultiTaskModel` and ``build_model`` / ``build_model_from_config``,
  which turn registry names into modules;
* ``_heads``: the task-agnostic heads (``fpn``, ``linear``, ``deeplabv3plus``,
  ``upernet``, ``dpt``);
* ``_pyramid``: multi-scale features from a plain ViT (ViTDet's simple pyramid);
* ``_weighting``: how task losses combine (``fixed``, ``uncertainty``, ``dwa``);
* ``_delta_m``: the multi-task summary delta-m.

The public names are re-exported by :mod:`pixcore`.
"""

from pixcore.model._pyramid import SimplePyramid

__all__ = ["SimplePyramid"]
