"""The fit metrics against planted truth: bias, spread and interval coverage.

Run: ``python -m benchmarks.metrics [--repetitions 200] [--boot 1000]``.

Planted channels as in ``tests/science/test_metrics.py``: stimulus means ``mu ~ N(20, 6^2)``,
predictions ``mu + N(0, 3^2)``, trials ``mu + N(0, 8^2)``, 8 repeats, so that FEVE = 0.75 and
r, the noise ceiling and the oracle r have closed forms. For 25 stimuli (the paper's held-out
bodies), 100 and 475 (its body set): per metric the mean error, the standard deviation of the
estimates, the fraction within 0.05 of the truth, and how often the 95% bootstrap interval
covers the truth, over seeded repetitions.
"""

from __future__ import annotations

import argparse
from datetime import date

import numpy as np
from stimloop.science.metrics import fit_metrics

TAU, DELTA, SIGMA, R = 6.0, 3.0, 8.0, 8
TRUTH = {
    "feve": 1 - DELTA**2 / TAU**2,
    "r": TAU**2 / np.sqrt((TAU**2 + DELTA**2) * (TAU**2 + SIGMA**2 / R)),
    "noise_ceiling": TAU**2 / (TAU**2 + SIGMA**2 / R),
    "oracle_r": TAU**2 / np.sqrt((TAU**2 + SIGMA**2) * (TAU**2 + SIGMA**2 / (R - 1))),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=200)
    parser.add_argument("--boot", type=int, default=1000)
    args = parser.parse_args()
    print(
        f"{date.today()}; {args.repetitions} seeded repetitions, {args.boot} bootstrap "
        f"resamplings, {R} repeats\n"
    )
    print("| stimuli | metric | truth | mean error | SD | within 0.05 | 95% interval covers |")
    print("|---|---|---|---|---|---|---|")
    for n in (25, 100, 475):
        got: dict[str, list[float]] = {k: [] for k in TRUTH}
        covered = dict.fromkeys(TRUTH, 0)
        for seed in range(args.repetitions):
            rng = np.random.default_rng(1000 + seed)
            mu = rng.normal(20, TAU, n)
            pred = mu + rng.normal(0, DELTA, n)
            trials = mu[:, None] + rng.normal(0, SIGMA, (n, R))
            m = fit_metrics(pred, trials, rng, rng, n_boot=args.boot)
            assert m is not None
            for k, truth in TRUTH.items():
                e = getattr(m, k)
                got[k].append(e.value)
                covered[k] += e.low <= truth <= e.high
        for k, truth in TRUTH.items():
            v = np.array(got[k])
            print(
                f"| {n} | {k} | {truth:.3f} | {v.mean() - truth:+.3f} | {v.std():.3f} | "
                f"{np.mean(np.abs(v - truth) < 0.05):.2f} | {covered[k] / args.repetitions:.2f} |"
            )


if __name__ == "__main__":
    main()
