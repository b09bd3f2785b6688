"""pixcore: a plugin-based multi-task framework for dense pixel labelling on PyTorch.

The public API is what this module exports; everything in ``pixcore._*`` is private.
"""

from importlib.metadata import PackageNotFoundError, version

from pixcore._config import ComponentConfig as ComponentConfig
from pixcore._config import DataConfig as DataConfig
from pixcore._config import ModelConfig as ModelConfig
from pixcore._config import RunConfig as RunConfig
from pixcore._config import TaskConfig as TaskConfig
from pixcore._config import TrainerConfig as TrainerConfig
from pixcore._config import load_config as load_config
from pixcore._errors import CheckpointError as CheckpointError
from pixcore._errors import ConfigError as ConfigError
from pixcore._errors import DeviceError as DeviceError
from pixcore._errors import DuplicateComponentError as DuplicateComponentError
from pixcore._errors import PixcoreError as PixcoreError
from pixcore._errors import PluginLoadError as PluginLoadError
from pixcore._errors import UnknownComponentError as UnknownComponentError
from pixcore._interfaces import Augmentation as Augmentation
from pixcore._interfaces import Backbone as Backbone
from pixcore._interfaces import Dataset as Dataset
from pixcore._interfaces import FeatureLevel as FeatureLevel
from pixcore._interfaces import Head as Head
from pixcore._interfaces import Loss as Loss
from pixcore._interfaces import LossOutput as LossOutput
from pixcore._interfaces import Metric as Metric
from pixcore._interfaces import Sample as Sample
from pixcore._interfaces import Task as Task
from pixcore._interfaces import TaskWeighting as TaskWeighting
from pixcore.hookspecs import hookimpl as hookimpl
from pixcore.model._compose import MultiTaskModel as MultiTaskModel
from pixcore.model._compose import TaskBinding as TaskBinding
from pixcore.model._compose import build_model as build_model
from pixcore.model._compose import build_model_from_config as build_model_from_config
from pixcore.model._delta_m import delta_m as delta_m
from pixcore.model._delta_m import metric_directions as metric_directions
from pixcore.plugin._manager import PluginInfo as PluginInfo
from pixcore.plugin._manager import PluginLoadWarning as PluginLoadWarning
from pixcore.plugin._manager import PluginManager as PluginManager
from pixcore.plugin._manager import get_plugin_manager as get_plugin_manager
from pixcore.plugin._manager import register_plugin as register_plugin
from pixcore.plugin._manager import registry as registry
from pixcore.plugin._records import Component as Component
from pixcore.plugin._records import ComponentNamespace as ComponentNamespace
from pixcore.plugin._registry import FAMILIES as FAMILIES
from pixcore.plugin._registry import Registry as Registry

try:
    __version__ = version("pixcore")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = [
    "FAMILIES",
    "Augmentation",
    "Backbone",
    "CheckpointError",
    "Component",
    "ComponentConfig",
    "ComponentNamespace",
    "ConfigError",
    "DataConfig",
    "Dataset",
    "DeviceError",
    "DuplicateComponentError",
    "FeatureLevel",
    "Head",
    "Loss",
    "LossOutput",
    "Metric",
    "ModelConfig",
    "MultiTaskModel",
    "PixcoreError",
    "PluginInfo",
    "PluginLoadError",
    "PluginLoadWarning",
    "PluginManager",
    "Registry",
    "RunConfig",
    "Sample",
    "Task",
    "TaskBinding",
    "TaskConfig",
    "TaskWeighting",
    "TrainerConfig",
    "UnknownComponentError",
    "__version__",
    "build_model",
    "build_model_from_config",
    "delta_m",
    "get_plugin_manager",
    "hookimpl",
    "load_config",
    "metric_directions",
    "register_plugin",
    "registry",
]
