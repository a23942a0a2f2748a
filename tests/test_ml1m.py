"""ReLLa's ML-1M counts, on the embedded copy (fetched once into the cache)."""

import pytest

from lifelora.data.prepare import PRESETS, prepare
from lifelora.data.registry import load_raw

pytestmark = pytest.mark.integration


def test_rella_preset_reproduces_the_published_ml1m_counts():
    prepared = prepare(load_raw("ml-1m"), PRESETS["rella"])
    stats = prepared["meta"]["stats"]
    assert stats["interactions"] == 1_000_209
    assert stats["samples"] == 970_009
    assert (stats["train"]["samples"], stats["valid"]["samples"], stats["test"]["samples"]) == (
        776_007,
        97_000,
        97_002,
    )
    assert stats["users"] == 6_040
    assert stats["items"] == 3_706
    samples = prepared["samples"]
    assert samples["hist_len"].min() == 5
    assert samples["timestamp"].is_sorted()
    assert (samples["label"].to_numpy() == (samples["rating"].to_numpy() > 3)).all()
