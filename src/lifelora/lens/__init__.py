"""The lens: a conventional recommender trained on all data whose hidden vector routes RecLoRA's
meta-LoRAs: a CTR model (DIN; SIM = DIN over a retrieved history), or a next-item one (SASRec)."""

from lifelora.lens.config import LensConfig
from lifelora.lens.din import DIN
from lifelora.lens.model import Lens
from lifelora.lens.sasrec import SASRec, SASRecLens
from lifelora.lens.sasrec_config import SASRecConfig

__all__ = ["DIN", "Lens", "LensConfig", "SASRec", "SASRecConfig", "SASRecLens"]
