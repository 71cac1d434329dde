"""Ground-truth recovery: planted readouts against least squares, and A.1.1 channels.

Run: ``python -m benchmarks.recovery [--bodies 240] [--epochs 300] [--lr 1e-3] [--repeats 8]
[--skip-planted] [--skip-synthetic]``.

Planted readouts (``synthetic.plant_readouts``): channels reading a few features at one map
cell, spike-rate targets (about 20 spikes/s, spread 10) with Gaussian noise from none to half
the signal's spread, fitted at the paper's settings (lr 1e-4, 2500 epochs, penalty 0.1, best
validation epoch, 400/50/25 bodies). Per channel: how far the location is (cells), the held-out
r against least squares at the true cell (the optimum the data allow), and the cosine between
fitted and planted ``w``. On random maps (64 features) and on the seeded stand-in backbone's
maps of the 475 procedural bodies (2048 features, fewer bodies than features).

The same experiment as ``tests/science/test_ground_truth.py``: procedural bodies (and their
silhouettes) and objects through the seeded random ResNet-50, 16 synthetic channels with
Poisson noise (8 repeats), readouts fitted on the bodies; prints the fractions of channels whose
predictions correlate significantly positively with the noise-free truth on held-out bodies
and on objects (the paper reports 93.7% / 95.3% against recordings), and how far the fitted
locations are from the true ones.
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import stats
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
from stimloop.science.stimuli import generate_bodies, generate_objects
from stimloop.storage.registry import default_registry_path, load_registry

from benchmarks.machine import describe

REGISTRY = default_registry_path()


def planted_rows(maps: np.ndarray, label: str, support: int, noise: float, seed: int) -> list[str]:
    """Fit planted readouts of ``maps`` at the paper's settings; one table row per channel."""
    planted = sy.plant_readouts(maps, channels=3, support=support, noise=noise, seed=seed)
    config = ReadoutConfig(silhouettes=False)
    split = make_split(len(maps), config.split, seed=seed)
    fit = fit_readouts(maps, planted.targets, ["a", "b", "c"], split, config=config, seed=seed)
    rec = sy.recovery(
        fit.mu, fit.w, fit.predict(maps[split.test]), planted, maps, split.train, split.test
    )
    return [
        f"| {label} | {noise:.0%} | {c} | {rec['location_cells'][c]:.2f} | "
        f"{rec['r_test'][c]:.3f} | {rec['r_least_squares'][c]:.3f} | {rec['r_ratio'][c]:.3f} | "
        f"{rec['cosine'][c]:.3f} | {rec['cosine_least_squares'][c]:.3f} | {fit.best_epoch[c]} |"
        for c in range(3)
    ]


def planted(body_maps: np.ndarray) -> None:
    rows = []
    random_maps = np.random.default_rng(0).gamma(2.0, 1.0, (475, 64, 7, 7)).astype(np.float32)
    for noise in (0.0, 0.1, 0.5):
        rows += planted_rows(random_maps, "random maps, 6 of 64 features", 6, noise, 0)
    rows += planted_rows(body_maps.astype(np.float32), "stand-in backbone, 20 of 2048", 20, 0.1, 0)
    print(f"# planted readouts: {date.today()} on {describe()}")
    print("paper's settings: lr 1e-4, 2500 epochs, L_1/2 weight 0.1, 400/50/25, seed 0")
    print(
        "| maps | noise | channel | location error (cells) | held-out r | least squares at "
        "the true cell | ratio | cosine of w | cosine of least squares' w | best epoch |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=int, default=240)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=8, help="Poisson repeats per body")
    parser.add_argument("--skip-planted", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    args = parser.parse_args()
    backbone = load_backbone(load_registry(REGISTRY)["resnet50_random"], Path(), "cpu")
    if not args.skip_planted:
        all_bodies = generate_bodies(475, 0)
        planted(
            extract_features(
                backbone,
                [image_to_tensor(Image.fromarray(b.image)) for b in all_bodies],
                precision=fast_precision("cpu"),
            )
        )
    if args.skip_synthetic:
        return
    bodies, objects = generate_bodies(args.bodies, 0), generate_objects(args.bodies // 2, 0)

    def features(images):
        return extract_features(
            backbone,
            [image_to_tensor(Image.fromarray(i)) for i in images],
            precision=fast_precision("cpu"),
        )

    body_maps = features([b.image for b in bodies])
    object_maps = features([o.image for o in objects])
    sil_maps = features([silhouette(b.image) for b in bodies])
    channels = [f"ch{i:02d}" for i in range(16)]
    neurons = sy.make_neurons(
        body_maps, object_maps, channels, seed=1, config=sy.SyntheticConfig(sparsity=0.02)
    )
    ids = [b.id for b in bodies]
    truth_b, truth_o = (
        sy.true_responses(neurons, body_maps),
        sy.true_responses(neurons, object_maps),
    )
    recording = sy.SyntheticConfig(repeats=args.repeats)
    trials, _ = sy.simulate_counts(truth_b, ids, channels, seed=1, config=recording)
    targets = response_table(trials, stimuli=ids, channels=channels).mean.T
    n_test = args.bodies // 8
    config = ReadoutConfig(
        lr=args.lr, epochs=args.epochs, split=(args.bodies - 2 * n_test, n_test, n_test)
    )
    split = make_split(args.bodies, config.split, seed=0)
    fit = fit_readouts(
        body_maps,
        targets,
        channels,
        split,
        silhouette_maps=sil_maps[split.train],
        config=config,
        seed=0,
    )
    pb, po = fit.predict(body_maps[split.test]), fit.predict(object_maps)
    rb = [stats.pearsonr(pb[:, c], truth_b[split.test][:, c]) for c in range(16)]
    ro = [stats.pearsonr(po[:, c], truth_o[:, c]) for c in range(16)]
    sig_b = np.mean([r.statistic > 0 and r.pvalue < 0.05 for r in rb])
    sig_o = np.mean([r.statistic > 0 and r.pvalue < 0.05 for r in ro])
    cells = np.abs(fit.mu - np.stack([n.mu for n in neurons])).max(axis=1) * 3
    print(f"# recovery: {date.today()} on {describe()}")
    print(
        f"{args.bodies} bodies ({config.split}), {len(objects)} objects, 16 channels, "
        f"{args.repeats} repeats, {args.epochs} epochs at lr {args.lr}"
    )
    print(
        f"| held-out bodies significantly positive | {sig_b:.0%} (median r "
        f"{np.median([r.statistic for r in rb]):.2f}) |"
    )
    print(
        f"| objects significantly positive | {sig_o:.0%} (median r "
        f"{np.median([r.statistic for r in ro]):.2f}) |"
    )
    print(
        f"| fitted location within one map cell | {(cells <= 1).mean():.0%} (median "
        f"{np.median(cells):.2f} cells off; beyond one cell: "
        f"{', '.join(f'{c:.2f}' for c in cells[cells > 1]) or 'none'}) |"
    )


if __name__ == "__main__":
    main()
