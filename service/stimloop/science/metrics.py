"""The field's fit metrics for a channel's predictions, each with a bootstrap interval.

For one channel and one set of stimuli: predictions ``p`` ``[S]`` and the recorded trials
``y`` ``[S, R]`` (NaN-padded repeats), with ``ybar`` the stimulus means:

* ``r``: Pearson r of ``p`` against ``ybar`` (the paper's generalisation, sec. 5.1);
* noise ceiling: the Spearman-Brown corrected mean split-half r of ``ybar`` (A.2), the
  reliability of the recorded means: the r^2 a perfect model could reach;
* ``max(r, 0)^2 / ceiling``, clipped to [0, 1] (a negative r explains nothing; the unclipped
  value is kept beside it), and Brain-Score's own ``r^2 / ceiling`` (r squared whatever its
  sign, not clipped), named apart;
* oracle r (Lurz et al. 2021): Pearson r over all trials between each trial and the mean of
  the other repeats of its stimulus (leave one repeat out);
* FEV and FEVE (Cadena et al. 2019): with ``s2`` the mean over stimuli of the variance across
  repeats (the noise), ``Var[y]`` the variance of all trials and ``MSE`` the mean over trials
  of ``(y - p)^2``: ``FEV = 1 - s2 / Var[y]`` (the explainable fraction) and ``FEVE = 1 -
  (MSE - s2) / (Var[y] - s2)``.

Intervals: percentile bootstrap over stimuli (each resampled stimulus keeps all its trials),
``n_boot`` draws from an explicit generator, so that an interval is reproducible from its seed.

Numerics: the trials and predictions are centred on the trials' mean before any sum (every
metric is unchanged by a common shift), so the one-pass sums below lose nothing at a large
offset. Responses whose spread is below ``RELATIVE_TOLERANCE`` of their scale (constant up to
rounding) leave every metric undefined: NaN with the reason in ``undefined``, never a number
made of rounding residue; constant predictions leave r and the r^2 ratios undefined. An
infinite trial is an error, not a missing repeat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stimloop.science.responses import spearman_brown, split_masks

RELATIVE_TOLERANCE = 1e-9  # a spread below this fraction of the values' scale is rounding
NAN_ESTIMATE_VALUES = (float("nan"), float("nan"), float("nan"))


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its bootstrap percentile interval (NaN where undefined)."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class FitMetrics:
    """One channel's fit on one set of stimuli (see the module docstring for the formulas)."""

    n_stimuli: int
    mean_repeats: float
    r: Estimate
    noise_ceiling: Estimate
    r2_over_ceiling: Estimate  # max(r, 0)^2 / ceiling, clipped to [0, 1]
    r2_over_ceiling_unclipped: float  # the same before clipping: the overshoot kept
    oracle_r: Estimate
    fev: float
    feve: Estimate
    n_boot: int
    confidence: float
    r2_over_ceiling_brainscore: float = float("nan")  # r^2 / ceiling, Brain-Score's definition
    undefined: str | None = None  # why the metrics are NaN (constant responses or predictions)


def constant(x: np.ndarray) -> bool:
    """True when the finite values of ``x`` spread by at most ``RELATIVE_TOLERANCE`` of their
    largest magnitude (or not at all): a constant up to rounding."""
    finite = np.asarray(x, float)[np.isfinite(x)]
    if finite.size < 2:
        return True
    spread = float(finite.max() - finite.min())
    return spread == 0.0 or spread <= RELATIVE_TOLERANCE * float(np.abs(finite).max())


def undefined_metrics(
    s: int, mean_repeats: float, n_boot: int, confidence: float, why: str
) -> FitMetrics:
    """Every metric NaN, with the reason (``FitMetrics.undefined``)."""
    nan = Estimate(*NAN_ESTIMATE_VALUES)
    return FitMetrics(
        n_stimuli=s,
        mean_repeats=mean_repeats,
        r=nan,
        noise_ceiling=nan,
        r2_over_ceiling=nan,
        r2_over_ceiling_unclipped=float("nan"),
        oracle_r=nan,
        fev=float("nan"),
        feve=nan,
        n_boot=n_boot,
        confidence=confidence,
        undefined=why,
    )


