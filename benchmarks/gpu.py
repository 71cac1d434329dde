"""The GPU box's figures in one run: extraction, fit, selection, saliency, turnaround.

Run: ``bash benchmarks/gpu.sh`` on the GPU box (under 8 minutes on one H100-class card), or
``bash benchmarks/gpu.sh --cpu-smoke`` anywhere (small sizes, a CPU, about a minute: the
check that the script works). Each part is a ratio against a baseline measured in the same
process, and the whole table goes to stdout and is appended to ``benchmarks/RESULTS.md`` (or
``--results``) under a heading naming the device. The backbone is the seeded random-init
stand-in; maps of the candidate sets are random arrays of the real shape (costs do not depend
on their content). Goals on one H100-class card: fit <= 3 s, pair <= 2 s, turnaround <= 5 s.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack, redirect_stdout
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from stimloop.science import saliency as sa
from stimloop.science import selection as sel
from stimloop.science.backbone import extract_features, forward_features, load_backbone
from stimloop.science.candidate_cells import cell_major
from stimloop.science.readout import ReadoutConfig, fit_readouts, make_split
from stimloop.science.responses import ChannelInclusion
from stimloop.science.stimuli import generate_bodies, generate_objects
from stimloop.storage.registry import default_registry_path, load_registry

from benchmarks.fixtures import paper_session, random_maps, random_readout, store_phase_one
from benchmarks.machine import describe

RESULTS = Path(__file__).with_name("RESULTS.md")


@dataclass(frozen=True)
class Sizes:
    """What each part measures; ``FULL`` is the paper's session, ``SMOKE`` a CPU check."""

    images: int  # extraction
    channels: int
    bodies: int  # phase-one bodies (the split takes all but 75... see split)
    split: tuple[int, int, int]
    epochs: int
    objects: int
    controls: int
    stability_images: int
    saliency_features: int | None  # None: every feature with beta > 0


