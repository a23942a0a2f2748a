"""The one training loop every model trains through: LLM adapters and the lens alike."""

from lifelora.training.checkpoint import latest_checkpoint
from lifelora.training.hooks import TrainContext, TrainHook
from lifelora.training.loop import train_model
from lifelora.training.settings import TrainSettings
from lifelora.training.step import TrainStep
from lifelora.training.validation import BestEpoch, mean_loss

__all__ = [
    "BestEpoch",
    "TrainContext",
    "TrainHook",
    "TrainSettings",
    "TrainStep",
    "latest_checkpoint",
    "mean_loss",
    "train_model",
]
