"""The readout's training epochs, eager or on static buffers (a CUDA graph on a GPU).

Sec. 4's schedule is 2500 epochs of about 13 small steps: on a GPU that is bound by kernel
launches, not arithmetic. ``GraphEpochs`` runs one whole epoch (every step, then the
validation and the best-epoch bookkeeping) on fixed buffers, so on CUDA it is captured once
as a graph and replayed; on a CPU the same code runs without capture. ``EagerEpochs`` is the
plain loop, the reference both are tested against. Both draw the same randomness on the CPU
(the batch order from one generator, each channel's location jitter from its own), so one seed
gives the same batches, the same best epoch and the same parameters either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from stimloop.science.readout_model import GaussianReadout, smoothed_l_half


@dataclass(frozen=True)
class LossConfig:
    """The two numbers of sec. 4's loss: the L_{1/2} weight and its smoothing."""

    l_half_weight: float
    l_half_eps: float


def readout_loss(
    pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, w: torch.Tensor, loss: LossConfig
) -> torch.Tensor:
    """Sec. 4's loss per channel: MSE over the known targets + weight * L_{1/2}(w).

    ``pred``, ``y``, ``mask``: ``[B, C]`` (mask 1 where the target is known); ``w``:
    ``[C, F]``. Returns ``[C]``; channels are independent terms of its sum.
    """
    mse = ((pred - y).square() * mask).sum(0) / mask.sum(0).clamp(min=1)
    return mse + loss.l_half_weight * smoothed_l_half(w, loss.l_half_eps)


def train_step(
    model: GaussianReadout,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    idx: torch.Tensor,
    noise: torch.Tensor,
    loss: LossConfig,
) -> None:
    """One Adam step on the rows ``idx`` with locations ``mu + noise`` (``[B, C, 2]``)."""
    mu = (model.mu[None] + noise).clamp(-1, 1)
    pred = model(x[idx], mu)
    total = readout_loss(pred, y[idx], mask[idx], model.w, loss).sum()
    optimizer.zero_grad(set_to_none=False)  # a graph keeps its gradient buffers
    total.backward()
    optimizer.step()
    with torch.no_grad():
        model.mu.clamp_(-1, 1)


class Draws:
    """The randomness of an epoch, drawn on the CPU: batch order and location jitter."""

    def __init__(self, seed_gen: torch.Generator, jitter_gens: Sequence[torch.Generator]):
        self.batch_gen, self.jitter_gens = seed_gen, list(jitter_gens)

    def epoch(self, n: int, jitter: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``order`` ``[n]`` (a permutation) and ``noise`` ``[n, C, 2]`` per training row."""
        order = torch.randperm(n, generator=self.batch_gen)
        noise = torch.stack([torch.randn(n, 2, generator=g) for g in self.jitter_gens], dim=1)
        return order, noise * jitter


class Best:
    """Per channel, the lowest validation loss so far and the parameters and epoch behind it.

    Updated in place (``copy_``), so a captured graph can do the bookkeeping itself.
    """

    def __init__(self, model: GaussianReadout) -> None:
        c = model.mu.shape[0]
        device = model.mu.device
        self.val = torch.full((c,), float("inf"), device=device)
        self.epoch = torch.zeros(c, dtype=torch.long, device=device)
        self.params = {n: getattr(model, n).detach().clone() for n in ("mu", "w", "b")}

    def update(
        self,
        model: GaussianReadout,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
        m_val: torch.Tensor,
        epoch: torch.Tensor,
    ) -> None:
        """Evaluate at ``mu`` (no jitter) and keep each channel's better state."""
        with torch.no_grad():
            pred = model(x_val)
            val = ((pred - y_val).square() * m_val).sum(0) / m_val.sum(0).clamp(min=1)
            better = val < self.val
            self.val.copy_(torch.where(better, val, self.val))
            self.epoch.copy_(torch.where(better, epoch, self.epoch))
            for name, kept in self.params.items():
                param = getattr(model, name)
                shape = (-1,) + (1,) * (param.ndim - 1)
                kept.copy_(torch.where(better.view(shape), param.detach(), kept))


@dataclass
class TrainingData:
    """Rows on the training device: ``x`` ``[N, H*W, F]``, ``y`` and ``mask`` ``[N, C]``."""

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    m_val: torch.Tensor


class EagerEpochs:
    """The plain loop: one Python-driven step per batch."""

    def __init__(self, model, optimizer, data: TrainingData, best: Best, batch_size, loss):
        self.model, self.optimizer, self.data, self.best = model, optimizer, data, best
        self.batch_size, self.loss = batch_size, loss

    def run(self, epoch: int, order: torch.Tensor, noise: torch.Tensor) -> None:
        d, device = self.data, self.data.x.device
        noise = noise.to(device)
        self.model.train()
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size].to(device)
            train_step(self.model, self.optimizer, d.x, d.y, d.mask, idx, noise[idx], self.loss)
        self.model.eval()
        self.best.update(self.model, d.x_val, d.y_val, d.m_val, torch.tensor(epoch, device=device))


class GraphEpochs:
    """A whole epoch on static buffers; captured as one CUDA graph when ``capture``.

    Before capture, a few warm-up epochs run on a side stream (CUDA's rule for capturing
    optimizer steps); every parameter, gradient, optimizer moment and the best-so-far state is
    then put back to where it started, so the captured run is the eager run.
    """

    def __init__(
        self, model, optimizer, data: TrainingData, best: Best, batch_size, loss, capture: bool
    ) -> None:
        self.model, self.optimizer, self.data, self.best = model, optimizer, data, best
        self.batch_size, self.loss = batch_size, loss
        device = data.x.device
        n, c = data.y.shape
        self.order = torch.zeros(n, dtype=torch.long, device=device)
        self.noise = torch.zeros(n, c, 2, device=device)
        self.epoch_no = torch.zeros((), dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        if capture:
            self._capture()

    def _body(self) -> None:
        d = self.data
        self.model.train()
        for start in range(0, len(self.order), self.batch_size):
            idx = self.order[start : start + self.batch_size]
            train_step(
                self.model, self.optimizer, d.x, d.y, d.mask, idx, self.noise[idx], self.loss
            )
        self.model.eval()
        self.best.update(self.model, d.x_val, d.y_val, d.m_val, self.epoch_no)

    def _snapshot(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        tensors = [p.data for p in self.model.parameters()]
        tensors += [self.best.val, self.best.epoch, *self.best.params.values()]
        return [(t, t.detach().clone()) for t in tensors]

    def _capture(self) -> None:
        saved = self._snapshot()
        self.order.copy_(torch.arange(len(self.order), device=self.order.device))
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._body()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._body()
        with torch.no_grad():  # back to the start: the warm-up steps never happened
            for tensor, value in saved:
                tensor.copy_(value)
            for p in self.model.parameters():
                if p.grad is not None:
                    p.grad.zero_()
            for state in self.optimizer.state.values():
                for value in state.values():
                    if torch.is_tensor(value):
                        value.zero_()

    def run(self, epoch: int, order: torch.Tensor, noise: torch.Tensor) -> None:
        self.order.copy_(order, non_blocking=True)
        self.noise.copy_(noise, non_blocking=True)
        self.epoch_no.fill_(epoch)
        if self.graph is not None:
            self.graph.replay()
        else:
            self._body()
