"""After phase two: stability, selectivity and generalisation, per channel (sec. 4, 5.1).

Categories are data: the channels prefer one category (bodies in the paper); the readouts
are trained on images of it (the preferred set), and phase two shows picks from candidate
sets, each of one category. Candidate sets of the preferred category (the paper's control
bodies) are the *preferred candidates*; every other category (objects) is an *other*.

* Stability: Pearson r between phase-one and phase-two stimulus means on the repeated images
  of the preferred set; a channel is stable if r > 0.60 (sec. 4).
* Selectivity: Mann-Whitney U between the channel's phase-two responses (stimulus means) to
  the selected preferred candidates and to the selected images of each other category (sec.
  4, A.2: control bodies against objects). The paper keeps channels "for which the test
  detected a significant difference": a verdict needs the two-sided p below alpha *and* the
  direction preferred above other (U / (n_p n_o) > 1/2, the probability that a preferred
  candidate's response exceeds the other's); both medians are reported. A channel is
  selective when it passes against every other category. Without preferred candidates the
  repeated preferred-set images stand in for them.
* Generalisation: Pearson r and p between predicted and recorded responses on the held-out
  images of the preferred set (phase one) and on the phase-two picks of each other category
  (sec. 5.1, Fig. 3a: bodies and objects), with the noise ceiling of those recorded means
  (split-half r, Spearman-Brown corrected, A.2) and the normalised r = r / sqrt(ceiling);
  beside them the field's fit metrics with bootstrap intervals (``metrics.py``: FEVE, the
  oracle r, r^2 / ceiling), also on the phase-two picks of the preferred candidates.
Every verdict comes with its statistic and p-value; the summary gives the fractions of channels
passing each test, as in Fig. 3a.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy import stats
from stimloop_contract.configs import AnalysisConfig

from stimloop.science.metrics import FitMetrics, fit_flag, fit_metrics, fraction_of_oracle
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
    metrics: FitMetrics | None = None  # FEVE, oracle r, intervals; None below 3 stimuli


@dataclass(frozen=True)
class Selectivity:
    """The preferred candidates against one other category (control bodies vs objects)."""

    other: str  # the other category
    u: float  # Mann-Whitney U of the preferred candidates against the other category
    p_two_sided: float
    p_preferred_greater: float  # one-sided: preferred > other (for reference)
    median_preferred: float
    median_other: float
    n_preferred: int
    n_other: int
    effect: float  # U / (n_preferred n_other): P(preferred > other), ties half
    significant: bool  # two-sided p < alpha: the responses differ
    preferred_above: bool  # effect > 1/2: the difference is preferred above other
    passed: bool  # significant and preferred_above


@dataclass(frozen=True)
class ChannelAnalysis:
    channel: str
    stability: Correlation
    selectivity: list[Selectivity]  # one per other category
    selective: bool  # passed against every other category
    generalisation_preferred: Generalisation | None  # held-out preferred images; None: no model
    generalisation: dict[str, Generalisation]  # per candidate category; empty without a model
    fit_flag: str | None = None  # metrics.fit_flag on the held-out preferred images


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


def selectivity(
    preferred: np.ndarray, other: np.ndarray, alpha: float, other_category: str = "object"
) -> Selectivity:
    """Mann-Whitney U of the preferred candidates' responses against another category's
    (scipy's U of the first; control bodies against objects in the paper).

    Sec. 4 / A.2: a significant difference (two-sided p < ``alpha``) with preferred above.
    """
    preferred, other = np.asarray(preferred, float), np.asarray(other, float)
    nb, no = len(preferred), len(other)
    if nb == 0 or no == 0:
        nan = float("nan")
        return Selectivity(
            other_category, nan, nan, nan, nan, nan, nb, no, nan, False, False, False
        )
    two = stats.mannwhitneyu(preferred, other, alternative="two-sided")
    one = stats.mannwhitneyu(preferred, other, alternative="greater")
    effect = float(two.statistic) / (nb * no)
    significant, above = bool(two.pvalue < alpha), bool(effect > 0.5)
    return Selectivity(
        other_category,
        float(two.statistic),
        float(two.pvalue),
        float(one.pvalue),
        float(np.median(preferred)),
        float(np.median(other)),
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
    is computed on; stimuli with a single repeat have no halves and are left out. NaN when
    fewer than 3 stimuli remain or no split gives a defined r.
    """
    values = values[np.isfinite(values).sum(1) > 1]
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


def measured_generalisation(
    pred: np.ndarray,
    trials: np.ndarray,
    config: AnalysisConfig,
    split_rng: np.random.Generator,
    boot_rng: np.random.Generator,
) -> Generalisation:
    """``generalisation`` with the fit metrics: ``pred`` ``[S]``, ``trials`` ``[S, R]``; the
    ceiling is the metrics' own (the same split halves as ``noise_ceiling`` draws)."""
    metrics = fit_metrics(
        pred,
        trials,
        split_rng,
        boot_rng,
        splits=config.ceiling_splits,
        n_boot=config.bootstrap,
        confidence=config.confidence,
    )
    ceiling = metrics.noise_ceiling.value if metrics is not None else float("nan")
    with np.errstate(invalid="ignore"):
        recorded = np.nanmean(trials, axis=1)
    return replace(generalisation(pred, recorded, config.alpha, ceiling), metrics=metrics)


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
    stability_images: Sequence[str],
    preferred: Sequence[str],
    others: Mapping[str, Sequence[str]],
    predictions: Mapping[str, np.ndarray],
    test_predictions: np.ndarray | None = None,
    config: AnalysisConfig = AnalysisConfig(),
    seed: int = 0,
    candidates: Mapping[str, Sequence[str]] | None = None,
) -> Analysis:
    """Per-channel stability, selectivity and generalisation.

    ``stability_images``: the repeated preferred-set images; ``preferred``: the phase-two
    picks of the preferred category (control bodies); ``others``: category -> its phase-two
    picks (objects); ``predictions``: category -> ``[len(others[category]), C_fit]``
    predictions of ``readout``; ``test_predictions``: ``[n_test, C_fit]`` for the held-out
    preferred images ``readout.split_ids["test"]``; ``candidates``: the preferred
    candidates' picks per category (control bodies), predicted where ``predictions`` has
    them. Channels are those of phase one. ``seed`` draws the split halves of the noise
    ceilings and the bootstrap's resamplings (per channel, from its name).
    """
    candidates = dict(candidates or {})
    shown = [*stability_images, *preferred, *(s for ids in others.values() for s in ids)]
    check_phase_two(phase_two, shown)
    p1_stab = phase_one.means_for(stability_images)
    p2_stab = phase_two.means_for(stability_images)
    # without preferred candidates, the repeated preferred-set images stand in for them
    p2_pref = phase_two.means_for(preferred) if len(preferred) else p2_stab
    p2_other = {cat: phase_two.means_for(ids) for cat, ids in others.items()}
    test_ids = readout.split_ids.get("test", []) if readout is not None else []
    p1_test = phase_one.means_for(test_ids) if test_ids else None
    results = []
    for channel in phase_one.channels:
        c1 = phase_one.channel_index(channel)
        c2 = phase_two.channel_index(channel)
        stability = correlation(p1_stab[c1], p2_stab[c2], config.min_stability, None)
        tests = [selectivity(p2_pref[c2], p2_other[cat][c2], config.alpha, cat) for cat in others]
        gen_p, gen = None, {}
        if readout is not None and channel in readout.channels:
            j = readout.channels.index(channel)
            rng = channel_rng(seed, channel, "noise-ceiling")
            boot = channel_rng(seed, channel, "bootstrap")
            if p1_test is not None and test_predictions is not None:
                gen_p = measured_generalisation(
                    test_predictions[:, j], trials_of(phase_one, c1, test_ids), config, rng, boot
                )
            for cat, ids in {**others, **candidates}.items():
                if cat in predictions and len(ids):
                    gen[cat] = measured_generalisation(
                        predictions[cat][:, j], trials_of(phase_two, c2, ids), config, rng, boot
                    )
        selective = bool(tests) and all(t.passed for t in tests)
        flag = None
        if gen_p is not None:
            low = gen_p.metrics.feve.low if gen_p.metrics is not None else None
            flag = fit_flag(gen_p.r, gen_p.p, config.alpha, low)
        results.append(ChannelAnalysis(channel, stability, tests, selective, gen_p, gen, flag))
    return Analysis(results, summarise(results, [*others, *candidates], config.fev_floor), config)


