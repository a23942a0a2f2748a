"""Settings chosen on validation, never on the test blocks. Strategies of one family (the same method
and settings but for λ, such as PESO's softmax-KL at λ 0.5, 2 and 8) are candidates; the chosen one has
the lowest validation loss of its kept epochs, averaged over blocks 1.. and over the seeds in which every
candidate has finished every block (the same seeds for all: each seed has its own D1 model). Losses within
`TIED` of the lowest are a tie — far below the validation set's own noise — and a tie goes to the first listed
(the preset lists its default first). The same rule holds for every family; a seed where some candidate is
unfinished is named, not used, until it finishes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lifelora.continual.config import ContinualConfig
from lifelora.io import read_json

VARIED = {"label", "weight"}  # what may differ within a family
TIED = 1e-4  # nats of mean validation loss


def seeds_that_ran(run_dir: Path, cfg: ContinualConfig) -> list[int]:
    return [seed for seed in cfg.continual.seeds if (run_dir / f"seed-{seed}").is_dir()]


def validation_loss(root: Path, title: str, n_periods: int) -> float | None:
    """The mean over periods 1.. of the kept epoch's validation loss; None until every period has
    trained with a validation loss recorded."""
    losses = []
    for period in range(1, n_periods):
        done = root / title / f"period-{period}" / "done.json"
        train = read_json(done)["train"] if done.is_file() else None
        if not train or not train.get("valid_losses"):
            return None
        losses.append(train["valid_losses"][train["best_epoch"] - 1])
    return float(np.mean(losses))


def choices(run_dir: Path, cfg: ContinualConfig) -> list[dict]:
    """One entry per family of two or more strategies: its name, each candidate's validation loss over
    the seeds every candidate has finished (None while there is none), the chosen title (None until
    then), those seeds and the seeds still waiting on a candidate."""
    families: dict[str, list] = {}
    for strategy in cfg.continual.strategies:
        key = json.dumps(strategy.model_dump(mode="json", exclude=VARIED), sort_keys=True)
        families.setdefault(key, []).append(strategy)
    ran = seeds_that_ran(run_dir, cfg)
    n_periods = cfg.continual.periods.n_periods
    found = []
    for members in (m for m in families.values() if len(m) > 1):
        per_seed = {
            s.title: {seed: validation_loss(run_dir / f"seed-{seed}", s.title, n_periods) for seed in ran}
            for s in members
        }
        complete = [seed for seed in ran if all(per_seed[title][seed] is not None for title in per_seed)]
        losses = {
            title: float(np.mean([loss[seed] for seed in complete])) if complete else None
            for title, loss in per_seed.items()
        }
        first = members[0]
        tied = [t for t, loss in losses.items() if loss <= min(losses.values()) + TIED] if complete else []
        found.append({
            "family": " ".join(str(v) for k, v in first.model_dump().items() if k not in VARIED),
            "validation_loss": losses,
            "chosen": tied[0] if tied else None,
            "tied": tied if len(tied) > 1 else [],
            "seeds": complete,
            "unfinished_seeds": [seed for seed in ran if seed not in complete],
        })  # fmt: skip
    return found


def choices_markdown(found: list[dict], n_periods: int) -> str:
    lines = [
        f"**Chosen on validation** (the kept epochs' validation loss, mean over blocks 1..{n_periods - 1} "
        "and the seeds in which every candidate has finished; the test blocks are never consulted):",
        "",
        "| family | candidates: validation loss | seeds compared | seeds waiting on a candidate | chosen |",
        "|---|---|---|---|---|",
    ]
    for family in found:
        losses = ", ".join(
            f"{title} {'–' if loss is None else f'{loss:.5f}'}"
            for title, loss in family["validation_loss"].items()
        )
        chosen = family["chosen"] or "– (no seed where every candidate has finished)"
        if family.get("tied"):
            chosen += f" (tied within {TIED:g} with {', '.join(family['tied'][1:])}: the first listed)"
        compared = ", ".join(map(str, family["seeds"])) or "–"
        waiting = ", ".join(map(str, family.get("unfinished_seeds", []))) or "–"
        lines.append(f"| {family['family']} | {losses} | {compared} | {waiting} | {chosen} |")
    return "\n".join(lines) + "\n"
