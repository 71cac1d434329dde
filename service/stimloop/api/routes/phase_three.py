"""Phase three: build the fragment list (a job), read it, fetch its images, upload its trials,
read their analysis. The list is cut from the session's saliency results (eq. 6 maps)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse, JSONResponse, Response
from redis import Redis

from stimloop.api.deps import READ, Caller, redis, settings, store
from stimloop.api.errors import ApiError, problem_responses
from stimloop.api.routes.sessions import add_upload_route
from stimloop.api.schemas import Accepted, JobInfo, PhaseThreeRequest
from stimloop.api.session_jobs import job_pending
from stimloop.runtime.settings import Settings
from stimloop.storage import session_states
from stimloop.storage.store import Store, read_json
from stimloop.worker.queue import enqueue, job_status

router = APIRouter(prefix="/v1/sessions", tags=["phase three"], responses=problem_responses())


def request_key(req: PhaseThreeRequest) -> str:
    text = json.dumps(req.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_request(st: Store, session_id: str, req: PhaseThreeRequest) -> None:
    """4xx, saying what to do, unless every channel and saliency result asked for exists."""
    record = st.get_session(session_id)
    if not st.path(session_id, "readouts.json").is_file():
        raise ApiError(
            409,
            "Conflict",
            f"no fitted models yet (state {record['state']}); phase three "
            "needs phase one's readouts and saliency maps",
        )
    folder = st.path(session_id, "saliency")
    metas = [read_json(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    if not metas:
        raise ApiError(
            409,
            "No saliency yet",
            "phase three cuts fragments from saliency maps and this session has none; "
            "POST .../saliency for each channel first (the rig's `stimloop-rig saliency`)",
        )
    fitted = {
        row["channel"]: row for row in read_json(st.path(session_id, "channels.json"))["channels"]
    }
    with_maps = {m["channel"] for m in metas}
    for channel in req.channels or []:
        if channel not in fitted:
            raise ApiError(404, "Unknown channel", f"channel {channel!r} is not in the session")
        if not fitted[channel]["included"]:
            raise ApiError(
                409,
                "No model",
                f"channel {channel!r} was excluded ({fitted[channel]['reason']}), so it has "
                "no fitted model and no saliency maps",
            )
        if channel not in with_maps:
            raise ApiError(
                409,
                "No saliency yet",
                f"channel {channel!r} has no saliency result; POST .../saliency with "
                f'{{"channel": "{channel}"}} first',
            )
    keys = {m["key"]: m for m in metas}
    for key in req.saliency or []:
        if key not in keys:
            raise ApiError(404, "Unknown saliency result", f"no saliency result {key!r}")
        if req.channels is not None and keys[key]["channel"] not in req.channels:
            raise ApiError(
                422,
                "Inconsistent request",
                f"saliency result {key!r} is of channel {keys[key]['channel']!r}, which is "
                "not among the channels asked for",
            )


@router.post(
    "/{session_id}/phase3",
    status_code=202,
    response_model=Accepted,
    summary="Build the phase-three list: fragments of the visualised pairs (a job)",
)
def build(
    session_id: str,
    req: PhaseThreeRequest,
    replace: bool = Query(False, description="Replace a list built for another request"),
    cfg: Settings = Depends(settings),
    st: Store = Depends(store),
    r: Redis = Depends(redis),
    caller: Caller = Depends(READ),
) -> Response:
    check_request(st, session_id, req)
    key = request_key(req)
    links = {
        "list": f"/v1/sessions/{session_id}/phase3",
        "stimuli": f"/v1/sessions/{session_id}/phase3/stimuli.zip",
    }
    with st.locked(session_id) as rec:
        current = rec.get("phase3") or {}
        built = st.path(session_id, "phase3/list.json").is_file()
        if current.get("key") == key and built:
            done = Accepted(session=session_id, status="done", links=links)
            return JSONResponse(done.model_dump(), status_code=200)
        busy = built or job_pending(rec, "phase3", r)  # a failed build blocks nothing
        if current.get("key") not in (None, key) and busy and not replace:
            raise ApiError(
                409,
                "Conflict",
                "a phase-three list for another request exists (or is being built); add "
                "?replace=true to build this one instead, which discards the other list's "
                "trials and analysis",
            )
        generation = session_states.generation(rec)
        job = enqueue(
            cfg,
            r,
            "phase3",
            "stimloop.worker.jobs.run_phase3",
            session_id,
            req.model_dump(mode="json"),
            key,
            generation,
            session=session_id,
            owner=caller.id,
        )
        rec["phase3"] = {"key": key, "job": job.id}
        rec["jobs"]["phase3"] = job.id
    links["job"] = f"/v1/jobs/{job.id}"
    body = Accepted(
        job=JobInfo(**job_status(job, cfg)), session=session_id, status="queued", links=links
    )
    return JSONResponse(body.model_dump(), status_code=202)


def stored_list(st: Store, session_id: str) -> dict[str, Any]:
    return st.read_result(session_id, "phase3/list.json", "phase-three list")


@router.get(
    "/{session_id}/phase3",
    dependencies=[Depends(READ)],
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
    summary="The phase-three list and its sequence (JSON, or CSV for the stimulus program)",
)
def get_list(
    session_id: str, format: str = Query("json", pattern="^(json|csv)$"), st: Store = Depends(store)
) -> Response:
    data = stored_list(st, session_id)
    if format == "json":
        return JSONResponse(data)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["order", "stimulus", "kind", "channels", "source", "q", "predicted"])
    order = 0
    for e in data["entries"]:
        order += 1
        predicted = ";".join(f"{c}:{v:.4g}" for c, v in e["predicted"].items())
        writer.writerow(
            [
                order,
                e["stimulus"],
                e["kind"],
                ";".join(e["channels"]),
                e["source"],
                e["q"] or "",
                predicted,
            ]
        )
    listed = {e["stimulus"] for e in data["entries"]}
    for body in data["stability_bodies"]:
        if body not in listed:
            order += 1
            writer.writerow([order, body, "stability", "", body, "", ""])
    return Response(buffer.getvalue(), media_type="text/csv")


@router.get(
    "/{session_id}/phase3/stimuli.zip",
    dependencies=[Depends(READ)],
    responses={200: {"content": {"application/zip": {}}}},
    summary="The phase-three images with a manifest.json, for the stimulus program",
)
def stimuli(session_id: str, st: Store = Depends(store)) -> Response:
    stored_list(st, session_id)  # 404 saying why when there is no list
    return FileResponse(st.path(session_id, "phase3/stimuli.zip"), media_type="application/zip")


add_upload_route(
    router,
    "/{session_id}/phase3/trials",
    "phase3",
    "Upload phase three's trials (JSON columns or NPZ); starts their analysis",
)


@router.get(
    "/{session_id}/phase3/analysis",
    dependencies=[Depends(READ)],
    summary="Retained response per fragment kind, the tests, predicted vs recorded, stability",
)
def analysis(session_id: str, st: Store = Depends(store)) -> JSONResponse:
    return JSONResponse(st.read_result(session_id, "phase3/analysis.json", "phase-three analysis"))
