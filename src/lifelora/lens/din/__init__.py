"""DIN (and SIM, DIN fed a retrieved history): the click-through lens whose 256-d hidden vector routes
RecLoRA's meta-LoRAs."""

from lifelora.lens.din.config import LensConfig
from lifelora.lens.din.lens import DINLens
from lifelora.lens.din.network import DIN

__all__ = ["DIN", "DINLens", "LensConfig"]
