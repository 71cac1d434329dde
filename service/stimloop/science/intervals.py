"""Prediction intervals: a bootstrap ensemble of ridge readouts beside each fitted channel.

Not in the paper, whose picks are point predictions (sec. 3.2). Per channel ``c`` the fitted
location ``mu_c`` is kept, and each member is a ridge regression of the training bodies'
recorded means on the read-out features ``a_c`` (eq. 1's ``a`` at ``mu_c``), fitted on a
bootstrap resample of the training bodies (drawn from the channel's own seed stream), with the
penalty that the full training set's leave-one-out error prefers (``readout.RIDGE_GRID``, the
closed form the gradient fit starts from). Members are cheap: one kernel per channel, and all
members of a channel solved as one batch. Their spread ``v_c(x)`` (variance over members) is
how much the readout's prediction at ``x`` owes to the sample of training bodies.

What the spread misses, the linear readout's misfit to the cell, is measured on the bodies
the fit did not train on (validation and test):
``s_c^2 = max(0, mean_i(r_i^2 - sem_i^2 - v_c(x_i)))``, with ``r_i`` the fitted readout's
residual and ``sem_i`` the standard error of the recorded mean (trial noise, which the true
response does not carry). The interval for the channel's true (trial-averaged, noise-free) net
response to ``x`` is ``f_c(x) +- z sqrt(v_c(x) + s_c^2)``: ``f_c`` the fitted readout (the
paper's prediction, so the paper's ranking is unchanged), ``z`` the normal quantile of the
nominal level. A recorded mean of ``n`` trials scatters around the true response by its own
standard error, which the scoring adds (``scoring.py``).

A readout fitted on bodies ranks objects but misjudges their level (on the demo's channels it
overpredicts them by several spikes/s, a bias every member shares, so neither the members nor
the bodies' residual can see it). Where phase one also showed ``n`` images of a candidate
category, held out of the fit (``SelectionConfig.calibration``), that category's intervals are
calibrated on them instead (``Calibration``), from their recorded means ``y`` and the fitted
readout's predictions ``f``, with two least-squares models of the misjudgement, each giving a
prediction interval for the true response (trial noise removed from its scatter, the model's
own uncertainty added):

* an offset, ``f(x) + m`` (``m`` the mean of ``y - f``):
  ``+- t_{n-1} sqrt(s_m^2 + sigma_m^2 / n)``;
* a line, ``alpha + beta f(x)``:
  ``+- t_{n-2} sqrt(s_l^2 + sigma_l^2 (1/n + (f(x) - fbar)^2 / Sxx))``;

``sigma^2`` each model's residual variance, ``s^2 = max(0, sigma^2 - mean(sem^2))``. The
interval spans both (their union's hull): the two agree on typical images and part at the
extreme predictions that the picks are, where a response that saturates or accelerates lies
between them, and the hull covers at least as often as the better of the two. The calibration
is conditional on the fitted readout, so the members' spread does not enter it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from scipy import stats

from stimloop.science.candidate_cells import cell_products
from stimloop.science.readout import RIDGE_GRID, FittedReadout, readout_features, ridge_loo
from stimloop.science.readout_model import bilinear_weights
from stimloop.science.seeds import channel_rng

ENSEMBLE_RULE = (
    "per channel, ridge readouts at the fitted location on bootstrap resamples of the training "
    "bodies (penalty by leave-one-out on all of them); interval = prediction +- z "
    "sqrt(members' variance + the held-out bodies' residual variance beyond trial noise and "
    "members' variance)"
)


@dataclass(frozen=True)
class Calibration:
    """One category's intervals, calibrated on ``n`` of its images held out of the fit.

    Every array is ``[C]``, per channel (a channel's images are those with finite recorded
    means): ``n`` the images; ``offset`` and ``offset_var`` the offset model's ``m`` and
    residual variance; ``alpha``, ``beta`` and ``line_var`` the line's; ``sem2`` the images'
    mean squared standard error; ``f_mean`` and ``f_ss`` the predictions' mean and sum of
    squared deviations. A channel with fewer than ``MIN_CALIBRATION`` images, or whose
    predictions do not vary, is not calibrated (``ok``).
    """

    category: str
    n: np.ndarray
    offset: np.ndarray
    offset_var: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    line_var: np.ndarray
    sem2: np.ndarray
    f_mean: np.ndarray
    f_ss: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        return (self.n >= MIN_CALIBRATION) & (self.f_ss > 0)

    def bounds(self, predicted: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
        """The calibrated interval ``[M, C]`` (lower, upper) at the predictions ``[M, C]``:
        the hull of the offset's and the line's prediction intervals (module docstring); NaN
        where a channel is not calibrated."""
        ok = self.ok
        n = np.where(ok, self.n, 3.0)
        ss = np.where(ok, self.f_ss, 1.0)
        q = 0.5 + level / 2
        # the offset model's prediction interval: f + m +- t_{n-1} sqrt(s_m^2 + sigma_m^2 / n)
        mid_m = predicted + self.offset
        var_m = np.clip(self.offset_var - self.sem2, 0.0, None) + self.offset_var / n
        half_m = stats.t.ppf(q, n - 1) * np.sqrt(var_m)
        # the line's (OLS prediction interval): alpha + beta f +- t_{n-2} sqrt(s_l^2 + lev)
        mid_l = self.alpha + self.beta * predicted
        lev = self.line_var * (1.0 / n + (predicted - self.f_mean) ** 2 / ss)
        var_l = np.clip(self.line_var - self.sem2, 0.0, None) + lev
        half_l = stats.t.ppf(q, n - 2) * np.sqrt(var_l)
        lower = np.minimum(mid_m - half_m, mid_l - half_l)
        upper = np.maximum(mid_m + half_m, mid_l + half_l)
        return np.where(ok, lower, np.nan), np.where(ok, upper, np.nan)

    def metadata(self) -> dict[str, Any]:
        ok = self.ok
        keep = lambda a: [float(v) if k else None for v, k in zip(a, ok, strict=True)]  # noqa: E731
        return {
            "images": self.n.astype(int).tolist(),
            "calibrated": ok.tolist(),
            "offset": keep(self.offset),
            "alpha": keep(self.alpha),
            "beta": keep(self.beta),
            "rule": CALIBRATION_RULE,
        }


MIN_CALIBRATION = 5  # images per channel: a line and three degrees of freedom for its scatter
CALIBRATION_RULE = (
    "per channel, on the held-out images' recorded means y and the fitted readout's "
    "predictions f: the prediction intervals of an offset (f + mean(y - f)) and of the "
    "least-squares line of y on f, each with its residual variance less the mean squared "
    "standard error of y as the true response's scatter; the interval spans both; fewer than "
    f"{MIN_CALIBRATION} images: the uncalibrated interval"
)


def calibrate(
    category: str, predicted: np.ndarray, recorded: np.ndarray, sem: np.ndarray
) -> Calibration:
    """A category's ``Calibration`` from its held-out images ``[n, C]``: the fitted readout's
    predictions, the recorded means (NaN where a channel has no trials) and their standard
    errors."""
    c_count = predicted.shape[1]
    names = ("n", "offset", "offset_var", "alpha", "beta", "line_var", "sem2", "mean", "ss")
    out = {k: np.zeros(c_count) for k in names}
    for c in range(c_count):
        rows = np.isfinite(recorded[:, c]) & np.isfinite(predicted[:, c])
        f, y = predicted[rows, c], recorded[rows, c]
        n = int(rows.sum())
        out["n"][c] = n
        if n < MIN_CALIBRATION:
            continue
        f_mean = f.mean()
        ss = float(((f - f_mean) ** 2).sum())
        if ss <= 0:
            continue
        offset = float((y - f).mean())
        beta = float(((f - f_mean) * (y - y.mean())).sum() / ss)  # least squares of y on f
        alpha = float(y.mean() - beta * f_mean)
        out["offset"][c], out["alpha"][c], out["beta"][c] = offset, alpha, beta
        out["offset_var"][c] = float(((y - f - offset) ** 2).sum() / (n - 1))
        out["line_var"][c] = float(((y - alpha - beta * f) ** 2).sum() / (n - 2))
        out["sem2"][c] = float(np.mean(np.nan_to_num(sem[rows, c]) ** 2))
        out["mean"][c], out["ss"][c] = f_mean, ss
    return Calibration(category, *(out[k] for k in names))


@dataclass(frozen=True)
class Ensemble:
    """``K`` bootstrap members of ``C`` channels' readouts.

    ``mu`` ``[C, 2]`` (the fitted locations); ``w`` ``[K, C, F]`` and ``b`` ``[K, C]`` in
    spikes/s; ``penalty`` ``[C]`` the ridge penalty; ``residual_sd`` ``[C]`` ``s_c`` (see the
    module docstring; zero until ``with_residual``); ``seed`` the bootstrap draws' seed.
    """

    channels: list[str]
    mu: np.ndarray
    w: np.ndarray
    b: np.ndarray
    penalty: np.ndarray
    residual_sd: np.ndarray
    seed: int
    calibrations: dict[str, Calibration] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.w.shape[0])

    def members_on_maps(self, maps: np.ndarray | torch.Tensor) -> np.ndarray:
        """Every member's prediction ``[N, K, C]`` for maps ``[N, F, H, W]``."""
        a = readout_features(torch.as_tensor(np.asarray(maps)), torch.as_tensor(self.mu))
        w = torch.as_tensor(self.w, dtype=torch.float32)
        return torch.einsum("ncf,kcf->nkc", a, w).double().numpy() + self.b[None]

    def members_on_cells(self, cells: torch.Tensor, height: int, width: int) -> np.ndarray:
        """Every member's prediction ``[M, K, C]`` from cell-major maps ``[H*W, M, F]``."""
        k_count, c_count = self.size, len(self.channels)
        dev = cells.device
        k = bilinear_weights(torch.as_tensor(self.mu, dtype=torch.float32), height, width)
        vectors = torch.as_tensor(self.w.reshape(k_count * c_count, -1), dtype=torch.float64)
        owner = torch.arange(c_count).repeat(k_count)  # member-major: row k*C + c reads c
        lin = cell_products(cells, k.double().to(dev), vectors.to(dev), owner)
        return lin.cpu().numpy().reshape(-1, k_count, c_count) + self.b[None]

    def metadata(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "seed": self.seed,
            "penalty": self.penalty.tolist(),
            "residual_sd": self.residual_sd.tolist(),
            "rule": ENSEMBLE_RULE,
            "calibration": {k: c.metadata() for k, c in self.calibrations.items()},
        }

    def with_calibrations(self, calibrations: Sequence[Calibration]) -> Ensemble:
        """The ensemble whose intervals for these categories are calibrated."""
        return replace(self, calibrations={c.category: c for c in calibrations})

    def intervals(
        self, category: str, predicted: np.ndarray, members: np.ndarray, level: float
    ) -> Intervals:
        """The intervals ``[M, C]`` of a candidate category's predictions ``[M, C]`` (members
        ``[M, K, C]``): calibrated on its held-out images where phase one showed them, else
        the ensemble's (``intervals``)."""
        plain = intervals(predicted, members, self.residual_sd, level)
        cal = self.calibrations.get(category)
        if cal is None:
            return plain
        lower, upper = cal.bounds(predicted, level)
        ok = np.broadcast_to(cal.ok[None], predicted.shape)
        # as a centre and an sd: the interval is centre +- z sd (``Bounded``)
        sd = np.where(ok, (upper - lower) / (2 * z_value(level)), plain.sd)
        return Intervals(predicted, sd, level, np.where(ok, (upper + lower) / 2, predicted))


