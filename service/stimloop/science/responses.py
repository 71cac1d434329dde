"""Recorded responses: trials -> net rates -> per-stimulus means, and the inclusion criteria.

Paper sec. 4 and A.2: the net response of a trial is the rate in +50..+250 ms minus the rate in
-75..+25 ms around stimulus onset. A channel is included when it is responsive (some stimulus
has a mean net response >= 5 spikes/s), stimulus-selective (Kruskal-Wallis across stimuli,
p < 0.01) and reliable (split-half correlation of stimulus means, Spearman-Brown corrected,
> 0.5). Every criterion returns its statistic, a p-value and the verdict.

Shapes: ``C`` channels, ``S`` stimuli, ``R`` the most repeats of any (channel, stimulus);
per-trial values are held as ``[C, S, R]`` arrays padded with NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from stimloop_contract.configs import InclusionConfig, Windows

from stimloop.science.seeds import channel_rng


@dataclass(frozen=True)
class Trials:
    """One row per trial: which stimulus, which channel, and its net rate (spikes/s)."""

    stimulus: np.ndarray  # [T] str
    channel: np.ndarray  # [T] str
    net_rate: np.ndarray  # [T] float64

    def __post_init__(self) -> None:
        n = len(self.net_rate)
        if len(self.stimulus) != n or len(self.channel) != n:
            raise ValueError(
                f"trial columns differ in length: stimulus {len(self.stimulus)}, "
                f"channel {len(self.channel)}, response {n}"
            )
        bad = ~np.isfinite(self.net_rate)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{int(bad.sum())} trials have NaN or infinite responses (first: trial {first}, "
                f"stimulus {self.stimulus[first]!r}, channel {self.channel[first]!r}); remove or "
                "fix them"
            )

    def only(self, stimuli: Sequence[str]) -> Trials:
        """The trials of these stimuli alone."""
        keep = np.isin(self.stimulus, list(stimuli))
        return Trials(self.stimulus[keep], self.channel[keep], self.net_rate[keep])


Column = Sequence[str] | np.ndarray  # a trial column: a list or a 1-D array
Values = Sequence[float] | np.ndarray


def _columns(stimulus: Column, channel: Column) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(stimulus, dtype=str), np.asarray(channel, dtype=str)


def trials_from_rates(stimulus: Column, channel: Column, net_rate: Values) -> Trials:
    """Trials whose net rate (spikes/s) the rig computed already."""
    s, c = _columns(stimulus, channel)
    return Trials(s, c, np.asarray(net_rate, dtype=np.float64))


def net_rate_from_counts(
    baseline_count: np.ndarray,
    response_count: np.ndarray,
    baseline_s: float,
    response_s: float,
) -> np.ndarray:
    """Sec. 4 / A.2: rate in the response window minus rate in the baseline window."""
    return (
        np.asarray(response_count, float) / response_s
        - np.asarray(baseline_count, float) / baseline_s
    )


def trials_from_counts(
    stimulus: Column,
    channel: Column,
    baseline_count: Values,
    response_count: Values,
    windows: Windows = Windows(),
) -> Trials:
    """Trials from spike counts in the baseline and response windows of ``windows``."""
    base, resp = np.asarray(baseline_count, float), np.asarray(response_count, float)
    if (base < 0).any() or (resp < 0).any():
        raise ValueError("spike counts cannot be negative")
    s, c = _columns(stimulus, channel)
    return Trials(s, c, net_rate_from_counts(base, resp, windows.baseline_s, windows.response_s))


def trials_from_columns(columns: dict[str, np.ndarray], windows: Windows = Windows()) -> Trials:
    """Trial-table columns (``rate``, or window counts cut with ``windows``) to net-rate
    trials (A.2's net response)."""
    if "rate" in columns:
        return trials_from_rates(columns["stimulus"], columns["channel"], columns["rate"])
    return trials_from_counts(
        columns["stimulus"],
        columns["channel"],
        columns["baseline_count"],
        columns["response_count"],
        windows,
    )


@dataclass(frozen=True)
class ResponseTable:
    """Trials arranged per channel and stimulus.

    ``values``: ``[C, S, R]`` net rates, NaN-padded; ``count``: ``[C, S]`` repeats;
    ``mean``: ``[C, S]`` per-stimulus mean (NaN where a channel has no trial of a stimulus).
    """

    channels: list[str]
    stimuli: list[str]
    values: np.ndarray
    count: np.ndarray
    mean: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        with np.errstate(invalid="ignore"):
            mean = np.nansum(self.values, axis=-1) / self.count
        object.__setattr__(self, "mean", np.where(self.count > 0, mean, np.nan))

    def channel_index(self, channel: str) -> int:
        try:
            return self.channels.index(channel)
        except ValueError:
            raise KeyError(f"unknown channel {channel!r}; known: {self.channels}") from None

    def means_for(self, stimuli: Sequence[str]) -> np.ndarray:
        """``[C, len(stimuli)]`` means, in the order asked for (``KeyError`` names unknown ids)."""
        position = {s: i for i, s in enumerate(self.stimuli)}
        missing = [s for s in stimuli if s not in position]
        if missing:
            raise KeyError(f"{len(missing)} stimuli have no trials, e.g. {missing[:5]}")
        return self.mean[:, [position[s] for s in stimuli]]


def response_table(
    trials: Trials,
    stimuli: Sequence[str] | None = None,
    channels: Sequence[str] | None = None,
) -> ResponseTable:
    """Group trials by channel and stimulus (orders: as given, else sorted)."""
    stim_order = list(stimuli) if stimuli is not None else sorted(set(trials.stimulus))
    chan_order = list(channels) if channels is not None else sorted(set(trials.channel))
    s_pos = {s: i for i, s in enumerate(stim_order)}
    c_pos = {c: i for i, c in enumerate(chan_order)}
    missing_s = sorted(set(trials.stimulus) - set(s_pos))
    missing_c = sorted(set(trials.channel) - set(c_pos))
    if missing_s:
        raise ValueError(f"trials name stimuli outside the set, e.g. {missing_s[:5]}")
    if missing_c:
        raise ValueError(f"trials name unknown channels, e.g. {missing_c[:5]}")
    ci = np.array([c_pos[c] for c in trials.channel], dtype=np.int64)
    si = np.array([s_pos[s] for s in trials.stimulus], dtype=np.int64)
    count = np.zeros((len(chan_order), len(stim_order)), dtype=np.int64)
    np.add.at(count, (ci, si), 1)
    repeats = int(count.max()) if count.size else 0
    values = np.full((len(chan_order), len(stim_order), max(repeats, 1)), np.nan)
    # the k-th trial of a (channel, stimulus) goes to slot k, in input order
    order = np.lexsort((np.arange(len(ci)), si, ci))
    slot = np.zeros(len(ci), dtype=np.int64)
    cs = ci[order] * len(stim_order) + si[order]
    starts = np.r_[0, np.flatnonzero(np.diff(cs)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(cs)]))
    slot[order] = np.arange(len(cs)) - run_start
    values[ci, si, slot] = trials.net_rate
    return ResponseTable(chan_order, stim_order, values, count)


