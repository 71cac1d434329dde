"""Health, backbones, activations and jobs."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path
from stimloop_contract.system import Accepted, ActivationsRequest, BackboneInfo, Health, JobInfo

from stimloop.api.deps import READ, RIG, AnyCaller, RedisDep, SettingsDep, StoreDep
from stimloop.api.errors import problem_responses
from stimloop.api.health import backbone_list, health_report
from stimloop.api.jobs import JOB_ID, fetch_job
from stimloop.sessions.creation import require_backbone
from stimloop.sessions.session_jobs import cancel
from stimloop.worker.queue import enqueue, job_info

router = APIRouter(prefix="/v1", tags=["system"], responses=problem_responses())
JobId = Path(pattern=JOB_ID.pattern, description="A job's id")


@router.get(
    "/health",
    response_model=Health,
    summary="Version, device, Redis, workers and backbones",
    openapi_extra={"security": []},  # answers without a token
)
def health(cfg: SettingsDep, r: RedisDep) -> dict:
    """Always 200: what is wrong (Redis, workers, registry) is listed in ``problems``, each
    saying what to fix, and ``status`` is ``degraded`` while any is listed."""
    return health_report(cfg, r)


@router.get(
    "/backbones",
    response_model=list[BackboneInfo],
    summary="The registry's backbones, and whether their weights are present",
    dependencies=[Depends(READ)],
)
def list_backbones(cfg: SettingsDep) -> list[dict]:
    return backbone_list(cfg)


@router.post(
    "/activations",
    status_code=202,
    response_model=Accepted,
    summary="Precompute and cache a stimulus set's activations (a job)",
    dependencies=[Depends(RIG)],
)
def precompute_activations(
    req: ActivationsRequest,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
) -> Accepted:
    require_backbone(cfg, req.backbone, weights=True)
    st.get_set(req.stimulus_set)
    job = enqueue(cfg, r, "activations", req.backbone, req.stimulus_set)
    return Accepted(job=job_info(job, cfg), status="queued", links={"job": f"/v1/jobs/{job.id}"})


@router.get(
    "/jobs/{job_id}",
    response_model=JobInfo,
    summary="A job's state and progress",
    dependencies=[Depends(READ)],
)
def get_job(cfg: SettingsDep, r: RedisDep, job_id: str = JobId) -> JobInfo:
    return job_info(fetch_job(job_id, r, cfg), cfg)


@router.delete("/jobs/{job_id}", response_model=JobInfo, summary="Cancel a job")
def cancel_job(
    cfg: SettingsDep,
    r: RedisDep,
    caller: AnyCaller,
    job_id: str = JobId,
) -> JobInfo:
    """The rig cancels any job; an analyst only the maps and checks it asked for."""
    return cancel(fetch_job(job_id, r, cfg), caller.role, caller.id, cfg, r)
