"""Evaluation across processes (`torchrun` / `accelerate launch`, gloo on CPU, NCCL on GPUs): work is cut
into the same batches as in one process, the batches are dealt out round-robin, and every process
gets all results back in the original order. Each batch holds the same rows whatever the number of
processes, so predictions are bit-identical to a one-process run.

In a single process nothing is initialised and every function is a plain pass-through.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _state():
    """Accelerate's process state (it starts the process group once; gloo when there is no GPU)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def is_main_process() -> bool:
    return world_size() == 1 or _state().is_main_process


def my_batches(batches: Sequence[np.ndarray]) -> list[np.ndarray]:
    """This process's share of `batches` (all of them in a single process)."""
    if world_size() == 1:
        return list(batches)
    state = _state()
    return list(batches[state.process_index :: state.num_processes])


def map_batches(batches: Sequence[np.ndarray], fn: Callable[[np.ndarray], np.ndarray], n: int) -> np.ndarray:
    """`fn(rows) -> values` over this process's share of `batches`, put together into one [n, ...]
    array in row order, on every process."""
    pieces = [(rows, fn(rows)) for rows in my_batches(batches)]
    if world_size() > 1:
        from accelerate.utils import gather_object

        pieces = gather_object(pieces)
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    first = pieces[0][1]
    out = np.empty((n, *first.shape[1:]), dtype=first.dtype)
    covered = np.zeros(n, dtype=bool)
    for rows, values in pieces:
        out[rows] = values
        covered[rows] = True
    if not covered.all():
        raise RuntimeError("distributed evaluation: the gathered batches do not cover every row")
    return out


def wait_for_everyone() -> None:
    if world_size() > 1:
        _state().wait_for_everyone()


def shutdown() -> None:
    """Leave the process group together: a rank that exits while another still holds a connection to
    it makes gloo abort that one (SIGABRT) at interpreter exit."""
    import torch.distributed as dist

    if world_size() > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
