"""The service itself: health, backbones, jobs, accepted work, and the problem+json error."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from stimloop_contract.ids import Id, Strict


class ActivationsRequest(Strict):
    """Cache a registered set's maps for a registered backbone (404 for an unknown one)."""

    backbone: Id
    stimulus_set: Id


# Every kind of job the service runs: what a job is for, on the wire and in the queue.
JobKind = Literal[
    "activations", "warm", "fit", "analysis", "saliency", "sanity", "phase3", "phase3_analysis"
]


# The queues by urgency a job waits in: a worker takes from the first that has a job.
JobLane = Literal["urgent", "analysis", "background"]


class JobInfo(BaseModel):
    """A job: its state, the stage and progress it reports, its error or result."""

    id: str
    kind: JobKind | None = None
    session: str | None = None
    state: str = Field(
        description="queued, started, finished, failed (its worker's heartbeat lapsed, or it "
        "raised), canceled, stopped, deferred or scheduled"
    )
    stage: str | None = None
    progress: float = 0.0
    message: str | None = None
    lane: JobLane | None = Field(
        None,
        description="Its queue by urgency: urgent (what a waiting animal needs: the session's "
        "preparation, the fit and its list, the phase-three list) before analysis, analysis "
        "before background (maps, their checks, caching a set)",
    )
    ahead: int | None = Field(
        None, description="While queued: the jobs a worker takes before this one"
    )
    estimate_s: float | None = Field(
        None,
        description="While queued: about how many seconds until a worker takes it (each job "
        "ahead at its kind's mean run time here, and what is left of the running ones, over "
        "the workers); null until every kind ahead has run once",
    )
    elapsed_s: float | None = Field(
        None,
        description="While queued, the seconds it has waited; once started, the seconds it "
        "has run (to its end, once ended)",
    )
    remaining_s: float | None = Field(
        None,
        description="While running, about how many seconds are left (its kind's mean run "
        "time here, or its progress so far); null when there is nothing to go by",
    )
    error: str | None = None
    result: dict[str, Any] | None = None
    result_link: str | None = None
    enqueued_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None


class Accepted(BaseModel):
    """202: work was queued (or was already done, for a repeated idempotent request)."""

    job: JobInfo | None = None
    session: str | None = None
    status: str
    links: dict[str, str] = {}


class Problem(BaseModel):
    """RFC 9457 problem details; ``detail`` says what was wrong and how to fix it."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None


class WorkerDevice(BaseModel):
    name: str
    device: str
    pid: int
    host: str


class BackboneInfo(BaseModel):
    """A registered backbone; ``ready`` when sessions can use it, else ``problem`` says why
    (its weights missing, or not the registry's sha256)."""

    name: str
    format: str
    weights: str | None
    weights_present: bool
    ready: bool
    problem: str | None
    layer: str
    description: str


class Health(BaseModel):
    """Always 200: ``status`` is ok, or degraded with ``problems`` saying what to fix."""

    status: Literal["ok", "degraded"]
    problems: list[str]
    version: str
    device: str
    redis: bool
    workers: int
    worker_devices: list[WorkerDevice]
    backbones: list[BackboneInfo]