def _rows_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted Pearson r per row: ``x``, ``y`` ``[S]`` or ``[B, S]``, ``weights`` ``[B, S]``
    (how often each stimulus is drawn); NaN where either side is constant."""
    n = weights.sum(-1)
    mx = (weights * x).sum(-1) / n
    my = (weights * y).sum(-1) / n
    dx = x - mx[..., None]
    dy = y - my[..., None]
    cov = (weights * dx * dy).sum(-1)
    den = np.sqrt((weights * dx**2).sum(-1) * (weights * dy**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, cov / den, np.nan)


@dataclass(frozen=True)
class _Sums:
    """Per-stimulus sufficient statistics of the trials: every metric but the ceiling is a
    function of weighted sums of these, so a bootstrap draw is a matrix product."""

    n: np.ndarray  # [S] repeats
    y: np.ndarray  # [S] sum of trials
    y2: np.ndarray  # [S] sum of squared trials
    resid2: np.ndarray  # [S] sum of (y - p)^2
    var: np.ndarray  # [S] variance across repeats (ddof 1), NaN below two repeats
    o: np.ndarray  # [S] sum over trials of the other repeats' mean
    o2: np.ndarray  # [S] its squares
    yo: np.ndarray  # [S] sum of trial x other repeats' mean


def _sums(pred: np.ndarray, values: np.ndarray) -> _Sums:
    finite = np.isfinite(values)
    v = np.where(finite, values, 0.0)
    n = finite.sum(1).astype(float)
    total = v.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        other = np.where(finite, (total[:, None] - v) / (n[:, None] - 1), 0.0)
        other = np.where(finite & (n[:, None] > 1), other, 0.0)
        var = np.where(n > 1, ((v - (total / n)[:, None]) ** 2 * finite).sum(1) / (n - 1), np.nan)
    two = finite & (n[:, None] > 1)  # trials with an oracle partner
    return _Sums(
        n=n,
        y=total,
        y2=(v**2).sum(1),
        resid2=(((v - pred[:, None]) ** 2) * finite).sum(1),
        var=var,
        o=other.sum(1),
        o2=(other**2).sum(1),
        yo=(np.where(two, v, 0.0) * other).sum(1),
    )


def _feve_fev(t: _Sums, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FEVE and FEV per row of stimulus weights ``w`` ``[B, S]`` (Cadena et al. 2019)."""
    n_trials = w @ t.n
    mean = (w @ t.y) / n_trials
    total_var = ((w @ t.y2) - n_trials * mean**2) / (n_trials - 1)
    has_var = np.isfinite(t.var)
    noise = (w[:, has_var] @ t.var[has_var]) / w[:, has_var].sum(1)
    mse = (w @ t.resid2) / n_trials
    with np.errstate(invalid="ignore", divide="ignore"):
        feve = 1 - (mse - noise) / (total_var - noise)
        fev = 1 - noise / total_var
    return feve, fev


def _oracle(t: _Sums, w: np.ndarray) -> np.ndarray:
    """Leave-one-repeat-out oracle r per row of stimulus weights ``w`` ``[B, S]``: pooled
    Pearson r over the trials of stimuli with two or more repeats."""
    paired = np.where(t.n > 1, t.n, 0.0)
    y_paired = np.where(t.n > 1, t.y, 0.0)
    y2_paired = np.where(t.n > 1, t.y2, 0.0)
    m = w @ paired
    sy, so = w @ y_paired, w @ t.o
    cov = (w @ t.yo) - sy * so / m
    vy = (w @ y2_paired) - sy**2 / m
    vo = (w @ t.o2) - so**2 / m
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((vy > 0) & (vo > 0), cov / np.sqrt(vy * vo), np.nan)


