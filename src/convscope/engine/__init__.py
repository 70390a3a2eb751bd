"""The training engine: the loop, optimisers and schedules, callbacks, checkpoints and exact resume."""

from convscope.config import OptimConfig, TrainConfig
from convscope.engine.callbacks import Callback, EarlyStopping, ScheduleTracker, StopTraining
from convscope.engine.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from convscope.engine.history import History
from convscope.engine.optim import build_optimizer, build_scheduler, resolve_device
from convscope.engine.trainer import Loader, Trainer

__all__ = [
    "Callback",
    "EarlyStopping",
    "History",
    "Loader",
    "OptimConfig",
    "ScheduleTracker",
    "StopTraining",
    "TrainConfig",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "load_checkpoint",
    "load_model_state",
    "resolve_device",
    "save_checkpoint",
]
