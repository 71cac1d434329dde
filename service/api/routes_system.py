"""Health, backbones, activations and jobs."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends
from redis import Redis
from redis.exceptions import RedisError
from rq import Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job

from service import __version__
from service.api.deps import READ, RIG, redis, settings, store
from service.api.errors import ApiError
from service.api.schemas import Accepted, ActivationsRequest, JobInfo
from service.queueing import cancel_key, enqueue, get_queue, job_status
from service.registry import load_registry
from service.settings import Settings
from service.store import Store

router = APIRouter(prefix="/v1")


@router.get("/health", summary="Version, device, Redis, workers and backbones")
def health(cfg: Settings = Depends(settings), r: Redis = Depends(redis)) -> dict:
    try:
        r.ping()
        redis_ok = True
        workers = Worker.all(queue=get_queue(cfg, r))
        devices = [json.loads(v) for v in r.hvals(f"{cfg.key_prefix}:workers")]
        alive = {w.name for w in workers}
        worker_info = [d for d in devices if d.get("name") in alive]
    except RedisError:
        redis_ok, workers, worker_info = False, [], []
    return {
        "status": "ok" if redis_ok else "degraded",
        "version": __version__,
        "device": cfg.device,
        "redis": redis_ok,
        "workers": len(workers),
        "worker_devices": worker_info,
        "backbones": backbone_list(cfg),
    }


def require_backbone(cfg: Settings, name: str) -> None:
    """400 unless ``name`` is in the registry (the message lists the known ones)."""
    registry = load_registry(cfg.registry_path)
    if name not in registry:
        raise ApiError(
            400, "Unknown backbone", f"backbone {name!r} is not in the registry: {sorted(registry)}"
        )


def backbone_list(cfg: Settings) -> list[dict]:
    out = []
    for spec in load_registry(cfg.registry_path).values():
        present = spec.format == "random" or (cfg.weights_dir / (spec.weights or "")).is_file()
        out.append(
            {
                "name": spec.name,
                "format": spec.format,
                "weights": spec.weights,
                "weights_present": present,
                "layer": spec.layer,
                "description": spec.description,
            }
        )
    return out


@router.get("/backbones", summary="The registry's backbones", dependencies=[Depends(READ)])
def backbones(cfg: Settings = Depends(settings)) -> list[dict]:
    return backbone_list(cfg)


@router.post(
    "/activations",
    status_code=202,
    response_model=Accepted,
    summary="Precompute and cache a stimulus set's activations (a job)",
    dependencies=[Depends(RIG)],
)
def activations(
    req: ActivationsRequest,
    cfg: Settings = Depends(settings),
    st: Store = Depends(store),
    r: Redis = Depends(redis),
) -> Accepted:
    require_backbone(cfg, req.backbone)
    st.get_set(req.stimulus_set)
    job = enqueue(
        cfg, r, "activations", "service.jobs.run_precompute", req.backbone, req.stimulus_set
    )
    return Accepted(
        job=JobInfo(**job_status(job, cfg)), status="queued", links={"job": f"/v1/jobs/{job.id}"}
    )


def fetch_job(job_id: str, r: Redis) -> Job:
    try:
        return Job.fetch(job_id, connection=r)
    except NoSuchJobError:
        raise ApiError(404, "Not found", f"job {job_id!r} does not exist (or expired)") from None


def job_info(job: Job, cfg: Settings) -> JobInfo:
    info = job_status(job, cfg)
    link = None
    if info["state"] == "finished" and info["session"]:
        link = {
            "fit": "selection",
            "analysis": "analysis",
            "warm": None,
            "saliency": "saliency",
        }.get(info["kind"] or "")
        link = f"/v1/sessions/{info['session']}/{link}" if link else None
    return JobInfo(**info, result_link=link)


@router.get(
    "/jobs/{job_id}",
    response_model=JobInfo,
    summary="A job's state and progress",
    dependencies=[Depends(READ)],
)
def get_job(job_id: str, cfg: Settings = Depends(settings), r: Redis = Depends(redis)) -> JobInfo:
    return job_info(fetch_job(job_id, r), cfg)


@router.delete(
    "/jobs/{job_id}", response_model=JobInfo, summary="Cancel a job", dependencies=[Depends(READ)]
)
def cancel_job(
    job_id: str, cfg: Settings = Depends(settings), r: Redis = Depends(redis)
) -> JobInfo:
    job = fetch_job(job_id, r)
    state = job.get_status(refresh=True)
    if str(getattr(state, "value", state)) == "queued":
        job.cancel()
    else:
        r.set(cancel_key(cfg, job_id), 1, ex=cfg.job_timeout_s)
    return job_info(job, cfg)
