"""Sessions: create, upload the phases, read the selection, analysis, models and saliency.

Each route parses, authorises, calls the function that does the work (``session_jobs`` for
uploads and jobs, the store for results) and shapes the answer.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path as FilePath

import numpy as np
from fastapi import APIRouter, Depends, Header, Path
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from redis import Redis
from stimloop_rig.contract import (
    Accepted,
    Analysis,
    AnySessionCreate,
    Models,
    SaliencyRequest,
    SaliencyResult,
    Selection,
    SessionInfo,
)

from stimloop import __version__
from stimloop.api.checks import require_backbone, session_config
from stimloop.api.deps import READ, RIG, Caller, SessionId, redis, settings, store
from stimloop.api.errors import ApiError, problem_responses
from stimloop.api.jobs import job_info
from stimloop.api.media import BINARY, CSV, answer
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
def create_session(
    req: AnySessionCreate,
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
    require_backbone(cfg, req.backbone, weights=True)
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


@router.get(
    "", response_model=list[SessionInfo], dependencies=[Depends(READ)], summary="Every session"
)
def list_sessions(st: Store = Depends(store)) -> list[SessionInfo]:
    return [SessionInfo.of(r) for r in st.list_sessions()]


@router.get(
    "/{session_id}",
    response_model=SessionInfo,
    dependencies=[Depends(READ)],
    summary="A session: its config, state, uploads, jobs and history",
)
def get_session(
    session_id: str = SessionId,
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
def refit_session(
    session_id: str = SessionId,
    cfg: Settings = Depends(settings),
    st: Store = Depends(store),
    r: Redis = Depends(redis),
) -> Accepted:
    return resubmit_fit(st, session_id, cfg, r)


add_upload_route(
    router,
    "/{session_id}/phase1",
    "phase1",
    "upload_phase_one",
    "Upload phase one's trials (JSON columns or NPZ); starts fit-and-select",
)
add_upload_route(
    router,
    "/{session_id}/phase2",
    "phase2",
    "upload_phase_two",
    "Upload phase two's trials; starts the analysis",
)


# ------------------------------------------------------------------ results


@router.get(
    "/{session_id}/selection",
    response_model=Selection,
    dependencies=[Depends(READ)],
    summary="Per-channel picks and the phase-two list with its presentation sequence",
)
def get_selection(session_id: str = SessionId, st: Store = Depends(store)) -> dict:
    return st.files(session_id).selection()


@router.get(
    "/{session_id}/selection.csv",
    dependencies=[Depends(READ)],
    response_class=Response,
    responses=answer(CSV, "The phase-two list for the stimulus program: order, id, category, why"),
    summary="The phase-two list as CSV, for the stimulus program",
)
def get_selection_csv(session_id: str = SessionId, st: Store = Depends(store)) -> Response:
    data = st.files(session_id).selection()
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
    return Response(buffer.getvalue(), media_type=CSV)


@router.get(
    "/{session_id}/analysis",
    response_model=Analysis,
    dependencies=[Depends(READ)],
    summary="Stability, selectivity and generalisation per channel, and the summary",
)
def get_analysis(session_id: str = SessionId, st: Store = Depends(store)) -> dict:
    return st.files(session_id).analysis()


@router.get(
    "/{session_id}/models",
    response_model=Models,
    dependencies=[Depends(READ)],
    summary="Per-channel inclusion statistics and fit metrics, and the readouts' settings",
)
def get_models(session_id: str = SessionId, st: Store = Depends(store)) -> dict:
    files = st.files(session_id)
    return {**files.channels(), "readouts": files.readouts_meta()}


@router.get(
    "/{session_id}/models.npz",
    dependencies=[Depends(READ)],
    response_class=Response,
    responses=answer(BINARY, "The readouts' arrays as NPZ: channels, mu, w, b, metrics"),
    summary="The fitted readouts' arrays (NPZ)",
)
def get_models_npz(session_id: str = SessionId, st: Store = Depends(store)) -> Response:
    files = st.files(session_id)
    files.channels()  # 404 saying why before the fit
    if not files.has_readouts():
        raise ApiError(404, "Not found", "no channel was included, so no readout was fitted")
    return FileResponse(files.readouts_npz, media_type=BINARY)


def saliency_key(req: SaliencyRequest) -> str:
    text = json.dumps(req.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@router.post(
    "/{session_id}/saliency",
    status_code=202,
    response_model=Accepted,
    responses={200: {"model": Accepted, "description": "Already computed: the result's links"}},
    summary="Shared-feature saliency maps for a channel and a pair (a job)",
)
def request_saliency(
    req: SaliencyRequest,
    session_id: str = SessionId,
    cfg: Settings = Depends(settings),
    st: Store = Depends(store),
    r: Redis = Depends(redis),
    caller: Caller = Depends(READ),
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
    pair = req.pair()
    if pair is not None:
        x_out, x_in = pair
        others = {e["id"] for c in config.others for e in st.get_set(c.set)["entries"]}
        preferred = {e["id"] for e in st.get_set(config.preferred_set)["entries"]}
        if x_out not in others:
            raise ApiError(
                404,
                "Unknown image",
                f"x_out {x_out!r} is not in the candidate sets of other categories "
                f"({', '.join(c.set for c in config.others)})",
            )
        if x_in not in preferred:
            raise ApiError(
                404,
                "Unknown image",
                f"x_in {x_in!r} is not in the preferred set {config.preferred_set!r}",
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
        k: f"/v1/sessions/{session_id}/saliency/{key}{suffix}"
        for k, suffix in (("metadata", ""), ("arrays", ".npz"), ("png", ".png"))
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


KEY = Path(pattern=r"^[0-9a-f]{16}$", description="A saliency result's key")


def _saliency_file(st: Store, session_id: str, key: str, suffix: str) -> FilePath:
    path = st.files(session_id).saliency_file(key, suffix)  # type: ignore[arg-type]
    if path is None:
        raise ApiError(404, "Not found", f"no saliency result {key!r} (yet)")
    return path


@router.get(
    "/{session_id}/saliency/{key}.npz",
    dependencies=[Depends(READ)],
    response_class=Response,
    responses=answer(BINARY, "The maps as NPZ: map_out, map_in, display maps, beta, features"),
    summary="A saliency result's arrays (NPZ)",
)
def get_saliency_arrays(
    session_id: str = SessionId, key: str = KEY, st: Store = Depends(store)
) -> Response:
    return FileResponse(_saliency_file(st, session_id, key, "npz"), media_type=BINARY)


@router.get(
    "/{session_id}/saliency/{key}.png",
    dependencies=[Depends(READ)],
    response_class=Response,
    responses=answer(BINARY, "The pair with its maps, as a figure: PNG bytes"),
    summary="A saliency result's figure (PNG)",
)
def get_saliency_figure(
    session_id: str = SessionId, key: str = KEY, st: Store = Depends(store)
) -> Response:
    return FileResponse(_saliency_file(st, session_id, key, "png"), media_type=BINARY)


@router.get(
    "/{session_id}/saliency/{key}",
    response_model=SaliencyResult,
    dependencies=[Depends(READ)],
    summary="A saliency result's metadata: the pair, s, the maps' norms, coverage",
)
def get_saliency(session_id: str = SessionId, key: str = KEY, st: Store = Depends(store)) -> dict:
    return read_json(_saliency_file(st, session_id, key, "json"))


@router.get(
    "/{session_id}/report",
    dependencies=[Depends(READ)],
    response_class=HTMLResponse,
    summary="The session report: one self-contained HTML page",
)
def get_report(session_id: str = SessionId, st: Store = Depends(store)) -> HTMLResponse:
    from PIL import Image

    from stimloop.reports.report import build_report

    config = st.get_session(session_id).config

    def loaders(set_id: str) -> dict:
        record = st.get_set(set_id)
        base = FilePath(record["images_dir"])
        return {
            e["id"]: (lambda f=base / e["file"]: np.asarray(Image.open(f).convert("RGB")))
            for e in record["entries"]
        }

    images = {category: loaders(set_id) for category, set_id in config.sets.items()}
    return HTMLResponse(build_report(st, session_id, images))
