"""Sanity checks of the maps on the quick demo's kind of channels, and their cost.

Run: ``python -m benchmarks.sanity [--channels 3] [--max-features 32] [--device auto]``.

The quick demo's setting: 120 procedural bodies (80/20/20 split) and 60 objects through the
seeded random-init ResNet-50, synthetic body-preferring channels (A.1.1) with Poisson noise (8
repeats), readouts fitted with the quick demo's settings (300 epochs, lr 1e-3, silhouettes).
Per channel the pair is its best-predicted object and its best-recorded body; the maps are
parallel backpropagation's (vanilla gradient, sigma 4, 0.95 coverage, at most
``--max-features`` per map), and the negative control is the Sobel edge detector. Prints, per
randomisation step, the mean over channels and both images of each similarity to the
original, the verdicts, and the seconds one channel's checks take (the refit on permuted
labels included).
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from stimloop.science import sanity as sn
from stimloop.science import synthetic as sy
from stimloop.science.backbone import (
    extract_features,
    fast_precision,
    image_to_tensor,
    load_backbone,
)
from stimloop.science.images import silhouette
from stimloop.science.readout import ReadoutConfig, fit_readouts, make_split
from stimloop.science.responses import response_table
from stimloop.science.saliency import SaliencyConfig, parallel_backprop
from stimloop.science.stimuli import generate_bodies, generate_objects
from stimloop.storage.registry import default_registry_path, load_registry

from benchmarks.machine import describe

METRICS = ("spearman", "spearman_abs", "ssim", "hog")


def mean_row(results: list[sn.SanityResult], index: int | None) -> dict[str, float]:
    """Mean over channels and both images of each similarity at one model step (``index``)
    or at the data step (None)."""
    steps = [r.model_steps[index] if index is not None else r.data_step for r in results]
    return {
        m: float(np.mean([getattr(side, m) for s in steps if s for side in (s.out, s.in_)]))
        for m in METRICS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--max-features", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    spec = load_registry(default_registry_path())["resnet50_random"]
    backbone = load_backbone(spec, Path(), args.device)
    device = backbone.device
    bodies, objects = generate_bodies(120, 0), generate_objects(60, 0)

    def features(images):
        return extract_features(
            backbone,
            [image_to_tensor(Image.fromarray(i)) for i in images],
            precision=fast_precision(device),
        )

    body_maps = features([b.image for b in bodies])
    object_maps = features([o.image for o in objects])
    sil_maps = features([silhouette(b.image) for b in bodies])
    channels = [f"ch{i:02d}" for i in range(args.channels)]
    neurons = sy.make_neurons(
        body_maps, object_maps, channels, seed=1, config=sy.SyntheticConfig(sparsity=0.02)
    )
    ids = [b.id for b in bodies]
    trials, _ = sy.simulate_counts(
        sy.true_responses(neurons, body_maps), ids, channels, seed=1, config=sy.SyntheticConfig()
    )
    targets = response_table(trials, stimuli=ids, channels=channels).mean.T  # [N, C]
    config = ReadoutConfig(lr=1e-3, epochs=300, split=(80, 20, 20))
    split = make_split(len(ids), config.split, seed=0)

    def fit(y: np.ndarray, names: list[str]):
        return fit_readouts(
            body_maps,
            y,
            names,
            split,
            silhouette_maps=sil_maps[split.train],
            config=config,
            seed=0,
            device=device,
        )

    fitted = fit(targets, channels)
    cfg = SaliencyConfig(coverage=0.95, max_features=args.max_features)
    ours, control, seconds = [], [], []
    for j, channel in enumerate(channels):
        x_out = image_to_tensor(
            Image.fromarray(objects[int(np.argmax(fitted.predict(object_maps)[:, j]))].image)
        )
        x_in = image_to_tensor(Image.fromarray(bodies[int(np.nanargmax(targets[:, j]))].image))

        def maps(net, mu, w, x_out=x_out, x_in=x_in):
            r = parallel_backprop(net, x_out, x_in, mu, w, cfg)
            return r.map_out, r.map_in

        start = time.perf_counter()
        permuted = sn.permuted_labels(targets[:, j], 0, channel)
        refit = fit(permuted[:, None], [channel])
        images = torch.stack([x_out, x_in])
        result = sn.sanity_checks(
            backbone.model,
            maps,
            fitted.mu[j],
            fitted.w[j],
            images,
            refit=(refit.mu[0], refit.w[0]),
        )
        seconds.append(time.perf_counter() - start)
        ours.append(result)
        control.append(
            sn.sanity_checks(
                backbone.model,
                sn.EdgeDetector(x_out, x_in),
                fitted.mu[j],
                fitted.w[j],
                images,
                refit=(refit.mu[0], refit.w[0]),
                method="edge detector",
            )
        )
        print(
            f"{channel}: parallel backprop model check {result.model_verdict}; data check "
            f"passed={result.data_passed}; eMPRT rise out {result.emprt['out']:+.3f} in "
            f"{result.emprt['in']:+.3f} (edge detector: {control[-1].model_verdict}; eMPRT "
            f"{control[-1].emprt['out']:+.3f})"
        )

    print(
        f"\n{date.today()}, {describe(device)}; {args.channels} synthetic channels, "
        f"at most {args.max_features} features per map\n"
    )
    print(
        "| step | "
        + " | ".join(f"PB {m}" for m in METRICS)
        + " | "
        + " | ".join(f"edge {m}" for m in METRICS)
        + " |"
    )
    print("|---|" + "---|" * (2 * len(METRICS)))
    names = [s.name for s in ours[0].model_steps] + ["labels permuted"]
    for k, name in enumerate(names):
        index = k if k < len(ours[0].model_steps) else None
        a, b = mean_row(ours, index), mean_row(control, index)
        print(
            f"| {name} | "
            + " | ".join(f"{a[m]:.2f}" for m in METRICS)
            + " | "
            + " | ".join(f"{b[m]:.2f}" for m in METRICS)
            + " |"
        )
    print(
        "\nverdicts at the default (Spearman of |map| and of the signed map both below 0.5):"
        f"\nparallel backpropagation: model check passed {sum(r.model_passed for r in ours)}/"
        f"{len(ours)}, data check {sum(bool(r.data_passed) for r in ours)}/{len(ours)}; "
        f"edge detector: model {sum(r.model_passed for r in control)}/{len(control)}, data "
        f"{sum(bool(r.data_passed) for r in control)}/{len(control)}"
    )
    print(
        "parallel backpropagation's verdicts: "
        + "; ".join(sorted({r.model_verdict for r in ours}))
        + f"\neMPRT (mean rise of complexity, both images): parallel backpropagation "
        f"{np.mean([[r.emprt['out'], r.emprt['in']] for r in ours]):+.3f}, edge detector "
        f"{np.mean([[r.emprt['out'], r.emprt['in']] for r in control]):+.3f}"
    )
    print(
        f"seconds per channel (refit + 9 map pairs): {np.mean(seconds):.1f} "
        f"(min {np.min(seconds):.1f})"
    )


if __name__ == "__main__":
    main()
