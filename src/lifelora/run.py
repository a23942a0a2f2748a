"""Run directories: every command writes its resolved config, seed, environment and outputs into one."""

from __future__ import annotations

import os
import platform
import random
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil
import torch
from pydantic import BaseModel

from lifelora import __version__
from lifelora.distributed import is_main_process
from lifelora.errors import LifeloraError, Terminated
from lifelora.io import read_json, write_json, write_yaml


def new_run_dir(kind: str, name: str, root: Path | None = None) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root or os.environ.get("LIFELORA_RUNS", "runs")) / f"{kind}-{name}-{stamp}"
    path, suffix = base, 1
    while path.exists():
        path, suffix = base.with_name(f"{base.name}-{suffix}"), suffix + 1
    path.mkdir(parents=True)
    return path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def _cpu() -> tuple[str, list[str]]:
    """The CPU's model name and which of the flags that decide bf16 speed it has (Linux; else empty)."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                present = set(value.split())
                flags = [f for f in CPU_FLAGS if f in present]
                break
    except OSError:
        pass
    return model, flags


def environment() -> dict:
    """Software, machine and precision facts written into every run directory and benchmark result."""
    from lifelora.precision import native_bf16, resolve

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except OSError:
        commit = ""
    cpu, flags = _cpu()
    return {
        "lifelora": __version__,
        "git_commit": commit or None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_flags": flags,
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "torch_threads": torch.get_num_threads(),
        "native_bf16": native_bf16(),
        "auto_precision": resolve("auto"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def machine_kind(precision: str) -> dict:
    """What decides whether seeded training repeats its weights bit for bit: the CPU and its kernels'
    instruction sets, the GPU, torch, its threads and the precision it trains at (`auto` resolved)."""
    from lifelora.precision import resolve

    cpu, flags = _cpu()
    return {
        "cpu": cpu,
        "cpu_flags": flags,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "precision": resolve(precision, _device()),
    }


def describe_machine(kind: dict) -> str:
    """`machine_kind` in a few words, for one-line messages."""
    where = kind["cuda"] or f"{kind['cpu']} [{', '.join(kind['cpu_flags']) or 'no avx2'}]"
    return f"{where}, {kind['precision']}, torch {kind['torch']}, {kind['threads']} threads"


def record_run(run_dir: Path, config: BaseModel, command: str) -> None:
    """config.yaml and run.json; run.json also gets the precision the run trains and scores at here
    (`auto` resolved: bf16 where it is native on the device the run uses, else fp32)."""
    from lifelora.precision import run_precisions

    write_yaml(run_dir / "config.yaml", config.model_dump(mode="json"))
    precision = getattr(getattr(config, "train", None), "precision", None)
    scoring = getattr(config, "scoring_precision", precision)
    resolved = run_precisions(precision, scoring, _device()) if precision else {}
    write_json(run_dir / "run.json", {"command": command, **resolved, **environment()})


def _device() -> str:
    """Where training runs (Accelerate's choice: the GPU when there is one)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _update_run_json(run_dir: Path, **fields) -> None:
    path = run_dir / "run.json"
    write_json(path, {**(read_json(path) if path.is_file() else {}), **fields})


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, Terminated):
        return "terminated"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, LifeloraError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def run_status(run_dir: Path) -> Iterator[None]:
    """Record in run.json how the run went, so a failed run is told from a finished one: `running` from
    here (again when resumed), then `finished`, or `failed` with the one-line error (`terminated` when
    stopped by SIGTERM). Main process only."""
    if not is_main_process():
        yield
        return
    _update_run_json(run_dir, status="running", started=_now(), ended=None, error=None)
    try:
        with _sigterm_raises():
            yield
    except BaseException as exc:
        _update_run_json(run_dir, status="failed", ended=_now(), error=_one_line(exc))
        raise
    _update_run_json(run_dir, status="finished", ended=_now())


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises `Terminated` inside the block (the default handler would end the process with no
    unwinding); the previous handler comes back after it. Outside the main thread signals cannot be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
