"""The readout as a model: sec. 3.1's location ``mu`` on the feature map, sampled bilinearly,
and linear weights ``w`` with a bias ``b``; sec. 4's L_{1/2} penalty on ``w``. Fitting it is
``trainer`` (the epochs) and ``readout`` (the whole fit and its results)."""

from __future__ import annotations

import torch
from torch import nn


def smoothed_l_half(w: torch.Tensor, eps: float) -> torch.Tensor:
    """Sec. 4's L_{1/2} penalty, smoothed at 0: ``sum_i (w_i^2 + eps)^(1/4)``.

    ``w``: ``[C, F]`` -> ``[C]``.
    """
    return (w.square() + eps).pow(0.25).sum(-1)


def bilinear_weights(mu: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear sampling weights of locations ``mu`` (``[..., 2]`` as x, y in [-1, 1]).

    ``align_corners=True`` semantics: -1 and 1 are the centres of the border cells. Returns
    ``[..., height * width]`` (row-major), non-zero on at most four cells, summing to 1.
    Piecewise linear in ``mu``, so the location is learned by gradient descent.
    """
    px = (mu[..., 0] + 1) / 2 * (width - 1)
    py = (mu[..., 1] + 1) / 2 * (height - 1)
    gx = torch.arange(width, dtype=mu.dtype, device=mu.device)
    gy = torch.arange(height, dtype=mu.dtype, device=mu.device)
    wx = torch.relu(1 - (px[..., None] - gx).abs())  # [..., W]
    wy = torch.relu(1 - (py[..., None] - gy).abs())  # [..., H]
    return (wy[..., :, None] * wx[..., None, :]).flatten(-2)


class GaussianReadout(nn.Module):
    """``C`` channels on an ``[F, H, W]`` map: ``mu`` ``[C, 2]``, ``w`` ``[C, F]``, ``b`` ``[C]``.

    Parameters named as in the paper; ``regularizer`` is the L_{1/2} term of the loss.
    """

    def __init__(self, channels: int, features: int, height: int, width: int) -> None:
        super().__init__()
        self.height, self.width = height, width
        self.mu = nn.Parameter(torch.zeros(channels, 2))
        self.w = nn.Parameter(torch.zeros(channels, features))
        self.b = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, mu: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``[B, H*W, F]`` maps; ``mu``: ``[B, C, 2]`` sampled locations (training) or
        None (evaluation at ``self.mu``). Returns ``[B, C]``."""
        z = x @ self.w.T  # [B, HW, C]: the one large product
        if mu is None:
            k = bilinear_weights(self.mu, self.height, self.width)  # [C, HW]
            return torch.einsum("bpc,cp->bc", z, k) + self.b
        k = bilinear_weights(mu, self.height, self.width)  # [B, C, HW]
        return torch.einsum("bpc,bcp->bc", z, k) + self.b

    def regularizer(self, eps: float) -> torch.Tensor:
        """Per-channel smoothed L_{1/2} of ``w``, ``[C]``."""
        return smoothed_l_half(self.w, eps)
