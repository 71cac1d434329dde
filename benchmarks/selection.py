"""Selection cost: scoring every candidate for every channel from warm, cached maps.

Run: ``python -m benchmarks.selection [--channels 32] [--objects 6857] [--controls 2068]``.

The turnaround's selection step (``service.science.selection.select``) scores 6,857 objects
and 2,068 control bodies for 32 channels: predictions (eq. 1) and similarity to each channel's
reference body (eq. 2), then the ranking. Measured against the straightforward computation in
the same process: read out ``a`` ``[M, C, F]`` for every candidate (``readout_features``),
then ``<a, w> + b`` and eq. (2) on it. Maps are random non-negative arrays of the real shape,
held in memory as the worker holds them after warming (cell-major, float16 and float32).
"""

from __future__ import annotations

import argparse
import time
from datetime import date

import numpy as np
import torch
from stimloop.science import selection as sel
from stimloop.science.candidate_cells import cell_major
from stimloop.science.readout import readout_features
from stimloop.science.responses import ChannelInclusion
from stimloop.science.similarity import similarity_to_many

from benchmarks.fixtures import random_maps, random_readout
from benchmarks.machine import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--objects", type=int, default=6857)
    parser.add_argument("--controls", type=int, default=2068)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    c = args.channels
    fit = random_readout(c, rng)
    names = fit.channels
    inclusion = [ChannelInclusion(n, (), True, "") for n in names]
    body_ids = [f"body_{i:03d}" for i in range(475)]
    body_maps = random_maps(475, rng)
    means = rng.normal(20, 5, (c, 475))
    sets = {}
    for category, m in (("object", args.objects), ("control_body", args.controls)):
        sets[category] = random_maps(m, rng)
    ids = {k: [f"{k}_{i:05d}" for i in range(len(v))] for k, v in sets.items()}

    rows = []
    for dtype in (torch.float16, torch.float32):
        cands = [sel.Candidates(k, ids[k], cell_major(v, dtype)) for k, v in sets.items()]
        sel.select(fit, inclusion, body_ids, means, body_maps, cands)  # warm-up
        start = time.perf_counter()
        sel.select(fit, inclusion, body_ids, means, body_maps, cands)
        rows.append(
            (f"select(), cell-major {str(dtype).split('.')[1]} maps", time.perf_counter() - start)
        )
        del cands

    start = time.perf_counter()
    best = means.argmax(axis=1)
    a_ref = fit.features(body_maps[best])[torch.arange(c), torch.arange(c)]
    for maps in sets.values():
        for s0 in range(0, len(maps), 512):
            a = readout_features(torch.as_tensor(maps[s0 : s0 + 512]), torch.as_tensor(fit.mu))
            _ = (a * torch.as_tensor(fit.w, dtype=torch.float32)).sum(-1)
            _ = similarity_to_many(a_ref, a, fit.w)
    baseline = time.perf_counter() - start

    print(f"# selection: {date.today()} on {describe()}")
    print(f"{c} channels, {args.objects} objects + {args.controls} control bodies, warm maps")
    print("| variant | seconds | vs baseline |")
    print("|---|---|---|")
    print(f"| read out a [M, C, F], then eq. 1 and eq. 2 (baseline) | {baseline:.2f} | 1.00x |")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} | {baseline / seconds:.1f}x |")


if __name__ == "__main__":
    main()
