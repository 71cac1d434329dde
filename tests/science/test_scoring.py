"""Scoring registered predictions: coverage, calibration and the graded levels' dose-response,
against loops and scipy on hand-made recordings."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from stimloop.science.intervals import z_value
from stimloop.science.responses import ResponseTable
from stimloop.science.scoring import score
from stimloop.science.selection import PredictionTable
from stimloop_contract.configs import AnalysisConfig


def recording(means: np.ndarray, spread: float, repeats: int, seed: int) -> ResponseTable:
    """Trials ``[1, S, R]`` around ``means`` ``[S]`` with a fixed spread."""
    rng = np.random.default_rng(seed)
    values = means[None, :, None] + rng.normal(0, spread, (1, len(means), repeats))
    return ResponseTable(
        ["ch"], [f"s{i}" for i in range(len(means))], values, np.full((1, len(means)), repeats)
    )


def test_coverage_calibration_and_levels_against_a_loop():
    rng = np.random.default_rng(0)
    s = 12
    predicted = np.linspace(5, 60, s)
    truth = 0.8 * predicted + 4 + rng.normal(0, 3, s)
    rec = recording(truth, 6.0, 8, 1)
    sd = np.full(s, 3.0)
    table = PredictionTable(
        ["ch"], rec.stimuli, ["object"] * s, predicted[:, None], sd[:, None], 0.9, {}
    )
    reasons = {
        sid: [("ch", "level", i + 1)] if i % 2 == 0 else [("ch", "top", 1)]
        for i, sid in enumerate(rec.stimuli)
    }
    reasons["s1"] = [("other", "top", 1)]  # another channel's pick is not this channel's
    result = score(table, "abc", reasons, rec, seed=0)
    row = result.channels[0]
    mine = [i for i in range(s) if i != 1]
    z = z_value(0.9)
    inside = widened = 0
    for i in mine:  # the straightforward loop
        m = np.mean(rec.values[0, i])
        se = np.std(rec.values[0, i], ddof=1) / np.sqrt(8)
        inside += abs(m - predicted[i]) <= z * 3.0
        widened += abs(m - predicted[i]) <= z * np.sqrt(9.0 + se**2)
    assert row.n == len(mine) and row.inside == widened
    assert sum(pt["inside"] for pt in row.points) == widened  # the figure's verdicts
    assert row.coverage_unwidened == pytest.approx(inside / len(mine))
    assert row.coverage_p == pytest.approx(stats.binomtest(widened, len(mine), 0.9).pvalue)
    means = rec.mean[0, mine]
    slope, intercept = np.polyfit(predicted[mine], means, 1)
    assert row.calibration.slope == pytest.approx(slope)
    assert row.calibration.intercept == pytest.approx(intercept)
    levels = [i for i in mine if i % 2 == 0]
    rho = stats.spearmanr(predicted[levels], rec.mean[0, levels]).statistic
    assert row.graded.rho == pytest.approx(rho) and row.graded.n == len(levels)
    assert row.metrics.n_stimuli == len(mine)
    summary = result.to_dict()["summary"]
    assert (summary["inside"], summary["images_scored"]) == (widened, len(mine))
    assert result.to_dict()["registration"] == "abc"


def test_a_model_with_the_right_values_is_covered_near_the_nominal_level():
    """Predictions equal to the truth with an honest sd: about 90% of recorded means land in
    the widened 90% interval, over many images."""
    rng = np.random.default_rng(3)
    s = 2000
    truth = rng.uniform(5, 60, s)
    sd = np.full(s, 4.0)
    predicted = truth + rng.normal(0, 4.0, s)  # the model's error is what its sd says
    rec = recording(truth, 10.0, 8, 4)
    table = PredictionTable(
        ["ch"], rec.stimuli, ["o"] * s, predicted[:, None], sd[:, None], 0.9, {}
    )
    reasons = {sid: [("ch", "top", 1)] for sid in rec.stimuli}
    quick = AnalysisConfig(bootstrap=100, ceiling_splits=10)
    row = score(table, "h", reasons, rec, quick, seed=0).channels[0]
    assert 0.87 <= row.coverage <= 0.93, row.coverage
    assert row.coverage_unwidened < row.coverage  # trial noise left out undercovers
    # recorded on predicted: the model's own error attenuates the slope by var / (var + sd^2)
    attenuation = (55**2 / 12) / (55**2 / 12 + 16)
    assert row.calibration.slope == pytest.approx(attenuation, abs=0.04)


def test_a_calibrated_interval_is_scored_about_its_centre_not_the_prediction():
    s = 10
    predicted = np.linspace(20, 60, s)
    centre = 0.5 * predicted  # a calibration moved the intervals down
    rec = recording(centre, 2.0, 8, 3)
    sd = np.full(s, 2.0)
    table = PredictionTable(
        ["ch"],
        rec.stimuli,
        ["object"] * s,
        predicted[:, None],
        sd[:, None],
        0.9,
        {},
        centre[:, None],
    )
    reasons = {sid: [("ch", "top", 1)] for sid in rec.stimuli}
    row = score(table, "abc", reasons, rec, seed=0).channels[0]
    z = z_value(0.9)
    loop = sum(
        abs(np.mean(rec.values[0, i]) - centre[i])
        <= z * np.sqrt(4.0 + (np.std(rec.values[0, i], ddof=1) / np.sqrt(8)) ** 2)
        for i in range(s)
    )
    assert row.inside == loop and loop >= 8  # about the prediction, none would be inside
    assert [pt["centre"] for pt in row.points] == pytest.approx(centre.tolist())
    back = PredictionTable.from_dict(table.to_dict())
    np.testing.assert_allclose(back.middle, table.middle)
    np.testing.assert_allclose(back.lower, centre[:, None] - z * 2.0)
