"""Sessions: create, upload the phases, read the selection, analysis, models and saliency.

Each route parses, authorises, calls the function that does the work (``session_jobs`` for
uploads and jobs, the store for results) and shapes the answer.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from redis import Redis

from stimloop import __version__
from stimloop.api.deps import ANALYST, READ, RIG, Caller, redis, settings, store
from stimloop.api.errors import ApiError, problem_responses
from stimloop.api.routes.system import require_backbone
from stimloop.api.schemas import (
    Accepted,
    JobInfo,
    SaliencyRequest,
    SessionCreate,
    SessionInfo,
    TrialUpload,
)
from stimloop.api.session_jobs import observed, receive_phase, resubmit_fit
from stimloop.runtime.settings import Settings
from stimloop.storage import session_states
from stimloop.storage.store import Store, read_json
from stimloop.worker.queue import enqueue, job_status

router = APIRouter(prefix="/v1/sessions", tags=["sessions"], responses=problem_responses())
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": TrialUpload.model_json_schema()},
            "application/x-npz": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def session_info(record: dict[str, Any]) -> SessionInfo:
    return SessionInfo(**{k: record.get(k) for k in SessionInfo.model_fields})


def refuse_shared_ids(req: SessionCreate, ids: dict[str, set[str]]) -> None:
    """422 when two of the session's sets share image ids.

    Every table of a session (phase-two list, trials, analysis) names images by id alone, so
    an object and a control body with one id could not be told apart.
    """
    fields = list(ids)
    for i, first in enumerate(fields):
        for second in fields[i + 1 :]:
            shared = sorted(ids[first] & ids[second])
            if shared:
                raise ApiError(
                    422,
                    "Stimulus ids shared between sets",
                    f"{first} {getattr(req, first)!r} and {second} {getattr(req, second)!r} "
                    f"share {len(shared)} image ids, e.g. {shared[:10]}; a session names "
                    "images by id alone, so give the images of each set distinct ids (a "
                    "manifest.json with an 'id' per file) and register the set again",
                )


def check_sets(st: Store, req: SessionCreate) -> None:
    """4xx unless the session's three sets exist, hold their categories, share no ids, and
    the body set holds the fit's split."""
    ids: dict[str, set[str]] = {}
    for field, category in (
        ("body_set", "body"),
        ("object_set", "object"),
        ("control_body_set", "control_body"),
    ):
        record = st.get_set(getattr(req, field))
        if record["category"] != category:
            raise ApiError(
                400,
                "Wrong category",
                f"{field} {record['id']!r} holds {record['category']} images, not {category}",
            )
        ids[field] = {e["id"] for e in record["entries"]}
    refuse_shared_ids(req, ids)
    bodies = st.get_set(req.body_set)["count"]
    if sum(req.fit.split) > bodies:
        raise ApiError(
            400,
            "Split too large",
            f"the fit split {req.fit.split} needs "
            f"{sum(req.fit.split)} bodies; the body set has {bodies}",
        )


@router.post(
    "",
    status_code=201,
    response_model=SessionInfo,
    summary="Create a session (warms its candidates' activations on a worker)",
)
def create(
    req: SessionCreate,
    cfg: Settings = Depends(settings),
    st: Store = Depends(store),
    r: Redis = Depends(redis),
    caller: Caller = Depends(RIG),
    idempotency_key: str | None = Header(
        None,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Send the same key again (a retry) to get the session it created, once.",
    ),
) -> SessionInfo:
    require_backbone(cfg, req.backbone)
    check_sets(st, req)
    record = st.create_session(
        req.model_dump(mode="json"),
        {"stimloop_version": __version__, "seed": req.seed},
        key=f"{caller.id}:{idempotency_key}" if idempotency_key else None,
    )
    if record.pop("existing", False):
        return session_info(record)  # a retry: the first create's session, nothing new
    job = enqueue(
        cfg, r, "warm", "stimloop.worker.jobs.run_warm", record["id"], session=record["id"]
    )
    with st.locked(record["id"]) as rec:
        rec["jobs"]["warm"] = job.id
        record = dict(rec)
    return session_info(record)


@router.get("", response_model=list[SessionInfo], dependencies=[Depends(READ)])
def list_sessions(st: Store = Depends(store)) -> list[SessionInfo]:
    return [session_info(r) for r in st.list_sessions()]


