"""Neuron-specific image similarity, eq. (2), and the most similar image of a set, eq. (3).

``s(x1, x2) = <a1 * w, a2 * w> / (|a1 * w| |a2 * w|)`` with ``a`` the features read out at the
channel's location (sec. 3.2): a cosine similarity in which each feature counts by its readout
weight, so the dimensions the neuron ignores drop out. Where either weighted vector is zero the
similarity is undefined; it is reported as 0 (no shared evidence), never NaN.
"""

from __future__ import annotations

import numpy as np
import torch


def similarity(a1: np.ndarray, a2: np.ndarray, w: np.ndarray) -> float:
    """Eq. (2) for one pair: ``a1``, ``a2``, ``w`` are ``[F]``."""
    u1 = np.asarray(a1, np.float64) * w
    u2 = np.asarray(a2, np.float64) * w
    denom = np.linalg.norm(u1) * np.linalg.norm(u2)
    return float(u1 @ u2 / denom) if denom > 0 else 0.0


def weighted_cosine(dot: torch.Tensor, norm1: torch.Tensor, norm2: torch.Tensor) -> torch.Tensor:
    """Eq. (2) from its parts: ``<a1 w, a2 w> / (|a1 w| |a2 w|)``, 0 where a norm is 0 (any
    matching shapes). Every batched form of eq. (2) ends here."""
    denom = norm1 * norm2
    return torch.where(denom > 0, dot / denom.clamp(min=1e-300), torch.zeros_like(dot))


def pairwise(
    a_rows: np.ndarray | torch.Tensor, a_cols: np.ndarray | torch.Tensor, w: np.ndarray
) -> torch.Tensor:
    """Eq. (2) between every image of two sets for one channel: ``a_rows`` ``[N, F]``,
    ``a_cols`` ``[M, F]``, ``w`` ``[F]`` -> ``[N, M]`` (float64)."""
    w_t = torch.as_tensor(np.asarray(w), dtype=torch.float64)
    u1 = torch.as_tensor(a_rows, dtype=torch.float64) * w_t
    u2 = torch.as_tensor(a_cols, dtype=torch.float64) * w_t
    return weighted_cosine(u1 @ u2.T, u1.norm(dim=1)[:, None], u2.norm(dim=1)[None, :])


def similarity_to_many(
    a_ref: np.ndarray | torch.Tensor,
    a_many: np.ndarray | torch.Tensor,
    w: np.ndarray | torch.Tensor,
) -> torch.Tensor:
    """Eq. (2) of one image against many, vectorised; broadcasts over channels.

    ``a_ref``: ``[..., F]``; ``a_many``: ``[N, ..., F]``; ``w``: ``[..., F]`` -> ``[N, ...]``.
    For channels: ``a_ref`` ``[C, F]``, ``a_many`` ``[N, C, F]``, ``w`` ``[C, F]`` -> ``[N, C]``.
    """
    w = torch.as_tensor(w, dtype=torch.float64)
    u_ref = torch.as_tensor(a_ref, dtype=torch.float64) * w
    u = torch.as_tensor(a_many, dtype=torch.float64) * w
    return weighted_cosine((u * u_ref).sum(-1), u.norm(dim=-1), u_ref.norm(dim=-1))
