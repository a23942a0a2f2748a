"""Run directories: every command writes its resolved config, seed, environment and outputs into one."""

from __future__ import annotations

import os
import platform
import random
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
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


def environment() -> dict:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "lifelora": __version__,
        "git_commit": commit or None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def record_run(run_dir: Path, config: BaseModel, command: str) -> None:
    write_yaml(run_dir / "config.yaml", config.model_dump(mode="json"))
    write_json(run_dir / "run.json", {"command": command, **environment()})
