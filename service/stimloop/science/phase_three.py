"""Phase three: the list of fragments to show, and what their recorded responses say.

The paper's proposed test of its saliency maps (sec. 6): show the highlighted fragments in
closed loop. For each channel and visualised pair, each image gives fragments
(``fragments.py``: salient, complement, random at each ``q``) beside the intact image, and the
phase-two stability bodies come back to check the recording held.

Per channel, with ``R(x)`` the mean net response (A.2: response minus baseline rate):

* retained response of a fragment ``f`` of source ``x``: ``R(f) / R(x)``, defined where the
  intact response ``R(x)`` is positive, and its mean per kind; the same ratio of the readout's
  predictions is the model's expectation;
* salient against complement and against random, paired by (source, q): the Wilcoxon
  signed-rank test (two-sided) on the pairs' net responses where there are at least
  ``MIN_WILCOXON_PAIRS`` pairs (fewer cannot reach p < 0.05), else the Mann-Whitney U test
  (two-sided) on the pooled single trials; the result says which;
* predicted against recorded responses over the channel's fragments: Pearson r and p;
* stability: Pearson r of the stability bodies' means against phase one and phase two
  (sec. 4's test/retest, r > 0.6).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats
from stimloop_contract.configs import KINDS, PhaseThreeConfig

from stimloop.science.analysis import Correlation, correlation, finite_mean
from stimloop.science.responses import ResponseTable
from stimloop.science.selection import presentation_sequence

MIN_WILCOXON_PAIRS = 6  # the smallest n whose exact two-sided signed-rank p can be < 0.05


@dataclass
class ListEntry:
    """A phase-three image: a fragment (its channel, source, kind, q, mask area, seed and the
    saliency result it was cut with) or an intact source (the channels whose pairs hold it).
    ``predicted``: channel -> the readout's prediction (spikes/s)."""

    stimulus: str
    kind: str
    source: str
    source_category: str  # object or body
    channels: list[str]
    predicted: dict[str, float]
    q: float | None = None
    area: int | None = None
    foreground_area: int | None = None
    seed: int | None = None
    stream: str | None = None
    saliency_key: str | None = None
    sha256: str | None = None


@dataclass
class PhaseThreeList:
    entries: list[ListEntry]
    stability_images: list[str]
    sequence: list[str]
    config: PhaseThreeConfig
    seed: int

    @property
    def stimuli(self) -> list[str]:
        """Every image shown, once: the entries, then stability bodies not among them."""
        listed = [e.stimulus for e in self.entries]
        return listed + [b for b in self.stability_images if b not in set(listed)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "entries": [asdict(e) for e in self.entries],
            "stability_images": self.stability_images,
            "sequence": self.sequence,
            "config": asdict(self.config),
            "seed": self.seed,
        }


def build_list(
    entries: Sequence[ListEntry],
    stability_images: Sequence[str],
    config: PhaseThreeConfig,
    seed: int,
) -> PhaseThreeList:
    """The list and its presentation sequence: every image ``config.repeats`` times in seeded
    blocks, never twice in a row (as phase two)."""
    ids = [e.stimulus for e in entries]
    if len(set(ids)) != len(ids):
        raise ValueError("phase-three entries must have distinct stimulus ids")
    made = PhaseThreeList(list(entries), list(stability_images), [], config, seed)
    stimuli = made.stimuli
    if len(stimuli) < 2:
        raise ValueError("phase three needs at least two images")
    made.sequence = presentation_sequence(stimuli, config.repeats, seed)
    return made


def list_from_dict(data: Mapping[str, Any]) -> PhaseThreeList:
    cfg = data["config"]
    config = PhaseThreeConfig(tuple(cfg["q"]), tuple(cfg["kinds"]), cfg["feather"], cfg["repeats"])
    return PhaseThreeList(
        [ListEntry(**e) for e in data["entries"]],
        list(data["stability_images"]),
        list(data["sequence"]),
        config,
        int(data["seed"]),
    )


