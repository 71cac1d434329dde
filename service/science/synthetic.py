"""Synthetic category-selective neurons with known truth, and simulated recordings (A.1.1).

A synthetic neuron reads out the backbone at a random location ``mu`` with weights ``w`` that
maximise the Rayleigh quotient ``w^T (A_in^T A_in - A_out^T A_out) w``: the leading eigenvector
(paper A.1.1), with its sign chosen so that the preferred category drives it. Its drive is
mapped to plausible rates (a spontaneous rate near 10 spikes/s, best stimuli several times
that) and recorded as Poisson spike counts in the baseline and response windows, 8 repeats.
This is how demos and tests get channels whose truth is known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from service.science.readout import as_tensor, readout_features
from service.science.responses import Trials, Windows, trials_from_counts
from service.science.seeds import channel_rng


@dataclass(frozen=True)
class SyntheticConfig:
    """How synthetic neurons are drawn and how they fire."""

    spontaneous: float = 10.0  # spikes/s in both windows
    peak: float = 60.0  # evoked rate (above spontaneous) at the 95th percentile of the bodies
    sparsity: float | None = None  # keep this fraction of the largest |w| (None: dense)
    mu_range: float = 1.0  # locations drawn uniformly in [-mu_range, mu_range]^2
    repeats: int = 8


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


def preferred_direction(
    a_in: np.ndarray, a_out: np.ndarray, support: int | None = None
) -> np.ndarray:
    """A.1.1: leading eigenvector of ``A_in^T A_in - A_out^T A_out``.

    Each Gram matrix is divided by its number of images so that both sets weigh equally.
    ``a_in`` ``[N, F]``, ``a_out`` ``[M, F]`` -> unit ``w`` ``[F]`` with the sign for which
    the in-category mean drive exceeds the out-of-category one. With ``support = k``, ``w`` is
    sparse: the same Rayleigh quotient maximised over the k features with the largest
    ``|w|`` of the dense solution.
    """
    a_in, a_out = np.asarray(a_in, np.float64), np.asarray(a_out, np.float64)
    gram = a_in.T @ a_in / len(a_in) - a_out.T @ a_out / len(a_out)
    w = np.linalg.eigh(gram)[1][:, -1]
    if support is not None and support < len(w):
        keep = np.sort(np.argsort(-np.abs(w))[:support])
        w = np.zeros_like(w)
        w[keep] = np.linalg.eigh(gram[np.ix_(keep, keep)])[1][:, -1]
    if (a_in @ w).mean() < (a_out @ w).mean():
        w = -w
    return w


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
        w = preferred_direction(a_in, a_out, support)
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
