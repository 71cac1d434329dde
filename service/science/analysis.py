"""After phase two: stability, body selectivity and generalisation, per channel (sec. 4, 5.1).

* Stability: Pearson r between phase-one and phase-two stimulus means on the repeated bodies;
  a channel is stable if r > 0.60 (sec. 4).
* Body selectivity: Mann-Whitney U between the channel's phase-two responses (stimulus means)
  to the selected objects and to the selected control bodies: U, the two-sided p, the one-sided
  p for control bodies > objects, both medians (sec. 4, A.2).
* Generalisation: Pearson r and p between predicted and recorded responses on the held-out
  bodies (phase one) and on the phase-two objects (sec. 5.1, Fig. 3a).
Every verdict comes with its statistic and p-value; the summary gives the fractions of channels
passing each test, as in Fig. 3a.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from service.science.readout import FittedReadout, pearson
from service.science.responses import ResponseTable


@dataclass(frozen=True)
class AnalysisConfig:
    min_stability: float = 0.60  # sec. 4: test/retest r above this
    alpha: float = 0.05  # significance for selectivity and generalisation


@dataclass(frozen=True)
class Correlation:
    r: float
    p: float
    n: int
    passed: bool


@dataclass(frozen=True)
class Selectivity:
    u: float  # Mann-Whitney U of the control bodies against the objects
    p_two_sided: float
    p_bodies_greater: float  # one-sided: control bodies > objects
    median_bodies: float
    median_objects: float
    n_bodies: int
    n_objects: int
    passed: bool  # one-sided p < alpha


@dataclass(frozen=True)
class ChannelAnalysis:
    channel: str
    stability: Correlation
    selectivity: Selectivity
    generalisation_bodies: Correlation | None  # None for channels without a fitted model
    generalisation_objects: Correlation | None


@dataclass
class Analysis:
    channels: list[ChannelAnalysis]
    summary: dict[str, Any]
    config: AnalysisConfig

    def to_dict(self) -> dict[str, Any]:
        return {
            "channels": [asdict(c) for c in self.channels],
            "summary": self.summary,
            "config": asdict(self.config),
        }


def correlation(x: np.ndarray, y: np.ndarray, threshold: float, alpha: float | None) -> Correlation:
    """Pearson r and two-sided p; passes if r > threshold (and p < alpha when given)."""
    r, p = pearson(np.asarray(x, float), np.asarray(y, float))
    n = int((np.isfinite(x) & np.isfinite(y)).sum())
    ok = bool(np.isfinite(r) and r > threshold and (alpha is None or p < alpha))
    return Correlation(r, p, n, ok)


def body_selectivity(bodies: np.ndarray, objects: np.ndarray, alpha: float) -> Selectivity:
    """Mann-Whitney U of control-body against object responses (scipy's U of the first)."""
    bodies, objects = np.asarray(bodies, float), np.asarray(objects, float)
    if len(bodies) == 0 or len(objects) == 0:
        nan = float("nan")
        return Selectivity(nan, nan, nan, nan, nan, len(bodies), len(objects), False)
    two = stats.mannwhitneyu(bodies, objects, alternative="two-sided")
    one = stats.mannwhitneyu(bodies, objects, alternative="greater")
    return Selectivity(
        float(two.statistic),
        float(two.pvalue),
        float(one.pvalue),
        float(np.median(bodies)),
        float(np.median(objects)),
        len(bodies),
        len(objects),
        bool(one.pvalue < alpha),
    )


def check_phase_two(table: ResponseTable, expected: Sequence[str]) -> None:
    """Raise naming the phase-two images (selected or stability bodies) with no trials."""
    have = set(np.array(table.stimuli)[(table.count > 0).any(axis=0)])
    missing = [s for s in expected if s not in have]
    if missing:
        raise ValueError(
            f"phase two has no trials for {len(missing)} images of the phase-two list, "
            f"e.g. {missing[:10]}; upload the complete phase-two recording"
        )


def analyse(
    phase_one: ResponseTable,
    phase_two: ResponseTable,
    readout: FittedReadout | None,
    stability_bodies: Sequence[str],
    objects: Sequence[str],
    control_bodies: Sequence[str],
    object_predictions: np.ndarray | None,
    test_predictions: np.ndarray | None = None,
    config: AnalysisConfig = AnalysisConfig(),
) -> Analysis:
    """Per-channel stability, selectivity and generalisation.

    ``objects`` / ``control_bodies``: the phase-two images of each category;
    ``object_predictions``: ``[len(objects), C_fit]`` predictions of ``readout`` for them;
    ``test_predictions``: ``[n_test, C_fit]`` for the held-out bodies
    ``readout.split_ids["test"]``. Channels are those of phase one.
    """
    check_phase_two(phase_two, list(stability_bodies) + list(objects) + list(control_bodies))
    p1_stab = phase_one.means_for(stability_bodies)
    p2_stab = phase_two.means_for(stability_bodies)
    p2_obj = phase_two.means_for(objects)
    p2_ctl = phase_two.means_for(control_bodies)
    test_ids = readout.split_ids.get("test", []) if readout is not None else []
    p1_test = phase_one.means_for(test_ids) if test_ids else None
    results = []
    for channel in phase_one.channels:
        c1 = phase_one.channel_index(channel)
        c2 = phase_two.channel_index(channel)
        stability = correlation(p1_stab[c1], p2_stab[c2], config.min_stability, None)
        selectivity = body_selectivity(p2_ctl[c2], p2_obj[c2], config.alpha)
        gen_b = gen_o = None
        if readout is not None and channel in readout.channels:
            j = readout.channels.index(channel)
            if p1_test is not None and test_predictions is not None:
                gen_b = correlation(test_predictions[:, j], p1_test[c1], 0.0, config.alpha)
            if object_predictions is not None and len(objects):
                gen_o = correlation(object_predictions[:, j], p2_obj[c2], 0.0, config.alpha)
        results.append(ChannelAnalysis(channel, stability, selectivity, gen_b, gen_o))
    return Analysis(results, summarise(results), config)


def summarise(channels: Sequence[ChannelAnalysis]) -> dict[str, Any]:
    """Fractions of channels passing each test (Fig. 3a), with the counts behind them."""

    def fraction(values: list[bool]) -> dict[str, Any]:
        return {
            "passed": int(sum(values)),
            "of": len(values),
            "fraction": float(np.mean(values)) if values else float("nan"),
        }

    stable = [c for c in channels if c.stability.passed]
    fitted = [c for c in stable if c.generalisation_objects is not None]
    return {
        "stable": fraction([c.stability.passed for c in channels]),
        "body_selective_among_stable": fraction([c.selectivity.passed for c in stable]),
        "bodies_significant_positive_among_stable": fraction(
            [c.generalisation_bodies is not None and c.generalisation_bodies.passed for c in fitted]
        ),
        "objects_significant_positive_among_stable": fraction(
            [c.generalisation_objects.passed for c in fitted if c.generalisation_objects]
        ),
        "mean_r_bodies": _mean(
            [c.generalisation_bodies.r for c in fitted if c.generalisation_bodies]
        ),
        "mean_r_objects": _mean(
            [c.generalisation_objects.r for c in fitted if c.generalisation_objects]
        ),
        "mean_stability_r": _mean([c.stability.r for c in channels]),
    }


def _mean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