# --------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class KindResult:
    """One fragment kind of one channel: means over its fragments."""

    kind: str
    fragments: int
    recorded_mean: float  # mean net response (spikes/s)
    predicted_mean: float
    recorded_retained: float  # mean R(f) / R(source) over fragments with R(source) > 0
    predicted_retained: float  # the same ratio of predictions
    retained_n: int  # fragments whose recorded source response is positive
    recorded_retained_sd: float = float("nan")  # SD of R(f) / R(source) over those fragments


@dataclass(frozen=True)
class Comparison:
    """Salient against another kind: the test used, its statistic and two-sided p."""

    other: str
    test: str  # "wilcoxon signed-rank" (pairs) or "mann-whitney u" (single trials)
    statistic: float
    p: float
    n: int  # pairs, or trials of both kinds
    difference: float  # median salient - other (pairs), or of trial medians
    salient_above: bool
    significant: bool
    predicted_above: bool  # the readout expected salient above


@dataclass(frozen=True)
class ChannelPhaseThree:
    channel: str
    kinds: list[KindResult]
    comparisons: list[Comparison]
    prediction: Correlation  # predicted vs recorded over the channel's fragments
    stability_phase_one: Correlation
    stability_phase_two: Correlation | None


@dataclass
class PhaseThreeAnalysis:
    channels: list[ChannelPhaseThree]
    summary: dict[str, Any]
    alpha: float
    min_stability: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "channels": [asdict(c) for c in self.channels],
            "summary": self.summary,
            "config": {"alpha": self.alpha, "min_stability": self.min_stability},
        }


