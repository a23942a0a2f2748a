"""RecLoRA's personalized adapter: a meta-LoRA bank per target module, mixed per instance by a gate
fed with the frozen lens's hidden vector (config, layer, model, the routing context)."""

from lifelora.adapters.personalized.config import PersonalizedConfig
from lifelora.adapters.personalized.layer import MetaLoraBank, PersonalizedLinear
from lifelora.adapters.personalized.model import PersonalizedAdapter, PersonalizedModel
from lifelora.adapters.personalized.routing import routing_context

__all__ = [
    "MetaLoraBank",
    "PersonalizedAdapter",
    "PersonalizedConfig",
    "PersonalizedLinear",
    "PersonalizedModel",
    "routing_context",
]