# --------------------------------------------------------------------------- inclusion


@dataclass(frozen=True)
class Criterion:
    """One inclusion test: its statistic, p-value, threshold and verdict."""

    name: str
    statistic: float
    p_value: float
    threshold: float
    passed: bool
    detail: str = ""

    def explain(self) -> str:
        """Why the criterion failed, in words, with its numbers."""
        if self.name == "responsive":
            return (
                f"not responsive: best stimulus mean {self.statistic:.3g} spikes/s "
                f"< {self.threshold:g}"
            )
        if self.name == "selective":
            return (
                f"not selective: Kruskal-Wallis H = {self.statistic:.3g}, "
                f"p = {self.p_value:.3g} >= {self.threshold:g}"
            )
        return (
            f"not reliable: split-half reliability {self.statistic:.3g} "
            f"<= {self.threshold:g} ({self.detail or 'Spearman-Brown corrected'})"
        )


@dataclass(frozen=True)
class ChannelInclusion:
    channel: str
    criteria: tuple[Criterion, ...]
    included: bool
    reason: str  # "" when included; else what failed, in words


def responsiveness(values: np.ndarray, mean: np.ndarray, threshold: float) -> Criterion:
    """Max stimulus mean net response (A.2: >= 5 spikes/s for some stimulus).

    p: one-sided Wilcoxon signed-rank test that the best stimulus's trials exceed zero (for
    information; the verdict is the paper's threshold on the mean).
    """
    best = int(np.nanargmax(mean))
    statistic = float(mean[best])
    trials = values[best][np.isfinite(values[best])]
    if len(trials) and np.any(trials != 0):
        p = float(stats.wilcoxon(trials, alternative="greater").pvalue)
    else:
        p = 1.0
    return Criterion(
        "responsive", statistic, p, threshold, statistic >= threshold, f"best stimulus index {best}"
    )


