"""The lens that routes a personalized adapter, period by period (`continual.lens`).

`frozen`: the lens the config names, as it was trained (on its own data: a lens trained on the whole
leave-one-out split has seen the later periods, which a deployed system would not have). `retrain`: a
fresh SASRec each period on every interaction up to it (the period's validation and test targets held
out, its validation targets picking the best epoch). `finetune`: period 0 as retrain, then each period
goes on from the last one's lens, on the sequences of the users active in the new period. Both use the
named lens's architecture and training settings; lenses are trained once per period and saved, shared
by every strategy and seed of the run. The routing vectors of a period come from that period's lens,
which the adapter's gates then see for the first time: `finetune` keeps the vector space close to the
one they learned on, `retrain` does not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from lifelora.data.prepared import PreparedData
from lifelora.data.sequential import block_leave_one_out, sequences_until
from lifelora.io import write_json
from lifelora.lens.sasrec import SASRecLens

LensMode = Literal["frozen", "finetune", "retrain"]


class PeriodLenses:
    def __init__(
        self,
        data: PreparedData,
        periods: np.ndarray,
        mode: LensMode,
        named: SASRecLens,
        directory: Path,
        log: Callable[[str], object] = print,
    ):
        self.data, self.periods, self.mode, self.named = data, periods, mode, named
        self.directory, self.log = directory, log
        self._lenses: dict[int, SASRecLens] = {}

    def at(self, period: int) -> SASRecLens:
        if self.mode == "frozen":
            return self.named
        if period not in self._lenses:
            self._lenses[period] = self._trained(period)
        return self._lenses[period]

    def _trained(self, period: int) -> SASRecLens:
        from lifelora.lens.sasrec_train import fit

        run_dir = self.directory / f"period-{period}"
        if (run_dir / "done.json").is_file():
            return SASRecLens.load(run_dir / "lens")
        ends = sequences_until(self.data, self.periods, period)
        start = None
        if self.mode == "finetune" and period > 0:
            start = self.at(period - 1)
            active = np.isin(ends.user_idx, np.flatnonzero(np.bincount(
                self.data.sequence_users()[self.periods == period], minlength=self.data.users.height)))  # fmt: skip
            ends = ends.subset(np.flatnonzero(active))
        self.log(f"lens ({self.mode}) for period {period}: SASRec on {len(ends):,} users' sequences")
        valid = block_leave_one_out(self.data, self.periods, period, "valid")
        lens, summary = fit(
            self.named.config, self.data, run_dir, self.log, ends=ends, valid=valid, start=start
        )
        write_json(run_dir / "done.json", {"mode": self.mode, "sequences": len(ends), **summary})
        return lens
