"""The service's health as the API and the live pages show it: Redis, the workers and their
devices, and every backbone with what keeps it from being used."""

from __future__ import annotations

import json

from redis import Redis
from redis.exceptions import RedisError
from rq import Worker

from stimloop import __version__
from stimloop.runtime.settings import Settings
from stimloop.science.backbone_spec import BackboneError
from stimloop.storage.registry import load_registry, weights_problem
from stimloop.worker.queue import LANES, alive_key, get_queue


def health_report(cfg: Settings, r: Redis) -> dict:
    """Always 200: what is wrong (Redis, workers, registry) is listed in ``problems``, each
    saying what to fix, and ``status`` is ``degraded`` while any is listed."""
    problems: list[str] = []
    workers, worker_info, redis_ok = 0, [], False
    try:
        r.ping()
        redis_ok = True
        registered = {w.name for w in Worker.all(queue=get_queue(cfg, r, LANES[0]))}
        devices = [json.loads(v) for v in r.hvals(f"{cfg.key_prefix}:workers")]
        # alive: registered with RQ and its keep-alive key fresh (a killed worker drops out
        # within seconds, not when RQ's own registration expires)
        worker_info = [
            d
            for d in devices
            if d.get("name") in registered and r.exists(alive_key(cfg, d["name"]))
        ]
        workers = len(worker_info)
    except (RedisError, ValueError) as exc:
        problems.append(
            f"Redis at {cfg.redis_url or '(unset)'} does not answer ({exc}); start it or set "
            "STIMLOOP_REDIS_URL"
        )
    if redis_ok and workers == 0:
        problems.append(
            "no worker is running: fits and analyses will wait; start one with `stimloop worker`"
        )
    try:
        backbones = backbone_list(cfg)
    except BackboneError as exc:
        backbones = []
        problems.append(f"{exc}; fix the file, or remove it to get the packaged default back")
    return {
        "status": "degraded" if problems else "ok",
        "problems": problems,
        "version": __version__,
        "device": cfg.device,
        "redis": redis_ok,
        "workers": workers,
        "worker_devices": worker_info,
        "backbones": backbones,
    }


def backbone_list(cfg: Settings) -> list[dict]:
    """Every registered backbone, whether its weights are present, and what keeps it from
    being used (a missing file, or one whose sha256 is not the registry's)."""
    out = []
    for spec in load_registry(cfg.registry_path).values():
        present = spec.format == "random" or (cfg.weights_dir / (spec.weights or "")).is_file()
        problem = weights_problem(spec, cfg.weights_dir)
        out.append(
            {
                "name": spec.name,
                "format": spec.format,
                "weights": spec.weights,
                "weights_present": present,
                "ready": problem is None,
                "problem": problem,
                "layer": spec.layer,
                "description": spec.description,
            }
        )
    return out
