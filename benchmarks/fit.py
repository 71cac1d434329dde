"""Readout fitting cost: the batched readout against a per-channel ``grid_sample`` loop.

Run: ``python -m benchmarks.fit [--channels 32] [--bodies 400] [--epochs 2500]``.

The batched fit (``service.science.readout.fit_readouts``, one ``[B*49, 2048] x [2048, C]``
product per step) runs the full schedule at the paper's settings: N = 2 x bodies training maps
(bodies plus silhouettes), 2500 epochs, batch 64. The baseline, the straightforward readout
(``grid_sample`` of the whole map per channel, then a dot product), runs a few epochs in the
same process and is extrapolated. Feature maps are random non-negative arrays of the real
shape: the cost does not depend on their content.
"""

from __future__ import annotations

import argparse
import time
from datetime import date

import numpy as np
import torch
from stimloop.science.readout import ReadoutConfig, fit_readouts, make_split
from torch.nn import functional as nnf

from benchmarks.machine import describe


def baseline_seconds_per_epoch(x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int) -> float:
    """A per-channel Python loop of grid_sample readouts, trained like the batched model."""
    n, f = x.shape[:2]
    c = y.shape[1]
    mu = torch.zeros(c, 2, requires_grad=True)
    w = torch.zeros(c, f, requires_grad=True)
    b = torch.zeros(c, requires_grad=True)
    opt = torch.optim.Adam([mu, w, b], lr=1e-4)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n)
        for s in range(0, n, batch):
            idx = order[s : s + batch]
            preds = []
            for j in range(c):
                loc = (mu[j] + 0.1 * torch.randn(len(idx), 2)).clamp(-1, 1).view(-1, 1, 1, 2)
                a = nnf.grid_sample(x[idx], loc, align_corners=True)[:, :, 0, 0]
                preds.append(a @ w[j] + b[j])
            pred = torch.stack(preds, 1)
            loss = ((pred - y[idx]) ** 2).mean(0).sum() + 0.1 * ((w**2 + 1e-6) ** 0.25).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (time.perf_counter() - start) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--bodies", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=2500)
    parser.add_argument("--baseline-epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    n_total = args.bodies + 75
    maps = rng.gamma(2.0, 1.0, (n_total, 2048, 7, 7)).astype(np.float16)
    sil = rng.gamma(2.0, 1.0, (args.bodies, 2048, 7, 7)).astype(np.float16)
    targets = rng.normal(20, 5, (n_total, args.channels))
    config = ReadoutConfig(epochs=args.epochs, split=(args.bodies, 50, 25))
    split = make_split(n_total, config.split, seed=0)
    channels = [f"ch{i}" for i in range(args.channels)]

    x = torch.as_tensor(np.concatenate([maps[split.train], sil])).float()
    y = torch.as_tensor(np.concatenate([targets[split.train]] * 2)).float()
    t_base = baseline_seconds_per_epoch(x, y, args.baseline_epochs, config.batch_size)

    device = torch.device(args.device)
    start = time.perf_counter()
    fit_readouts(
        maps, targets, channels, split, silhouette_maps=sil, config=config, seed=0, device=device
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    t_fit = time.perf_counter() - start

    print(f"# fit: {date.today()} on {describe(device)}")
    print(
        f"{args.channels} channels, N = {len(x)} training maps, {args.epochs} epochs, "
        f"batch {config.batch_size}"
    )
    print("| variant | s/epoch | total for the schedule | vs baseline |")
    print("|---|---|---|---|")
    print(
        f"| per-channel grid_sample (baseline, {args.baseline_epochs} epochs, extrapolated) | "
        f"{t_base:.3f} | {t_base * args.epochs:.0f} s | 1.00x |"
    )
    print(
        f"| batched readout (fit_readouts, whole schedule incl. validation and grid init) | "
        f"{t_fit / args.epochs:.3f} | {t_fit:.0f} s | {t_base * args.epochs / t_fit:.1f}x |"
    )


if __name__ == "__main__":
    main()
