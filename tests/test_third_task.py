"""A third task, written here and registered from here, runs through the generic paths: the `train`,
`evaluate` and `recommend` commands and a two-period continual run. It touches nothing outside its own
code, which is what adding a task to lifelora costs.

The task ("liked"): from a user's last few items (as tokens) and a target item, does the user like it?
The answer is read from two token rows at the last position."""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field
from synthetic import synthetic_prepared
from tiny_llm import save_tiny

from lifelora.adapters import AdapterConfig, SharedLoraConfig
from lifelora.errors import LifeloraError
from lifelora.llm.backbone import load_backbone
from lifelora.llm.batching import left_pad, positions_of
from lifelora.llm.logits import last_logits, next_token_loss
from lifelora.tasks.base import Recommendation, SampleRows, Task
from lifelora.tasks.config import RunConfig
from lifelora.tasks.registry import register_task, task_names
from lifelora.tasks.subsets import subset_rows
from lifelora.training import TrainSettings

ANSWERS = (5, 6)  # token rows standing in for "no" / "yes"
FIRST_ITEM_TOKEN = 10
HISTORY = 3


class Subset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: int | None = 48
    eval: int | None = 40
    seed: int = 0


class Evaluation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: Literal["valid", "test"] = "test"
    batch_size: int = 16
    precision: Literal["auto", "fp32", "bf16"] | None = None


class LikedConfig(RunConfig):
    untrained = "untrained"

    task: Literal["liked"] = "liked"
    dataset: str = "ml-synthetic"
    model: str = "tiny"
    adapter: AdapterConfig | None = Field(default_factory=SharedLoraConfig)
    subset: Subset = Field(default_factory=Subset)
    train: TrainSettings = Field(default_factory=lambda: TrainSettings(precision="fp32", batch_size=8))
    eval: Evaluation = Field(default_factory=Evaluation)


class LikedExamples(torch.utils.data.Dataset):
    def __init__(self, data, samples: pl.DataFrame):
        self.samples = samples
        history = data.recent_history(samples, HISTORY)
        items = np.where(history.mask, history.items + FIRST_ITEM_TOKEN, 1)
        self.ids = np.concatenate([items, samples["item_idx"].to_numpy()[:, None] + FIRST_ITEM_TOKEN], 1)
        self.labels = samples["label"].to_numpy().astype(np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, row: int) -> int:
        return row

    def collate(self, rows: list[int]) -> dict:
        ids, mask = left_pad([self.ids[r].tolist() for r in rows], 0)
        labels = torch.as_tensor(ANSWERS)[torch.from_numpy(self.labels[rows])]
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions_of(mask),
            "labels": labels,
        }


