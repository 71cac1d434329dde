"""Sessions: create, upload the phases, read the selection, analysis, models and saliency.

Uploads are validated here, before anything is stored; a refused upload leaves the session as
it was. The same payload again is one upload (same response); another payload for a phase
already received is a 409 unless ``?replace=true``, which discards what was derived from it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job

from client.readers import TrialFileError, parse_trial_npz, validate_columns
from service import __version__
from service.api.deps import ANALYST, READ, RIG, body_bytes, redis, settings, store
from service.api.errors import ApiError
from service.api.routes_system import job_info, require_backbone
from service.api.schemas import (
    Accepted,
    JobInfo,
    SaliencyRequest,
    SessionCreate,
    SessionInfo,
    TrialUpload,
)
from service.queueing import enqueue, job_status
from service.settings import Settings
from service.store import Store, read_json, write_npz

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])
NPZ_TYPES = ("application/x-npz", "application/octet-stream", "application/npz")
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


def reconcile(st: Store, record: dict[str, Any], cfg: Settings, r: Redis) -> dict[str, Any]:
    """A session whose fit or analysis job died with its worker is marked failed, with why."""
    active = {"fitting": "fit", "phase1_received": "fit", "phase2_received": "analysis"}
    kind = active.get(record["state"])
    job_id = record["jobs"].get(kind or "")
    if not job_id:
        return record
    try:
        status = job_status(Job.fetch(job_id, connection=r), cfg)
    except NoSuchJobError:
        return record
    if status["state"] == "failed":
        with st.locked(record["id"]) as rec:
            if rec["state"] == record["state"]:
                rec["error"] = status["error"]
                Store.transition(
                    rec, "failed", f"{kind} job failed", job=job_id, error=status["error"]
                )
            record = dict(rec)
    return record


@router.post(
    "",
    status_code=201,
    response_model=SessionInfo,
    dependencies=[Depends(RIG)],
    summary="Create a session (warms its candidates' activations on a worker)",
)
def create(
    req: SessionCreate,
    cfg: Settings = Depends(settings),
    st: Store = Depends(store),
    r: Redis = Depends(redis),
) -> SessionInfo:
    require_backbone(cfg, req.backbone)
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
    bodies = st.get_set(req.body_set)["count"]
    if sum(req.fit.split) > bodies:
        raise ApiError(
            400,
            "Split too large",
            f"the fit split {req.fit.split} needs "
            f"{sum(req.fit.split)} bodies; the body set has {bodies}",
        )
    record = st.create_session(
        req.model_dump(mode="json"), {"stimloop_version": __version__, "seed": req.seed}
    )
    job = enqueue(cfg, r, "warm", "service.jobs.run_warm", record["id"], session=record["id"])
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
    return session_info(reconcile(st, st.get_session(session_id), cfg, r))


# ------------------------------------------------------------------ uploads


async def parse_trials(request: Request, cfg: Settings) -> dict[str, np.ndarray]:
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    data = await body_bytes(request, cfg)
    if kind == "application/json":
        try:
            upload = TrialUpload.model_validate_json(data)
        except ValidationError as exc:
            parts = [
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
            ]
            raise ApiError(422, "Invalid trials", "; ".join(parts)) from None
        columns = {k: np.asarray(v) for k, v in upload.model_dump().items() if v is not None}
        try:
            return validate_columns(columns, "JSON body")
        except TrialFileError as exc:
            raise ApiError(422, "Invalid trials", str(exc)) from None
    if kind in NPZ_TYPES:
        try:
            return parse_trial_npz(data, "NPZ body")
        except TrialFileError as exc:
            raise ApiError(400, "Invalid trials", str(exc)) from None
    raise ApiError(
        415,
        "Unsupported media type",
        "send trials as application/json (columns) or application/x-npz",
    )


def digest(columns: dict[str, np.ndarray]) -> str:
    """A content hash of the trials, the same for the JSON and the NPZ form of one table."""
    h = hashlib.sha256()
    for name in sorted(columns):
        values = columns[name]
        h.update(name.encode())
        if values.dtype.kind in "US":
            h.update("\x00".join(values.astype(str)).encode())
        else:
            h.update(values.astype(np.float64).tobytes())
    return h.hexdigest()


def check_ids(
    columns: dict[str, np.ndarray], channels: list[str], allowed: set[str], what: str
) -> None:
    unknown_c = sorted(set(columns["channel"]) - set(channels))
    if unknown_c:
        raise ApiError(
            400,
            "Unknown channels",
            f"{len(unknown_c)} channels are not in the "
            f"session, e.g. {unknown_c[:5]}; the session has {channels[:5]}...",
        )
    unknown_s = sorted(set(columns["stimulus"]) - allowed)
    if unknown_s:
        raise ApiError(
            400,
            "Unknown stimuli",
            f"{len(unknown_s)} stimulus ids are not {what}, e.g. {unknown_s[:5]}",
        )


def store_upload(
    st: Store,
    session_id: str,
    phase: str,
    columns: dict[str, np.ndarray],
    replace: bool,
    allowed_states: tuple[str, ...],
) -> tuple[bool, dict[str, Any]]:
    """Store a phase's trials atomically; (new?, record). Same payload: not new."""
    sha = digest(columns)
    with st.locked(session_id) as rec:
        previous = rec["uploads"].get(phase)
        if previous and previous["sha256"] == sha:
            return False, dict(rec)
        if previous and not replace:
            raise ApiError(
                409,
                "Conflict",
                f"{phase} was already uploaded with other data "
                f"(sha256 {previous['sha256'][:12]}...); add ?replace=true to replace "
                "it, which discards everything derived from it",
            )
        if not previous and rec["state"] not in allowed_states:
            raise ApiError(
                409,
                "Conflict",
                f"the session is {rec['state']}; {phase} can be "
                f"uploaded in states {allowed_states}",
            )
        removed = st.invalidate(session_id, phase) if previous else []
        if previous and phase == "phase1":
            rec["uploads"].pop("phase2", None)
        write_npz(st.path(session_id, f"{phase}.npz"), columns)
        rec["uploads"][phase] = {"sha256": sha, "trials": len(columns["stimulus"])}
        rec["error"] = None
        event = f"{phase} replaced" if previous else f"{phase} received"
        Store.transition(rec, f"{phase}_received", event, sha256=sha, invalidated=removed)
        return True, dict(rec)


