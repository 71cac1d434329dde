"""Feature extraction throughput: the whole pipeline against the bare forward, fp32 vs bf16.

Run: ``python -m benchmarks.extract [--images 64] [--batch-size 32] [--device auto]``.

Measured in one process, as ratios against a baseline run here:
* pipeline: PNG files -> decode, composite, resize -> forward -> float16 array (what
  ``stimloop activations extract`` does), against
* bare: the model forward on preloaded ``[B, 3, 224, 224]`` tensors (fp32, default layout).
* bf16: channels_last + bf16 autocast on the same preloaded tensors, and its largest relative
  error against fp32 (per image, ||bf16 - fp32|| / ||fp32||).
The backbone is the seeded random stand-in (the lab's weights have the same architecture and
cost).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from stimloop.science.backbone import extract_features, load_backbone, load_input
from stimloop.science.stimuli import generate_bodies, generate_objects
from stimloop.storage.registry import default_registry_path, load_registry

from benchmarks.machine import describe

REGISTRY = default_registry_path()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    spec = load_registry(REGISTRY)["resnet50_random"]
    backbone = load_backbone(spec, Path(), device=args.device)
    model, device = backbone.model, backbone.device
    n_body = min(args.images // 2, 720)
    stimuli = generate_bodies(n_body, 0) + generate_objects(args.images - n_body, 0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for s in stimuli:
            paths.append(Path(tmp) / f"{s.id}.png")
            paths[-1].write_bytes(s.png())
        tensors = torch.stack([load_input(p) for p in paths])
        batches = [t.to(device) for t in tensors.split(args.batch_size)]
        plain = load_backbone(spec, Path(), device=args.device).model.to(
            memory_format=torch.contiguous_format
        )

        def bare(precision: str = "fp32", m=plain, layout=torch.contiguous_format):
            outs = []
            with torch.inference_mode():
                for b in batches:
                    b = b.contiguous(memory_format=layout)
                    if precision == "fp32":
                        outs.append(m(b).float())
                    else:
                        with torch.autocast(device.type, dtype=torch.bfloat16):
                            outs.append(m(b).float())
            return torch.cat(outs)

        bare(), bare("bf16", model, torch.channels_last)  # warm-up
        t_bare = timed(bare)
        t_pipe = timed(lambda: extract_features(backbone, paths, batch_size=args.batch_size))
        t_cl = timed(lambda: bare("fp32", model, torch.channels_last))
        t_bf16 = timed(lambda: bare("bf16", model, torch.channels_last))
        ref, low = bare(), bare("bf16", model, torch.channels_last)
        rel = ((low - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).max().item()

    n = len(paths)
    rows = [
        ("bare forward, fp32 (baseline)", t_bare),
        ("whole pipeline from PNG files, fp32", t_pipe),
        ("bare forward, channels_last fp32", t_cl),
        ("bare forward, channels_last + bf16", t_bf16),
    ]
    print(f"# extract: {date.today()} on {describe(device)}, {n} images, batch {args.batch_size}")
    print("| variant | images/s | vs baseline |")
    print("|---|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {n / seconds:.1f} | {t_bare / seconds:.2f}x |")
    print(f"largest per-image relative error of bf16 vs fp32: {rel:.2e}")


if __name__ == "__main__":
    main()