def selectivity(values: np.ndarray, alpha: float) -> Criterion:
    """Kruskal-Wallis H across stimuli (A.2: p < 0.01)."""
    groups = [row[np.isfinite(row)] for row in values]
    groups = [g for g in groups if len(g)]
    pooled = np.concatenate(groups) if groups else np.array([])
    if len(groups) < 2 or np.ptp(pooled) == 0:
        return Criterion("selective", 0.0, 1.0, alpha, False, "all responses identical")
    result = stats.kruskal(*groups)
    p = float(result.pvalue)
    return Criterion("selective", float(result.statistic), p, alpha, p < alpha)


def spearman_brown(r: np.ndarray | float) -> np.ndarray | float:
    """Reliability of the full data from a split-half correlation: 2r / (1 + r)."""
    return 2 * np.asarray(r) / (1 + np.asarray(r))


def split_masks(
    values: np.ndarray, splits: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random halves of each stimulus's repeats: boolean ``[K, S, R]`` masks (first, second).

    ``values``: ``[S, R]`` NaN-padded trials. Every stimulus's ``n`` repeats are shuffled;
    ``floor(n / 2)`` go to the first half and the rest to the second.
    """
    finite = np.isfinite(values)
    n = finite.sum(axis=1)  # [S]
    keys = rng.random((splits, *values.shape))
    keys[:, ~finite] = np.inf  # missing repeats sort last
    rank = np.argsort(np.argsort(keys, axis=-1), axis=-1)
    first = rank < (n // 2)[None, :, None]
    second = ~first & finite[None]
    return first, second


def split_half_r(values: np.ndarray, splits: int, rng: np.random.Generator) -> np.ndarray:
    """Split-half correlations of stimulus means (A.2), one per random split.

    ``values``: ``[S, R]`` NaN-padded trials of one channel. Returns ``[splits]`` Pearson r
    between the two halves' stimulus means across stimuli (NaN where a half is constant).
    """
    first, second = split_masks(values, splits, rng)
    v = np.nan_to_num(values)[None]
    m1 = (v * first).sum(-1) / first.sum(-1)
    m2 = (v * second).sum(-1) / second.sum(-1)
    m1 = m1 - m1.mean(axis=1, keepdims=True)
    m2 = m2 - m2.mean(axis=1, keepdims=True)
    denom = np.sqrt((m1**2).sum(1) * (m2**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (m1 * m2).sum(1) / denom, np.nan)


def reliability(values: np.ndarray, config: InclusionConfig, rng: np.random.Generator) -> Criterion:
    """Split-half reliability, Spearman-Brown corrected (A.2: > 0.5).

    Statistic: the Spearman-Brown corrected mean split-half r. p: two-sided p of that mean r
    under rho = 0 with S stimuli (Pearson's t distribution).
    """
    rs = split_half_r(values, config.split_half_splits, rng)
    if not np.isfinite(rs).any():
        return Criterion(
            "reliable",
            float("nan"),
            1.0,
            config.min_reliability,
            False,
            "split halves are constant",
        )
    r = float(np.nanmean(rs))
    corrected = float(spearman_brown(r))
    s = values.shape[0]
    t = r * np.sqrt((s - 2) / max(1e-12, 1 - r**2))
    p = float(2 * stats.t.sf(abs(t), s - 2))
    return Criterion(
        "reliable",
        corrected,
        p,
        config.min_reliability,
        corrected > config.min_reliability,
        f"mean split-half r {r:.3f}",
    )


def include_channels(
    table: ResponseTable, config: InclusionConfig = InclusionConfig(), seed: int = 0
) -> list[ChannelInclusion]:
    """Apply the three criteria to every channel; a channel without enough repeats, or with
    constant responses, is excluded with that reason rather than failing the whole run."""
    out = []
    for c, channel in enumerate(table.channels):
        counts = table.count[c]
        values = table.values[c][counts > 0]
        if (counts > 0).sum() < 2:
            out.append(ChannelInclusion(channel, (), False, "fewer than 2 stimuli have trials"))
            continue
        low = counts[counts > 0].min()
        if low < config.min_repeats:
            few = [
                table.stimuli[i]
                for i in np.flatnonzero((counts > 0) & (counts < config.min_repeats))
            ]
            out.append(
                ChannelInclusion(
                    channel,
                    (),
                    False,
                    f"{len(few)} stimuli have fewer than {config.min_repeats} repeats, "
                    f"e.g. {few[:3]}",
                )
            )
            continue
        rng = channel_rng(seed, channel, "split-half")
        criteria = (
            responsiveness(values, table.mean[c][counts > 0], config.min_net_response),
            selectivity(values, config.selectivity_alpha),
            reliability(values, config, rng),
        )
        failed = [k for k in criteria if not k.passed]
        reason = "; ".join(k.explain() for k in failed)
        out.append(ChannelInclusion(channel, criteria, not failed, reason))
    return out