def summarise(
    channels: Sequence[ChannelAnalysis], others: Sequence[str], fev_floor: float = 0.15
) -> dict[str, Any]:
    """Fractions of channels passing each test (Fig. 3a), with the counts behind them; per
    other category where a test is per category. The mean FEVE follows the field's rule
    (Sensorium's reference code): channels whose FEV is below ``fev_floor`` have too little
    explainable variance for FEVE to mean anything, and are left out and counted."""

    def fraction(values: list[bool]) -> dict[str, Any]:
        return {
            "passed": int(sum(values)),
            "of": len(values),
            "fraction": float(np.mean(values)) if values else float("nan"),
        }

    stable = [c for c in channels if c.stability.passed]
    fitted = [c for c in stable if c.generalisation_preferred is not None or c.generalisation]
    held_out = [c.generalisation_preferred for c in fitted if c.generalisation_preferred]
    per = {
        cat: [c.generalisation[cat] for c in fitted if cat in c.generalisation] for cat in others
    }
    return {
        "stable": fraction([c.stability.passed for c in channels]),
        "selective_among_stable": fraction([c.selective for c in stable]),
        "preferred_significant_positive_among_stable": fraction(
            [
                c.generalisation_preferred is not None and c.generalisation_preferred.passed
                for c in fitted
            ]
        ),
        "significant_positive_among_stable": {
            cat: fraction([g.passed for g in gens]) for cat, gens in per.items()
        },
        "mean_r_preferred": finite_mean([g.r for g in held_out]),
        "mean_r": {cat: finite_mean([g.r for g in gens]) for cat, gens in per.items()},
        "mean_r_normalised_preferred": finite_mean([g.r_normalised for g in held_out]),
        "mean_r_normalised": {
            cat: finite_mean([g.r_normalised for g in gens]) for cat, gens in per.items()
        },
        "mean_stability_r": finite_mean([c.stability.r for c in channels]),
        "fraction_of_oracle_preferred": oracle_fraction(held_out),
        "fraction_of_oracle": {cat: oracle_fraction(gens) for cat, gens in per.items()},
        "mean_feve_preferred": mean_feve(held_out, fev_floor)["mean"],
        "mean_feve": {cat: mean_feve(gens, fev_floor)["mean"] for cat, gens in per.items()},
        "feve_channels_preferred": mean_feve(held_out, fev_floor),
        "feve_channels": {cat: mean_feve(gens, fev_floor) for cat, gens in per.items()},
    }


def mean_feve(gens: Sequence[Generalisation], fev_floor: float) -> dict[str, Any]:
    """The mean FEVE over channels whose FEV reaches ``fev_floor`` (finite FEVE), with how
    many were used and how many left out (FEV below the floor, or undefined)."""
    measured = [g.metrics for g in gens if g.metrics is not None]
    used = [m.feve.value for m in measured if m.fev >= fev_floor and np.isfinite(m.feve.value)]
    return {
        "mean": finite_mean(used),
        "used": len(used),
        "left_out": len(measured) - len(used),
        "fev_floor": fev_floor,
    }


def oracle_fraction(gens: Sequence[Generalisation]) -> float:
    """The channels' fraction of oracle (``metrics.fraction_of_oracle``)."""
    measured = [g.metrics for g in gens if g.metrics is not None]
    return fraction_of_oracle([m.r.value for m in measured], [m.oracle_r.value for m in measured])


def finite_mean(values: Sequence[float]) -> float:
    """The mean of the finite values; NaN when there are none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
