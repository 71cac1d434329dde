"""Prediction intervals on the demo's synthetic channels: coverage of the truth, and cost.

Run: ``python -m benchmarks.intervals [--seeds 3] [--first-seed 0] [--ensemble 32]
[--calibration N] [--quick]``.

The full demo's plan (``stimloop.demo.FULL``): 475 procedural bodies (400/50/25), 300 objects
and 120 control bodies through the seeded random ResNet-50, 16 synthetic A.1.1 channels
(``DEMO_NEURONS``) recorded with Poisson noise, 8 repeats; readouts fitted as the demo fits them
(1000 epochs at lr 2.5e-4), the ensemble and the selection at the default settings. Phase one
also shows the demo's calibration images (``--calibration`` of each candidate set, drawn as a
session draws them, recorded with the same noise), on which each category's intervals are
calibrated (``intervals.Calibration``). For each seed (new neurons and new noise on the same
stimuli) and each included channel, the 90% intervals are checked against the neurons'
noise-free responses: of the picked objects and control bodies (the list's top, bottom and
most similar), of all objects and control bodies not shown in phase one, and of the held-out
test bodies; the same picks' uncalibrated intervals beside them. The ensemble's and the
calibration's cost is timed against the single gradient fit in the same process.
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
    calibrate,
    fit_ensemble,
    standard_error,
    with_residual,
)
from stimloop.science.readout import ReadoutConfig, fit_readouts, make_split
from stimloop.science.responses import include_channels, response_table
from stimloop.science.selection import Candidates, select
from stimloop.science.stimuli import generate_bodies, generate_control_bodies, generate_objects
from stimloop.sessions.creation import draw_calibration
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
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--ensemble", type=int, default=SelectionConfig.ensemble)
    parser.add_argument("--calibration", type=int, help="images per candidate set (the demo's)")
    parser.add_argument("--quick", action="store_true", help="the quick demo's plan")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    held_count = plan.calibration if args.calibration is None else args.calibration
    torch.manual_seed(0)
    spec = load_registry(default_registry_path())["resnet50_random"]
    backbone = load_backbone(spec, Path(), "cpu")
    bodies = generate_bodies(plan.preferred, 0)
    objects = generate_objects(plan.others, 0)
    controls = generate_control_bodies(plan.candidates, 0)
    body_maps = features(backbone, [b.image for b in bodies])
    sets = {
        "object": ([o.id for o in objects], features(backbone, [o.image for o in objects])),
        "control_body": (
            [c.id for c in controls],
            features(backbone, [c.image for c in controls]),
        ),
    }
    sil_maps = features(backbone, [silhouette(b.image) for b in bodies])
    ids = [b.id for b in bodies]
    cands = [Candidates(k, v[0], cell_major(v[1])) for k, v in sets.items()]
    config = ReadoutConfig(**{**plan.fit, "split": tuple(plan.fit["split"])})
    selection_config = SelectionConfig(
        stability_images=plan.stability_images, ensemble=args.ensemble, calibration=held_count
    )
    groups = (
        "picked objects",
        "picked objects, uncalibrated",
        "picked control bodies",
        "picked control bodies, uncalibrated",
        "objects not shown",
        "control bodies not shown",
        "held-out bodies",
    )
    counts: dict[str, list[np.ndarray]] = {k: [] for k in groups}
    bias: dict[str, list[np.ndarray]] = {k: [] for k in groups}  # per channel: centre - truth
    fit_s, ensemble_s = [], []
    channels = [f"ch{i + 1:02d}" for i in range(plan.channels)]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for seed in seeds:
        neurons = sy.make_neurons(
            np.concatenate([body_maps, sets["control_body"][1]]),
            sets["object"][1],
            channels,
            seed=seed + 1,
            config=DEMO_NEURONS,
        )
        truth_b = sy.true_responses(neurons, body_maps)
        truth = {k: sy.true_responses(neurons, v[1]) for k, v in sets.items()}
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
        plain = with_residual(
            members,
            fit,
            body_maps[held],
            means[held],
            standard_error(table.values[rows][:, held]).T,
        )
        # phase one's calibration images, drawn and calibrated as the service does
        shown = {
            k: draw_calibration(v[0], held_count, seed, index) if held_count else []
            for index, (k, v) in enumerate(sets.items())
        }
        calibrations = []
        for k, (set_ids, maps) in sets.items():
            if not shown[k]:
                continue
            at = [set_ids.index(i) for i in shown[k]]
            cal_trials, _ = sy.simulate_counts(
                truth[k][at], shown[k], channels, seed=seed + 200 + len(calibrations)
            )
            cal = response_table(cal_trials, stimuli=shown[k], channels=channels)
            calibrations.append(
                calibrate(
                    k,
                    fit.predict(maps[at]),
                    cal.mean[rows].T,
                    standard_error(cal.values[rows]).T,
                )
            )
        ensemble = plain.with_calibrations(calibrations)
        t2 = time.perf_counter()
        fit_s.append(t1 - t0)
        ensemble_s.append(t2 - t1)
        all_held = frozenset(i for v in shown.values() for i in v)
        selection = select(
            fit,
            verdicts,
            ids,
            table.mean,
            body_maps,
            cands,
            selection_config,
            seed,
            ensemble,
            held=all_held,
        )
        name = {"object": "objects", "control_body": "control bodies"}
        picked: dict[str, list[tuple[str, int]]] = {k: [] for k in sets}
        for ch in selection.channels:
            for p in ch.picks:
                picked[p.category].append((p.stimulus, included.index(ch.channel)))
        for k, (set_ids, maps) in sets.items():
            free = [i for i, s in enumerate(set_ids) if s not in all_held]
            members_k = ensemble.members_on_maps(maps[free])
            pred = fit.predict(maps[free])
            t_k = truth[k][free][:, rows]
            level = selection_config.interval
            iv = ensemble.intervals(k, pred, members_k, level)
            iv0 = plain.intervals(k, pred, members_k, level)  # the same, uncalibrated
            hit, hit0 = inside(t_k, iv.lower, iv.upper), inside(t_k, iv0.lower, iv0.upper)
            where = {set_ids[i]: n for n, i in enumerate(free)}
            at = [(where[s], j) for s, j in picked[k]]
            counts[f"picked {name[k]}"].append(np.array([hit[a] for a in at]))
            counts[f"picked {name[k]}, uncalibrated"].append(np.array([hit0[a] for a in at]))
            counts[f"{name[k]} not shown"].append(hit.ravel())
            bias[f"{name[k]} not shown"].append((iv.middle - t_k).mean(0))
        test_maps = body_maps[split.test]
        iv = plain.intervals(
            "body", fit.predict(test_maps), plain.members_on_maps(test_maps), level
        )
        counts["held-out bodies"].append(
            inside(truth_b[split.test][:, rows], iv.lower, iv.upper).ravel()
        )
        bias["held-out bodies"].append((iv.middle - truth_b[split.test][:, rows]).mean(0))
        print(f"seed {seed}: {len(included)} channels, fit {t1 - t0:.1f} s", flush=True)
    print(f"# prediction intervals: {date.today()} on {describe()}")
    print(f"backbone resnet50_random, weights sha256 {backbone.weights_sha256}")
    print(
        f"seeds {seeds.start}-{seeds.stop - 1} (neurons seed + 1, noise seed + 100, "
        "calibration noise seed + 200, split, fit and draws seed)"
    )
    print(
        f"{'quick' if args.quick else 'full'} demo plan, {args.seeds} seeds, ensemble of "
        f"{args.ensemble}, {held_count} calibration images per candidate set, nominal "
        f"{selection_config.interval:.0%}"
    )
    print(
        "| predictions | scored | inside the 90% interval | mean error of the interval's "
        "centre per channel (centre - truth, spikes/s: median [min, max]) |"
    )
    print("|---|---|---|---|")
    for label, parts in counts.items():
        hits = np.concatenate(parts) if parts else np.zeros(0, bool)
        if not bias[label]:
            print(f"| {label} | {hits.size} | {hits.mean():.1%} | - |")
            continue
        b = np.concatenate(bias[label])
        print(
            f"| {label} | {hits.size} | {hits.mean():.1%} | {np.median(b):+.1f} "
            f"[{b.min():+.1f}, {b.max():+.1f}] |"
        )
    print(
        f"| cost | gradient fit {np.mean(fit_s):.1f} s | ensemble and calibration "
        f"{np.mean(ensemble_s):.2f} s ({np.mean(ensemble_s) / np.mean(fit_s):.3f} of the fit) |"
    )


if __name__ == "__main__":
    main()
