"""Where prepared datasets live, and the one way commands and jobs open one."""

from __future__ import annotations

from pathlib import Path

from lifelora.data.prepared import PreparedData
from lifelora.errors import LifeloraError
from lifelora.io import lifelora_home


def prepared_dir(dataset: str, preset: str) -> Path:
    return lifelora_home() / "prepared" / dataset / preset


def open_prepared(
    dataset: str, preset: str = "rella", data_dir: Path | None = None, prepare_missing: bool = False
) -> PreparedData:
    """The prepared dataset in `data_dir` (default: the cache). Missing: prepared now from the embedded
    copy when `prepare_missing` (the demo and benchmarks), else an error naming the command to run."""
    directory = Path(data_dir) if data_dir is not None else prepared_dir(dataset, preset)
    if not (directory / "meta.json").is_file():
        from lifelora.data.registry import EMBEDDED_DATASETS

        if dataset not in EMBEDDED_DATASETS and data_dir is None:
            raise LifeloraError(
                f"{directory}: {dataset} is not prepared yet; run `lifelora data prepare {dataset} "
                f"--preset {preset} --source DIR` (DIR: its raw files)"
            )
        if not prepare_missing:
            raise LifeloraError(
                f"{directory}: not prepared yet; run `lifelora data prepare {dataset} --preset {preset}`"
            )
        from lifelora.data.prepare import prepare, preset_by_name, save_prepared
        from lifelora.data.registry import load_raw

        save_prepared(prepare(load_raw(dataset), preset_by_name(preset)), directory)
    return PreparedData.load(directory)
