"""Responses and inclusion criteria against scipy and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from stimloop.science import responses as rs


def table_from(values: dict[tuple[str, str], list[float]]) -> rs.ResponseTable:
    stim, chan, rate = [], [], []
    for (c, s), v in values.items():
        stim += [s] * len(v)
        chan += [c] * len(v)
        rate += v
    return rs.response_table(rs.trials_from_rates(stim, chan, rate))


def test_net_rate_from_counts_by_hand():
    trials = rs.trials_from_counts(["a", "b"], ["c1", "c1"], [1, 0], [10, 4])
    # response window 0.2 s, baseline 0.1 s: 10/0.2 - 1/0.1 = 40; 4/0.2 - 0 = 20
    np.testing.assert_allclose(trials.net_rate, [40.0, 20.0])


def test_response_table_matches_a_loop():
    rng = np.random.default_rng(0)
    stim = rng.choice(["s1", "s2", "s3", "s4"], 200)
    chan = rng.choice(["c1", "c2"], 200)
    rate = rng.normal(10, 5, 200)
    table = rs.response_table(rs.trials_from_rates(stim, chan, rate))
    for ci, c in enumerate(table.channels):
        for si, s in enumerate(table.stimuli):
            sel = (stim == s) & (chan == c)
            assert table.count[ci, si] == sel.sum()
            assert table.mean[ci, si] == pytest.approx(rate[sel].mean())
            np.testing.assert_allclose(
                np.sort(table.values[ci, si][: sel.sum()]), np.sort(rate[sel])
            )


def test_kruskal_and_responsiveness_match_scipy():
    rng = np.random.default_rng(1)
    groups = {("c", f"s{i}"): list(rng.normal(i * 2.0, 3.0, 8)) for i in range(6)}
    table = table_from(groups)
    [inc] = rs.include_channels(table)
    responsive, selective, _ = inc.criteria
    expected = stats.kruskal(*[groups[("c", s)] for s in table.stimuli])
    assert selective.statistic == pytest.approx(expected.statistic)
    assert selective.p_value == pytest.approx(expected.pvalue)
    assert responsive.statistic == pytest.approx(max(np.mean(v) for v in groups.values()))
    best = max(groups.values(), key=np.mean)
    assert responsive.p_value == pytest.approx(stats.wilcoxon(best, alternative="greater").pvalue)


def test_split_half_equals_a_loop_over_the_same_splits():
    rng = np.random.default_rng(2)
    values = rng.normal(size=(30, 8)) + rng.normal(0, 2, (30, 1))
    values[3, 5:] = np.nan  # a stimulus with 5 repeats
    first, second = rs.split_masks(values, 20, np.random.default_rng(0))
    got = rs.split_half_r(values, 20, np.random.default_rng(0))
    for k in range(20):
        h1, h2 = [], []
        for s in range(30):
            n = np.isfinite(values[s]).sum()
            assert first[k, s].sum() == n // 2 and second[k, s].sum() == n - n // 2
            assert not (first[k, s] & second[k, s]).any()
            h1.append(values[s][first[k, s]].mean())
            h2.append(values[s][second[k, s]].mean())
        assert got[k] == pytest.approx(np.corrcoef(h1, h2)[0, 1])


def test_spearman_brown_known_values():
    assert rs.spearman_brown(0.5) == pytest.approx(2 / 3)
    assert rs.spearman_brown(1.0) == pytest.approx(1.0)
    assert rs.spearman_brown(0.0) == pytest.approx(0.0)


def test_identical_repeats_are_perfectly_reliable():
    means = np.arange(10.0)
    values = np.repeat(means[:, None], 8, axis=1)
    np.testing.assert_allclose(rs.split_half_r(values, 5, np.random.default_rng(0)), 1.0)


def test_split_half_handles_unequal_repeats():
    values = np.full((3, 4), np.nan)
    values[0, :4] = [1, 1, 1, 1]
    values[1, :3] = [5, 5, 5]
    values[2, :2] = [9, 9]
    np.testing.assert_allclose(rs.split_half_r(values, 10, np.random.default_rng(0)), 1.0)


def test_reliability_statistic_and_p():
    rng = np.random.default_rng(3)
    signal = rng.normal(0, 5, 40)
    values = signal[:, None] + rng.normal(0, 3, (40, 8))
    criterion = rs.reliability(
        values, rs.InclusionConfig(split_half_splits=50), np.random.default_rng(9)
    )
    r = np.nanmean(rs.split_half_r(values, 50, np.random.default_rng(9)))
    assert criterion.statistic == pytest.approx(2 * r / (1 + r))
    assert criterion.p_value == pytest.approx(stats.pearsonr(*_xy_with_r(r, 40)).pvalue, rel=1e-6)
    assert criterion.passed


def _xy_with_r(r: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two vectors of length n whose Pearson correlation is exactly r."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    x = (x - x.mean()) / x.std()
    e = rng.normal(size=n)
    e = e - e.mean() - (e @ x) / (x @ x) * x
    e = e / e.std()
    return x, r * x + np.sqrt(1 - r**2) * e


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match="NaN or infinite"):
        rs.trials_from_rates(["a", "b"], ["c", "c"], [1.0, np.nan])
    with pytest.raises(ValueError, match="differ in length"):
        rs.trials_from_rates(["a"], ["c", "c"], [1.0, 2.0])
    with pytest.raises(ValueError, match="negative"):
        rs.trials_from_counts(["a"], ["c"], [-1], [2])
    trials = rs.trials_from_rates(["a", "zz"], ["c", "c"], [1.0, 2.0])
    with pytest.raises(ValueError, match="outside the set"):
        rs.response_table(trials, stimuli=["a"])


def test_channels_with_too_few_repeats_or_constant_responses_are_excluded_with_reasons():
    values = {("few", "s1"): [1.0], ("few", "s2"): [30.0, 31.0]}
    values.update({("flat", f"s{i}"): [3.0] * 4 for i in range(3)})
    values.update({("good", f"s{i}"): [i * 10.0 + d for d in (0, 1, 2, 1)] for i in range(5)})
    table = table_from(values)
    result = {r.channel: r for r in rs.include_channels(table)}
    assert not result["few"].included and "fewer than 2 repeats" in result["few"].reason
    assert not result["flat"].included and "not selective" in result["flat"].reason
    assert "not responsive" in result["flat"].reason
    assert result["good"].included and result["good"].reason == ""
    for criterion in result["good"].criteria:
        assert np.isfinite(criterion.statistic) and 0 <= criterion.p_value <= 1


def test_split_half_seed_makes_inclusion_reproducible():
    rng = np.random.default_rng(5)
    values = {("c", f"s{i}"): list(rng.normal(i, 2, 6)) for i in range(20)}
    table = table_from(values)
    a = rs.include_channels(table, seed=7)[0].criteria[2].statistic
    b = rs.include_channels(table, seed=7)[0].criteria[2].statistic
    c = rs.include_channels(table, seed=8)[0].criteria[2].statistic
    assert a == b != c