def finite_sd(values: list[float]) -> float:
    """Sample SD (ddof 1) of the finite values; NaN below two."""
    finite = np.asarray(values, float)[np.isfinite(values)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan")


def retained(fragment: float, source: float) -> float:
    """Retained response ``R(f) / R(x)``; NaN unless the source's response is positive."""
    return float(fragment / source) if np.isfinite(source) and source > 0 else float("nan")


def paired_test(
    salient: np.ndarray, other: np.ndarray, salient_trials: np.ndarray, other_trials: np.ndarray
) -> tuple[str, float, float, int, float]:
    """(test, statistic, two-sided p, n, median difference): Wilcoxon signed-rank over the
    pairs ``salient[i]`` / ``other[i]`` (net response means of one source and q) when there
    are at least ``MIN_WILCOXON_PAIRS``, else Mann-Whitney U over the pooled trials."""
    ok = np.isfinite(salient) & np.isfinite(other)
    salient, other = salient[ok], other[ok]
    if len(salient) >= MIN_WILCOXON_PAIRS:
        d = salient - other
        if np.all(d == 0):
            return "wilcoxon signed-rank", float("nan"), 1.0, len(d), 0.0
        result = stats.wilcoxon(salient, other, alternative="two-sided")
        return (
            "wilcoxon signed-rank",
            float(result.statistic),
            float(result.pvalue),
            len(d),
            float(np.median(d)),
        )
    a = salient_trials[np.isfinite(salient_trials)]
    b = other_trials[np.isfinite(other_trials)]
    if len(a) == 0 or len(b) == 0:
        return "mann-whitney u", float("nan"), float("nan"), len(a) + len(b), float("nan")
    result = stats.mannwhitneyu(a, b, alternative="two-sided")
    return (
        "mann-whitney u",
        float(result.statistic),
        float(result.pvalue),
        len(a) + len(b),
        float(np.median(a) - np.median(b)),
    )


def analyse_phase_three(
    table: ResponseTable,
    plan: PhaseThreeList,
    phase_one: ResponseTable,
    phase_two: ResponseTable | None,
    alpha: float = 0.05,
    min_stability: float = 0.60,
) -> PhaseThreeAnalysis:
    """Per channel of the list: retained response per kind, salient against the other kinds,
    predicted against recorded, and stability (see the module's docstring). ``table``: the
    phase-three trials; every listed image needs trials (``ValueError`` names the missing)."""
    have = set(np.array(table.stimuli)[(table.count > 0).any(axis=0)])
    missing = [s for s in plan.stimuli if s not in have]
    if missing:
        raise ValueError(
            f"phase three has no trials for {len(missing)} listed images, e.g. {missing[:10]}"
        )
    position = {s: i for i, s in enumerate(table.stimuli)}
    channels = sorted({c for e in plan.entries if e.kind != "intact" for c in e.channels})
    intact = {e.source: e for e in plan.entries if e.kind == "intact"}
    results = []
    for channel in channels:
        c3 = table.channel_index(channel)
        frags = [e for e in plan.entries if e.kind != "intact" and e.channels == [channel]]

        def recorded(stimulus: str, c3: int = c3) -> float:
            return float(table.mean[c3, position[stimulus]])

        def trials(stimuli: list[str], c3: int = c3) -> np.ndarray:
            if not stimuli:
                return np.zeros(0)
            return table.values[c3, [position[s] for s in stimuli]].ravel()

        kinds = []
        for kind in [k for k in KINDS if any(f.kind == k for f in frags)]:
            of_kind = [f for f in frags if f.kind == kind]
            rec = np.array([recorded(f.stimulus) for f in of_kind])
            pred = np.array([f.predicted[channel] for f in of_kind])
            rec_src = np.array([recorded(intact[f.source].stimulus) for f in of_kind])
            pred_src = np.array([intact[f.source].predicted[channel] for f in of_kind])
            kept_rec = [retained(a, b) for a, b in zip(rec, rec_src)]
            kept_pred = [retained(a, b) for a, b in zip(pred, pred_src)]
            kinds.append(
                KindResult(
                    kind,
                    len(of_kind),
                    float(np.nanmean(rec)),
                    float(np.mean(pred)),
                    finite_mean(kept_rec),
                    finite_mean(kept_pred),
                    int(np.isfinite(kept_rec).sum()),
                    finite_sd(kept_rec),
                )
            )
        comparisons = []
        salient = {(f.source, f.q): f for f in frags if f.kind == "salient"}
        for other_kind in ("complement", "random"):
            others = {(f.source, f.q): f for f in frags if f.kind == other_kind}
            keys = [k for k in salient if k in others]
            if not keys:
                continue
            s_rec = np.array([recorded(salient[k].stimulus) for k in keys])
            o_rec = np.array([recorded(others[k].stimulus) for k in keys])
            test, statistic, p, n, difference = paired_test(
                s_rec,
                o_rec,
                trials([salient[k].stimulus for k in keys]),
                trials([others[k].stimulus for k in keys]),
            )
            s_pred = np.mean([salient[k].predicted[channel] for k in keys])
            o_pred = np.mean([others[k].predicted[channel] for k in keys])
            comparisons.append(
                Comparison(
                    other_kind,
                    test,
                    statistic,
                    p,
                    n,
                    difference,
                    bool(difference > 0),
                    bool(np.isfinite(p) and p < alpha),
                    bool(s_pred > o_pred),
                )
            )
        prediction = correlation(
            np.array([f.predicted[channel] for f in frags]),
            np.array([recorded(f.stimulus) for f in frags]),
            0.0,
            alpha,
        )
        bodies = plan.stability_images
        p3 = table.means_for(bodies)[c3]
        stab1 = correlation(
            phase_one.means_for(bodies)[phase_one.channel_index(channel)], p3, min_stability, None
        )
        stab2 = None
        if phase_two is not None:
            stab2 = correlation(
                phase_two.means_for(bodies)[phase_two.channel_index(channel)],
                p3,
                min_stability,
                None,
            )
        results.append(ChannelPhaseThree(channel, kinds, comparisons, prediction, stab1, stab2))
    return PhaseThreeAnalysis(results, summarise(results), alpha, min_stability)


def summarise(channels: Sequence[ChannelPhaseThree]) -> dict[str, Any]:
    """Counts of channels where salient is above each other kind: expected by the readout,
    recorded, and recorded with p < alpha; and stable channels."""
    out: dict[str, Any] = {"channels": len(channels)}
    for other in ("complement", "random"):
        rows = [c for ch in channels for c in ch.comparisons if c.other == other]
        out[f"salient_above_{other}"] = {
            "predicted": sum(c.predicted_above for c in rows),
            "recorded": sum(c.salient_above for c in rows),
            "significant": sum(c.salient_above and c.significant for c in rows),
            "of": len(rows),
        }
    out["stable_phase_one"] = sum(c.stability_phase_one.passed for c in channels)
    return out
