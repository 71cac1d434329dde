"""Synthetic category-selective neurons with known truth, and simulated recordings (A.1.1).

A synthetic neuron reads out the backbone at a random location ``mu`` with weights ``w`` that
maximise A.1.1's quotient of the two categories' second moments, with its sign chosen so that
the preferred category drives it. A.1.1 writes the quotient as a difference,
``w^T (A_in^T A_in - A_out^T A_out) w`` (its leading eigenvector), and names it the Rayleigh
quotient; ``quotient = "ratio"`` takes it as the generalised Rayleigh quotient
``w^T A_in^T A_in w / w^T A_out^T A_out w`` instead (bodies strong where objects are weak).
Its drive is mapped to plausible rates (a spontaneous rate near 10 spikes/s, best stimuli
several times that) and recorded as Poisson spike counts in the baseline and response windows,
8 repeats.
This is how demos and tests get channels whose truth is known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg
import torch

from stimloop.science.readout import as_tensor, readout_features
from stimloop.science.responses import Trials, Windows, trials_from_counts
from stimloop.science.seeds import channel_rng


@dataclass(frozen=True)
class SyntheticConfig:
    """How synthetic neurons are drawn and how they fire."""

    spontaneous: float = 10.0  # spikes/s in both windows
    peak: float = 60.0  # evoked rate (above spontaneous) at the 95th percentile of the bodies
    sparsity: float | None = None  # keep this fraction of the largest |w| (None: dense)
    mu_range: float = 1.0  # locations drawn uniformly in [-mu_range, mu_range]^2
    repeats: int = 8
    quotient: Literal["difference", "ratio"] = "difference"  # A.1.1's form, or the ratio
    shrinkage: float = 1.0  # ratio only: ridge on the out-category moments, x their mean


@dataclass(frozen=True)
class SyntheticNeuron:
    """Ground truth of one channel: location (x, y), weights, and the drive-to-rate map."""

    channel: str
    mu: np.ndarray  # [2]
    w: np.ndarray  # [F]
    drive_centre: float  # drive mapped to half of ``peak``
    drive_scale: float  # drive units per unit of the softplus argument
    config: SyntheticConfig

    def evoked(self, a: np.ndarray) -> np.ndarray:
        """Noise-free net response (spikes/s) to read-out features ``a`` ``[N, F]``."""
        drive = a @ self.w
        u = (drive - self.drive_centre) / self.drive_scale
        return self.config.peak * np.logaddexp(0.0, u) / np.logaddexp(0.0, 1.0)


def leading_direction(gram_in: np.ndarray, gram_out: np.ndarray, quotient: str) -> np.ndarray:
    """The maximiser of A.1.1's quotient for second moments ``[F, F]`` (unit norm, sign free).

    ``"difference"``: the leading eigenvector of ``gram_in - gram_out``; ``"ratio"``: the
    leading generalised eigenvector of ``gram_in w = l gram_out w`` (``gram_out`` must be
    positive definite: see ``preferred_direction``'s shrinkage).
    """
    f = len(gram_in)
    if quotient == "difference":  # A.1.1's equation: the top eigenvector of the difference
        w = np.linalg.eigh(gram_in - gram_out)[1][:, -1]
    elif quotient == "ratio":  # A.1.1's Rayleigh quotient as a ratio: the generalised problem
        w = scipy.linalg.eigh(gram_in, gram_out, subset_by_index=[f - 1, f - 1])[1][:, 0]
    else:
        raise ValueError(f"quotient must be 'difference' or 'ratio', not {quotient!r}")
    return w / np.linalg.norm(w)


def low_rank_direction(
    a_in: np.ndarray, a_out: np.ndarray, quotient: str, ridge: float = 0.0
) -> np.ndarray | None:
    """``leading_direction`` of ``a_in`` ``[N, F]`` and ``a_out`` ``[M, F]``'s moments (for the
    ratio, ``ridge`` on the denominator's diagonal) solved in the images' ``(N + M)``-dimensional
    span instead of the features' ``F``: the same vector from a small eigenproblem (the demo's
    2048 features against a few hundred images). ``None`` where the small problem does not
    decide it (the full problem's leading eigenvalue is a null space's 0, or no ridge makes
    the denominator invertible).
    """
    n, m = len(a_in), len(a_out)
    if quotient == "difference":  # A.1.1: A_in^T A_in / N - A_out^T A_out / M = Q (R D R^T) Q^T
        q, r = np.linalg.qr(np.concatenate([a_in, a_out]).T)  # [F, N+M], [N+M, N+M]
        d = np.concatenate([np.full(n, 1.0 / n), np.full(m, -1.0 / m)])
        values, vectors = np.linalg.eigh((r * d) @ r.T)
        if values[-1] <= 1e-12 * np.abs(values).max():  # outside the span all have 0: undecided
            return None
        w = q @ vectors[:, -1]
    elif quotient == "ratio":  # A.1.1's ratio: G_out = ridge I + B^T B / M, Woodbury's inverse
        if ridge <= 0:
            return None
        small = ridge * m * np.eye(m) + a_out @ a_out.T  # [M, M]
        g_a = (a_in.T - a_out.T @ np.linalg.solve(small, a_out @ a_in.T)) / ridge  # G_out^-1 A^T
        k = a_in @ g_a / n  # [N, N]: A G_out^-1 A^T / N shares the nonzero eigenvalues
        w = g_a @ np.linalg.eigh((k + k.T) / 2)[1][:, -1]  # w = G_out^-1 A^T v
    else:
        raise ValueError(f"quotient must be 'difference' or 'ratio', not {quotient!r}")
    norm = np.linalg.norm(w)
    return w / norm if norm > 0 else None  # 0: no preferred image drives any direction


def preferred_direction(
    a_in: np.ndarray,
    a_out: np.ndarray,
    support: int | None = None,
    quotient: str = "difference",
    shrinkage: float = 1.0,
) -> np.ndarray:
    """A.1.1: the readout weights ``w`` ``[F]`` maximising the quotient of ``a_in`` ``[N, F]``
    (preferred images) against ``a_out`` ``[M, F]`` (the others); unit norm, signed so that the
    in-category mean drive exceeds the out-of-category one.

    Each Gram matrix is divided by its number of images so that both sets weigh equally.
    ``"difference"`` is A.1.1's equation: its leading eigenvector maximises the energy excess,
    which on features that vary more within the preferred set can separate the two sets by the
    spread of their drives more than by their means. ``"ratio"`` maximises the preferred
    images' mean squared drive per unit of the others': drives that are strong for bodies and
    weak for objects, a neuron that prefers bodies on average. With fewer images than features
    ``A_out^T A_out`` is singular, so ``shrinkage`` times its mean diagonal is added to it.
    With ``support = k``, ``w`` is sparse: the same quotient maximised over the k features with
    the largest ``|w|`` of the dense solution.
    """
    a_in, a_out = np.asarray(a_in, np.float64), np.asarray(a_out, np.float64)
    f = a_in.shape[1]
    # a ridge on the ratio's denominator, A_out^T A_out having rank <= M: shrinkage x its mean
    # diagonal over all features (kept on the sparse support's moments below)
    ridge = shrinkage * float(np.sum(a_out**2)) / len(a_out) / f if quotient == "ratio" else 0.0
    w = None
    if len(a_in) + len(a_out) < f:  # fewer images than features: the images' span decides
        w = low_rank_direction(a_in, a_out, quotient, ridge)
    if w is None:
        w = leading_direction(*_moments(a_in, a_out, ridge), quotient)
    if support is not None and support < f:
        keep = np.sort(np.argsort(-np.abs(w))[:support])
        w = np.zeros_like(w)
        w[keep] = leading_direction(*_moments(a_in[:, keep], a_out[:, keep], ridge), quotient)
    return -w if (a_in @ w).mean() < (a_out @ w).mean() else w


def _moments(a_in: np.ndarray, a_out: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """A.1.1's second moments per image ``[K, K]`` of ``a_in``/``a_out`` ``[., K]``, with
    ``ridge`` on the denominator's diagonal."""
    gram_in = a_in.T @ a_in / len(a_in)
    gram_out = a_out.T @ a_out / len(a_out) + ridge * np.eye(a_out.shape[1])
    return gram_in, gram_out


