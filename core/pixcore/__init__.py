"""pixcore: a plugin-based multi-task framework for dense pixel labelling on PyTorch.

The public API is what this module exports; everything in ``pixcore._*`` is private.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below, for type checkers; at run time they load on first use
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

#: Public name -> (module, attribute). Loaded on first access (PEP 562), so that
#: ``import pixcore`` is cheap and the torch-free paths (``pixcore predict --model``
#: with ONNX Runtime) never import torch.
_LAZY: dict[str, tuple[str, str]] = {
    "ComponentConfig": ("pixcore._config", "ComponentConfig"),
    "DataConfig": ("pixcore._config", "DataConfig"),
    "ModelConfig": ("pixcore._config", "ModelConfig"),
    "RunConfig": ("pixcore._config", "RunConfig"),
    "TaskConfig": ("pixcore._config", "TaskConfig"),
    "TrainerConfig": ("pixcore._config", "TrainerConfig"),
    "load_config": ("pixcore._config", "load_config"),
    "CheckpointError": ("pixcore._errors", "CheckpointError"),
    "ConfigError": ("pixcore._errors", "ConfigError"),
    "DeviceError": ("pixcore._errors", "DeviceError"),
    "DuplicateComponentError": ("pixcore._errors", "DuplicateComponentError"),
    "PixcoreError": ("pixcore._errors", "PixcoreError"),
    "PluginLoadError": ("pixcore._errors", "PluginLoadError"),
    "UnknownComponentError": ("pixcore._errors", "UnknownComponentError"),
    "Augmentation": ("pixcore._interfaces", "Augmentation"),
    "Backbone": ("pixcore._interfaces", "Backbone"),
    "Dataset": ("pixcore._interfaces", "Dataset"),
    "FeatureLevel": ("pixcore._interfaces", "FeatureLevel"),
    "Head": ("pixcore._interfaces", "Head"),
    "Loss": ("pixcore._interfaces", "Loss"),
    "LossOutput": ("pixcore._interfaces", "LossOutput"),
    "Metric": ("pixcore._interfaces", "Metric"),
    "Sample": ("pixcore._interfaces", "Sample"),
    "Task": ("pixcore._interfaces", "Task"),
    "TaskWeighting": ("pixcore._interfaces", "TaskWeighting"),
    "hookimpl": ("pixcore.hookspecs", "hookimpl"),
    "MultiTaskModel": ("pixcore.model._compose", "MultiTaskModel"),
    "TaskBinding": ("pixcore.model._compose", "TaskBinding"),
    "build_model": ("pixcore.model._compose", "build_model"),
    "build_model_from_config": ("pixcore.model._compose", "build_model_from_config"),
    "delta_m": ("pixcore.model._delta_m", "delta_m"),
    "metric_directions": ("pixcore.model._delta_m", "metric_directions"),
    "PluginInfo": ("pixcore.plugin._manager", "PluginInfo"),
    "PluginLoadWarning": ("pixcore.plugin._manager", "PluginLoadWarning"),
    "PluginManager": ("pixcore.plugin._manager", "PluginManager"),
    "get_plugin_manager": ("pixcore.plugin._manager", "get_plugin_manager"),
    "register_plugin": ("pixcore.plugin._manager", "register_plugin"),
    "registry": ("pixcore.plugin._manager", "registry"),
    "Component": ("pixcore.plugin._records", "Component"),
    "ComponentNamespace": ("pixcore.plugin._records", "ComponentNamespace"),
    "FAMILIES": ("pixcore.plugin._registry", "FAMILIES"),
    "Registry": ("pixcore.plugin._registry", "Registry"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'pixcore' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