class LikedTask(SampleRows, Task):
    name = "liked"
    config_class = LikedConfig
    label = "liked"
    columns = ("ACC", "samples")
    headline = ("ACC",)

    def __init__(self, data, model: str, log=print):
        self.data, self.log = data, log
        self.backbone = load_backbone(model, log=log)

    @classmethod
    def open(cls, cfg, data, log=print, run=None):
        return cls(data, cfg.model, log)

    def load_lens(self, path):
        raise LifeloraError("the liked task routes by no lens")

    def samples(self, cfg, split, n):
        samples = self.data.split(split)
        return samples[subset_rows(samples.height, n, cfg.subset.seed)]

    def examples_of(self, cfg, samples, lens=None):
        return LikedExamples(self.data, samples)

    def loss(self, cfg):
        return next_token_loss  # the answer token after the items carries the loss

    @torch.no_grad()
    def _yes(self, model, examples) -> np.ndarray:
        batch = examples.collate(list(range(len(examples))))
        logits = last_logits(model, **{k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")})
        return logits[:, list(ANSWERS)].softmax(-1)[:, 1].numpy()

    def evaluate_examples(self, model, cfg, examples, out_dir, name):
        model.eval()
        correct = (self._yes(model, examples) > 0.5) == (examples.labels == 1)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"correct_{name}.json").write_text(json.dumps(correct.tolist()))
        return {"ACC": float(correct.mean()), "samples": len(examples)}, correct.astype(float)

    def group_metrics(self, cfg, samples, outcome, mask):
        return {"ACC": float(outcome[mask].mean())}

    def recommend(self, model, cfg, user, k, options):
        user_idx = self.data.user_index(user)
        rows = self.data.split("test").filter(pl.col("user_idx") == user_idx).head(1)
        items = np.arange(len(self.data.items))
        candidates = pl.concat([rows] * len(items)).with_columns(pl.Series("item_idx", items, pl.UInt32))
        yes = self._yes(model, LikedExamples(self.data, candidates.cast(rows.schema)))
        top = np.argsort(-yes, kind="stable")[:k]
        table = pl.DataFrame(
            {
                "rank": np.arange(1, len(top) + 1),
                "title": self.data.items["title"].to_numpy()[top],
                "p": yes[top],
            }
        )
        return Recommendation(table, f"liked by user {user}", "p")

    def period_samples(self, periods, period, split):
        offset = self.data.users["seq_offset"].to_numpy()[self.data.samples["user_idx"].to_numpy()]
        rows = np.flatnonzero(periods[offset + self.data.samples["hist_len"].to_numpy()] == period)
        part = {"train": rows[:-20], "valid": rows[-20:-10], "test": rows[-10:]}[split]
        return self.data.samples[part]

    def period_lenses(self, periods, mode, named, directory, log):
        raise LifeloraError("the liked task routes by no lens")


@pytest.fixture
def liked(tmp_path, lifelora_home, monkeypatch):
    monkeypatch.setenv("LIFELORA_RUNS", str(tmp_path / "runs"))
    register_task(LikedTask)
    data_dir = tmp_path / "prepared"
    synthetic_prepared(data_dir, name="ml-synthetic")
    config = {"data_dir": str(data_dir), "model": str(save_tiny(tmp_path / "tiny"))}
    path = tmp_path / "liked.yaml"
    path.write_text(yaml.safe_dump({"task": "liked", **config, "train": {"lr": 1e-2, "precision": "fp32"}}))
    return path


def test_a_task_registered_from_outside_trains_evaluates_and_recommends_through_the_commands(
    liked, run_cli, tmp_path
):
    assert "liked" in task_names()
    trained = run_cli("train", "-c", liked, "--run-dir", tmp_path / "run")
    assert trained.code == 0, trained.stderr
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["task"] == "liked" and summary["train_samples"] == 48
    assert 0.0 <= summary["metrics"]["test"]["ACC"] <= 1.0
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "run" / "correct_test.json").is_file()

    again = run_cli("evaluate", "--run", tmp_path / "run", "--run-dir", tmp_path / "again")
    assert again.code == 0, again.stderr
    reread = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert reread["metrics"]["test"]["ACC"] == summary["metrics"]["test"]["ACC"]

    top = run_cli("recommend", "3", "--run", tmp_path / "run", "--k", "4", "--json")
    assert top.code == 0, top.stderr
    ranked = [json.loads(line) for line in top.stdout.splitlines()]
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4]
    assert [r["p"] for r in ranked] == sorted((r["p"] for r in ranked), reverse=True)

    refused = run_cli("evaluate", "-c", liked, "--decoding", "beam")
    assert refused.code == 2 and refused.error_lines == [
        "lifelora: error: --decoding: only for --task next-item"
    ]


def test_a_task_registered_from_outside_runs_a_two_period_continual_run(liked, run_cli, tmp_path):
    tree = yaml.safe_load(liked.read_text())
    tree["continual"] = {
        "periods": {"fractions": [0.5, 0.5]},
        "strategies": [{"name": "pretrain"}, {"name": "finetune"}, {"name": "peso", "proximal": "l2"}],
        "valid_samples": 8,
    }
    config = tmp_path / "continual.yaml"
    config.write_text(yaml.safe_dump(tree))
    result = run_cli("continual", "run", "-c", config, "--run-dir", tmp_path / "continual")
    assert result.code == 0, result.stderr
    report = json.loads((tmp_path / "continual" / "results.json").read_text())
    assert report["task"] == "liked" and report["metric"] == "ACC"
    assert set(report["strategies"]) == {"pretrain", "finetune", "peso"}
    for strategy in report["strategies"].values():
        assert 0.0 <= strategy["mean"]["ACC"] <= 1.0
    evaluated = tmp_path / "continual" / "seed-42" / "evals"
    assert (evaluated / "finetune" / "period-1" / "block-1.json").is_file()


def test_a_task_that_builds_no_lens_from_a_config_says_so(tmp_path):
    task = LikedTask(
        synthetic_prepared(tmp_path / "d", name="ml-synthetic"), str(save_tiny(tmp_path / "tiny"))
    )
    with pytest.raises(LifeloraError, match=r"^lens: din\.yaml: the liked task builds no lens from a config"):
        task.lens_from_config("din.yaml")
