"""Configuration of a generative next-item run (`lifelora train --task next-item`): PESO's setting
(semantic-ID codes, LoRA on every projection, new code tokens trained, logits / 0.8) shaped like the
click-through config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lifelora.adapters import AdapterConfig
from lifelora.tasks.config import RunConfig
from lifelora.tasks.next_item.semantic_ids import SemanticIdConfig
from lifelora.training import TrainSettings

PESO_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _peso_lora() -> dict:
    return {"kind": "lora", "r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": PESO_TARGETS}


class NextItemPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    history: int = Field(
        20, ge=1, description="items of the user's history shown, most recent last (PESO: 20)"
    )
    temperature: float = Field(0.8, gt=0, description="logits are divided by it in the loss and in decoding")
    normalise: Literal["level", "trie"] = Field(
        "level",
        description="layout sequence: each code token's softmax is over its level's codes (level) or only "
        "over the codes the trie allows after the item's earlier tokens (trie: an item's score is then its "
        "probability among the catalogue's items, and no training goes into learning which codes exist); "
        "decoding normalises the same way",
    )
    window: int = Field(
        50,
        ge=2,
        description="layout sequence: most items in one training window (longer than history; each "
        "window supervises up to window - history targets)",
    )


class NextItemSubset(BaseModel):
    """Training targets (windows in the sequence layout) and evaluated users: a fixed seeded subset
    (None = all)."""

    model_config = ConfigDict(extra="forbid")

    train: int | None = Field(None, ge=1, description="targets (layout prompt) or windows (sequence)")
    eval: int | None = Field(None, ge=1, description="users evaluated (one target each)")
    seed: int = 42


class NextItemEval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: Literal["valid", "test"] = "test"
    decoding: Literal["beam", "exact"] = Field(
        "beam", description="beam: trie-constrained beam search; exact: every item's code log-probability"
    )
    beams: int = Field(10, ge=1)
    seen: Literal["keep", "remove"] = Field(
        "keep",
        description="keep: every item can be recommended; remove: never the user's items before the "
        "target (the target itself excepted), the seen-removed convention of the full-ranking baselines",
    )
    top_k: int = Field(10, ge=1, description="length of the saved ranked lists (exact decoding)")
    ks: list[int] = Field([5, 10], min_length=1)
    batch_size: int = Field(16, ge=1, description="users per decoding batch")
    precision: Literal["auto", "fp32", "bf16"] | None = Field(
        None,
        description="scoring precision (null: the training's); fp32 gives the same scores on every CPU, "
        "whether it has native bf16 or not",
    )


class NextItemConfig(RunConfig):
    untrained = "no-training"
    lens_kind = "SASRec lens"

    task: Literal["next-item"] = "next-item"
    semantic_ids: SemanticIdConfig = Field(default_factory=SemanticIdConfig)
    adapter: AdapterConfig | None = Field(
        default_factory=_peso_lora,
        validate_default=True,
        description="lora, personalized, or null = no training",
    )
    token_rows: Literal["new", "all"] = Field(
        "new",
        description="new: only the code tokens' rows of the embedding and LM head train (next to LoRA); "
        "all: the whole embedding and LM head (PESO's released code)",
    )
    layout: Literal["prompt", "sequence"] = Field(
        "prompt",
        description="prompt: one prompt per target, PESO's instruction, the loss and decoding normalised "
        "over the whole vocabulary; sequence: one example per window of a user's items, a loss on every "
        "supervised item, normalised over each level's code tokens (subset.train then counts windows)",
    )
    prompt: NextItemPrompt = Field(default_factory=NextItemPrompt)
    subset: NextItemSubset = Field(default_factory=NextItemSubset)
    train: TrainSettings = Field(default_factory=lambda: TrainSettings(lr=2e-4, epochs=1))
    eval: NextItemEval = Field(default_factory=NextItemEval)

    @model_validator(mode="after")
    def _sequence_layout_fits(self) -> NextItemConfig:
        if self.layout != "sequence":
            if self.prompt.normalise != "level":
                raise ValueError(
                    "prompt.normalise applies to layout sequence (the prompt layout normalises over the "
                    "whole vocabulary, as PESO does)"
                )
            return self
        if self.prompt.window <= self.prompt.history:
            raise ValueError(
                f"prompt.window ({self.prompt.window}) must be longer than prompt.history "
                f"({self.prompt.history}) in the sequence layout"
            )
        if self.adapter is not None and getattr(self.adapter, "mixing", None) == "factors":
            raise ValueError(
                "layout sequence routes every token by its own lens state; adapter.mixing factors merges "
                "one LoRA per instance: use mixing: products"
            )
        return self
