"""The lens: a conventional CTR model (DIN; SIM = DIN over a retrieved history) trained on all data,
whose 256-d hidden vector routes RecLoRA's meta-LoRAs."""

from lifelora.lens.config import LensConfig
from lifelora.lens.din import DIN
from lifelora.lens.model import Lens

__all__ = ["DIN", "Lens", "LensConfig"]
