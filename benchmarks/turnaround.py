"""Turnaround: from the end of the phase-one upload to the phase-two list, warm cache.

Run: ``python -m benchmarks.turnaround [--quick-only]`` (Redis at ``STIMLOOP_REDIS_URL``, own
key prefix, keys deleted afterwards).

32 channels, 475 bodies, 6,857 objects and 2,068 control bodies, as in the paper. The cache is
warm as it is in a session: every map is in Redis and the worker has loaded the candidates and
the silhouettes (``warm_session``) before phase one arrives. Maps are random non-negative arrays
of the real shape (the cost does not depend on their content); the bodies are procedural
images (their silhouettes go through the backbone while warming). Measured: the worker's
``fit_and_select`` (read trials, inclusion, fit, predictions and similarity for every
candidate, selection, writing the results), at the paper's fit settings (2500 epochs, lr 1e-4)
and at the quick setting (300 epochs, lr 1e-3).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import numpy as np
from redis import Redis
from stimloop.runtime.settings import Settings
from stimloop.science.stimuli import generate_bodies
from stimloop.storage.cache import ActivationCache
from stimloop.storage.registry import default_registry_path
from stimloop.storage.set_record import SetRecord
from stimloop.storage.stimulus_sets import write_stimulus_set
from stimloop.storage.store import Store
from stimloop.worker.context import WorkerContext
from stimloop.worker.fit_select import fit_and_select
from stimloop.worker.precompute import warm_session

from benchmarks.fixtures import paper_session, store_phase_one
from benchmarks.machine import describe

REGISTRY = default_registry_path()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick-only", action="store_true")
    parser.add_argument("--channels", type=int, default=32)
    args = parser.parse_args()
    url = os.environ.get("STIMLOOP_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"stimloop-bench-{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(url)
    tmp = Path(tempfile.mkdtemp())
    try:
        store_dir = tmp / "models_store"
        store_dir.mkdir()
        shutil.copy(REGISTRY, store_dir / "backbones.toml")
        settings = Settings(
            models_store=store_dir,
            redis_url=url,
            key_prefix=prefix,
            device="auto",
            stimulus_root=tmp / "stimuli",
        )
        ctx = WorkerContext(settings, ActivationCache(redis, prefix))
        weights = ctx.backbone("resnet50_random").weights_sha256
        store = Store(store_dir)
        rng = np.random.default_rng(0)
        entries = write_stimulus_set(tmp / "stimuli/bodies", generate_bodies(475, seed=0))
        store.put_set(
            SetRecord.new(
                "bodies",
                "body",
                "directory",
                tmp / "stimuli/bodies",
                ((e.id, e.file, e.sha256) for e in entries),
            )
        )
        shas = [e.sha256 for e in entries]
        ctx.cache.put_many(weights, shas, rng.gamma(2, 1, (475, 2048, 7, 7)).astype(np.float16))
        for set_id, category, n in (
            ("objects", "object", 6857),
            ("controls", "control_body", 2068),
        ):
            ids = [f"{category}_{i:05d}" for i in range(n)]
            shas = [uuid.uuid4().hex for _ in ids]
            for start in range(0, n, 512):
                block = rng.gamma(2, 1, (min(512, n - start), 2048, 7, 7)).astype(np.float16)
                ctx.cache.put_many(weights, shas[start : start + 512], block)
            store.put_set(
                SetRecord.new(
                    set_id,
                    category,
                    "benchmark",
                    tmp,
                    ((i, f"{i}.png", s) for i, s in zip(ids, shas)),
                )
            )
        channels = [f"ch{i:02d}" for i in range(args.channels)]
        body_ids = [e.id for e in entries]
        signal = rng.normal(20, 8, (args.channels, 475))
        stim = np.repeat(np.array(body_ids)[None, :, None], args.channels, 0)
        stim = np.broadcast_to(stim, (args.channels, 475, 8)).ravel()
        chan = np.broadcast_to(np.array(channels)[:, None, None], (args.channels, 475, 8)).ravel()
        rate = (signal[:, :, None] + rng.normal(0, 4, (args.channels, 475, 8))).ravel()
        rows = []
        settings_list = [("quick: 300 epochs, lr 1e-3", {"epochs": 300, "lr": 1e-3})]
        if not args.quick_only:
            settings_list.append(("paper: 2500 epochs, lr 1e-4", {"epochs": 2500, "lr": 1e-4}))
        for label, fit in settings_list:
            session = paper_session(store, channels, fit, {})  # the paper's other settings
            start = time.perf_counter()
            warm_session(ctx, session)
            warm = time.perf_counter() - start
            store_phase_one(store, session, {"stimulus": stim, "channel": chan, "rate": rate})
            start = time.perf_counter()
            result = fit_and_select(ctx, session)
            rows.append((label, warm, time.perf_counter() - start, len(result["included"])))
        print(f"# turnaround: {date.today()} on {describe(ctx.backbone('resnet50_random').device)}")
        print(
            f"{args.channels} channels, 475 bodies x 8 repeats, 6857 objects, 2068 control "
            "bodies, warm cache"
        )
        print("| fit setting | warming (before phase one) | upload to phase-two list | included |")
        print("|---|---|---|---|")
        for label, warm, seconds, included in rows:
            print(f"| {label} | {warm:.1f} s | {seconds:.1f} s | {included} |")
    finally:
        keys = list(redis.scan_iter(f"{prefix}:*"))
        for start in range(0, len(keys), 1000):
            redis.delete(*keys[start : start + 1000])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
