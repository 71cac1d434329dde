"""Saliency cost: seconds per (object, body) pair, per-device strategy against the loop.

Run: ``python -m benchmarks.saliency [--device auto] [--probe 32]``.

Parallel backpropagation needs one gradient per used feature and image. Measured in one
process on the full ResNet-50 at 224 px (fp32): the per-feature cost of a loop of backward
passes over a retained graph (the baseline) and of batched vector-Jacobian products
(``is_grads_batched``, chunks of 32), each on ``--probe`` features; then a whole pair at 0.95
coverage and, on a GPU, with all 2048 features, through ``parallel_backprop`` with the
per-device strategy. On a CPU the all-feature time is extrapolated from the per-feature cost.
The readout weights are heavy-tailed (Student t, 2 degrees of freedom), like an L_{1/2} fit:
the number of features that 0.95 coverage needs is printed with the result.
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from stimloop.science import saliency as sa
from stimloop.science.backbone import image_to_tensor, load_backbone
from stimloop.science.stimuli import generate_bodies, generate_objects
from stimloop.storage.registry import default_registry_path, load_registry

from benchmarks.machine import describe

REGISTRY = default_registry_path()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def per_feature_seconds(readout, x, features, beta, strategy, device) -> float:
    method = sa.Gradient()
    sa.attribution_sum(readout, x, features[:2], beta, method, sigma=4.0, strategy=strategy)
    sync(device)
    start = time.perf_counter()
    sa.attribution_sum(readout, x, features, beta, method, sigma=4.0, strategy=strategy, chunk=32)
    sync(device)
    return (time.perf_counter() - start) / len(features)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--probe", type=int, default=32)
    args = parser.parse_args()

    spec = load_registry(REGISTRY)["resnet50_random"]
    backbone = load_backbone(spec, Path(), device=args.device)
    device = backbone.device
    x_out = image_to_tensor(Image.fromarray(generate_objects(1, seed=0)[0].image))
    x_in = image_to_tensor(Image.fromarray(generate_bodies(1, seed=0)[0].image))
    mu = (0.1, -0.2)
    w = np.random.default_rng(0).standard_t(2, 2048) * 0.01
    readout = sa.ReadoutAt(backbone.model, mu, (7, 7)).to(device)
    with torch.no_grad():
        a_out, a_in = readout(x_out[None].to(device))[0], readout(x_in[None].to(device))[0]
    beta = sa.weights_beta(a_in, a_out, torch.as_tensor(w, dtype=torch.float32, device=device))
    probe = sa.covering_features(beta, 1.0)[: args.probe]
    t_loop = per_feature_seconds(readout, x_out, probe, beta, "loop", device)
    t_batched = per_feature_seconds(readout, x_out, probe, beta, "batched", device)
    auto = sa.resolve_strategy("auto", device)
    n95 = len(sa.covering_features(beta, 0.95))
    n_all = len(sa.covering_features(beta, 1.0))

    start = time.perf_counter()
    result = sa.parallel_backprop(
        backbone.model, x_out, x_in, mu, w, sa.SaliencyConfig(coverage=0.95)
    )
    sync(device)
    t_95 = time.perf_counter() - start
    if device.type == "cuda":
        start = time.perf_counter()
        sa.parallel_backprop(backbone.model, x_out, x_in, mu, w, sa.SaliencyConfig(coverage=1.0))
        sync(device)
        t_all, how = time.perf_counter() - start, "measured"
    else:
        t_all, how = 2 * n_all * min(t_loop, t_batched), "extrapolated"

    print(f"# saliency: {date.today()} on {describe(device)}, fp32, ResNet-50 at 224 px")
    print(
        f"features with beta > 0: {n_all}; at 0.95 coverage: {n95} (covered {result.covered:.4f})"
    )
    print("| variant | s per feature gradient | vs loop |")
    print("|---|---|---|")
    print(f"| loop of backward passes (baseline) | {t_loop:.4f} | 1.00x |")
    print(f"| batched VJP, chunks of 32 | {t_batched:.4f} | {t_loop / t_batched:.2f}x |")
    print(f"per-device strategy here: {auto}")
    print(f"| pair, 0.95 coverage ({auto}) | {t_95:.1f} s |")
    print(f"| pair, all {n_all} features ({auto}, {how}) | {t_all:.1f} s |")


if __name__ == "__main__":
    main()
