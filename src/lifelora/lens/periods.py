"""The lens that routes a personalized adapter, period by period (`continual.lens`).

`frozen`: the lens the config names, as it was trained (on its own data: a lens trained on the whole
training split has seen the later periods, which a deployed system would not have). `retrain`: a fresh
lens each period on everything up to it. `finetune`: period 0 as retrain, then each period goes on from
the last one's lens on the new period's data alone. Both use the named lens's architecture and training
settings; each period's lens is trained once, saved, and shared by every strategy and seed of the run.
The routing vectors of a period come from that period's lens, which the adapter's gates then see for the
first time: `finetune` keeps the vector space close to the one they learned on, `retrain` does not.

Next-item routes with SASRec: trained on each user's sequence up to the period (the period's validation
and test targets held out), validated on the period's validation targets; its vocabulary is the whole
item table from the start (an item's row stays untrained until the item appears). Click-through routes
with DIN/SIM: trained on the click-through training samples of the periods so far (`retrain`) or of the
period (`finetune`), validated on the period's validation samples, its vocabularies the users and items
seen by the end of those training samples, grown period by period under `finetune` (new users and items
get fresh rows, known ones keep theirs)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from lifelora.data.prepared import PreparedData
from lifelora.data.sequential import block_leave_one_out, sequences_until
from lifelora.errors import LifeloraError
from lifelora.io import write_json
from lifelora.lens.din import DINLens
from lifelora.lens.sasrec import SASRecLens

LensMode = Literal["frozen", "finetune", "retrain"]


class PeriodLenses(ABC):
    """One lens per period, trained when first asked for (or loaded from a finished earlier run)."""

    def __init__(self, mode: LensMode, named: Any, directory: Path, log: Callable[[str], object] = print):
        self.mode, self.named, self.directory, self.log = mode, named, directory, log
        self._lenses: dict[int, Any] = {}

    def at(self, period: int) -> Any:
        if self.mode == "frozen":
            return self.named
        if period not in self._lenses:
            self._lenses[period] = self._trained(period)
        return self._lenses[period]

    def _trained(self, period: int) -> Any:
        run_dir = self.directory / f"period-{period}"
        if (run_dir / "done.json").is_file():
            return type(self.named).load(run_dir / "lens")
        start = self.at(period - 1) if self.mode == "finetune" and period > 0 else None
        lens, summary = self._fit(period, start, run_dir)
        write_json(run_dir / "done.json", {"mode": self.mode, **summary})
        return lens

    @abstractmethod
    def _fit(self, period: int, start: Any, run_dir: Path) -> tuple[Any, dict]: ...


class SequenceLenses(PeriodLenses):
    """SASRec per period, for next-item runs."""

    def __init__(
        self, data: PreparedData, periods: np.ndarray, mode: LensMode, named: SASRecLens, directory: Path,
        log: Callable[[str], object] = print,
    ):  # fmt: skip
        super().__init__(mode, named, directory, log)
        self.data, self.periods = data, periods

    def _fit(self, period: int, start: SASRecLens | None, run_dir: Path) -> tuple[SASRecLens, dict]:
        from lifelora.lens.sasrec.train import fit

        ends = sequences_until(self.data, self.periods, period)
        if start is not None:
            active = np.isin(ends.user_idx, np.flatnonzero(np.bincount(
                self.data.sequence_users()[self.periods == period], minlength=self.data.users.height)))  # fmt: skip
            ends = ends.subset(np.flatnonzero(active))
        self.log(f"lens ({self.mode}) for period {period}: SASRec on {len(ends):,} users' sequences")
        valid = block_leave_one_out(self.data, self.periods, period, "valid")
        lens, summary = fit(
            self.named.config, self.data, run_dir, self.log, ends=ends, valid=valid, start=start
        )
        return lens, {"sequences": len(ends), **summary}


class ClickLenses(PeriodLenses):
    """DIN/SIM per period, for click-through runs; `samples(period, split)` gives a period's samples."""

    def __init__(
        self, data: PreparedData, samples: Callable[[int, str], pl.DataFrame], mode: LensMode, named: DINLens,
        directory: Path, log: Callable[[str], object] = print,
    ):  # fmt: skip
        super().__init__(mode, named, directory, log)
        self.data, self.samples = data, samples

    def _fit(self, period: int, start: DINLens | None, run_dir: Path) -> tuple[DINLens, dict]:
        from lifelora.lens.din.train import fit

        valid = self.samples(period, "valid")
        if valid["label"].n_unique() < 2:
            raise LifeloraError(
                f"continual.lens: {self.mode}: period {period}'s {valid.height} validation samples hold one "
                "label only, so its lens cannot be validated by AUC (continual.lens: frozen needs none)"
            )
        first = period if start is not None else 0
        train = pl.concat([self.samples(p, "train") for p in range(first, period + 1)])
        until = int(train["timestamp"].max())
        self.log(
            f"lens ({self.mode}) for period {period}: {self.named.config.kind.upper()} on "
            f"{train.height:,} training samples"
        )
        lens, summary = fit(
            self.named.config, self.data, run_dir, self.log, train=train,
            valid=valid, until=until, start=start,
        )  # fmt: skip
        return lens, {"until": until, **summary}
