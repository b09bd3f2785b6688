"""Data sets shipped with pixcore."""

from pixcore.data._synthetic import CLASS_NAMES as CLASS_NAMES
from pixcore.data._synthetic import RenderedScene as RenderedScene
from pixcore.data._synthetic import SceneDescription as SceneDescription
from pixcore.data._synthetic import SyntheticScenes as SyntheticScenes
from pixcore.data._synthetic import render_scene as render_scene

__all__ = ["CLASS_NAMES", "RenderedScene", "SceneDescription", "SyntheticScenes", "render_scene"]
