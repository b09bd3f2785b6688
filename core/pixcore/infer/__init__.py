"""Inference from checkpoints: load a model, test-time augmentation, sliding windows, files.

* :func:`load_model` rebuilds a trained model from its checkpoint alone;
* :class:`Predictor` wraps it with geometry-aware test-time augmentation (flips undone
  by the augmentation rule of each task's target kind, several scales) and/or
  sliding-window inference, and is called like the model;
* :func:`predict_images` writes each task's output for image files, in a format chosen
  by its target kind; :func:`evaluate_checkpoint` scores a checkpoint on a config's
  held-out data. Behind ``pixcore predict`` and ``pixcore eval``.

See the "Evaluate and predict" section of ``docs/training.md``.
"""

from pixcore.infer._evaluate import evaluate_checkpoint as evaluate_checkpoint
from pixcore.infer._evaluate import format_metrics as format_metrics
from pixcore.infer._evaluate import validation_loader as validation_loader
from pixcore.infer._loading import EMA_PREFIX as EMA_PREFIX
from pixcore.infer._loading import checkpoint_model_config as checkpoint_model_config
from pixcore.infer._loading import evaluation_used_ema as evaluation_used_ema
from pixcore.infer._loading import load_model as load_model
from pixcore.infer._outputs import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from pixcore.infer._outputs import SCALAR_PNG_SCALE as SCALAR_PNG_SCALE
from pixcore.infer._outputs import find_images as find_images
from pixcore.infer._outputs import output_files as output_files
from pixcore.infer._outputs import predict_images as predict_images
from pixcore.infer._outputs import read_image_tensor as read_image_tensor
from pixcore.infer._predictor import Predictor as Predictor
from pixcore.infer._predictor import merge_mode as merge_mode
from pixcore.infer._window import sliding_window as sliding_window
from pixcore.infer._window import window_positions as window_positions
from pixcore.infer._window import window_weight_sum as window_weight_sum
from pixcore.infer._window import window_weights as window_weights

__all__ = [
    "EMA_PREFIX",
    "IMAGE_SUFFIXES",
    "SCALAR_PNG_SCALE",
    "Predictor",
    "checkpoint_model_config",
    "evaluate_checkpoint",
    "evaluation_used_ema",
    "find_images",
    "format_metrics",
    "load_model",
    "merge_mode",
    "output_files",
    "predict_images",
    "read_image_tensor",
    "sliding_window",
    "validation_loader",
    "window_positions",
    "window_weight_sum",
    "window_weights",
]