def make_neurons(
    maps_in: np.ndarray | torch.Tensor,
    maps_out: np.ndarray | torch.Tensor,
    channels: Sequence[str],
    seed: int,
    config: SyntheticConfig = SyntheticConfig(),
    locations: np.ndarray | None = None,
) -> list[SyntheticNeuron]:
    """One body-preferring neuron per channel name.

    ``maps_in`` ``[N, F, H, W]``: preferred images; ``maps_out``: the others. Locations are
    drawn from the channel's seed stream unless given (``[C, 2]``).
    """
    neurons = []
    for c, channel in enumerate(channels):
        rng = channel_rng(seed, channel, "synthetic")
        if locations is None:
            mu = rng.uniform(-config.mu_range, config.mu_range, size=2)
        else:
            mu = np.asarray(locations[c], dtype=np.float64)
        mu_t = torch.as_tensor(mu[None], dtype=torch.float32)
        a_in = readout_features(as_tensor(maps_in), mu_t)[:, 0].numpy()
        a_out = readout_features(as_tensor(maps_out), mu_t)[:, 0].numpy()
        support = (
            None if config.sparsity is None else max(1, round(config.sparsity * a_in.shape[1]))
        )
        w = preferred_direction(a_in, a_out, support, config.quotient, config.shrinkage)
        drive = a_in @ w
        lo, hi = np.percentile(drive, [50, 95])
        scale = max((hi - lo) / 1.0, 1e-9)
        neurons.append(SyntheticNeuron(channel, mu, w, float(lo), float(scale), config))
    return neurons


