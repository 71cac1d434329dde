"""Prediction intervals on the demo's synthetic channels: coverage of the truth, and cost.

Run: ``python -m benchmarks.intervals [--seeds 3] [--ensemble 32] [--quick]``.

The full demo's plan (``stimloop.demo.FULL``): 475 procedural bodies (400/50/25), 300 objects
and 120 control bodies through the seeded random ResNet-50, 16 synthetic A.1.1 channels
(``DEMO_NEURONS``) recorded with Poisson noise, 8 repeats; readouts fitted as the demo fits them
(1000 epochs at lr 2.5e-4), the ensemble and the selection at the default settings. For each
seed (new neurons and new noise on the same stimuli) and each included channel, the 90%
intervals are checked against the neurons' noise-free responses: of the picked objects (the
list's top, bottom and most similar), of all objects, of the control bodies and of the
held-out test bodies. The ensemble's cost is timed against the single gradient fit in the same
process.
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from stimloop.demo import DEMO_NEURONS, FULL, QUICK
from stimloop.science import synthetic as sy
from stimloop.science.backbone import (
    extract_features,
    fast_precision,
    image_to_tensor,
    load_backbone,
)
from stimloop.science.candidate_cells import cell_major
from stimloop.science.images import silhouette
from stimloop.science.intervals import (
    fit_ensemble,
    intervals,
    members_variance,
    standard_error,
    with_residual,
)
from stimloop.science.readout import ReadoutConfig, fit_readouts, make_split
from stimloop.science.responses import include_channels, response_table
from stimloop.science.selection import Candidates, select
from stimloop.science.stimuli import generate_bodies, generate_control_bodies, generate_objects
from stimloop.storage.registry import default_registry_path, load_registry
from stimloop_contract.configs import SelectionConfig

from benchmarks.machine import describe


def features(backbone, images: list[np.ndarray]) -> np.ndarray:
    return extract_features(
        backbone,
        [image_to_tensor(Image.fromarray(i)) for i in images],
        precision=fast_precision("cpu"),
    )


def inside(truth: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    return (truth >= lower) & (truth <= upper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ensemble", type=int, default=SelectionConfig.ensemble)
    parser.add_argument("--quick", action="store_true", help="the quick demo's plan")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    torch.manual_seed(0)
    spec = load_registry(default_registry_path())["resnet50_random"]
    backbone = load_backbone(spec, Path(), "cpu")
    bodies = generate_bodies(plan.preferred, 0)
    objects = generate_objects(plan.others, 0)
    controls = generate_control_bodies(plan.candidates, 0)
    body_maps = features(backbone, [b.image for b in bodies])
    object_maps = features(backbone, [o.image for o in objects])
    control_maps = features(backbone, [c.image for c in controls])
    sil_maps = features(backbone, [silhouette(b.image) for b in bodies])
    ids = [b.id for b in bodies]
    object_ids, control_ids = [o.id for o in objects], [c.id for c in controls]
    cands = [
        Candidates("object", object_ids, cell_major(object_maps)),
        Candidates("control_body", control_ids, cell_major(control_maps)),
    ]
    config = ReadoutConfig(**{**plan.fit, "split": tuple(plan.fit["split"])})
    selection_config = SelectionConfig(
        stability_images=plan.stability_images, ensemble=args.ensemble
    )
    counts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("picked objects", "all objects", "control bodies", "held-out bodies")
    }
    bias: dict[str, list[np.ndarray]] = {k: [] for k in counts}  # per channel: mean error
    members_sd: dict[str, list[np.ndarray]] = {k: [] for k in counts}  # per channel
    fit_s, ensemble_s, width = [], [], []
    channels = [f"ch{i + 1:02d}" for i in range(plan.channels)]
    for seed in range(args.seeds):
        neurons = sy.make_neurons(
            np.concatenate([body_maps, control_maps]),
            object_maps,
            channels,
            seed=seed + 1,
            config=DEMO_NEURONS,
        )
        truth_b = sy.true_responses(neurons, body_maps)
        truth_o = sy.true_responses(neurons, object_maps)
        truth_c = sy.true_responses(neurons, control_maps)
        trials, _ = sy.simulate_counts(truth_b, ids, channels, seed=seed + 100)
        table = response_table(trials, stimuli=ids, channels=channels)
        verdicts = include_channels(table, seed=seed)
        included = [v.channel for v in verdicts if v.included]
        rows = [channels.index(c) for c in included]
        split = make_split(len(ids), config.split, seed)
        means = table.mean[rows].T  # [N, C]
        t0 = time.perf_counter()
        fit = fit_readouts(
            body_maps,
            means,
            included,
            split,
            body_ids=ids,
            silhouette_maps=sil_maps[split.train],
            config=config,
            seed=seed,
        )
        t1 = time.perf_counter()
        held = np.concatenate([split.val, split.test])
        members = fit_ensemble(fit, body_maps, means, split.train, args.ensemble, seed)
        ensemble = with_residual(
            members,
            fit,
            body_maps[held],
            means[held],
            standard_error(table.values[rows][:, held]).T,
        )
        t2 = time.perf_counter()
        fit_s.append(t1 - t0)
        ensemble_s.append(t2 - t1)
        selection = select(
            fit, verdicts, ids, table.mean, body_maps, cands, selection_config, seed, ensemble
        )
        truth_of = {s: truth_o[i] for i, s in enumerate(object_ids)}
        for ch in selection.channels:
            j = channels.index(ch.channel)
            for p in ch.picks:
                if p.category == "object":
                    hit = inside(truth_of[p.stimulus][j], p.lower, p.upper)
                    counts["picked objects"].append(np.array([hit]))
        for name, maps, truth in (
            ("all objects", object_maps, truth_o),
            ("control bodies", control_maps, truth_c),
            ("held-out bodies", body_maps[split.test], truth_b[split.test]),
        ):
            members = ensemble.members_on_maps(maps)
            iv = intervals(
                fit.predict(maps), members, ensemble.residual_sd, selection_config.interval
            )
            counts[name].append(inside(truth[:, rows], iv.lower, iv.upper).ravel())
            bias[name].append((iv.predicted - truth[:, rows]).mean(0))
            members_sd[name].append(np.sqrt(members_variance(members)).mean(0))
            if name == "all objects":
                width.append(np.median(iv.upper - iv.lower))
    print(f"# prediction intervals: {date.today()} on {describe()}")
    print(f"backbone resnet50_random, weights sha256 {backbone.weights_sha256}")
    print(f"seeds 0-{args.seeds - 1} (neurons seed + 1, noise seed + 100, split and fit seed)")
    print(
        f"{'quick' if args.quick else 'full'} demo plan, {args.seeds} seeds, ensemble of "
        f"{args.ensemble}, nominal {selection_config.interval:.0%}; median interval width on "
        f"objects {np.median(width):.1f} spikes/s"
    )
    print(
        "| predictions | scored | inside the 90% interval | mean error per channel (prediction "
        "- truth, spikes/s: median [min, max]) | members' sd per channel (median) |"
    )
    print("|---|---|---|---|---|")
    for name, parts in counts.items():
        hits = np.concatenate(parts)
        if name == "picked objects":
            print(f"| {name} | {hits.size} | {hits.mean():.1%} | - | - |")
            continue
        b, sd = np.concatenate(bias[name]), np.concatenate(members_sd[name])
        print(
            f"| {name} | {hits.size} | {hits.mean():.1%} | {np.median(b):+.1f} "
            f"[{b.min():+.1f}, {b.max():+.1f}] | {np.median(sd):.1f} |"
        )
    print(
        f"| cost | gradient fit {np.mean(fit_s):.1f} s | ensemble {np.mean(ensemble_s):.2f} s "
        f"({np.mean(ensemble_s) / np.mean(fit_s):.3f} of the fit) |"
    )


if __name__ == "__main__":
    main()
