"""Candidates' maps arranged by map cell, and eq. (1) computed from them.

A channel's readout reads at most four cells of the ``[F, H, W]`` map, so predictions for
many candidates and channels are per-cell matrix products over the channels that read each
cell: ``cells`` are cell-major, ``[H*W, M, F]`` (each cell's features contiguous).
"""

from __future__ import annotations

import numpy as np
import torch

from stimloop.science.readout import as_tensor


def cell_major(maps: np.ndarray | torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[M, F, H, W]`` maps -> ``[H*W, M, F]`` (each cell's features contiguous), chunked."""
    maps = as_tensor(maps)
    m, f, h, w = maps.shape
    out = torch.empty(h * w, m, f, dtype=dtype)
    for start in range(0, m, 512):
        block = maps[start : start + 512].to(dtype).flatten(2)  # [b, F, HW]
        out[:, start : start + 512] = block.permute(2, 0, 1)
    return out


def maps_of_cells(cells: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``cell_major``'s inverse: ``[H*W, M, F]`` -> ``[M, F, H, W]``."""
    m, f = cells.shape[1:]
    return cells.permute(1, 2, 0).reshape(m, f, height, width)


def cell_products(
    cells: torch.Tensor, k: torch.Tensor, vectors: torch.Tensor, owner: torch.Tensor
) -> torch.Tensor:
    """``a . v`` for every candidate and vector, ``a`` read out at the vector's channel.

    ``cells``: ``[H*W, M, F]``; ``k``: ``[C, H*W]`` each channel's bilinear weights;
    ``vectors``: ``[V, F]``; ``owner``: ``[V]`` the channel whose location each vector reads.
    Returns float64 ``[M, V]``: one product per map cell over the vectors that read it.
    """
    m = cells.shape[1]
    kv = k[owner]  # [V, H*W]
    out = torch.zeros(m, len(vectors), dtype=torch.float64, device=cells.device)
    for u in torch.nonzero(kv.sum(0) > 0).flatten().tolist():
        rows = torch.nonzero(kv[:, u] > 0).flatten()
        rhs = (vectors[rows] * kv[rows, u][:, None]).to(torch.float32)
        out[:, rows] += (cells[u].to(torch.float32) @ rhs.T).double()  # [M, V_u]
    return out