FULL = Sizes(512, 32, 475, (400, 50, 25), 2500, 6857, 2068, 75, None)
SMOKE = Sizes(8, 4, 60, (40, 10, 10), 3, 40, 20, 10, 4)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def extraction(backbone, sizes: Sizes, device: torch.device) -> list[str]:
    """Images/s from PNG files: decode then forward (baseline) vs the pipelined extractor."""
    half = sizes.images // 2
    stimuli = generate_bodies(half, 0) + generate_objects(sizes.images - half, 0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for s in stimuli:
            paths.append(Path(tmp) / f"{s.id}.png")
            paths[-1].write_bytes(s.png())
        extract_features(backbone, paths[:2])  # warm-up

        def sequential() -> np.ndarray:
            from stimloop.science.backbone import load_input

            size = backbone.spec.input_size
            outs = []
            for start in range(0, len(paths), 32):
                batch = torch.stack([load_input(p, size) for p in paths[start : start + 32]])
                outs.append(forward_features(backbone.model, batch).cpu().numpy())
            return np.concatenate(outs)

        t_seq, ref = timed(sequential, device)
        t_pipe, _ = timed(lambda: extract_features(backbone, paths), device)
        t_bf16, low = timed(lambda: extract_features(backbone, paths, precision="bf16"), device)
    ref, low = ref.astype(np.float32), low.astype(np.float32)
    err = np.linalg.norm((low - ref).reshape(len(ref), -1), axis=1)
    err = (err / np.linalg.norm(ref.reshape(len(ref), -1), axis=1)).max()
    n = len(paths)
    return [
        f"**extraction** ({n} PNGs, batch 32, channels_last)",
        "| variant | images/s | vs baseline |",
        "|---|---|---|",
        f"| decode, then forward, fp32 (baseline) | {n / t_seq:.1f} | 1.00x |",
        f"| pipelined decode, fp32 | {n / t_pipe:.1f} | {t_seq / t_pipe:.2f}x |",
        f"| pipelined decode, bf16 autocast | {n / t_bf16:.1f} | {t_seq / t_bf16:.2f}x |",
        f"largest per-image relative error of bf16 vs fp32: {err:.2e}",
        "",
    ]


def fit(sizes: Sizes, device: torch.device) -> list[str]:
    """The paper's schedule for ``channels`` channels: eager steps vs graph-captured epochs."""
    rng = np.random.default_rng(0)
    n = sum(sizes.split)
    maps = rng.gamma(2.0, 1.0, (n, 2048, 7, 7)).astype(np.float16)
    sil = rng.gamma(2.0, 1.0, (sizes.split[0], 2048, 7, 7)).astype(np.float16)
    targets = rng.normal(20, 5, (n, sizes.channels))
    config = ReadoutConfig(epochs=sizes.epochs, split=sizes.split)
    split = make_split(n, config.split, seed=0)
    names = [f"ch{i:02d}" for i in range(sizes.channels)]

    def run(strategy: str):
        return fit_readouts(
            maps,
            targets,
            names,
            split,
            silhouette_maps=sil,
            config=config,
            seed=0,
            device=device,
            strategy=strategy,
        )

    t_eager, eager = timed(lambda: run("eager"), device)
    t_graph, graph = timed(lambda: run("graph"), device)
    same_epoch = float(np.mean(eager.best_epoch == graph.best_epoch))
    w_diff = float(np.abs(eager.w - graph.w).max() / max(np.abs(eager.w).max(), 1e-12))
    how = "CUDA graph" if device.type == "cuda" else "static buffers, no capture (CPU)"
    return [
        f"**fit** ({sizes.channels} channels, {2 * sizes.split[0]} training maps with "
        f"silhouettes, {sizes.epochs} epochs, batch 64, lr 1e-4; includes the ridge start)",
        "| variant | seconds | vs baseline |",
        "|---|---|---|",
        f"| eager steps (baseline) | {t_eager:.2f} | 1.00x |",
        f"| whole epochs, {how} | {t_graph:.2f} | {t_eager / t_graph:.2f}x |",
        f"graph vs eager: same best epoch in {same_epoch:.0%} of channels, largest w difference "
        f"{w_diff:.1e} of max |w|",
        "",
    ]


def selection(sizes: Sizes, device: torch.device) -> list[str]:
    """Scoring every candidate for every channel: on the device vs on the CPU."""

    rng = np.random.default_rng(0)
    c = sizes.channels
    readout = random_readout(c, rng)
    names = readout.channels
    inclusion = [ChannelInclusion(n, (), True, "") for n in names]
    body_ids = [f"body_{i:03d}" for i in range(sizes.bodies)]
    body_maps = random_maps(sizes.bodies, rng)
    means = rng.normal(20, 5, (c, sizes.bodies))
    config = sel.SelectionConfig(stability_images=sizes.stability_images)
    rows = []
    for where in ("cpu", device.type) if device.type != "cpu" else ("cpu",):
        cands = []
        for cat, m in (("object", sizes.objects), ("control_body", sizes.controls)):
            maps = random_maps(m, rng)
            ids = [f"{cat}_{i:05d}" for i in range(m)]
            cands.append(sel.Candidates(cat, ids, cell_major(maps).to(where)))
        args = (readout, inclusion, body_ids, means, body_maps, cands, config)
        sel.select(*args)  # warm-up
        seconds, _ = timed(lambda args=args: sel.select(*args), torch.device(where))
        rows.append((where, seconds))
        del cands
    base = rows[0][1]
    lines = [
        f"**selection** ({c} channels, {sizes.objects} objects + {sizes.controls} control "
        "bodies, warm float32 maps)",
        "| where the maps live | seconds | vs baseline |",
        "|---|---|---|",
    ]
    for where, seconds in rows:
        label = "CPU (baseline)" if where == "cpu" else where
        lines.append(f"| {label} | {seconds:.3f} | {base / seconds:.2f}x |")
    return [*lines, ""]


def saliency(backbone, sizes: Sizes, device: torch.device) -> list[str]:
    """One pair, every feature with beta > 0 (or the top few in a smoke run): loop vs batched."""
    x_out = sa_input(generate_objects(1, seed=0)[0].image)
    x_in = sa_input(generate_bodies(1, seed=0)[0].image)
    mu = (0.1, -0.2)
    w = np.random.default_rng(0).standard_t(2, 2048) * 0.01
    readout = sa.ReadoutAt(backbone.model, mu, (7, 7)).to(device)
    with torch.no_grad():
        a_out, a_in = readout(x_out[None].to(device))[0], readout(x_in[None].to(device))[0]
    beta = sa.weights_beta(a_in, a_out, torch.as_tensor(w, dtype=torch.float32, device=device))
    features = sa.covering_features(beta, 1.0)
    if sizes.saliency_features is not None:
        kept = np.zeros_like(w)
        kept[features[: sizes.saliency_features].cpu().numpy()] = w[
            features[: sizes.saliency_features].cpu().numpy()
        ]
        w = kept
    n = int((w != 0).sum()) if sizes.saliency_features is not None else len(features)
    rows = []
    for strategy in ("loop", "batched"):
        config = sa.SaliencyConfig(coverage=1.0, strategy=strategy)
        seconds, result = timed(
            lambda c=config: sa.parallel_backprop(backbone.model, x_out, x_in, mu, w, c), device
        )
        rows.append((strategy, seconds, result))
    base = rows[0][1]
    bound = rows[1][2]
    return [
        f"**saliency** (one pair, {n} features with beta > 0, gradient, ResNet-50 at 224 px fp32)",
        "| strategy | seconds | vs baseline |",
        "|---|---|---|",
        f"| loop of backward passes (baseline) | {rows[0][1]:.2f} | 1.00x |",
        f"| batched VJPs, chunks of 32 | {rows[1][1]:.2f} | {base / rows[1][1]:.2f}x |",
        f"eq. 7 check: |I|_2 = {float(bound.norm_out):.4f} <= s = {float(bound.s):.4f}",
        "",
    ]


def sa_input(image: np.ndarray) -> torch.Tensor:
    from stimloop.science.backbone import image_to_tensor

    return image_to_tensor(Image.fromarray(image))


def turnaround(sizes: Sizes, device: torch.device) -> list[str]:
    """Stored phase-one upload to stored phase-two list, warm cache (the worker's use case),
    against the same session's fit forced to eager steps."""
    from redis import Redis
    from stimloop.runtime.settings import Settings
    from stimloop.serve import private_redis
    from stimloop.storage.cache import ActivationCache
    from stimloop.storage.stimulus_sets import write_stimulus_set
    from stimloop.storage.store import Store
    from stimloop.worker.context import WorkerContext
    from stimloop.worker.fit_select import fit_and_select
    from stimloop.worker.precompute import warm_session

    rng = np.random.default_rng(0)
    prefix = f"stimloop-gpu-bench-{uuid.uuid4().hex[:8]}"
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = os.environ.get("STIMLOOP_REDIS_URL") or stack.enter_context(
            private_redis(tmp / "redis")
        )
        redis = Redis.from_url(url)
        stack.callback(lambda: _delete_prefix(redis, prefix))
        store_dir = tmp / "models_store"
        store_dir.mkdir()
        shutil.copy(default_registry_path(), store_dir / "backbones.toml")
        settings = Settings(
            models_store=store_dir,
            redis_url=url,
            key_prefix=prefix,
            device=str(device),
            stimulus_root=tmp / "stimuli",
        )
        ctx = WorkerContext(settings, ActivationCache(redis, prefix))
        weights = ctx.backbone("resnet50_random").weights_sha256
        store = Store(store_dir)
        entries = write_stimulus_set(tmp / "stimuli/bodies", generate_bodies(sizes.bodies, 0))
        store.put_set(_set_record("bodies", "body", tmp / "stimuli/bodies", entries))
        shas = [e.sha256 for e in entries]
        ctx.cache.put_many(weights, shas, _maps(rng, len(shas)))
        for set_id, category, m in (
            ("objects", "object", sizes.objects),
            ("controls", "control_body", sizes.controls),
        ):
            ids = [f"{category}_{i:05d}" for i in range(m)]
            hashes = [uuid.uuid4().hex for _ in ids]
            for start in range(0, m, 512):
                block = _maps(rng, min(512, m - start))
                ctx.cache.put_many(weights, hashes[start : start + 512], block)
            fake = [_Entry(i, f"{i}.png", h) for i, h in zip(ids, hashes)]
            store.put_set(_set_record(set_id, category, tmp, fake))
        channels = [f"ch{i:02d}" for i in range(sizes.channels)]
        body_ids = [e.id for e in entries]
        c, b = sizes.channels, sizes.bodies
        signal = rng.normal(20, 8, (c, b))
        trials = {
            "stimulus": np.broadcast_to(np.array(body_ids)[None, :, None], (c, b, 8)).ravel(),
            "channel": np.broadcast_to(np.array(channels)[:, None, None], (c, b, 8)).ravel(),
            "rate": (signal[:, :, None] + rng.normal(0, 4, (c, b, 8))).ravel(),
        }
        session = paper_session(
            store,
            channels,
            {"split": list(sizes.split), "epochs": sizes.epochs},
            {"stability_images": sizes.stability_images},
        )
        t_warm, _ = timed(lambda: warm_session(ctx, session), device)
        store_phase_one(store, session, trials)
        t_turn, result = timed(lambda: fit_and_select(ctx, session), device)
    return [
        f"**turnaround** ({c} channels, {b} bodies x 8 repeats, {sizes.objects} objects, "
        f"{sizes.controls} control bodies, paper's fit, warm cache)",
        "| step | seconds |",
        "|---|---|",
        f"| warming the session (before phase one) | {t_warm:.2f} |",
        f"| stored phase-one upload to stored phase-two list | {t_turn:.2f} |",
        f"included channels: {len(result['included'])} of {c}",
        "",
    ]


@dataclass(frozen=True)
class _Entry:
    id: str
    file: str
    sha256: str


def _maps(rng: np.random.Generator, n: int) -> np.ndarray:
    return (rng.random((n, 2048, 7, 7), dtype=np.float32) * 4).astype(np.float16)


def _set_record(set_id: str, category: str, folder: Path, entries):
    from stimloop.storage.set_record import SetRecord

    return SetRecord.new(
        set_id, category, "benchmark", folder, ((e.id, e.file, e.sha256) for e in entries)
    )


def _delete_prefix(redis, prefix: str) -> None:
    keys = list(redis.scan_iter(f"{prefix}:*"))
    for start in range(0, len(keys), 1000):
        redis.delete(*keys[start : start + 1000])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="small sizes on the CPU")
    parser.add_argument("--results", type=Path, default=RESULTS, help="file to append to")
    parser.add_argument(
        "--only",
        default="extraction,fit,selection,saliency,turnaround",
        help="comma-separated parts to run",
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.cpu_smoke else FULL
    device = torch.device("cpu" if args.cpu_smoke or not torch.cuda.is_available() else "cuda")
    spec = load_registry(default_registry_path())["resnet50_random"]
    backbone = load_backbone(spec, Path(), device=str(device))
    parts = {
        "extraction": lambda: extraction(backbone, sizes, device),
        "fit": lambda: fit(sizes, device),
        "selection": lambda: selection(sizes, device),
        "saliency": lambda: saliency(backbone, sizes, device),
        "turnaround": lambda: turnaround(sizes, device),
    }
    wanted = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(parts))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {sorted(parts)}")
    label = "CPU smoke run (small sizes)" if args.cpu_smoke else "GPU run"
    lines = [f"## gpu.sh: {date.today()}, {label} on {describe(device)}", ""]
    print("\n".join(lines), flush=True)
    for name in wanted:
        start = time.perf_counter()
        captured = io.StringIO()
        with redirect_stdout(captured):
            block = parts[name]()
        block[-1:] = [f"({name}: {time.perf_counter() - start:.0f} s wall)", ""]
        print("\n".join(block), flush=True)
        lines += block
    with args.results.open("a") as f:
        f.write("\n" + "\n".join(lines) + "\n")
    print(f"appended to {args.results}", file=sys.stderr)


if __name__ == "__main__":
    main()
