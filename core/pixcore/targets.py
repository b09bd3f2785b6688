"""Target kinds: typed tensors that say what a sample's values mean."""

from pixcore._targets import DEFAULT_IGNORE_INDEX as DEFAULT_IGNORE_INDEX
from pixcore._targets import ClassMask as ClassMask
from pixcore._targets import Image as Image
from pixcore._targets import Intrinsics as Intrinsics
from pixcore._targets import ScalarField as ScalarField
from pixcore._targets import TargetKind as TargetKind
from pixcore._targets import UnitVectorField as UnitVectorField
from pixcore._targets import ValidityMask as ValidityMask
from pixcore._targets import kind_of as kind_of

__all__ = [
    "DEFAULT_IGNORE_INDEX",
    "ClassMask",
    "Image",
    "Intrinsics",
    "ScalarField",
    "TargetKind",
    "UnitVectorField",
    "ValidityMask",
    "kind_of",
]
