"""lifelora: LLM recommenders with personalized and continually evolving LoRA adapters."""

from lifelora.errors import LifeloraError

__version__ = "0.1.0"
__all__ = ["LifeloraError", "__version__"]
