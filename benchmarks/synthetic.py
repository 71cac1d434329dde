"""How long the demo's synthetic neurons take to draw (A.1.1's direction per channel), solved in
the images' span against the full features' eigenproblem, in the same run.

Run: ``python -m benchmarks.synthetic [--channels 16]``. Read-out features of the full demo's
shape (595 preferred images, the 475 bodies and 120 control bodies, against 300 objects; 2048
features, gamma-distributed as post-ReLU features are), one draw per channel; each quotient
(the demo's ratio, dense; A.1.1's difference with 2% sparsity, as the tests' neurons) solved
both ways. Prints the seconds per channel, their ratio and the smallest |cosine| between the
two ways' directions.
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from unittest import mock

import numpy as np
from stimloop.science import synthetic as sy

from benchmarks.machine import describe

FEATURES = 2048
CASES = {
    "ratio (the demo's)": ("ratio", None),
    "difference, 2% sparse": ("difference", round(0.02 * FEATURES)),  # as SyntheticConfig's
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=16)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    scale = rng.gamma(1.0, 1.0, FEATURES)  # features of unequal spread, as a backbone's
    draws = [
        (rng.gamma(2, 1, (595, FEATURES)) * scale * 1.1, rng.gamma(2, 1, (300, FEATURES)) * scale)
        for _ in range(args.channels)
    ]
    print(f"{date.today()}, {describe()}; {args.channels} channels\n")
    print("| quotient | images' span (s/channel) | full problem (s/channel) | x faster | min cos |")
    print("|---|---|---|---|---|")
    for name, (quotient, support) in CASES.items():
        started = time.perf_counter()
        fast = [sy.preferred_direction(a, b, support, quotient) for a, b in draws]
        span_s = (time.perf_counter() - started) / args.channels
        with mock.patch.object(sy, "low_rank_direction", lambda *a, **k: None):
            started = time.perf_counter()
            full = [sy.preferred_direction(a, b, support, quotient) for a, b in draws]
            full_s = (time.perf_counter() - started) / args.channels
        cos = min(abs(float(u @ v)) for u, v in zip(fast, full, strict=True))
        print(f"| {name} | {span_s:.3f} | {full_s:.3f} | {full_s / span_s:.1f} | {cos:.12f} |")


if __name__ == "__main__":
    main()
