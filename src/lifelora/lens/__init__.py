"""The lens: a conventional recommender trained on all data whose hidden vector routes a personalized
adapter and whose scores are a baseline row. One protocol (`base.Lens`), one folder per model: `din`
(DIN; SIM is its retrieved-history option) for click-through, `sasrec` for next-item; `popularity` is
the next-item floor; `periods` trains a lens per continual period."""

from lifelora.lens.base import Lens
from lifelora.lens.din import DIN, DINLens, LensConfig
from lifelora.lens.sasrec import SASRec, SASRecConfig, SASRecLens

__all__ = ["DIN", "DINLens", "Lens", "LensConfig", "SASRec", "SASRecConfig", "SASRecLens"]
