"""The phase-three list's rules, and its analysis against scipy and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from stimloop.science.fragments import KINDS, fragment_id
from stimloop.science.phase_three import (
    MIN_WILCOXON_PAIRS,
    ListEntry,
    PhaseThreeConfig,
    analyse_phase_three,
    build_list,
    list_from_dict,
    paired_test,
    retained,
)
from stimloop.science.responses import response_table, trials_from_rates

STABILITY = [f"b{i}" for i in range(6)]


def plan_for(sources: list[str], channel: str = "c1", q=(0.25,), repeats: int = 4):
    """A list with every kind of fragment of each source, the intact sources, and stability
    bodies (one of them also an intact source)."""
    entries = []
    for s in sources:
        for qq in q:
            for kind in KINDS:
                entries.append(
                    ListEntry(
                        fragment_id(s, channel, kind, qq),
                        kind,
                        s,
                        "object",
                        [channel],
                        {channel: {"salient": 8.0, "complement": 2.0, "random": 4.0}[kind]},
                        qq,
                    )
                )
        entries.append(ListEntry(s, "intact", s, "object", [channel], {channel: 10.0}))
    entries.append(ListEntry("b0", "intact", "b0", "body", [channel], {channel: 5.0}))
    return build_list(entries, STABILITY, PhaseThreeConfig(tuple(q), repeats=repeats), seed=7)


def table_for(plan, channel, value, repeats=4, seed=0):
    """Trials whose value is ``value(stimulus) + noise``; returns the table and the trials."""
    rng = np.random.default_rng(seed)
    stim, chan, rate = [], [], []
    for s in plan.stimuli:
        for _ in range(repeats):
            stim.append(s)
            chan.append(channel)
            rate.append(value(s) + rng.normal(0, 1))
    return response_table(trials_from_rates(stim, chan, rate), channels=[channel])


def test_the_list_obeys_its_rules():
    plan = plan_for(["o1", "o2"], repeats=3)
    stimuli = plan.stimuli
    assert len(stimuli) == len(set(stimuli)) == 2 * 4 + 1 + 5  # b0 is intact and stability
    assert sorted(plan.sequence) == sorted(stimuli * 3)
    assert all(a != b for a, b in zip(plan.sequence, plan.sequence[1:]))
    again = plan_for(["o1", "o2"], repeats=3)
    assert again.sequence == plan.sequence  # seeded
    assert list_from_dict(plan.to_dict()).to_dict() == plan.to_dict()
    with pytest.raises(ValueError, match="distinct"):
        build_list(plan.entries + plan.entries[:1], STABILITY, plan.config, 0)
    for bad in ((0.0,), (1.0,), (0.3, 0.3)):
        with pytest.raises(ValueError):
            PhaseThreeConfig(bad)
    with pytest.raises(ValueError, match="kinds"):
        PhaseThreeConfig(kinds=("middle",))


def test_retained_response_by_hand():
    assert retained(3.0, 12.0) == 0.25
    assert np.isnan(retained(3.0, 0.0)) and np.isnan(retained(3.0, -2.0))


def response_of(s: str) -> float:
    base = {"o": 20.0, "b": 10.0}[s[0]]
    for kind, factor in (("salient", 0.8), ("complement", 0.2), ("random", 0.4)):
        if f"__{kind}__" in s:
            return base * factor + (ord(s[1]) % 3)
    return base


def test_the_analysis_equals_scipy_with_enough_pairs():
    sources = [f"o{i}" for i in range(MIN_WILCOXON_PAIRS + 1)]
    plan = plan_for(sources)
    table = table_for(plan, "c1", response_of)
    p1 = table_for(plan, "c1", response_of, seed=1)
    result = analyse_phase_three(table, plan, p1, None, alpha=0.05)
    (channel,) = result.channels
    mean = {s: table.mean[0, table.stimuli.index(s)] for s in table.stimuli}
    sal = np.array([mean[fragment_id(s, "c1", "salient", 0.25)] for s in sources])
    for comparison in channel.comparisons:
        other = np.array([mean[fragment_id(s, "c1", comparison.other, 0.25)] for s in sources])
        expected = stats.wilcoxon(sal, other, alternative="two-sided")
        assert comparison.test == "wilcoxon signed-rank"
        assert comparison.statistic == pytest.approx(expected.statistic)
        assert comparison.p == pytest.approx(expected.pvalue)
        assert comparison.n == len(sources)
        assert comparison.difference == pytest.approx(np.median(sal - other))
        assert comparison.salient_above and comparison.predicted_above
    kinds = {k.kind: k for k in channel.kinds}
    ratio = [mean[fragment_id(s, "c1", "salient", 0.25)] / mean[s] for s in sources]
    assert kinds["salient"].recorded_retained == pytest.approx(np.mean(ratio))
    assert kinds["salient"].recorded_retained_sd == pytest.approx(np.std(ratio, ddof=1))
    assert kinds["salient"].predicted_retained == pytest.approx(0.8)
    assert kinds["complement"].predicted_retained == pytest.approx(0.2)
    frags = [e for e in plan.entries if e.kind != "intact"]
    r = stats.pearsonr([e.predicted["c1"] for e in frags], [mean[e.stimulus] for e in frags])
    assert channel.prediction.r == pytest.approx(r.statistic)
    assert channel.prediction.p == pytest.approx(r.pvalue)
    p1_mean = [p1.mean[0, p1.stimuli.index(b)] for b in STABILITY]
    stab = stats.pearsonr(p1_mean, [mean[b] for b in STABILITY])
    assert channel.stability_phase_one.r == pytest.approx(stab.statistic)
    assert channel.stability_phase_two is None
    assert result.summary["salient_above_complement"]["predicted"] == 1


def test_few_pairs_use_mann_whitney_on_the_trials():
    sources = ["o1", "o2"]
    plan = plan_for(sources)
    table = table_for(plan, "c1", response_of)
    result = analyse_phase_three(table, plan, table, table)
    comparison = result.channels[0].comparisons[0]
    assert comparison.test == "mann-whitney u" and comparison.other == "complement"

    def trials(kind):
        rows = [table.stimuli.index(fragment_id(s, "c1", kind, 0.25)) for s in sources]
        return table.values[0, rows].ravel()

    expected = stats.mannwhitneyu(trials("salient"), trials("complement"), alternative="two-sided")
    assert comparison.statistic == pytest.approx(expected.statistic)
    assert comparison.p == pytest.approx(expected.pvalue)
    assert comparison.n == 2 * 2 * 4
    assert result.channels[0].stability_phase_two is not None


def test_paired_test_edges():
    same = np.ones(8)
    assert paired_test(same, same, same, same)[2] == 1.0
    test, _, p, n, _ = paired_test(np.ones(2), np.zeros(2), np.zeros(0), np.ones(3))
    assert test == "mann-whitney u" and np.isnan(p) and n == 3


def test_missing_trials_are_named():
    plan = plan_for(["o1"])
    table = table_for(plan, "c1", response_of)
    keep = [s for s in table.stimuli if "random" not in s]
    rows = [table.stimuli.index(s) for s in keep]
    stim = np.repeat(keep, 4)
    rates = table.values[0, rows].ravel()
    partial = response_table(trials_from_rates(stim, ["c1"] * len(stim), rates))
    with pytest.raises(ValueError, match="no trials for 1 listed images"):
        analyse_phase_three(partial, plan, table, None)
