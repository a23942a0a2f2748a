"""Continual strategies by name: a config's `name` picks the class (one small module each)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Discriminator

from lifelora.continual.strategies.base import PeriodContext, SamplePool, Strategy, StrategyConfig
from lifelora.continual.strategies.cumulative import SdLora, SdLoraConfig, SumLora, SumLoraConfig
from lifelora.continual.strategies.inflora import InfLora, InfLoraConfig
from lifelora.continual.strategies.olora import OLora, OLoraConfig
from lifelora.continual.strategies.peso import Peso, PesoConfig
from lifelora.continual.strategies.simple import (
    Finetune,
    FinetuneConfig,
    Pretrain,
    PretrainConfig,
    Replay,
    ReplayConfig,
    Retrain,
    RetrainConfig,
)

STRATEGIES: dict[str, type[Strategy]] = {
    cls.config_class.model_fields["name"].default: cls
    for cls in (Pretrain, Finetune, Peso, Retrain, Replay, SumLora, SdLora, OLora, InfLora)
}

AnyStrategyConfig = Annotated[
    PretrainConfig
    | FinetuneConfig
    | PesoConfig
    | RetrainConfig
    | ReplayConfig
    | SumLoraConfig
    | SdLoraConfig
    | OLoraConfig
    | InfLoraConfig,
    Discriminator("name"),
]


def make_strategy(config: StrategyConfig) -> Strategy:
    return STRATEGIES[config.name](config)


__all__ = [
    "STRATEGIES",
    "AnyStrategyConfig",
    "PeriodContext",
    "SamplePool",
    "Strategy",
    "StrategyConfig",
    "make_strategy",
]
