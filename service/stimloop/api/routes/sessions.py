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

import numpy as np
from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from redis import Redis

from stimloop import __version__
from stimloop.api.checks import require_backbone, session_config
from stimloop.api.deps import ANALYST, READ, RIG, Caller, redis, settings, store
from stimloop.api.errors import ApiError, problem_responses
from stimloop.api.jobs import job_info
from stimloop.api.schemas import Accepted, SaliencyRequest, SessionCreate, SessionInfo
from stimloop.api.session_jobs import add_upload_route, observed, resubmit_fit
from stimloop.runtime.settings import Settings
from stimloop.storage.atomic import read_json
from stimloop.storage.store import Store
from stimloop.worker.queue import enqueue

router = APIRouter(prefix="/v1/sessions", tags=["sessions"], responses=problem_responses())


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
    record, new = st.create_session(
        session_config(st, req),
        {"stimloop_version": __version__, "seed": req.seed},
        key=f"{caller.id}:{idempotency_key}" if idempotency_key else None,
    )
    if not new:
        return SessionInfo.of(record)  # a retry: the first create's session, nothing new
    job = enqueue(cfg, r, "warm", record.id, session=record.id)
    with st.locked(record.id) as rec:
        rec.jobs["warm"] = job.id
        record = rec
    return SessionInfo.of(record)


@router.get("", response_model=list[SessionInfo], dependencies=[Depends(READ)])
def list_sessions(st: Store = Depends(store)) -> list[SessionInfo]:
    return [SessionInfo.of(r) for r in st.list_sessions()]


@router.get("/{session_id}", response_model=SessionInfo, dependencies=[Depends(READ)])
def get(
    session_id: str,
    cfg: Settings = Depends(settings),
    st: Store = Depends(store),
    r: Redis = Depends(redis),
) -> SessionInfo:
    return SessionInfo.of(observed(st.get_session(session_id), cfg, r))


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
    data = st.files(session_id).selection()
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
    category = st.get_session(session_id).config.preferred_category
    for image in data["phase_two"]["stability_images"]:
        order += 1
        writer.writerow([order, image, category, "stability"])
    return Response(buffer.getvalue(), media_type="text/csv")


@router.get(
    "/{session_id}/analysis",
    dependencies=[Depends(READ)],
    summary="Stability, selectivity and generalisation per channel, and the summary",
)
def analysis(session_id: str, st: Store = Depends(store)) -> JSONResponse:
    return JSONResponse(st.files(session_id).analysis())


@router.get(
    "/{session_id}/models",
    dependencies=[Depends(READ)],
    responses={200: {"content": {"application/json": {}, "application/x-npz": {}}}},
    summary="Per-channel readouts and metrics (JSON, or the arrays as NPZ)",
)
def models(
    session_id: str, format: str = Query("json", pattern="^(json|npz)$"), st: Store = Depends(store)
) -> Response:
    files = st.files(session_id)
    channels = files.channels()
    if format == "npz":
        if not files.has_readouts():
            raise ApiError(404, "Not found", "no channel was included, so no readout was fitted")
        return FileResponse(files.readouts_npz, media_type="application/x-npz")
    return JSONResponse({**channels, "readouts": files.readouts_meta()})


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
    files = st.files(session_id)
    if not files.has_channels():
        raise ApiError(409, "Conflict", f"no fitted models yet (state {record.state})")
    names = {row["channel"]: row for row in files.channels()["channels"]}
    if req.channel not in names:
        raise ApiError(404, "Unknown channel", f"channel {req.channel!r} is not in the session")
    if not names[req.channel]["included"]:
        raise ApiError(
            409,
            "No model",
            f"channel {req.channel!r} was excluded "
            f"({names[req.channel]['reason']}), so it has no fitted model",
        )
    config = record.config
    if req.x_out is not None:
        others = {e["id"] for c in config.others for e in st.get_set(c.set)["entries"]}
        preferred = {e["id"] for e in st.get_set(config.preferred_set)["entries"]}
        if req.x_out not in others:
            raise ApiError(
                404,
                "Unknown image",
                f"x_out {req.x_out!r} is not in the candidate sets of other categories "
                f"({', '.join(c.set for c in config.others)})",
            )
        if req.x_in not in preferred:
            raise ApiError(
                404,
                "Unknown image",
                f"x_in {req.x_in!r} is not in the preferred set {config.preferred_set!r}",
            )
    elif "phase2" not in record.uploads:
        raise ApiError(
            409,
            "Conflict",
            "the default pair needs phase two's recorded responses to the other categories; "
            "upload phase two, or name x_out and x_in",
        )
    key = saliency_key(req)
    links = {
        k: f"/v1/sessions/{session_id}/saliency/{key}{s}"
        for k, s in (("metadata", ""), ("arrays", ".npz"), ("png", ".png"))
    }
    if files.saliency_file(key, "json") is not None:
        return JSONResponse(
            Accepted(session=session_id, status="done", links=links).model_dump(), status_code=200
        )
    job = enqueue(
        cfg,
        r,
        "saliency",
        session_id,
        req.model_dump(mode="json"),
        key,
        record.generation,
        session=session_id,
        owner=caller.id,
    )
    links["job"] = f"/v1/jobs/{job.id}"
    body = Accepted(job=job_info(job, cfg), session=session_id, status="queued", links=links)
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
    if suffix not in ("", "npz", "png"):
        raise ApiError(404, "Not found", f"no saliency result {name!r}")
    path = st.files(session_id).saliency_file(key, suffix or "json")  # type: ignore[arg-type]
    if path is None:
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

    config = st.get_session(session_id).config

    def loaders(set_id: str) -> dict:
        record = st.get_set(set_id)
        base = Path(record["images_dir"])
        return {
            e["id"]: (lambda f=base / e["file"]: np.asarray(Image.open(f).convert("RGB")))
            for e in record["entries"]
        }

    images = {category: loaders(set_id) for category, set_id in config.sets.items()}
    return HTMLResponse(build_report(st, session_id, images))
