"""Phase three's ground truth: do the salient fragments keep more of a channel's response?

Run: ``python -m benchmarks.phase_three [--channels 16] [--q 0.1,0.25,0.5]``.

Synthetic A.1.1 channels (as the demo's: bodies and control bodies preferred over objects,
2% of the features) read the seeded stand-in backbone. For each channel, its pair is chosen
as in sec. 5.2 (the highest ``s`` among its 5 best objects and 15 best bodies) and its
saliency maps are computed by parallel backpropagation (eq. 4-6) with the channel's own
readout as the model: this isolates the fragments from the quality of a fit. Both images are
then cut into salient, complement and random fragments at each ``q``, and the channel's
response to every fragment is computed (for the truth, a monotone function of the readout's
drive, so the model's ordering is the truth's). Counted per channel and ``q``: whether the
retained response R(fragment) / R(intact), averaged over the pair's two images, is higher for
salient than for complement and than for random.
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image
from stimloop.science import saliency as sa
from stimloop.science import synthetic as sy
from stimloop.science.backbone import (
    extract_features,
    fast_precision,
    image_to_tensor,
    load_backbone,
)
from stimloop.science.fragments import FragmentConfig, make_fragments
from stimloop.science.readout import readout_features
from stimloop.science.stimuli import generate_bodies, generate_control_bodies, generate_objects
from stimloop.storage.registry import default_registry_path, load_registry

from benchmarks.machine import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--q", default="0.1,0.25,0.5")
    parser.add_argument("--bodies", type=int, default=200)
    parser.add_argument("--objects", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/RESULTS.md"))
    args = parser.parse_args()
    qs = [float(v) for v in args.q.split(",")]

    spec = load_registry(default_registry_path())["resnet50_random"]
    backbone = load_backbone(spec, Path(), "cpu")
    precision = fast_precision("cpu")
    sets = {
        "bodies": generate_bodies(args.bodies, args.seed),
        "objects": generate_objects(args.objects, args.seed),
        "controls": generate_control_bodies(args.bodies // 5, args.seed),
    }

    def maps_of(images: list[np.ndarray]) -> np.ndarray:
        tensors = [image_to_tensor(Image.fromarray(i)) for i in images]
        return extract_features(backbone, tensors, batch_size=16, precision=precision)

    maps = {k: maps_of([s.image for s in v]) for k, v in sets.items()}
    channels = [f"ch{i + 1:02d}" for i in range(args.channels)]
    neurons = sy.make_neurons(
        np.concatenate([maps["bodies"], maps["controls"]]),
        maps["objects"],
        channels,
        seed=args.seed + 1,
        config=sy.SyntheticConfig(sparsity=0.02),
    )
    config = sa.SaliencyConfig(coverage=1.0, seed=args.seed)
    wins = {(q, other): 0 for q in qs for other in ("complement", "random")}
    rows = []
    for n, neuron in enumerate(neurons):
        truth = {k: sy.true_responses([neuron], m)[:, 0] for k, m in maps.items()}
        top_objects = np.argsort(-truth["objects"], kind="stable")[:5]
        top_bodies = np.argsort(-truth["bodies"], kind="stable")[:15]
        mu = np.asarray(neuron.mu[None], np.float32)

        def features(m: np.ndarray, mu=mu) -> np.ndarray:
            import torch

            return readout_features(torch.as_tensor(m), torch.as_tensor(mu))[:, 0].numpy()

        obj, body, s = sa.default_pair(
            features(maps["objects"][top_objects]),
            features(maps["bodies"][top_bodies]),
            neuron.w,
            [str(i) for i in top_objects],
            [str(i) for i in top_bodies],
        )
        images = {
            "object": sets["objects"][int(obj)].image,
            "body": sets["bodies"][int(body)].image,
        }
        result = sa.parallel_backprop(
            backbone.model,
            image_to_tensor(Image.fromarray(images["object"])),
            image_to_tensor(Image.fromarray(images["body"])),
            neuron.mu,
            neuron.w,
            config,
        )
        displays = {"object": result.display_out, "body": result.display_in}
        made = []
        for name, image in images.items():
            for q in qs:
                made += [
                    (name, q, f)
                    for f in make_fragments(
                        image,
                        displays[name],
                        name,
                        neuron.channel,
                        FragmentConfig(q),
                        seed=args.seed,
                    )
                ]
        response = sy.true_responses([neuron], maps_of([f.image for _, _, f in made]))[:, 0]
        intact = sy.true_responses([neuron], maps_of(list(images.values())))[:, 0]
        source = {"object": intact[0], "body": intact[1]}
        kept: dict[tuple[float, str], list[float]] = {}
        for (name, q, f), r in zip(made, response):
            kept.setdefault((q, f.kind), []).append(r / source[name])
        line = [neuron.channel, f"{s:.2f}"]
        for q in qs:
            mean = {k: float(np.mean(kept[(q, k)])) for k in ("salient", "complement", "random")}
            for other in ("complement", "random"):
                wins[(q, other)] += mean["salient"] > mean[other]
            line.append(f"{mean['salient']:.2f} / {mean['complement']:.2f} / {mean['random']:.2f}")
        rows.append(line)
        print(f"{n + 1}/{len(neurons)}", " | ".join(line), flush=True)

    header = (
        f"\n### Phase three: salient fragments against complement and random "
        f"({date.today().isoformat()})\n\n"
        f"Machine: {describe()}. Backbone: resnet50_random (the seeded stand-in), "
        f"{len(neurons)} synthetic A.1.1 channels (seed {args.seed}, 2% of features), pairs by "
        "sec. 5.2 from each channel's best 5 objects and 15 bodies, maps by parallel "
        "backpropagation (all features with beta > 0) with the channel's readout as the model; "
        "fragments feathered 2 px. Retained response R(fragment) / R(intact), mean over the "
        "pair's two images. `python -m benchmarks.phase_three`.\n\n"
    )
    table = "| q | salient > complement | salient > random |\n|---|---|---|\n"
    for q in qs:
        table += (
            f"| {q:g} | {wins[(q, 'complement')]}/{len(neurons)} "
            f"({wins[(q, 'complement')] / len(neurons):.0%}) | {wins[(q, 'random')]}/"
            f"{len(neurons)} ({wins[(q, 'random')] / len(neurons):.0%}) |\n"
        )
    detail = (
        "\n| channel | s | "
        + " | ".join(f"q {q:g}: salient / complement / random" for q in qs)
        + " |\n|---|---|"
        + "---|" * len(qs)
        + "\n"
        + "".join("| " + " | ".join(r) + " |\n" for r in rows)
    )
    text = header + table + detail
    print(text)
    with args.results.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