def true_responses(
    neurons: Sequence[SyntheticNeuron], maps: np.ndarray | torch.Tensor
) -> np.ndarray:
    """Noise-free net responses ``[N, C]`` of ``neurons`` to images with features ``maps``."""
    out = []
    for neuron in neurons:
        mu = torch.as_tensor(neuron.mu[None], dtype=torch.float32)
        a = readout_features(as_tensor(maps), mu)[:, 0].numpy()
        out.append(neuron.evoked(a))
    return np.stack(out, axis=1)


def simulate_counts(
    rates: np.ndarray,
    stimuli: Sequence[str],
    channels: Sequence[str],
    seed: int,
    config: SyntheticConfig = SyntheticConfig(),
    windows: Windows = Windows(),
) -> tuple[Trials, dict[str, np.ndarray]]:
    """Poisson spike counts for every (channel, stimulus, repeat) in pseudorandom order.

    ``rates``: ``[S, C]`` evoked net rates. Baseline counts ~ Poisson(spontaneous x baseline
    length); response counts ~ Poisson((spontaneous + evoked) x response length). Returns the
    trials and the raw columns (stimulus, channel, repeat, baseline_count, response_count).
    """
    rates = np.asarray(rates, dtype=np.float64)
    cols: dict[str, list] = {
        k: [] for k in ("stimulus", "channel", "repeat", "baseline_count", "response_count")
    }
    for c, channel in enumerate(channels):
        rng = channel_rng(seed, channel, "poisson")
        lam_b = np.full((len(stimuli), config.repeats), config.spontaneous * windows.baseline_s)
        lam_r = (config.spontaneous + np.clip(rates[:, c], 0, None))[:, None] * windows.response_s
        base = rng.poisson(lam_b)
        resp = rng.poisson(np.broadcast_to(lam_r, lam_b.shape))
        for s, stim in enumerate(stimuli):
            for k in range(config.repeats):
                cols["stimulus"].append(stim)
                cols["channel"].append(channel)
                cols["repeat"].append(k)
                cols["baseline_count"].append(int(base[s, k]))
                cols["response_count"].append(int(resp[s, k]))
    arrays = {k: np.asarray(v) for k, v in cols.items()}
    trials = trials_from_counts(
        arrays["stimulus"],
        arrays["channel"],
        arrays["baseline_count"],
        arrays["response_count"],
        windows,
    )
    return trials, arrays


