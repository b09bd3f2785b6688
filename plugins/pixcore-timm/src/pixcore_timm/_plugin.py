"""Registration hook of pixcore-timm (entry point ``timm`` of group ``pixcore``)."""

from __future__ import annotations

from collections.abc import Iterator

import pixcore

from pixcore_timm._namespace import timm_namespace


@pixcore.hookimpl
def pixcore_backbones() -> Iterator[pixcore.ComponentNamespace]:
    yield timm_namespace()
