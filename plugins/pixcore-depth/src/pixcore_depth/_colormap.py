"""The depth colour map: Google's Turbo, shared with :mod:`pixcore.viz`."""

from __future__ import annotations

from pixcore.viz import turbo as turbo

__all__ = ["turbo"]
