"""Scoring the registered predictions against phase two's responses.

Not in the paper, which reports one r per channel. Per channel, over the images it picked
(``selection``'s reasons naming it), from the registered copy (``storage.registration``):

* Coverage: the fraction of picked images whose recorded mean lies inside its interval, beside
  the nominal level, with the exact binomial test of the count against it. The registered
  interval is for the true response (``intervals.py``); a recorded mean of ``n`` trials also
  scatters by its standard error, so the score widens the interval to
  ``centre +- z sqrt(sd^2 + sem^2)`` (the centre is the prediction unless the category's
  intervals were calibrated); the unwidened fraction is reported beside it.
* Calibration: the least-squares line of recorded on predicted (slope 1 and intercept 0 when
  the model's values are right, not only its order), with Pearson's r and p.
* Graded levels (the graded mode): Spearman's rho of the recorded means on the levels'
  predicted values (a dose-response curve rises monotonically) and the line through them.
* FEVE on the picked images with its bootstrap interval (``metrics.fit_metrics``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats
from stimloop_contract.configs import AnalysisConfig

from stimloop.science.intervals import standard_error, z_value
from stimloop.science.metrics import FitMetrics, fit_metrics
from stimloop.science.responses import ResponseTable
from stimloop.science.seeds import channel_rng
from stimloop.science.selection import PredictionTable


@dataclass(frozen=True)
class Line:
    """Least squares of recorded on predicted: ``recorded = slope * predicted + intercept``."""

    slope: float
    intercept: float
    r: float
    p: float
    n: int


@dataclass(frozen=True)
class Graded:
    """The graded levels' dose-response: Spearman's rho of recorded on level, and the line."""

    rho: float
    p: float
    n: int
    line: Line | None


@dataclass(frozen=True)
class ChannelScore:
    channel: str
    n: int  # picked images with phase-two trials
    nominal: float
    inside: int  # recorded mean inside the interval widened by its standard error
    coverage: float
    coverage_p: float  # exact binomial test of ``inside`` of ``n`` against ``nominal``
    coverage_unwidened: float  # the registered interval as it is
    calibration: Line | None
    graded: Graded | None
    metrics: FitMetrics | None
    points: list[dict[str, Any]]  # per image: role, predicted, sd, recorded, sem, inside


@dataclass(frozen=True)
class Scoring:
    registration: str  # sha256 of the registered predictions that were scored
    level: float
    channels: list[ChannelScore]

    def summary(self) -> dict[str, Any]:
        """Pooled over channels: images inside their interval, of all scored, and the test."""
        inside = sum(c.inside for c in self.channels)
        n = sum(c.n for c in self.channels)
        test = stats.binomtest(inside, n, self.level).pvalue if n else float("nan")
        return {
            "images_scored": n,
            "inside": inside,
            "coverage": inside / n if n else float("nan"),
            "nominal": self.level,
            "coverage_p": float(test),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "registration": self.registration,
            "level": self.level,
            "channels": [asdict(c) for c in self.channels],
            "summary": self.summary(),
        }


def line(predicted: np.ndarray, recorded: np.ndarray) -> Line | None:
    """``scipy.stats.linregress`` over the finite pairs; None below 3 or for constant inputs."""
    ok = np.isfinite(predicted) & np.isfinite(recorded)
    if ok.sum() < 3 or np.ptp(predicted[ok]) == 0:
        return None
    fit = stats.linregress(predicted[ok], recorded[ok])
    return Line(
        float(fit.slope), float(fit.intercept), float(fit.rvalue), float(fit.pvalue), int(ok.sum())
    )


def own_picks(reasons: Mapping[str, Sequence[tuple[str, str, int]]], channel: str) -> list[str]:
    """The images a channel picked, from ``stimulus -> [(channel, role, rank)]``."""
    return [s for s, rs in reasons.items() if any(r[0] == channel for r in rs)]


def score(
    table: PredictionTable,
    registration: str,
    reasons: Mapping[str, Sequence[tuple[str, str, int]]],
    recorded: ResponseTable,
    config: AnalysisConfig = AnalysisConfig(),
    seed: int = 0,
) -> Scoring:
    """Score every channel of the registered ``table`` on phase two's ``recorded`` trials.

    ``reasons``: each listed image's reasons ``(channel, role, rank)``; images without trials
    in ``recorded`` are left out of a channel's counts.
    """
    z = z_value(table.level)
    row = {s: i for i, s in enumerate(table.stimuli)}
    column = {s: i for i, s in enumerate(recorded.stimuli)}
    out = []
    for j, channel in enumerate(table.channels):
        picks = [s for s in own_picks(reasons, channel) if s in column and s in row]
        ci = recorded.channel_index(channel)
        values = recorded.values[ci][[column[s] for s in picks]]  # [n, R]
        rec = recorded.mean[ci][[column[s] for s in picks]]
        pred = table.predicted[[row[s] for s in picks], j]
        mid = table.middle[[row[s] for s in picks], j]  # the interval's centre
        sd = table.sd[[row[s] for s in picks], j]
        sem = np.nan_to_num(standard_error(values))
        ok = np.isfinite(rec) & np.isfinite(sd)
        half = z * np.sqrt(sd**2 + sem**2)  # the interval widened by the recorded sem
        within = np.abs(rec - mid) <= half
        gap = np.abs(rec - mid)[ok]
        inside = int(within[ok].sum())
        n = int(ok.sum())
        levels = [s for s in picks if any(r[0] == channel and r[1] == "level" for r in reasons[s])]
        out.append(
            ChannelScore(
                channel,
                n,
                table.level,
                inside,
                inside / n if n else float("nan"),
                float(stats.binomtest(inside, n, table.level).pvalue) if n else float("nan"),
                float((gap <= z * sd[ok]).mean()) if n else float("nan"),
                line(pred, rec),
                graded(levels, table, j, recorded, ci, column, row),
                fit_metrics(
                    pred,
                    values,
                    channel_rng(seed, channel, "scoring split-half"),
                    channel_rng(seed, channel, "scoring bootstrap"),
                    splits=config.ceiling_splits,
                    n_boot=config.bootstrap,
                    confidence=config.confidence,
                ),
                [
                    {
                        "stimulus": stim,
                        "role": next(r[1] for r in reasons[stim] if r[0] == channel),
                        "predicted": float(pred[k]),
                        "centre": float(mid[k]),
                        "sd": float(sd[k]),
                        "recorded": float(rec[k]),
                        "sem": float(sem[k]),
                        "half_width": float(half[k]),  # of the widened interval
                        "inside": bool(ok[k] and within[k]),
                    }
                    for k, stim in enumerate(picks)
                ],
            )
        )
    return Scoring(registration, table.level, out)


def graded(
    levels: list[str],
    table: PredictionTable,
    j: int,
    recorded: ResponseTable,
    ci: int,
    column: Mapping[str, int],
    row: Mapping[str, int],
) -> Graded | None:
    """The dose-response of one channel's level picks (stimulus ids); None below 3."""
    if len(levels) < 3:
        return None
    rec = recorded.mean[ci][[column[s] for s in levels]]
    pred = table.predicted[[row[s] for s in levels], j]
    ok = np.isfinite(rec)
    if ok.sum() < 3 or np.ptp(pred[ok]) == 0:
        return None
    result = stats.spearmanr(pred[ok], rec[ok])
    return Graded(float(result.statistic), float(result.pvalue), int(ok.sum()), line(pred, rec))
