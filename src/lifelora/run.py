"""Run directories: every command writes its resolved config, seed, environment and outputs into one."""

from __future__ import annotations

import os
import platform
import random
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil
import torch
from pydantic import BaseModel

from lifelora import __version__
from lifelora.io import write_json, write_yaml


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


def record_run(run_dir: Path, config: BaseModel, command: str) -> None:
    write_yaml(run_dir / "config.yaml", config.model_dump(mode="json"))
    write_json(run_dir / "run.json", {"command": command, **environment()})
