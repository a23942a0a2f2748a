"""SASRec: the next-item lens (user vectors route a personalized next-item adapter; its scores are the
sequential baseline row)."""

from lifelora.lens.sasrec.config import SASRecConfig, SASRecModelConfig
from lifelora.lens.sasrec.lens import SASRecLens
from lifelora.lens.sasrec.network import SASRec, id_windows

__all__ = ["SASRec", "SASRecConfig", "SASRecLens", "SASRecModelConfig", "id_windows"]
