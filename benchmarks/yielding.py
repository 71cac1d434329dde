"""A fit waiting behind a running sanity check: how soon the only worker starts it.

Run: ``python -m benchmarks.yielding [--channels 3] [--max-features 8] [--delay 10]`` (Redis at
``STIMLOOP_REDIS_URL``, own key prefix, keys deleted afterwards).

The background job is a sanity check's work as the service's sanity job does it: the model
randomisation cascade of parallel backpropagation maps (``science.sanity.sanity_checks``) on
the seeded random-init ResNet-50, for ``--channels`` readouts at random locations (the refit on
permuted labels left out), reporting its progress after every step, which is where a running
job gives way. ``--delay`` seconds after it starts, the service's fit job is queued for a
session that has no trials: it fails at once, after it started; when it starts is what is
measured. Three runs on one worker, in this process: the fit on an idle queue (the baseline),
behind the sanity check with the worker giving way, and behind it with giving way switched off
(the fit then waits for the whole check).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
import uuid
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from redis import Redis
from rq import get_current_job
from rq.job import Job
from stimloop.runtime.settings import Settings
from stimloop.science import sanity as sn
from stimloop.science.backbone import image_to_tensor, load_backbone
from stimloop.science.saliency import SaliencyConfig, parallel_backprop
from stimloop.science.stimuli import generate_bodies, generate_objects
from stimloop.storage.registry import default_registry_path, load_registry
from stimloop.worker.jobs import StimloopWorker, _reporter, make_worker
from stimloop.worker.queue import enqueue, get_queue

from benchmarks.machine import describe
from tests.support.service import cleanup


def sanity_cascade(channels: int, max_features: int) -> dict[str, float]:
    """The job: the cascade of ``channels`` random readouts, reporting after each step."""
    report = _reporter(get_current_job())
    spec = load_registry(default_registry_path())["resnet50_random"]
    backbone = load_backbone(spec, Path(), "cpu")
    x_out = image_to_tensor(Image.fromarray(generate_objects(1, 0)[0].image))
    x_in = image_to_tensor(Image.fromarray(generate_bodies(1, 0)[0].image))
    config = SaliencyConfig(coverage=0.95, max_features=max_features)
    rng = np.random.default_rng(0)

    def maps(net, mu, w):
        found = parallel_backprop(net, x_out, x_in, mu, w, config)
        return found.map_out, found.map_in

    began = time.perf_counter()
    for k in range(channels):
        sn.sanity_checks(
            backbone.model,
            maps,
            rng.uniform(-0.6, 0.6, 2),
            rng.normal(size=2048).astype(np.float32) * 0.01,
            torch.stack([x_out, x_in]),
            progress=lambda done, total, name, k=k: report(
                "model randomisation", (k + done / total) / channels, name
            ),
        )
    return {"seconds": time.perf_counter() - began}


def fit_start(settings: Settings, redis: Redis, delay: float, background: bool, gives_way: bool):
    """Seconds from queuing the fit to its start (and the sanity job's, if any)."""
    sanity = None
    if background:
        sanity = get_queue(settings, redis, "background").enqueue(
            "benchmarks.yielding.sanity_cascade",
            ARGS["channels"],
            ARGS["max_features"],
            job_timeout=3600,
            meta={"kind": "sanity", "lane": "background", "prefix": settings.key_prefix},
        )
    queued: dict[str, object] = {}

    def submit() -> None:
        time.sleep(delay)
        queued["at"] = time.time()
        queued["job"] = enqueue(settings, redis, "fit", "000000000000", 0, rig="other")

    threading.Thread(target=submit, daemon=True).start()
    worker = make_worker(settings, redis)
    if not gives_way:
        worker._give_way_for = lambda job: None  # type: ignore[method-assign]
    if background:
        worker.work(burst=True, logging_level="CRITICAL")
    else:
        worker.work(max_idle_time=int(delay) + 3, logging_level="CRITICAL")
    fit = Job.fetch(queued["job"].id, connection=redis)  # type: ignore[attr-defined]
    waited = fit.started_at.timestamp() - float(queued["at"])  # type: ignore[arg-type]
    check = Job.fetch(sanity.id, connection=redis) if sanity else None
    check_s = (check.ended_at - check.started_at).total_seconds() if check else None
    return waited, check_s


ARGS: dict[str, int] = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--max-features", type=int, default=8)
    parser.add_argument("--delay", type=float, default=10.0)
    args = parser.parse_args()
    ARGS.update(channels=args.channels, max_features=args.max_features)
    url = os.environ.get("STIMLOOP_REDIS_URL", "redis://127.0.0.1:6379/0")
    redis = Redis.from_url(url)
    tmp = Path(tempfile.mkdtemp())
    settings = Settings(
        models_store=tmp,
        redis_url=url,
        key_prefix=f"stimloop-bench-{uuid.uuid4().hex[:8]}",
        device="cpu",
    )
    try:
        idle, _ = fit_start(settings, redis, 1.0, background=False, gives_way=True)
        giving, check_giving = fit_start(settings, redis, args.delay, True, True)
        holding, check_holding = fit_start(settings, redis, args.delay, True, False)
    finally:
        cleanup(redis, settings)
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\n{date.today()}, {describe(torch.device('cpu'))}, {StimloopWorker.__name__} "
        f"(one worker); the sanity check: {args.channels} channels, at most "
        f"{args.max_features} features per map; the fit queued {args.delay:g} s into it\n"
    )
    print(
        "| the fit queued | starts after (s) | ratio to an idle queue | the sanity check took (s) |"
    )
    print("|---|---|---|---|")
    for name, waited, check in (
        ("on an idle queue", idle, None),
        ("behind the sanity check, the worker giving way", giving, check_giving),
        ("behind the sanity check, not giving way", holding, check_holding),
    ):
        took = "-" if check is None else f"{check:.1f}"
        print(f"| {name} | {waited:.2f} | {waited / idle:.0f}x | {took} |")


if __name__ == "__main__":
    main()