@router.get("/{session_id}", response_model=SessionInfo, dependencies=[Depends(READ)])
def get(
    session_id: str,
    cfg: Settings = Depends(settings),
    st: Store = Depends(store),
    r: Redis = Depends(redis),
) -> SessionInfo:
    return session_info(observed(st.get_session(session_id), cfg, r))


# ------------------------------------------------------------------ uploads


@router.post(
    "/{session_id}/fit",
    status_code=202,
    response_model=Accepted,
    dependencies=[Depends(RIG)],
    summary="Run fit-and-select again (after a failure)",
)
def refit(
    session_id: str,
    cfg: Settings = Depends(settings),
    st: Store = Depends(store),
    r: Redis = Depends(redis),
) -> Accepted:
    return resubmit_fit(st, session_id, cfg, r)


def add_upload_route(router: APIRouter, path: str, phase: str, summary: str) -> None:
    """``PUT path``: one phase's trials (JSON columns or NPZ) by the one upload path."""

    async def upload(
        session_id: str,
        request: Request,
        replace: bool = Query(False),
        cfg: Settings = Depends(settings),
        st: Store = Depends(store),
        r: Redis = Depends(redis),
    ) -> Accepted:
        return await receive_phase(phase, session_id, request, replace, cfg, st, r)

    upload.__name__ = phase  # the OpenAPI operation's name
    router.put(
        path,
        status_code=202,
        response_model=Accepted,
        dependencies=[Depends(RIG)],
        summary=summary,
        openapi_extra=UPLOAD_BODY,
    )(upload)


add_upload_route(
    router,
    "/{session_id}/phase1",
    "phase1",
    "Upload phase one's trials (JSON columns or NPZ); starts fit-and-select",
)
add_upload_route(
    router, "/{session_id}/phase2", "phase2", "Upload phase two's trials; starts the analysis"
)


# ------------------------------------------------------------------ results


@router.get(
    "/{session_id}/selection",
    dependencies=[Depends(READ)],
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
    summary="Per-channel selections and the phase-two list (JSON, or CSV for the rig)",
)
def selection(
    session_id: str, format: str = Query("json", pattern="^(json|csv)$"), st: Store = Depends(store)
) -> Response:
    data = st.read_result(session_id, "selection.json", "selection")
    if format == "json":
        return JSONResponse(data)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["order", "stimulus", "category", "reasons"])
    order = 0
    for entry in data["phase_two"]["entries"]:
        order += 1
        reasons = ";".join(f"{r['channel']}:{r['role']}" for r in entry["reasons"])
        writer.writerow([order, entry["stimulus"], entry["category"], reasons])
    for body in data["phase_two"]["stability_bodies"]:
        order += 1
        writer.writerow([order, body, "body", "stability"])
    return Response(buffer.getvalue(), media_type="text/csv")


@router.get(
    "/{session_id}/analysis",
    dependencies=[Depends(READ)],
    summary="Stability, selectivity and generalisation per channel, and the summary",
)
def analysis(session_id: str, st: Store = Depends(store)) -> JSONResponse:
    return JSONResponse(st.read_result(session_id, "analysis.json", "analysis"))


@router.get(
    "/{session_id}/models",
    dependencies=[Depends(READ)],
    responses={200: {"content": {"application/json": {}, "application/x-npz": {}}}},
    summary="Per-channel readouts and metrics (JSON, or the arrays as NPZ)",
)
def models(
    session_id: str, format: str = Query("json", pattern="^(json|npz)$"), st: Store = Depends(store)
) -> Response:
    channels = st.read_result(session_id, "channels.json", "models")
    path = st.path(session_id, "readouts.npz")
    if format == "npz":
        if not path.is_file():
            raise ApiError(404, "Not found", "no channel was included, so no readout was fitted")
        return FileResponse(path, media_type="application/x-npz")
    meta = read_json(st.path(session_id, "readouts.json")) if path.is_file() else None
    return JSONResponse({**channels, "readouts": meta})


