"""PESO's released layout: blocks as given periods, the index as given item codes, exactly; and every
malformed release gets one line naming the file and the problem (exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lifelora.data.periods import PeriodSpec, interaction_periods
from lifelora.data.prepared import PreparedData
from lifelora.data.sequential import block_leave_one_out

NAME = "Tiny_cl"
SHARED = Path("/work/shared/data/peso-release/Video_Games_cl_0.6_0_5_3_0")

BLOCKS = [
    {
        "u1": {"previous_block": [], "current_block": ["10", "11", "12", "13", "14"]},
        "u2": {"previous_block": [], "current_block": ["12", "13", "15", "16", "17"]},
    },
    {
        "u1": {"previous_block": ["10", "11", "12", "13", "14"], "current_block": ["15", "16", "17"]},
        "u3": {"previous_block": [], "current_block": ["10", "18", "19"]},
    },
    {
        "u2": {
            "previous_block": ["12", "13", "15", "16", "17"],
            "current_block": ["10", "11", "18", "19"],
        },
    },
]
INDEX = {str(i): [f"<a_{i % 3}>", f"<b_{i % 5}>", f"<c_{i // 5}>"] for i in range(10, 20)}


def write_release(directory: Path, blocks=BLOCKS, index=INDEX) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for k, block in enumerate(blocks):
        (directory / f"{NAME}.all.block_{k}.json").write_text(json.dumps(block))
    (directory / f"{NAME}.index.epoch1_edim2.json").write_text(json.dumps(index))
    return directory


@pytest.fixture
def release(tmp_path: Path) -> Path:
    return write_release(tmp_path / "release")


def test_prepare_reads_blocks_and_codes_exactly(run_cli, release, tmp_path, lifelora_home):
    out = tmp_path / "prepared"
    result = run_cli("data", "prepare", "tiny", "--source", release, "--out", out)
    assert result.code == 0, result.stderr
    data = PreparedData.load(out)
    assert data.meta["periods"] == 3
    periods = interaction_periods(data, PeriodSpec(given=3))
    assert np.bincount(periods).tolist() == [10, 6, 4]
    # u2's sequence is its block-0 items then its block-2 items, in the release's order
    u2 = data.user_index("u2")
    row = data.users.row(u2, named=True)
    items = data.sequences["item_idx"].slice(row["seq_offset"], row["seq_len"]).to_numpy()
    raw = data.items["item"].to_numpy()[items].tolist()
    assert raw == ["12", "13", "15", "16", "17", "10", "11", "18", "19"]
    assert periods[row["seq_offset"] : row["seq_offset"] + row["seq_len"]].tolist() == [0] * 5 + [2] * 4
    # the protocol's targets in block 2: u2's last item tests, its second-last validates
    test = block_leave_one_out(data, periods, 2, "test")
    assert test.user_idx.tolist() == [u2] and raw[test.position[0]] == "19"

    info = run_cli("data", "info", "tiny", "--data-dir", out, "--periods", "--json")
    assert info.code == 0, info.stderr
    rows = json.loads(info.stdout)["periods"]
    assert [r["users"] for r in rows] == [2, 2, 1]
    assert [r["new_users"] for r in rows] == [2, 1, 0]
    assert [r["new_items"] for r in rows] == [8, 2, 0]
    assert [r["interactions"] for r in rows] == [10, 6, 4]
    assert [r["training_targets"] for r in rows] == [6, 2, 2]


def test_given_codes_are_the_index(release, tmp_path, lifelora_home):
    from lifelora.data.prepare import prepare, preset_by_name, save_prepared
    from lifelora.data.registry import load_raw
    from lifelora.tasks.next_item.semantic_ids import SemanticIdConfig, given_codes
    from lifelora.tasks.next_item.trie import CodeTrie

    save_prepared(prepare(load_raw("tiny", release), preset_by_name("rella")), tmp_path / "p")
    data = PreparedData.load(tmp_path / "p")
    codes = given_codes(data, SemanticIdConfig(quantizer="given"))
    raw = data.items["item"].to_list()
    expected = [[int(t.split("_")[1][:-1]) for t in INDEX[item]] for item in raw]
    assert codes.codes.tolist() == expected
    assert codes.level_sizes == [3, 5, 4]  # each level's largest code + 1
    # a code shared by two items (228 of the Video Games index's 25,935 items share one)
    shared = codes.codes.copy()
    shared[1] = shared[0]
    with pytest.raises(Exception, match="not unique"):
        CodeTrie(shared, codes.level_sizes)
    trie = CodeTrie(shared, codes.level_sizes, shared=True)
    assert trie.representative[:2].tolist() == [0, 0]
    assert trie.representative[2:].tolist() == list(range(2, len(raw)))


def _release_with(tmp_path: Path, change) -> Path:
    blocks, index = json.loads(json.dumps(BLOCKS)), dict(INDEX)
    change(blocks, index)
    return write_release(tmp_path / "bad", blocks, index)


def _no_codes(blocks, index):
    del index["19"]


def _mixed_length(blocks, index):
    index["11"] = index["11"][:2]


def _two_shapes(blocks, index):
    blocks[1]["u1"]["previous_block"] = ["10", "11"]


def _bad_token(blocks, index):
    index["12"] = ["<a_x>", "<b_1>", "<c_1>"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_no_codes, "1 item(s) have no codes, e.g. '19'"),
        (_mixed_length, "codes of mixed length"),
        (_two_shapes, "user 'u1''s previous_block (2 items) is not their 5 items of the earlier blocks"),
        (_bad_token, "is neither a non-negative integer nor a token ending in digits"),
    ],
)
def test_malformed_release_one_line(run_cli, tmp_path, lifelora_home, change, message):
    source = _release_with(tmp_path, change)
    out = tmp_path / "prepared"
    result = run_cli("data", "prepare", "tiny", "--source", source, "--out", out)
    assert result.code == 2
    assert len(result.error_lines) == 1 and message in result.stderr
    assert not out.exists()


def test_block_numbers_must_not_skip(run_cli, release, tmp_path, lifelora_home):
    (release / f"{NAME}.all.block_2.json").rename(release / f"{NAME}.all.block_3.json")
    result = run_cli("data", "prepare", "tiny", "--source", release, "--out", tmp_path / "p")
    assert result.code == 2 and len(result.error_lines) == 1
    assert "block numbers must run 0, 1, … without a gap; found [0, 1, 3] (missing block 2)" in result.stderr


def test_unreadable_json_one_line(run_cli, release, tmp_path, lifelora_home):
    (release / f"{NAME}.all.block_1.json").write_text("{not json")
    result = run_cli("data", "prepare", "tiny", "--source", release, "--out", tmp_path / "p")
    assert result.code == 2 and len(result.error_lines) == 1
    assert "block_1.json: not valid JSON" in result.stderr


def test_generic_periods_and_codes(run_cli, tmp_path, lifelora_home):
    """Anyone's data: a period column and a codes file give the same protocol as the release."""
    rows = ["uid,iid,score,ts,block"]
    for user, items in (("a", "10 11 12 13 14 15"), ("b", "12 13 14 16 17 18")):
        for t, item in enumerate(items.split()):
            rows.append(f"{user},{item},5,{100 + t},{0 if t < 4 else 1}")
    table = tmp_path / "mine.csv"
    table.write_text("\n".join(rows) + "\n")
    codes = tmp_path / "codes.json"
    codes.write_text(json.dumps({str(i): [i % 4, i // 4] for i in range(10, 19)}))
    out = tmp_path / "p"
    columns = "user=uid,item=iid,rating=score,timestamp=ts,period=block"
    result = run_cli(
        "data", "prepare", "mine", "--source", table, "--format", "csv", "--columns", columns,
        "--codes", codes, "--out", out,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    data = PreparedData.load(out)
    assert np.bincount(interaction_periods(data, PeriodSpec(given=2))).tolist() == [8, 4]
    assert (out / "item_codes.parquet").is_file()

    (tmp_path / "back.csv").write_text(table.read_text().replace("a,15,5,105,1", "a,15,5,105,0").replace(
        "a,10,5,100,0", "a,10,5,100,1"))  # fmt: skip
    result = run_cli(
        "data", "prepare", "mine", "--source", tmp_path / "back.csv", "--format", "csv",
        "--columns", columns, "--out", tmp_path / "p2",
    )  # fmt: skip
    assert result.code == 2 and "user 'a''s periods go back in time (from 1 to 0)" in result.stderr


def test_given_periods_count_is_checked(release, tmp_path, lifelora_home):
    from lifelora.data.prepare import prepare, preset_by_name, save_prepared
    from lifelora.data.registry import load_raw
    from lifelora.errors import LifeloraError

    save_prepared(prepare(load_raw("tiny", release), preset_by_name("rella")), tmp_path / "p")
    data = PreparedData.load(tmp_path / "p")
    with pytest.raises(LifeloraError, match=r"periods\.given: 5 periods expected, tiny has 3"):
        interaction_periods(data, PeriodSpec(given=5))
    with pytest.raises(ValueError, match="not fractions and given"):
        PeriodSpec(fractions=[0.5, 0.5], given=2)


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared copy of PESO's release is not on this machine")
def test_shared_video_games_release(run_cli, tmp_path, lifelora_home):
    """The issue's figures for the shared copy of the complete Video Games release."""
    out = tmp_path / "vg"
    assert run_cli("data", "prepare", "video-games", "--source", SHARED, "--out", out).code == 0
    info = run_cli("data", "info", "video-games", "--data-dir", out, "--periods", "--json")
    rows = json.loads(info.stdout)["periods"]
    assert [r["users"] for r in rows] == [12447, 1035, 1091, 1949, 1791]
    assert [r["new_users"] for r in rows] == [12447, 806, 872, 1703, 1472]
    assert [r["items"] for r in rows] == [18450, 4537, 4269, 5951, 5641]
    assert [r["new_items"] for r in rows] == [18450, 1467, 1490, 2612, 1916]
    assert [r["interactions"] for r in rows] == [91273, 7491, 7492, 14646, 13271]
    assert [r["training_targets"] for r in rows] == [66379, 5421, 5310, 10748, 9689]


def test_periods_of_data_without_given_ones_are_pesos_cut(run_cli, data):
    """Any prepared dataset: --periods cuts PESO's 60/10/10/10/10 of its interactions."""
    result = run_cli("data", "info", data.name, "--data-dir", data.directory, "--periods", "--json")
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)["periods"]
    assert [r["period"] for r in rows] == [0, 1, 2, 3, 4]
    assert sum(r["interactions"] for r in rows) == data.sequences.height
    assert sum(r["new_users"] for r in rows) == int((data.users["seq_len"] > 0).sum())
    table = run_cli("data", "info", data.name, "--data-dir", data.directory, "--periods")
    assert table.code == 0 and "fractions [0.6, 0.1, 0.1, 0.1, 0.1]" in table.stdout


def test_continual_baselines_are_the_tasks_own():
    from lifelora.continual.config import ContinualCTRConfig, ContinualNextItemConfig

    assert ContinualNextItemConfig.model_validate({"continual": {"baselines": ["popularity", "sasrec"]}})
    with pytest.raises(ValueError, match="'popularity' is not a baseline of task ctr"):
        ContinualCTRConfig.model_validate({"continual": {"baselines": ["popularity"]}})
