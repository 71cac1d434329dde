"""After phase two: stability, body selectivity and generalisation, per channel (sec. 4, 5.1).

* Stability: Pearson r between phase-one and phase-two stimulus means on the repeated bodies;
  a channel is stable if r > 0.60 (sec. 4).
* Body selectivity: Mann-Whitney U between the channel's phase-two responses (stimulus means)
  to the selected objects and to the selected control bodies (sec. 4, A.2). The paper keeps
  channels "for which the test detected a significant difference": the verdict needs the
  two-sided p below alpha *and* the direction bodies above objects (U / (n_b n_o) > 1/2, the
  probability that a control body's response exceeds an object's); both medians are reported.
* Generalisation: Pearson r and p between predicted and recorded responses on the held-out
  bodies (phase one) and on the phase-two objects (sec. 5.1, Fig. 3a), with the noise ceiling
  of those recorded means (split-half r, Spearman-Brown corrected, A.2) and the normalised
  r = r / sqrt(ceiling), as models are compared with neurons.
Every verdict comes with its statistic and p-value; the summary gives the fractions of channels
passing each test, as in Fig. 3a.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from stimloop.science.configs import AnalysisConfig
from stimloop.science.readout import FittedReadout, pearson
from stimloop.science.responses import ResponseTable, spearman_brown, split_half_r
from stimloop.science.seeds import channel_rng


@dataclass(frozen=True)
class Correlation:
    r: float
    p: float
    n: int
    passed: bool


@dataclass(frozen=True)
class Generalisation(Correlation):
    """A prediction r beside what the recording allows: its noise ceiling and r normalised."""

    noise_ceiling: float  # Spearman-Brown corrected split-half r of the recorded means
    r_normalised: float  # r / sqrt(noise_ceiling); NaN where the ceiling is not positive


@dataclass(frozen=True)
class Selectivity:
    u: float  # Mann-Whitney U of the control bodies against the objects
    p_two_sided: float
    p_bodies_greater: float  # one-sided: control bodies > objects (for reference)
    median_bodies: float
    median_objects: float
    n_bodies: int
    n_objects: int
    effect: float  # U / (n_bodies n_objects): P(control body > object), ties half
    significant: bool  # two-sided p < alpha: the responses differ
    bodies_above: bool  # effect > 1/2: the difference is bodies above objects
    passed: bool  # significant and bodies_above


@dataclass(frozen=True)
class ChannelAnalysis:
    channel: str
    stability: Correlation
    selectivity: Selectivity
    generalisation_bodies: Generalisation | None  # None for channels without a fitted model
    generalisation_objects: Generalisation | None


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
    """Mann-Whitney U of control-body against object responses (scipy's U of the first).

    Sec. 4 / A.2: a significant difference (two-sided p < ``alpha``) with bodies above objects.
    """
    bodies, objects = np.asarray(bodies, float), np.asarray(objects, float)
    nb, no = len(bodies), len(objects)
    if nb == 0 or no == 0:
        nan = float("nan")
        return Selectivity(nan, nan, nan, nan, nan, nb, no, nan, False, False, False)
    two = stats.mannwhitneyu(bodies, objects, alternative="two-sided")
    one = stats.mannwhitneyu(bodies, objects, alternative="greater")
    effect = float(two.statistic) / (nb * no)
    significant, above = bool(two.pvalue < alpha), bool(effect > 0.5)
    return Selectivity(
        float(two.statistic),
        float(two.pvalue),
        float(one.pvalue),
        float(np.median(bodies)),
        float(np.median(objects)),
        nb,
        no,
        effect,
        significant,
        above,
        significant and above,
    )


def noise_ceiling(values: np.ndarray, splits: int, rng: np.random.Generator) -> float:
    """Spearman-Brown corrected mean split-half r of stimulus means (A.2's reliability).

    ``values``: ``[S, R]`` NaN-padded trials of one channel for the stimuli a prediction r
    is computed on. NaN when fewer than 3 stimuli or no split gives a defined r.
    """
    if values.shape[0] < 3:
        return float("nan")
    rs = split_half_r(values, splits, rng)
    if not np.isfinite(rs).any():
        return float("nan")
    return float(spearman_brown(float(np.nanmean(rs))))


def generalisation(
    pred: np.ndarray, recorded: np.ndarray, alpha: float, ceiling: float
) -> Generalisation:
    """Pearson r (and p) of predictions against recorded means, beside the noise ceiling."""
    base = correlation(pred, recorded, 0.0, alpha)
    normalised = base.r / np.sqrt(ceiling) if np.isfinite(ceiling) and ceiling > 0 else np.nan
    return Generalisation(**asdict(base), noise_ceiling=ceiling, r_normalised=float(normalised))


def trials_of(table: ResponseTable, channel: int, stimuli: Sequence[str]) -> np.ndarray:
    """``[len(stimuli), R]`` NaN-padded trials of one channel, in the order asked for."""
    position = {s: i for i, s in enumerate(table.stimuli)}
    return table.values[channel][[position[s] for s in stimuli]]


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
    seed: int = 0,
) -> Analysis:
    """Per-channel stability, selectivity and generalisation.

    ``objects`` / ``control_bodies``: the phase-two images of each category;
    ``object_predictions``: ``[len(objects), C_fit]`` predictions of ``readout`` for them;
    ``test_predictions``: ``[n_test, C_fit]`` for the held-out bodies
    ``readout.split_ids["test"]``. Channels are those of phase one. ``seed`` draws the
    split halves of the noise ceilings (per channel, from its name).
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
            rng = channel_rng(seed, channel, "noise-ceiling")
            if p1_test is not None and test_predictions is not None:
                ceiling = noise_ceiling(
                    trials_of(phase_one, c1, test_ids), config.ceiling_splits, rng
                )
                gen_b = generalisation(test_predictions[:, j], p1_test[c1], config.alpha, ceiling)
            if object_predictions is not None and len(objects):
                ceiling = noise_ceiling(
                    trials_of(phase_two, c2, objects), config.ceiling_splits, rng
                )
                gen_o = generalisation(object_predictions[:, j], p2_obj[c2], config.alpha, ceiling)
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
        "mean_r_bodies": finite_mean(
            [c.generalisation_bodies.r for c in fitted if c.generalisation_bodies]
        ),
        "mean_r_objects": finite_mean(
            [c.generalisation_objects.r for c in fitted if c.generalisation_objects]
        ),
        "mean_r_normalised_bodies": finite_mean(
            [c.generalisation_bodies.r_normalised for c in fitted if c.generalisation_bodies]
        ),
        "mean_r_normalised_objects": finite_mean(
            [c.generalisation_objects.r_normalised for c in fitted if c.generalisation_objects]
        ),
        "mean_stability_r": finite_mean([c.stability.r for c in channels]),
    }


def finite_mean(values: Sequence[float]) -> float:
    """The mean of the finite values; NaN when there are none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