def saliency_key(req: SaliencyRequest) -> str:
    text = json.dumps(req.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@router.post(
    "/{session_id}/saliency",
    status_code=202,
    response_model=Accepted,
    summary="Shared-feature saliency maps for a channel and a pair (a job)",
)
def saliency(
    session_id: str,
    req: SaliencyRequest,
    cfg: Settings = Depends(settings),
    st: Store = Depends(store),
    r: Redis = Depends(redis),
    caller: Caller = Depends(ANALYST),
) -> Response:
    record = st.get_session(session_id)
    if not st.path(session_id, "readouts.json").is_file():
        raise ApiError(409, "Conflict", f"no fitted models yet (state {record['state']})")
    fitted = read_json(st.path(session_id, "channels.json"))["channels"]
    names = {row["channel"]: row for row in fitted}
    if req.channel not in names:
        raise ApiError(404, "Unknown channel", f"channel {req.channel!r} is not in the session")
    if not names[req.channel]["included"]:
        raise ApiError(
            409,
            "No model",
            f"channel {req.channel!r} was excluded "
            f"({names[req.channel]['reason']}), so it has no fitted model",
        )
    config = record["config"]
    if req.object is not None:
        objects = {e["id"] for e in st.get_set(config["object_set"])["entries"]}
        bodies = {e["id"] for e in st.get_set(config["body_set"])["entries"]}
        if req.object not in objects:
            raise ApiError(404, "Unknown image", f"{req.object!r} is not in the object set")
        if req.body not in bodies:
            raise ApiError(404, "Unknown image", f"{req.body!r} is not in the body set")
    elif "phase2" not in record["uploads"]:
        raise ApiError(
            409,
            "Conflict",
            "the default pair needs phase two's recorded objects; "
            "upload phase two, or name the object and the body",
        )
    key = saliency_key(req)
    links = {
        k: f"/v1/sessions/{session_id}/saliency/{key}{s}"
        for k, s in (("metadata", ""), ("arrays", ".npz"), ("png", ".png"))
    }
    if st.path(session_id, f"saliency/{key}.json").is_file():
        return JSONResponse(
            Accepted(session=session_id, status="done", links=links).model_dump(), status_code=200
        )
    job = enqueue(
        cfg,
        r,
        "saliency",
        "stimloop.worker.jobs.run_saliency",
        session_id,
        req.model_dump(mode="json"),
        key,
        session_states.generation(record),
        session=session_id,
        owner=caller.id,
    )
    links["job"] = f"/v1/jobs/{job.id}"
    body = Accepted(
        job=JobInfo(**job_status(job, cfg)), session=session_id, status="queued", links=links
    )
    return JSONResponse(body.model_dump(), status_code=202)


@router.get(
    "/{session_id}/saliency/{name}",
    dependencies=[Depends(READ)],
    responses={
        200: {"content": {"application/json": {}, "application/x-npz": {}, "image/png": {}}}
    },
    summary="A saliency result: metadata (no suffix), arrays (.npz) or figure (.png)",
)
def saliency_result(session_id: str, name: str, st: Store = Depends(store)) -> Response:
    key, _, suffix = name.partition(".")
    if not key.isalnum():
        raise ApiError(404, "Not found", f"no saliency result {name!r}")
    path = st.path(session_id, f"saliency/{key}.{suffix or 'json'}")
    if suffix not in ("", "npz", "png") or not path.is_file():
        raise ApiError(404, "Not found", f"no saliency result {name!r} (yet)")
    if suffix == "npz":
        return FileResponse(path, media_type="application/x-npz")
    if suffix == "png":
        return FileResponse(path, media_type="image/png")
    return JSONResponse(read_json(path))


@router.get(
    "/{session_id}/report",
    dependencies=[Depends(READ)],
    response_class=HTMLResponse,
    summary="The session report: one self-contained HTML page",
)
def report(session_id: str, st: Store = Depends(store)) -> HTMLResponse:
    from PIL import Image

    from stimloop.reports.report import build_report

    config = st.get_session(session_id)["config"]

    def loaders(set_id: str) -> dict:
        record = st.get_set(set_id)
        base = Path(record["images_dir"])
        return {
            e["id"]: (lambda f=base / e["file"]: np.asarray(Image.open(f).convert("RGB")))
            for e in record["entries"]
        }

    images = {"object": loaders(config["object_set"]), "body": loaders(config["body_set"])}
    return HTMLResponse(build_report(st, session_id, images))
