"""What every personalized layer reads from the running forward, handed through contexts rather than
arguments or module attributes: the routing vectors (per instance or per token), and whether the banks
are switched off.

`PersonalizedModel.forward(routing=h)` opens the routing context; `PersonalizedAdapter.disabled()` the
other. Under gradient checkpointing the layers run again during backward, after the contexts have closed:
`checkpoint_context` captures both at forward time and reopens them for the recomputation
(torch.utils.checkpoint's `context_fn`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch

from lifelora.errors import LifeloraError

_ROUTING: ContextVar[torch.Tensor | None] = ContextVar("lifelora_routing", default=None)
_DISABLED: ContextVar[bool] = ContextVar("lifelora_banks_disabled", default=False)


@contextlib.contextmanager
def routing_context(vectors: torch.Tensor | None) -> Iterator[None]:
    token = _ROUTING.set(vectors)
    try:
        yield
    finally:
        _ROUTING.reset(token)


@contextlib.contextmanager
def disabled_context(disabled: bool = True) -> Iterator[None]:
    """Inside, personalized layers compute their base layer only (no bank, no routing needed)."""
    token = _DISABLED.set(disabled)
    try:
        yield
    finally:
        _DISABLED.reset(token)


def banks_disabled() -> bool:
    return _DISABLED.get()


def current_routing() -> torch.Tensor:
    vectors = _ROUTING.get()
    if vectors is None:
        raise LifeloraError(
            "a personalized adapter ran without a routing vector: call the model with routing=h "
            "(the lens's hidden vectors, one row per instance)"
        )
    return vectors


@contextlib.contextmanager
def _replay(vectors: torch.Tensor | None, disabled: bool) -> Iterator[None]:
    with routing_context(vectors), disabled_context(disabled):
        yield


def checkpoint_context() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    """For torch.utils.checkpoint(context_fn=...): the recomputation sees the forward's contexts."""
    return contextlib.nullcontext(), _replay(_ROUTING.get(), _DISABLED.get())