def members_variance(members: np.ndarray) -> np.ndarray:
    """``v_c(x)``: the members' variance ``[N, C]`` from their predictions ``[N, K, C]``."""
    return members.var(axis=1, ddof=1)


def bootstrap_rows(seed: int, channel: str, rows: np.ndarray, size: int) -> np.ndarray:
    """``size`` bootstrap resamples ``[size, len(rows)]`` of ``rows`` for one channel."""
    rng = channel_rng(seed, channel, "ensemble")
    return rows[rng.integers(0, len(rows), size=(size, len(rows)))]


def ridge_members(
    a: torch.Tensor, y: np.ndarray, resamples: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge readouts of one channel on each resample, in the dual form.

    ``a``: ``[N, F]`` read-out features of the training bodies; ``y``: ``[N]`` their recorded
    means (finite); ``resamples``: ``[K, N']`` row indices. The penalty is the one whose
    closed-form leave-one-out error on all ``N`` rows is lowest. For a resample ``i`` with
    centred kernel ``K_i`` and centred targets ``t_i``: ``alpha = (K_i + lambda I)^-1 t_i``,
    ``w = A_i^T alpha`` (summed back onto the rows it drew), ``b = mean(t) - mean(a_i) . w``.
    Returns ``w`` ``[K, F]``, ``b`` ``[K]`` and ``lambda``.
    """
    dev, f8 = a.device, torch.float64
    a = a.double()
    y_t = torch.as_tensor(y, dtype=f8, device=dev)
    n = len(a)
    gram = a @ a.T  # [N, N]
    centre = torch.eye(n, dtype=f8, device=dev) - 1.0 / n
    evals, evecs = torch.linalg.eigh(centre @ gram @ centre)
    evals = evals.clamp(min=0)
    loo = ridge_loo(evals[None], evecs[None], (y_t - y_t.mean())[:, None])[0, :, 0]
    lam = float(RIDGE_GRID[int(loo.argmin())] * evals.sum() / n)
    idx = torch.as_tensor(resamples, dtype=torch.long, device=dev)  # [K, N']
    k_count, m = idx.shape
    sub = gram[idx[:, :, None], idx[:, None, :]]  # [K, N', N']
    centre_m = torch.eye(m, dtype=f8, device=dev) - 1.0 / m
    t = y_t[idx]
    t_mean = t.mean(1, keepdim=True)
    alpha = torch.linalg.solve(
        centre_m @ sub @ centre_m + lam * torch.eye(m, dtype=f8, device=dev),
        (t - t_mean)[..., None],
    )[..., 0]  # [K, N']; sums to zero, so the centring of A_i drops out of w
    zeros = torch.zeros(k_count, n, dtype=f8, device=dev)
    weights = zeros.clone().scatter_add_(1, idx, alpha)
    draws = zeros.scatter_add_(1, idx, torch.ones_like(alpha)) / m
    w = weights @ a  # [K, F]
    b = t_mean[:, 0] - ((draws @ a) * w).sum(1)  # draws @ a: each resample's mean features
    return w.cpu().numpy(), b.cpu().numpy(), lam


def fit_ensemble(
    readout: FittedReadout,
    maps: np.ndarray | torch.Tensor,
    means: np.ndarray,
    train: Sequence[int],
    size: int,
    seed: int,
    chunk: int = 16,
    device: str | torch.device = "cpu",
) -> Ensemble:
    """``size`` bootstrap ridge members per channel of ``readout``, at its locations.

    ``maps``: ``[N, F, H, W]`` the bodies' maps; ``means``: ``[N, C]`` recorded means in the
    readout's channel order (NaN where a channel has no trials); ``train``: the rows the readout
    was trained on. Channels are read out ``chunk`` at a time (``[N, chunk, F]`` features), on
    ``device`` (the worker's GPU when it has one; the draws are the same anywhere).
    """
    if size < 2:
        raise ValueError(f"an ensemble needs at least 2 members, not {size}")
    maps_t = torch.as_tensor(np.asarray(maps)[list(train)]).to(device)
    train_means = np.asarray(means, dtype=np.float64)[list(train)]
    c_count = len(readout.channels)
    w = np.zeros((size, c_count, readout.w.shape[1]), dtype=np.float32)
    b = np.zeros((size, c_count))
    penalty = np.zeros(c_count)
    for start in range(0, c_count, chunk):
        block = list(range(start, min(start + chunk, c_count)))
        a = readout_features(maps_t, torch.as_tensor(readout.mu[block]).to(device))  # [N, c, F]
        for j, c in enumerate(block):
            rows = np.flatnonzero(np.isfinite(train_means[:, c]))
            if len(rows) < 3:
                raise ValueError(
                    f"channel {readout.channels[c]} has {len(rows)} training bodies with "
                    "responses; an ensemble needs at least 3"
                )
            draws = bootstrap_rows(seed, readout.channels[c], np.arange(len(rows)), size)
            w_c, b_c, lam = ridge_members(a[rows, j], train_means[rows, c], draws)
            w[:, c], b[:, c], penalty[c] = w_c, b_c, lam
    return Ensemble(
        list(readout.channels), readout.mu.copy(), w, b, penalty, np.zeros(c_count), seed
    )


def residual_sd(
    predicted: np.ndarray, recorded: np.ndarray, sem: np.ndarray, spread: np.ndarray
) -> np.ndarray:
    """``s_c`` ``[C]`` from held-out bodies ``[N, C]``: the fitted readout's predictions, the
    recorded means, their standard errors and the members' variance (module docstring)."""
    excess = (recorded - predicted) ** 2 - np.nan_to_num(sem) ** 2 - spread
    with np.errstate(invalid="ignore"):
        value = np.nanmean(np.where(np.isfinite(recorded), excess, np.nan), axis=0)
    return np.sqrt(np.clip(np.nan_to_num(value), 0.0, None))


def with_residual(
    ensemble: Ensemble,
    readout: FittedReadout,
    maps: np.ndarray | torch.Tensor,
    means: np.ndarray,
    sem: np.ndarray,
) -> Ensemble:
    """The ensemble with ``s_c`` measured on held-out bodies: ``maps`` ``[N, F, H, W]``,
    ``means`` and ``sem`` ``[N, C]`` in the readout's channel order."""
    spread = members_variance(ensemble.members_on_maps(maps))
    s = residual_sd(readout.predict(maps), np.asarray(means, float), np.asarray(sem), spread)
    return replace(ensemble, residual_sd=s)


def standard_error(values: np.ndarray) -> np.ndarray:
    """The standard error of each trial mean: ``values`` ``[..., R]`` NaN-padded trials ->
    ``[...]`` (NaN below two trials)."""
    count = np.isfinite(values).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "degrees of freedom": NaN is meant
        sd = np.nanstd(np.where(count[..., None] > 1, values, np.nan), axis=-1, ddof=1)
        return sd / np.sqrt(count)


def z_value(level: float) -> float:
    """The two-sided normal quantile of a nominal coverage ``level`` (0.9 -> 1.645)."""
    return float(stats.norm.ppf(0.5 + level / 2))


class Bounded:
    """Predictions with a total sd at a nominal ``level``: their interval's bounds, about the
    ``centre`` (the prediction itself unless a calibration moved it)."""

    predicted: np.ndarray
    sd: np.ndarray
    level: float
    centre: np.ndarray | None

    @property
    def middle(self) -> np.ndarray:
        return self.predicted if self.centre is None else self.centre

    @property
    def lower(self) -> np.ndarray:
        return self.middle - z_value(self.level) * self.sd

    @property
    def upper(self) -> np.ndarray:
        return self.middle + z_value(self.level) * self.sd


@dataclass(frozen=True)
class Intervals(Bounded):
    """Per candidate and channel ``[M, C]``: the prediction, its total sd, the interval's
    centre (None: the prediction) and the interval."""

    predicted: np.ndarray
    sd: np.ndarray
    level: float
    centre: np.ndarray | None = None


def intervals(
    predicted: np.ndarray, members: np.ndarray, residual: np.ndarray, level: float
) -> Intervals:
    """The interval of every prediction ``[M, C]`` from its members ``[M, K, C]`` and ``s_c``
    ``[C]``: ``sd = sqrt(v_c(x) + s_c^2)``."""
    return Intervals(predicted, np.sqrt(members_variance(members) + residual[None] ** 2), level)