def accepted(record: dict[str, Any], kind: str, cfg: Settings, r: Redis, status: str) -> Accepted:
    job_id = record["jobs"].get(kind)
    job = None
    if job_id:
        try:
            job = job_info(Job.fetch(job_id, connection=r), cfg)
        except NoSuchJobError:
            job = None
    links = {"session": f"/v1/sessions/{record['id']}"}
    if job is not None:
        links["job"] = f"/v1/jobs/{job.id}"
    return Accepted(job=job, session=record["id"], status=status, links=links)


def start_job(
    st: Store, session_id: str, kind: str, func: str, cfg: Settings, r: Redis
) -> dict[str, Any]:
    job = enqueue(cfg, r, kind, func, session_id, session=session_id)
    with st.locked(session_id) as rec:
        rec["jobs"][kind] = job.id
        return dict(rec)


@router.put(
    "/{session_id}/phase1",
    status_code=202,
    response_model=Accepted,
    dependencies=[Depends(RIG)],
    summary="Upload phase one's trials (JSON columns or NPZ); starts fit-and-select",
    openapi_extra=UPLOAD_BODY,
)
async def phase1(
    session_id: str,
    request: Request,
    replace: bool = Query(False),
    cfg: Settings = Depends(settings),
    st: Store = Depends(store),
    r: Redis = Depends(redis),
) -> Accepted:
    record = st.get_session(session_id)
    columns = await parse_trials(request, cfg)
    bodies = {e["id"] for e in st.get_set(record["config"]["body_set"])["entries"]}
    check_ids(columns, record["config"]["channels"], bodies, "in the body set")
    new, record = store_upload(st, session_id, "phase1", columns, replace, ("created",))
    if not new:
        return accepted(record, "fit", cfg, r, "already received")
    record = start_job(st, session_id, "fit", "service.jobs.run_fit", cfg, r)
    return accepted(record, "fit", cfg, r, "queued")


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
    record = reconcile(st, st.get_session(session_id), cfg, r)
    if "phase1" not in record["uploads"]:
        raise ApiError(409, "Conflict", "upload phase one first")
    if record["state"] == "fitting":
        raise ApiError(409, "Conflict", "a fit is running; wait for it or cancel its job")
    with st.locked(session_id) as rec:
        Store.transition(rec, "phase1_received", "fit resubmitted")
    record = start_job(st, session_id, "fit", "service.jobs.run_fit", cfg, r)
    return accepted(record, "fit", cfg, r, "queued")


@router.put(
    "/{session_id}/phase2",
    status_code=202,
    response_model=Accepted,
    dependencies=[Depends(RIG)],
    summary="Upload phase two's trials; starts the analysis",
    openapi_extra=UPLOAD_BODY,
)
async def phase2(
    session_id: str,
    request: Request,
    replace: bool = Query(False),
    cfg: Settings = Depends(settings),
    st: Store = Depends(store),
    r: Redis = Depends(redis),
) -> Accepted:
    record = st.get_session(session_id)
    if not st.path(session_id, "selection.json").is_file():
        raise ApiError(
            409,
            "Conflict",
            f"no phase-two list yet (state {record['state']}); wait for the selection",
        )
    columns = await parse_trials(request, cfg)
    selection = read_json(st.path(session_id, "selection.json"))
    listed = [e["stimulus"] for e in selection["phase_two"]["entries"]] + selection["phase_two"][
        "stability_bodies"
    ]
    check_ids(columns, record["config"]["channels"], set(listed), "on the phase-two list")
    missing = [s for s in listed if s not in set(columns["stimulus"])]
    if missing:
        raise ApiError(
            400,
            "Incomplete phase two",
            f"no trials for {len(missing)} images of the phase-two list, e.g. {missing[:10]}",
        )
    new, record = store_upload(st, session_id, "phase2", columns, replace, ("selected",))
    if not new:
        return accepted(record, "analysis", cfg, r, "already received")
    record = start_job(st, session_id, "analysis", "service.jobs.run_analysis", cfg, r)
    return accepted(record, "analysis", cfg, r, "queued")


# ------------------------------------------------------------------ results


@router.get(
    "/{session_id}/selection",
    dependencies=[Depends(READ)],
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
    dependencies=[Depends(ANALYST)],
    summary="Shared-feature saliency maps for a channel and a pair (a job)",
)
def saliency(
    session_id: str,
    req: SaliencyRequest,
    cfg: Settings = Depends(settings),
    st: Store = Depends(store),
    r: Redis = Depends(redis),
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
        "service.jobs.run_saliency",
        session_id,
        req.model_dump(mode="json"),
        key,
        session=session_id,
    )
    links["job"] = f"/v1/jobs/{job.id}"
    body = Accepted(
        job=JobInfo(**job_status(job, cfg)), session=session_id, status="queued", links=links
    )
    return JSONResponse(body.model_dump(), status_code=202)


@router.get(
    "/{session_id}/saliency/{name}",
    dependencies=[Depends(READ)],
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

    from service.report import build_report

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
