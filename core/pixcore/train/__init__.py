"""Training, evaluation, checkpoints, callbacks and distributed (torchrun) training.

See ``docs/training.md`` for the loop, its events, mixed precision, optimisers and
schedules, fine-tuning recipes, pretrained weights, EMA, resuming and multi-GPU runs.
"""

from pixcore.train._callbacks import Callback as Callback
from pixcore.train._callbacks import Checkpointing as Checkpointing
from pixcore.train._callbacks import CSVLogger as CSVLogger
from pixcore.train._callbacks import EarlyStopping as EarlyStopping
from pixcore.train._callbacks import JSONLLogger as JSONLLogger
from pixcore.train._callbacks import TensorBoardLogger as TensorBoardLogger
from pixcore.train._checkpoint import CheckpointError as CheckpointError
from pixcore.train._checkpoint import LoadReport as LoadReport
from pixcore.train._checkpoint import RngState as RngState
from pixcore.train._checkpoint import load_checkpoint as load_checkpoint
from pixcore.train._checkpoint import read_metadata as read_metadata
from pixcore.train._checkpoint import read_rng_state as read_rng_state
from pixcore.train._checkpoint import save_checkpoint as save_checkpoint
from pixcore.train._data import AugmentedDataset as AugmentedDataset
from pixcore.train._data import ShardSampler as ShardSampler
from pixcore.train._distributed import DistributedInfo as DistributedInfo
from pixcore.train._distributed import init_distributed as init_distributed
from pixcore.train._distributed import select_device as select_device
from pixcore.train._ema import ModelEMA as ModelEMA
from pixcore.train._optim import build_optimizer as build_optimizer
from pixcore.train._optim import build_scheduler as build_scheduler
from pixcore.train._optim import parameter_groups as parameter_groups
from pixcore.train._precision import bf16_is_native as bf16_is_native
from pixcore.train._pretrained import PretrainedReport as PretrainedReport
from pixcore.train._pretrained import load_pretrained as load_pretrained
from pixcore.train._pretrained import read_state_dict as read_state_dict
from pixcore.train._record import RunRecord as RunRecord
from pixcore.train._signals import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from pixcore.train._trainer import NonFiniteLossError as NonFiniteLossError
from pixcore.train._trainer import RunExistsError as RunExistsError
from pixcore.train._trainer import Trainer as Trainer
from pixcore.train._trainer import TrainResult as TrainResult
from pixcore.train._trainer import evaluate as evaluate
from pixcore.train._trainer import evaluate_baselines as evaluate_baselines
from pixcore.train._trainer import make_loaders as make_loaders
from pixcore.train._trainer import train as train

__all__ = [
    "EXIT_INTERRUPTED",
    "AugmentedDataset",
    "CSVLogger",
    "Callback",
    "CheckpointError",
    "Checkpointing",
    "DistributedInfo",
    "EarlyStopping",
    "JSONLLogger",
    "LoadReport",
    "ModelEMA",
    "NonFiniteLossError",
    "PretrainedReport",
    "RngState",
    "RunExistsError",
    "RunRecord",
    "ShardSampler",
    "TensorBoardLogger",
    "TrainResult",
    "Trainer",
    "bf16_is_native",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "evaluate_baselines",
    "init_distributed",
    "load_checkpoint",
    "load_pretrained",
    "make_loaders",
    "parameter_groups",
    "read_metadata",
    "read_rng_state",
    "read_state_dict",
    "save_checkpoint",
    "select_device",
    "train",
]
