"""Compatibility imports: the augmentations live in :mod:`pixcore.augment`."""

from pixcore.augment import Compose as Compose
from pixcore.augment import HorizontalFlip as HorizontalFlip

__all__ = ["Compose", "HorizontalFlip"]
