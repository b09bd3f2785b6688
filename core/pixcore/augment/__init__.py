"""Label-safe joint augmentations: one rule per target kind and geometric operation.

Every transform draws its parameters once per call from the caller's
``torch.Generator`` and applies the same geometry to every value of a sample, each by the
rule of its target kind (:mod:`pixcore.targets`):

* class masks: nearest neighbour only; filled areas get the ignore index;
* depth (:class:`~pixcore.targets.ScalarField`, metric z): nearest neighbour, unchanged
  values (or divided by the zoom, as an explicit option); filled areas become invalid;
* normals (:class:`~pixcore.targets.UnitVectorField`, camera frame): nearest neighbour,
  then rotated/mirrored with the camera (a horizontal flip negates x, a rotation by ``a``
  rotates (x, y) by ``a``); never blended;
* validity masks: follow the geometry; filled areas are invalid;
* intrinsics: ``K' = P K Q^T`` for the operation's pixel map ``P`` and camera map ``Q``;
* photometric transforms touch images only.

A geometric transform refuses a kind it has no rule for (torchvision's v2 transforms
pass unknown tensor subclasses through untouched); third-party kinds register rules
with :func:`register_rule`. See ``docs/augmentations.md``.
"""

from pixcore.augment._base import Compose as Compose
from pixcore.augment._base import OneOf as OneOf
from pixcore.augment._base import Transform as Transform
from pixcore.augment._base import apply_geometry as apply_geometry
from pixcore.augment._geometric import CenterCrop as CenterCrop
from pixcore.augment._geometric import HorizontalFlip as HorizontalFlip
from pixcore.augment._geometric import PadIfNeeded as PadIfNeeded
from pixcore.augment._geometric import RandomCrop as RandomCrop
from pixcore.augment._geometric import RandomResizedCrop as RandomResizedCrop
from pixcore.augment._geometric import RandomRotate90 as RandomRotate90
from pixcore.augment._geometric import RandomScale as RandomScale
from pixcore.augment._geometric import Resize as Resize
from pixcore.augment._geometric import Rotate as Rotate
from pixcore.augment._geometric import VerticalFlip as VerticalFlip
from pixcore.augment._geometry import Crop as Crop
from pixcore.augment._geometry import Flip as Flip
from pixcore.augment._geometry import Geometry as Geometry
from pixcore.augment._geometry import Rotate90 as Rotate90
from pixcore.augment._geometry import Warp as Warp
from pixcore.augment._photometric import ColorJitter as ColorJitter
from pixcore.augment._photometric import GaussianBlur as GaussianBlur
from pixcore.augment._photometric import GaussianNoise as GaussianNoise
from pixcore.augment._photometric import Normalize as Normalize
from pixcore.augment._photometric import RandomGamma as RandomGamma
from pixcore.augment._rules import OPS as OPS
from pixcore.augment._rules import Rule as Rule
from pixcore.augment._rules import RuleError as RuleError
from pixcore.augment._rules import UnsupportedKindError as UnsupportedKindError
from pixcore.augment._rules import register_rule as register_rule
from pixcore.augment._rules import registered_rules as registered_rules
from pixcore.augment._rules import rule_for as rule_for
from pixcore.augment._rules import unregister_rule as unregister_rule

__all__ = [
    "OPS",
    "CenterCrop",
    "ColorJitter",
    "Compose",
    "Crop",
    "Flip",
    "GaussianBlur",
    "GaussianNoise",
    "Geometry",
    "HorizontalFlip",
    "Normalize",
    "OneOf",
    "PadIfNeeded",
    "RandomCrop",
    "RandomGamma",
    "RandomResizedCrop",
    "RandomRotate90",
    "RandomScale",
    "Resize",
    "Rotate",
    "Rotate90",
    "Rule",
    "RuleError",
    "Transform",
    "UnsupportedKindError",
    "VerticalFlip",
    "Warp",
    "apply_geometry",
    "register_rule",
    "registered_rules",
    "rule_for",
    "unregister_rule",
]
