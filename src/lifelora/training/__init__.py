"""The one training loop every model trains through: LLM adapters and the lens alike."""

from lifelora.training.checkpoint import latest_checkpoint
from lifelora.training.hooks import TrainContext, TrainHook
from lifelora.training.loop import train_model
from lifelora.training.settings import TrainSettings
from lifelora.training.step import TrainStep

__all__ = ["TrainContext", "TrainHook", "TrainSettings", "TrainStep", "latest_checkpoint", "train_model"]