def spike_trains(
    columns: dict[str, np.ndarray],
    seed: int,
    windows: Windows = Windows(),
    gap: float = 0.6,
    rate: int = 30000,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """A recording whose window counts are exactly ``columns``' (``simulate_counts``'s).

    Each (stimulus, repeat) is one presentation; they are shown in an order shuffled with
    ``seed``, one every ``gap`` s from 1 s, on a clock of ``rate`` samples per second. Each
    trial's baseline and response counts become that many spikes at distinct samples drawn
    inside its windows (A.2's, half-open, a sample's margin from either edge), none elsewhere.
    Returns channel -> spike times (s), and the presentations' onsets (s) ``[P]`` and stimuli
    ``[P]``; counting the spikes in ``windows`` at those onsets gives ``columns`` again.
    """
    spans = (windows.baseline, windows.response)
    if (
        windows.baseline[1] > windows.response[0]
        or gap <= windows.response[1] - windows.baseline[0]
    ):
        raise ValueError("the windows overlap each other or the next presentation's")
    keys = list(zip(columns["stimulus"].astype(str).tolist(), columns["repeat"].tolist()))
    shown = sorted(set(keys))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(shown))
    step = round(gap * rate)
    # the shuffled slots; a stimulus's repeats fill its slots in turn (repeat k is its k-th
    # showing, as the rig numbers them)
    slots: dict[str, list[int]] = {}
    for i, k in enumerate(order):
        slots.setdefault(shown[k][0], []).append(rate + i * step)
    onset_sample = {key: slots[key[0]].pop(0) for key in shown}  # shown is sorted by repeat
    times: dict[str, list[int]] = {c: [] for c in np.unique(columns["channel"].astype(str))}
    for row, key in enumerate(keys):
        at = onset_sample[key]
        for (start, end), name in zip(spans, ("baseline_count", "response_count")):
            lo, hi = at + int(np.ceil(start * rate)) + 1, at + int(np.ceil(end * rate)) - 1
            count = int(columns[name][row])
            times[str(columns["channel"][row])] += rng.choice(
                np.arange(lo, hi), count, replace=False
            ).tolist()
    by_time = sorted(onset_sample.items(), key=lambda item: item[1])
    onsets = np.array([sample for _, sample in by_time]) / rate
    stimuli = np.array([key[0] for key, _ in by_time])
    return (
        {c: np.sort(np.array(t, dtype=np.int64)) / rate for c, t in times.items()},
        onsets,
        stimuli,
    )


@dataclass(frozen=True)
class PlantedReadouts:
    """Linear readouts planted at known cells: the truth a fit must recover.

    ``mu`` ``[C, 2]`` (cell centres, x then y); ``w`` ``[C, F]`` with ``support`` non-zeros per
    channel; ``b`` ``[C]``; ``targets`` ``[N, C]`` = clean responses + Gaussian noise whose std is
    ``noise`` times each channel's clean std (spikes/s scale: a baseline near 20, a spread near
    10).
    """

    mu: np.ndarray
    w: np.ndarray
    b: np.ndarray
    clean: np.ndarray
    targets: np.ndarray
    noise: float
    seed: int


