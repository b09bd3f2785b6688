"""Training, evaluation and checkpoints."""

from pixcore.train._checkpoint import CheckpointError as CheckpointError
from pixcore.train._checkpoint import LoadReport as LoadReport
from pixcore.train._checkpoint import load_checkpoint as load_checkpoint
from pixcore.train._checkpoint import read_metadata as read_metadata
from pixcore.train._checkpoint import save_checkpoint as save_checkpoint
from pixcore.train._trainer import AugmentedDataset as AugmentedDataset
from pixcore.train._trainer import NonFiniteLossError as NonFiniteLossError
from pixcore.train._trainer import Trainer as Trainer
from pixcore.train._trainer import TrainResult as TrainResult
from pixcore.train._trainer import build_optimizer as build_optimizer
from pixcore.train._trainer import build_scheduler as build_scheduler
from pixcore.train._trainer import evaluate as evaluate
from pixcore.train._trainer import evaluate_baselines as evaluate_baselines
from pixcore.train._trainer import make_loaders as make_loaders
from pixcore.train._trainer import select_device as select_device
from pixcore.train._trainer import train as train

__all__ = [
    "AugmentedDataset",
    "CheckpointError",
    "LoadReport",
    "NonFiniteLossError",
    "TrainResult",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "evaluate_baselines",
    "load_checkpoint",
    "make_loaders",
    "read_metadata",
    "save_checkpoint",
    "select_device",
    "train",
]
