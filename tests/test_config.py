from pathlib import Path

import pytest
import yaml

from lifelora.config import SHIPPED_CONFIGS, load_config, shipped_config
from lifelora.continual.config import ContinualCTRConfig, ContinualNextItemConfig
from lifelora.data.prepare import Preset
from lifelora.errors import LifeloraError
from lifelora.lens.din.config import LensConfig
from lifelora.lens.sasrec.config import SASRecConfig
from lifelora.serve.update import UpdateSettings
from lifelora.tasks.ctr.config import CTRConfig
from lifelora.tasks.next_item.config import NextItemConfig

CONFIG_DIR = SHIPPED_CONFIGS


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_parses(path):
    section = path.parent.name
    tree = yaml.safe_load(path.read_text())
    if section == "lens" and tree.get("kind") == "sasrec":
        section = "sasrec"
    if section == "continual" and tree.get("task") == "ctr":
        section = "continual-ctr"
    model = {
        "lens": LensConfig,
        "sasrec": SASRecConfig,
        "llm": CTRConfig,
        "next_item": NextItemConfig,
        "continual": ContinualNextItemConfig,
        "continual-ctr": ContinualCTRConfig,
        "update": UpdateSettings,
    }[section]
    config = load_config(model, path)
    assert isinstance(config, model)


def test_shipped_configs_exist():
    assert list((CONFIG_DIR / "lens").glob("*.yaml"))
    assert list((CONFIG_DIR / "llm").glob("*.yaml"))


def test_zero_shot_config_has_no_adapter():
    assert load_config(CTRConfig, CONFIG_DIR / "llm" / "zero-shot-ml1m.yaml").adapter is None


def test_overrides_are_parsed_as_yaml_and_nested(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"dataset": "ml-1m", "train": {"lr": 0.01}}))
    config = load_config(
        LensConfig, path, ["train.lr=5e-4", "model.use_ratings=false", "model.mlp_units=[128,64]"]
    )
    assert config.dataset == "ml-1m"
    assert config.train.lr == pytest.approx(5e-4)
    assert config.model.use_ratings is False
    assert config.model.mlp_units == [128, 64]


def test_base_then_overrides():
    preset = load_config(Preset, overrides=["min_history=10"], base=Preset().model_dump())
    assert preset.min_history == 10
    assert preset.label_threshold == 3.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.lr=-1"], "train.lr"),
        (["train.nope=1"], "train.nope"),
        (["lr"], "not KEY=VALUE"),
        (["kind=ssm"], "kind"),
        (["train.precision=fp8"], "train.precision"),
    ],
)
def test_bad_config_values_name_the_key(overrides, message):
    with pytest.raises(LifeloraError, match=message):
        load_config(LensConfig, None, overrides)


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(LifeloraError, match="config file not found"):
        load_config(LensConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(LifeloraError, match="not valid YAML"):
        load_config(LensConfig, bad)
    bad.write_text("- a list\n")
    with pytest.raises(LifeloraError, match="top level must be a mapping"):
        load_config(LensConfig, bad)


def test_the_next_item_demo_reads_shipped_configs():
    from lifelora.jobs.demo_next_item import LORA_CONFIG, PERSONALIZED_CONFIG, SASREC_CONFIG

    lora = load_config(NextItemConfig, CONFIG_DIR / LORA_CONFIG)
    personal = load_config(NextItemConfig, CONFIG_DIR / PERSONALIZED_CONFIG)
    assert (lora.adapter.kind, personal.adapter.kind) == ("lora", "personalized")
    assert lora.subset == personal.subset and lora.prompt == personal.prompt and lora.train == personal.train
    assert lora.semantic_ids == personal.semantic_ids
    assert load_config(SASRecConfig, CONFIG_DIR / SASREC_CONFIG).dataset == lora.dataset


def test_the_demo_reads_shipped_configs():
    from lifelora.jobs.demo import LENSES, RECLORA_CONFIG, SHARED_LORA_CONFIG

    lora = load_config(CTRConfig, CONFIG_DIR / SHARED_LORA_CONFIG)
    reclora = load_config(CTRConfig, CONFIG_DIR / RECLORA_CONFIG)
    assert (lora.adapter.kind, reclora.adapter.kind) == ("lora", "personalized")
    assert lora.subset == reclora.subset and lora.prompt == reclora.prompt and lora.train == reclora.train
    for _, name, overrides in LENSES:
        assert load_config(LensConfig, CONFIG_DIR / name, overrides).dataset == lora.dataset


def test_shipped_configs_are_found_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("configs/llm/lora-ml1m.yaml", "llm/lora-ml1m.yaml"):
        assert load_config(CTRConfig, Path(name)) == load_config(
            CTRConfig, CONFIG_DIR / "llm" / "lora-ml1m.yaml"
        )
    with pytest.raises(LifeloraError, match=r"configs/llm/nope\.yaml: config file not found"):
        load_config(CTRConfig, Path("configs/llm/nope.yaml"))


def test_errors_name_the_override_or_the_file_that_set_the_value(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"lr": 0.01, "epochs": "many"}}))
    with pytest.raises(LifeloraError, match=r"^override train\.lr=fast: Input should be a valid number"):
        load_config(LensConfig, shipped_config("lens/din-ml100k.yaml"), ["train.lr=fast"])
    with pytest.raises(LifeloraError, match=rf"^{path}: train\.epochs: Input should be a valid integer"):
        load_config(LensConfig, path, ["train.lr=1e-3"])
    with pytest.raises(LifeloraError, match=r"^override train=\{lr: x\}: train\.lr: "):
        load_config(LensConfig, None, ["train={lr: x}"])


@pytest.mark.parametrize(
    ("model", "overrides", "message"),
    [
        (LensConfig, ["train.lrr=1e-3"], "override train.lrr=1e-3: unknown key; did you mean train.lr?"),
        (LensConfig, ["trian.lr=1e-3"], "override trian.lr=1e-3: trian: unknown key; did you mean train?"),
        (CTRConfig, ["adapter.rr=4"], "override adapter.rr=4: unknown key; did you mean adapter.r?"),
        (
            CTRConfig,
            ["adapter.kind=personalized", "lens=x", "adapter.n_lora=4"],
            "override adapter.n_lora=4: unknown key; did you mean adapter.n_loras?",
        ),
        (
            CTRConfig,
            ["eval.zzz=1"],
            "override eval.zzz=1: unknown key; eval takes batch_size, precision, split",
        ),
    ],
)
def test_unknown_keys_get_the_closest_known_one(model, overrides, message):
    with pytest.raises(LifeloraError) as caught:
        load_config(model, None, overrides)
    assert str(caught.value) == message


def test_unknown_keys_in_a_file_get_the_closest_known_one(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"embed_dimm": 8}}))
    with pytest.raises(LifeloraError) as caught:
        load_config(LensConfig, path)
    assert str(caught.value) == f"{path}: model.embed_dimm: unknown key; did you mean model.embed_dim?"
