"""Semantic IDs: every item's full code is unique, both quantizers are deterministic, codes survive a
save/load round trip and refuse another item table, and the errors a user can meet are one clear line."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch

from lifelora.errors import LifeloraError
from lifelora.io import lifelora_home
from lifelora.lens.sasrec import SASRecLens
from lifelora.lens.sasrec.config import SASRecConfig
from lifelora.llm.item_embeddings import METHOD
from lifelora.llm.item_text import item_descriptions, item_titles
from lifelora.tasks.next_item import semantic_ids
from lifelora.tasks.next_item.quantizers import RqvaeConfig, rkmeans
from lifelora.tasks.next_item.semantic_ids import (
    ItemCodes,
    SemanticIdConfig,
    auto_codebook_size,
    build_codes,
    item_codes,
    items_fingerprint,
)

FAST_RQVAE = RqvaeConfig(hidden=[32], latent_dim=8, epochs=5, batch_size=64)
CACHE = lifelora_home()  # the real cache, read before the `home` fixture points elsewhere
STATS = {"collision_rate", "largest_group", "codebook_use", "reconstruction_mse", "reconstruction_relative"}


def clustered(n: int = 300, dim: int = 16, clusters: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    return (centres[rng.integers(clusters, size=n)] + 0.1 * rng.normal(size=(n, dim))).astype(np.float32)


def config(quantizer: str = "rkmeans", **overrides) -> SemanticIdConfig:
    return SemanticIdConfig(quantizer=quantizer, codebook_size=8, rqvae=FAST_RQVAE, **overrides)


@pytest.mark.parametrize("quantizer", ["rkmeans", "rqvae"])
def test_every_full_code_is_unique_even_for_identical_vectors(quantizer):
    vectors = clustered()
    vectors[100:150] = vectors[100]  # 50 items with one and the same vector
    codes = build_codes(vectors, config(quantizer), "fp")
    assert len(np.unique(codes.codes, axis=0)) == len(vectors)
    assert (np.diff(codes.codes[100:150, -1]) > 0).all()  # dedup digits in item_idx order
    assert codes.level_sizes[-1] == codes.stats["largest_group"] >= 50


@pytest.mark.parametrize("quantizer", ["rkmeans", "rqvae"])
def test_codes_fit_their_level_sizes(quantizer):
    codes = build_codes(clustered(), config(quantizer, levels=2), "fp")
    assert codes.codes.dtype == np.int64 and codes.codes.shape == (300, 3)
    assert codes.level_sizes[:2] == [8, 8]
    assert (codes.codes >= 0).all() and (codes.codes < codes.level_sizes).all()
    assert codes.codes[:, -1].max() + 1 == codes.level_sizes[-1]


@pytest.mark.parametrize("quantizer", ["rkmeans", "rqvae"])
def test_quantizers_are_deterministic_for_a_seed(quantizer):
    vectors = clustered()
    first, again = (build_codes(vectors, config(quantizer), "fp") for _ in range(2))
    np.testing.assert_array_equal(first.codes, again.codes)
    assert first.stats["reconstruction_mse"] == again.stats["reconstruction_mse"]


def test_more_rkmeans_levels_reconstruct_better():
    vectors = clustered(clusters=40)
    errors = [rkmeans(vectors, levels, 8).mse for levels in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]


def test_stats_are_reported_and_sane():
    stats = build_codes(clustered(), config(), "fp").stats
    assert stats.keys() >= STATS
    assert 0.0 <= stats["collision_rate"] <= 1.0
    assert len(stats["codebook_use"]) == 3 and all(0 < u <= 1 for u in stats["codebook_use"])
    assert 0.0 <= stats["reconstruction_relative"] < 1.0
    assert stats["seconds"] >= 0


def test_auto_codebook_size_follows_the_catalogue():
    assert auto_codebook_size(1_682, 3) == 32  # ML-100K
    assert auto_codebook_size(3_706, 3) == 64  # ML-1M's rated items
    assert auto_codebook_size(100_000, 3) == 256
    assert auto_codebook_size(10_000_000, 3) == 512  # 256**3 would leave too little headroom
    assert auto_codebook_size(10, 3) == 8


def test_a_codebook_larger_than_the_catalogue_is_clamped_with_a_note():
    notes = []
    codes = build_codes(clustered(n=20), SemanticIdConfig(codebook_size=64), "fp", log=notes.append)
    assert codes.level_sizes[:3] == [20, 20, 20]
    assert "clamped" in codes.stats["note"] and notes


def data_like(fingerprint: str, n_items: int) -> SimpleNamespace:
    """What check_matches reads of a PreparedData."""
    items = pl.DataFrame({"item_idx": range(n_items)})
    return SimpleNamespace(meta={"fingerprint": fingerprint}, items=items, name="ml-x", directory=Path("d"))


def test_save_load_round_trip(tmp_path):
    vectors = clustered()
    fingerprint = items_fingerprint(data_like("abc", len(vectors)))
    for quantizer in ("rkmeans", "rqvae"):
        codes = build_codes(vectors, config(quantizer), fingerprint)
        codes.save(tmp_path / quantizer)
        loaded = ItemCodes.load(tmp_path / quantizer)
        np.testing.assert_array_equal(loaded.codes, codes.codes)
        assert (loaded.level_sizes, loaded.fingerprint) == (codes.level_sizes, codes.fingerprint)
        assert (loaded.config, loaded.stats, len(loaded)) == (codes.config, codes.stats, 300)
        assert loaded.tensors.keys() == codes.tensors.keys()
        loaded.check_matches(data_like("abc", 300))


def test_codes_refuse_another_item_table(tmp_path):
    codes = build_codes(clustered(), config(), items_fingerprint(data_like("abc", 300)))
    codes.save(tmp_path / "codes")
    loaded = ItemCodes.load(tmp_path / "codes")
    for other in (data_like("xyz", 300), data_like("abc", 299)):
        with pytest.raises(LifeloraError, match="codes were made for another item table") as error:
            loaded.check_matches(other)
        assert str(tmp_path / "codes") in str(error.value)


def test_missing_or_corrupt_codes_are_one_line_errors(tmp_path):
    with pytest.raises(LifeloraError, match="no semantic IDs here"):
        ItemCodes.load(tmp_path / "nothing")
    build_codes(clustered(), config(), "fp").save(tmp_path / "codes")
    (tmp_path / "codes" / "codes.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(LifeloraError, match="cannot read the codes") as error:
        ItemCodes.load(tmp_path / "codes")
    assert "\n" not in str(error.value)
    (tmp_path / "codes" / "semantic_ids.json").write_text("{")
    with pytest.raises(LifeloraError, match="unreadable"):
        ItemCodes.load(tmp_path / "codes")


def test_a_catalogue_too_large_for_the_codes_says_what_would_fit():
    too_small = SemanticIdConfig(levels=2, codebook_size=4, max_dedup=2)  # 4 * 4 * 2 = 32 codes
    with pytest.raises(LifeloraError, match="100 items do not fit") as error:
        build_codes(clustered(n=100), too_small, "fp")
    assert "levels=3 or codebook_size=8 or max_dedup=7" in str(error.value)


def test_a_collision_group_over_max_dedup_says_what_would_fit():
    vectors = clustered()
    vectors[:20] = vectors[0]
    with pytest.raises(LifeloraError, match="20 items share one quantized code") as error:
        build_codes(vectors, config(max_dedup=5), "fp")
    assert "max_dedup=20" in str(error.value)


def test_bad_vectors_are_refused():
    vectors = clustered()
    vectors[7, 3] = np.nan
    with pytest.raises(LifeloraError, match=r"1 item vectors contain NaN .*item_idx 7"):
        build_codes(vectors, config(), "fp")
    with pytest.raises(LifeloraError, match="no items"):
        build_codes(np.zeros((0, 16), np.float32), config(), "fp")


def test_config_refuses_unknown_keys():
    with pytest.raises(ValueError, match="extra"):
        SemanticIdConfig(levls=3)


def test_item_codes_are_learned_once_and_cached(home, data, monkeypatch):
    calls = []

    def fake_embeddings(backbone, data, pca_dim, log=print):
        calls.append(pca_dim)
        return clustered(n=data.items.height)

    monkeypatch.setattr(semantic_ids, "item_embeddings", fake_embeddings)
    backbone = SimpleNamespace(name="org/tiny-model")
    first = item_codes(backbone, data, config(), log=lambda _: None)
    again = item_codes(backbone, data, config(), log=lambda _: None)
    assert calls == [512]
    np.testing.assert_array_equal(first.codes, again.codes)
    assert again.directory.parent == home / "semantic_ids" / "org--tiny-model"
    again.check_matches(data)


def test_collaborative_codes_quantize_a_lens_item_embeddings(home, data, tmp_path):
    torch.manual_seed(0)
    lens = SASRecLens.create(SASRecConfig.model_validate({"model": {"hidden": 8, "max_len": 8}}), data)
    lens.save(tmp_path / "sasrec" / "lens")
    backbone = SimpleNamespace(name="org/never-loaded")  # no text vectors are needed
    codes = item_codes(backbone, data, config(lens=tmp_path / "sasrec"), log=lambda _: None)
    vectors = lens.model.item_emb.weight[1:].detach().numpy()
    expected = build_codes(vectors, config(lens=tmp_path / "sasrec"), items_fingerprint(data), log=print)
    np.testing.assert_array_equal(codes.codes, expected.codes)
    assert len(codes) == data.items.height and codes.centroids()[0].shape == (8, 8)
    assert codes.centroids()[-1] is None  # the dedup level stands for no vector
    other = SimpleNamespace(**{**vars(data), "meta": {**data.meta, "fingerprint": "another"}})
    with pytest.raises(LifeloraError, match="another"):
        item_codes(backbone, other, config(lens=tmp_path / "sasrec"), log=lambda _: None)


@pytest.mark.parametrize("setting", [{"lens": "runs/sasrec"}, {"token_init": "codebook"}])
def test_given_codes_refuse_settings_that_need_vectors(setting):
    with pytest.raises(ValueError, match="quantizer given uses the data's codes"):
        SemanticIdConfig(quantizer="given", **setting)


def test_items_without_a_title_get_a_fallback_description():
    items = pl.DataFrame(
        {
            "item": ["1", "2", "3"],
            "title": ["Toy Story", None, " "],
            "year": [1995, 1996, None],
            "genres": [["Animation"], None, ["Drama"]],
        }
    )
    assert item_titles(items) == ["Toy Story (1995)", "item 2 (1996)", "item 3"]
    assert item_descriptions(items, "ml-x")[1] == (
        "Here is a movie. Its title is item 2 (1996). The movie's genre is unknown."
    )


@pytest.mark.integration
@pytest.mark.parametrize("dataset", ["ml-100k-1682items", "ml-1m-3883items"])
@pytest.mark.parametrize("quantizer", ["rkmeans", "rqvae"])
def test_real_item_vectors(dataset, quantizer):
    """Both quantizers on the cached SmolLM2 item vectors (run with -s to see the numbers)."""
    from safetensors.numpy import load_file

    path = CACHE / "embeddings" / "smollm2-135m" / f"{dataset}-{METHOD}-pca512.safetensors"
    if not path.is_file():
        pytest.skip(f"{path} is not cached")
    vectors = load_file(str(path))["embeddings"]
    codes = build_codes(vectors, SemanticIdConfig(quantizer=quantizer), "fp")
    print(dataset, quantizer, codes.level_sizes, codes.stats)
    assert len(np.unique(codes.codes, axis=0)) == len(vectors)
    assert codes.stats["collision_rate"] < 0.5 and codes.stats["reconstruction_relative"] < 1.0