def _ceilings(half1: np.ndarray, half2: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A.2's noise ceiling per row of stimulus weights: Spearman-Brown of the mean over
    splits of the weighted split-half r. ``half1``, ``half2``: ``[K, S]`` half means."""
    if half1.shape[1] == 0:
        return np.full(len(w), np.nan)
    rs = _rows_pearson(half1[None], half2[None], w[:, None, :])  # [B, K]
    finite = np.isfinite(rs)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_r = np.where(finite, rs, 0.0).sum(1) / finite.sum(1)  # NaN where no split is defined
        return np.asarray(spearman_brown(mean_r), float)  # -inf at a mean split-half r of -1


def _r2_over(r: np.ndarray, ceiling: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ceiling > 0, np.maximum(r, 0.0) ** 2 / ceiling, np.nan)


def _interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = draws[np.isfinite(draws)]
    if len(finite) < max(10, len(draws) // 2):  # too few defined draws for an interval
        return float("nan"), float("nan")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def fit_metrics(
    pred: Sequence[float] | np.ndarray,
    values: np.ndarray,
    split_rng: np.random.Generator,
    boot_rng: np.random.Generator,
    *,
    splits: int = 100,
    n_boot: int = 1000,
    confidence: float = 0.95,
    chunk: int = 200,
) -> FitMetrics | None:
    """Every metric of the module docstring with its interval, or None below 3 stimuli.

    ``pred``: ``[S]`` predicted responses; ``values``: ``[S, R]`` NaN-padded trials of the
    same stimuli. ``split_rng`` draws the ceiling's ``splits`` random halves (the same draw
    as ``analysis.noise_ceiling`` from the same generator state); ``boot_rng`` the
    ``n_boot`` resamplings of stimuli.
    """
    p_all, v_all = np.asarray(pred, float), np.asarray(values, float)
    if np.isinf(v_all).any():
        k = int(np.flatnonzero(np.isinf(v_all).any(1))[0])
        raise ValueError(f"stimulus {k} has an infinite trial; a missing repeat is NaN")
    keep = np.isfinite(p_all) & np.isfinite(v_all).any(1)
    p_arr, values = p_all[keep], v_all[keep]
    s = len(p_arr)
    if s < 3:
        return None
    repeats = float(np.isfinite(values).sum(1).mean())
    if constant(values):
        return undefined_metrics(
            s,
            repeats,
            n_boot,
            confidence,
            "the responses do not vary (constant up to rounding): no metric is defined",
        )
    offset = float(np.nanmean(values))  # centred: the sums below are one-pass
    p_arr, values = p_arr - offset, values - offset
    flat_prediction = constant(p_arr + offset)
    paired = np.isfinite(values).sum(1) > 1  # the ceiling needs both halves of a stimulus
    if paired.sum() < 3:  # no ceiling below three stimuli with halves (analysis.noise_ceiling)
        paired[:] = False
    first, second = split_masks(values[paired], splits, split_rng)
    v = np.nan_to_num(values[paired])[None]
    with np.errstate(invalid="ignore", divide="ignore"):
        half1 = (v * first).sum(-1) / first.sum(-1)  # [K, S]
        half2 = (v * second).sum(-1) / second.sum(-1)
    t = _sums(p_arr, values)
    ybar = t.y / t.n
    ones = np.ones((1, s))
    point = {
        "r": _rows_pearson(p_arr, ybar, ones)[0],
        "ceiling": _ceilings(half1, half2, ones[:, paired])[0],
        "oracle": _oracle(t, ones)[0],
    }
    if flat_prediction:
        point["r"] = float("nan")
    feve, fev = _feve_fev(t, ones)
    point["feve"] = feve[0]
    point["r2"] = _r2_over(np.array([point["r"]]), np.array([point["ceiling"]]))[0]
    with np.errstate(invalid="ignore", divide="ignore"):  # Brain-Score: r squared, any sign
        brainscore = point["r"] ** 2 / point["ceiling"] if point["ceiling"] > 0 else np.nan
    draws: dict[str, list[np.ndarray]] = {k: [] for k in point}
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        picks = boot_rng.integers(0, s, size=(b, s))
        w = np.zeros((b, s))
        np.add.at(w, (np.arange(b)[:, None], picks), 1.0)
        r = _rows_pearson(p_arr, ybar, w)
        if flat_prediction:
            r[:] = np.nan
        ceiling = _ceilings(half1, half2, w[:, paired])
        draws["r"].append(r)
        draws["ceiling"].append(ceiling)
        draws["oracle"].append(_oracle(t, w))
        draws["feve"].append(_feve_fev(t, w)[0])
        draws["r2"].append(np.clip(_r2_over(r, ceiling), 0.0, 1.0))
    boot = {k: np.concatenate(d) if d else np.array([]) for k, d in draws.items()}

    def estimate(key: str, value: float) -> Estimate:
        return Estimate(float(value), *_interval(boot[key], confidence))

    return FitMetrics(
        n_stimuli=s,
        mean_repeats=float(t.n.mean()),
        r=estimate("r", point["r"]),
        noise_ceiling=estimate("ceiling", point["ceiling"]),
        r2_over_ceiling=estimate("r2", float(np.clip(point["r2"], 0.0, 1.0))),
        r2_over_ceiling_unclipped=float(point["r2"]),
        oracle_r=estimate("oracle", point["oracle"]),
        fev=float(fev[0]),
        feve=estimate("feve", point["feve"]),
        n_boot=n_boot,
        confidence=confidence,
        r2_over_ceiling_brainscore=float(brainscore),
        undefined="the predictions do not vary: r and the r^2 ratios are undefined"
        if flat_prediction
        else None,
    )


def fit_flag(
    r: float, p_two_sided: float, alpha: float, feve_low: float | None = None
) -> str | None:
    """Why a channel's fit should not be trusted, or None (the rule, fixed in advance: the
    paper's test of generalisation, sec. 5.1, and the FEVE interval of Cadena et al. 2019):
    its held-out r is not significantly positive (r <= 0, or the one-sided p = p / 2 at or
    above ``alpha``), or the lower end of its FEVE interval is at or below 0."""
    reasons = []
    if not np.isfinite(r) or not np.isfinite(p_two_sided):
        reasons.append("held-out r undefined")
    elif r <= 0 or p_two_sided / 2 >= alpha:  # one-sided test of r > 0
        reasons.append(
            f"held-out r {r:.2f} not significantly positive (one-sided p {p_two_sided / 2:.2g})"
        )
    if feve_low is not None and not (np.isfinite(feve_low) and feve_low > 0):
        reasons.append("FEVE interval reaches 0" if np.isfinite(feve_low) else "FEVE undefined")
    return "; ".join(reasons) or None


def fraction_of_oracle(r: Sequence[float], oracle: Sequence[float]) -> float:
    """The session's fraction of oracle (Lurz et al. 2021): the slope of a line through the
    origin fitted to the channels' (oracle r, r) points, ``sum r o / sum o^2``; NaN without
    a channel where both are defined."""
    r_a, o_a = np.asarray(r, float), np.asarray(oracle, float)
    ok = np.isfinite(r_a) & np.isfinite(o_a)
    den = float((o_a[ok] ** 2).sum())
    return float((r_a[ok] * o_a[ok]).sum() / den) if den > 0 else float("nan")