def plant_readouts(
    maps: np.ndarray | torch.Tensor, channels: int, support: int, noise: float, seed: int
) -> PlantedReadouts:
    """``channels`` sparse linear readouts of ``maps`` ``[N, F, H, W]`` at random cells."""
    rng = np.random.default_rng([seed, 0x91A7])
    _, f, h, w_ = maps.shape
    cells = rng.integers(0, [w_, h], size=(channels, 2))
    mu = np.stack([cells[:, 0] / (w_ - 1), cells[:, 1] / (h - 1)], axis=1) * 2 - 1
    a = (
        readout_features(as_tensor(maps), torch.as_tensor(mu, dtype=torch.float32)).double().numpy()
    )  # [N, C, F]
    weights = np.zeros((channels, f))
    clean = np.empty((len(a), channels))
    for c in range(channels):
        keep = rng.choice(f, size=support, replace=False)
        weights[c, keep] = rng.normal(size=support)
        drive = a[:, c] @ weights[c]
        scale = 10.0 / max(drive.std(), 1e-12)  # spread of about 10 spikes/s
        weights[c] *= scale
        clean[:, c] = a[:, c] @ weights[c]
    b = 20.0 - clean.mean(0)
    clean = clean + b
    targets = clean + rng.normal(size=clean.shape) * noise * clean.std(0)
    return PlantedReadouts(mu, weights, b, clean, targets, noise, seed)


def least_squares_at(
    maps: np.ndarray | torch.Tensor, mu: np.ndarray, targets: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The reference fit: ordinary least squares with an intercept at the true locations.

    Fitted on ``rows`` of ``targets`` ``[N, C]`` (minimum-norm where features outnumber the
    rows). Returns ``w`` ``[C, F]`` and ``b`` ``[C]``.
    """
    a = readout_features(as_tensor(maps), torch.as_tensor(mu, dtype=torch.float32)).double()
    a = a.numpy()[rows]
    w = np.empty((len(mu), a.shape[2]))
    b = np.empty(len(mu))
    for c in range(len(mu)):
        design = np.concatenate([a[:, c], np.ones((len(a), 1))], axis=1)
        sol = np.linalg.lstsq(design, targets[rows, c], rcond=None)[0]
        w[c], b[c] = sol[:-1], sol[-1]
    return w, b


def recovery(
    fitted_mu: np.ndarray,
    fitted_w: np.ndarray,
    predict_test: np.ndarray,
    planted: PlantedReadouts,
    maps: np.ndarray | torch.Tensor,
    train: np.ndarray,
    test: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per channel, how close a fit came to the planted truth and to the optimum.

    ``location_cells``: Chebyshev distance of ``mu`` in map cells; ``r_test``: Pearson r of the
    fit's predictions ``predict_test`` ``[len(test), C]`` with the recorded targets;
    ``r_least_squares``: the same for least squares at the true cell trained on ``train``;
    ``r_ratio``: their ratio; ``cosine``: between fitted and planted ``w``;
    ``cosine_least_squares``: between least squares' and planted ``w`` (how far the data
    determine ``w`` at all: with more features than bodies, many ``w`` fit them alike).
    """
    _, _, h, w_ = maps.shape
    cells = np.abs(fitted_mu - planted.mu) * np.array([(w_ - 1) / 2, (h - 1) / 2])
    ls_w, ls_b = least_squares_at(maps, planted.mu, planted.targets, train)
    a_test = readout_features(
        as_tensor(maps[test]), torch.as_tensor(planted.mu, dtype=torch.float32)
    ).double()
    ls_pred = (a_test.numpy() * ls_w[None]).sum(-1) + ls_b
    rec = planted.targets[test]
    r = np.array([np.corrcoef(predict_test[:, c], rec[:, c])[0, 1] for c in range(len(ls_b))])
    r_ls = np.array([np.corrcoef(ls_pred[:, c], rec[:, c])[0, 1] for c in range(len(ls_b))])

    def cosine(w: np.ndarray) -> np.ndarray:  # [C, F] against the planted [C, F]
        return (w * planted.w).sum(1) / (
            np.linalg.norm(w, axis=1) * np.linalg.norm(planted.w, axis=1) + 1e-300
        )

    return {
        "location_cells": cells.max(1),
        "r_test": r,
        "r_least_squares": r_ls,
        "r_ratio": r / r_ls,
        "cosine": cosine(fitted_w),
        "cosine_least_squares": cosine(ls_w),
    }
