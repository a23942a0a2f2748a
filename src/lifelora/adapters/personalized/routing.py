"""The per-instance routing vector, handed to every personalized layer through a context.

`PersonalizedModel.forward(routing=h)` opens the context; layers read it. Under gradient checkpointing
the layers run again during backward, after the context has closed: `checkpoint_context` captures the
vector at forward time and reopens it for the recomputation (torch.utils.checkpoint's `context_fn`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch

from lifelora.errors import LifeloraError

_ROUTING: ContextVar[torch.Tensor | None] = ContextVar("lifelora_routing", default=None)


@contextlib.contextmanager
def routing_context(vectors: torch.Tensor | None) -> Iterator[None]:
    token = _ROUTING.set(vectors)
    try:
        yield
    finally:
        _ROUTING.reset(token)


def current_routing() -> torch.Tensor:
    vectors = _ROUTING.get()
    if vectors is None:
        raise LifeloraError(
            "a personalized adapter ran without a routing vector: call the model with routing=h "
            "(the lens's hidden vectors, one row per instance)"
        )
    return vectors


def checkpoint_context() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    """For torch.utils.checkpoint(context_fn=...): the recomputation sees the forward's routing."""
    return contextlib.nullcontext(), routing_context(_ROUTING.get())
