"""Continual-learning metrics (GEM ACC/BWT/FWT, Chaudhry forgetting) against hand-computed matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lifelora.errors import LifeloraError
from lifelora.metrics.continual import (
    average_accuracy,
    backward_transfer,
    diagonal,
    forgetting,
    forward_transfer,
    mean_over_periods,
    transfer_summary,
)

NAN = float("nan")

# Row t = after training on period t, column j = test set of period j.
R3 = np.array(
    [
        [0.80, 0.30, 0.20],
        [0.70, 0.90, 0.40],
        [0.60, 0.80, 0.85],
    ]
)
B3 = np.array([0.10, 0.20, 0.25])

R4 = np.array(
    [
        [0.50, 0.20, 0.10, 0.05],
        [0.60, 0.70, 0.30, 0.15],
        [0.55, 0.65, 0.80, 0.35],
        [0.40, 0.75, 0.60, 0.90],
    ]
)
B4 = np.array([0.00, 0.10, 0.20, 0.30])


def test_three_by_three_by_hand():
    # ACC = (0.60 + 0.80 + 0.85) / 3 = 2.25 / 3 = 0.75
    assert average_accuracy(R3) == pytest.approx(0.75)
    # ACC after period 1 = (0.70 + 0.90) / 2 = 0.80
    assert average_accuracy(R3, t=1) == pytest.approx(0.80)
    # BWT = ((0.60 - 0.80) + (0.80 - 0.90)) / 2 = (-0.20 - 0.10) / 2 = -0.15
    assert backward_transfer(R3) == pytest.approx(-0.15)
    # FWT = ((R[0,1] - b1) + (R[1,2] - b2)) / 2 = ((0.30 - 0.20) + (0.40 - 0.25)) / 2 = 0.125
    assert forward_transfer(R3, B3) == pytest.approx(0.125)
    # forgetting: j=0: max(0.80, 0.70) - 0.60 = 0.20; j=1: max(0.90) - 0.80 = 0.10; mean = 0.15
    assert forgetting(R3) == pytest.approx(0.15)
    np.testing.assert_allclose(diagonal(R3), [0.80, 0.90, 0.85])
    summary = transfer_summary(R3, B3)
    assert set(summary) == {"acc_final", "diagonal_mean", "next_mean", "bwt", "fwt", "forgetting"}
    # diagonal_mean over periods 1..: (0.90 + 0.85) / 2 = 0.875; next_mean: (0.30 + 0.40) / 2 = 0.35
    assert summary["diagonal_mean"] == pytest.approx(0.875)
    assert summary["next_mean"] == pytest.approx(0.35)
    assert summary["acc_final"] == pytest.approx(0.75)
    assert summary["bwt"] == pytest.approx(-0.15)
    assert summary["fwt"] == pytest.approx(0.125)
    assert summary["forgetting"] == pytest.approx(0.15)


def test_four_by_four_by_hand():
    # ACC = (0.40 + 0.75 + 0.60 + 0.90) / 4 = 2.65 / 4 = 0.6625
    assert average_accuracy(R4) == pytest.approx(0.6625)
    # BWT = ((0.40 - 0.50) + (0.75 - 0.70) + (0.60 - 0.80)) / 3 = (-0.10 + 0.05 - 0.20) / 3 = -0.25 / 3
    assert backward_transfer(R4) == pytest.approx(-0.25 / 3)
    # FWT = ((0.20 - 0.10) + (0.30 - 0.20) + (0.35 - 0.30)) / 3 = 0.25 / 3
    assert forward_transfer(R4, B4) == pytest.approx(0.25 / 3)
    # forgetting: j=0: max(0.50, 0.60, 0.55) - 0.40 = 0.20 (best is after period 1, not the diagonal)
    #             j=1: max(0.70, 0.65) - 0.75 = -0.05 (improved past its best)
    #             j=2: max(0.80) - 0.60 = 0.20
    #             mean = 0.35 / 3
    assert forgetting(R4) == pytest.approx(0.35 / 3)
    summary = transfer_summary(R4)
    assert "fwt" not in summary
    # diagonal_mean = (0.70 + 0.80 + 0.90) / 3 = 0.80; next_mean = (0.20 + 0.30 + 0.35) / 3 = 0.85 / 3
    assert summary["diagonal_mean"] == pytest.approx(0.80)
    assert summary["next_mean"] == pytest.approx(0.85 / 3)


def test_no_forgetting():
    # every column stays at the score reached when its period was trained on
    flat = np.array([[0.5, 0.1, 0.1], [0.5, 0.7, 0.2], [0.5, 0.7, 0.9]])
    assert forgetting(flat) == pytest.approx(0.0)
    assert backward_transfer(flat) == pytest.approx(0.0)
    # columns that only improve: BWT > 0 and forgetting <= 0 (Chaudhry's definition is not clipped)
    rising = np.array([[0.5, 0.1, 0.1], [0.6, 0.7, 0.2], [0.6, 0.8, 0.9]])
    assert backward_transfer(rising) >= 0
    # j=0: max(0.5, 0.6) - 0.6 = 0; j=1: 0.7 - 0.8 = -0.1; mean = -0.05
    assert forgetting(rising) == pytest.approx(-0.05)


def test_only_current_and_next_evaluated():
    # the PESO-style protocol: only R[t, t] and R[t, t+1] exist
    R = np.full((4, 4), NAN)
    for t in range(4):
        R[t, t] = 0.6 + 0.1 * t
        if t + 1 < 4:
            R[t, t + 1] = 0.3 + 0.1 * t
    summary = transfer_summary(R, B4)
    assert math.isnan(summary["acc_final"])
    assert math.isnan(summary["bwt"])
    assert math.isnan(summary["forgetting"])
    # diagonal_mean = (0.7 + 0.8 + 0.9) / 3 = 0.8; next_mean = (0.3 + 0.4 + 0.5) / 3 = 0.4
    assert summary["diagonal_mean"] == pytest.approx(0.8)
    assert summary["next_mean"] == pytest.approx(0.4)
    # FWT only needs R[j-1, j]: ((0.3 - 0.1) + (0.4 - 0.2) + (0.5 - 0.3)) / 3 = 0.2
    assert summary["fwt"] == pytest.approx(0.2)
    assert math.isnan(average_accuracy(R, t=1))


def test_nan_cells():
    R = R3.copy()
    R[0, 1] = NAN  # a next-period cell: FWT needs it, next_mean skips it
    assert math.isnan(forward_transfer(R, B3))
    assert transfer_summary(R)["next_mean"] == pytest.approx(0.40)
    assert backward_transfer(R) == pytest.approx(-0.15)

    R = R3.copy()
    R[1, 0] = NAN  # a past cell inside forgetting's maximum is skipped: result unchanged, 0.15
    assert forgetting(R) == pytest.approx(0.15)
    R[0, 0] = NAN  # no observed past score for period 0 any more, and BWT needs R[0, 0]
    assert math.isnan(forgetting(R))
    assert math.isnan(backward_transfer(R))

    R = R3.copy()
    R[2, 1] = NAN  # the final row is needed by ACC, BWT and forgetting
    assert math.isnan(average_accuracy(R))
    assert math.isnan(backward_transfer(R))
    assert math.isnan(forgetting(R))

    assert mean_over_periods(np.array([0.1, NAN, 0.3, 0.5])) == pytest.approx(0.4)
    assert mean_over_periods(np.array([0.1, 0.3, 0.5]), start=0) == pytest.approx(0.3)
    assert math.isnan(mean_over_periods(np.array([0.1, NAN])))


def test_single_period():
    R = np.array([[0.7]])
    summary = transfer_summary(R, np.array([0.1]))
    assert summary["acc_final"] == pytest.approx(0.7)
    for key in ("diagonal_mean", "next_mean", "bwt", "fwt", "forgetting"):
        assert math.isnan(summary[key]), key


@pytest.mark.parametrize(
    "bad",
    [np.zeros(3), np.zeros((2, 3)), np.zeros((2, 2, 2)), np.zeros((0, 0))],
    ids=["1-D", "not-square", "3-D", "empty"],
)
def test_bad_shapes_raise(bad):
    for fn in (average_accuracy, diagonal, backward_transfer, forgetting, transfer_summary):
        with pytest.raises(LifeloraError, match="square 2-D"):
            fn(bad)
    with pytest.raises(LifeloraError):
        forward_transfer(bad, np.zeros(3))


def test_bad_baseline_and_period_raise():
    with pytest.raises(LifeloraError, match="baseline must have length 3"):
        forward_transfer(R3, np.zeros(2))
    with pytest.raises(LifeloraError, match="baseline"):
        transfer_summary(R3, np.zeros((3, 1)))
    with pytest.raises(LifeloraError, match="outside"):
        average_accuracy(R3, t=3)
    with pytest.raises(LifeloraError, match="1-D"):
        mean_over_periods(np.zeros((2, 2)))
