"""Phase three: build the fragment list (a job), read it, fetch its images, upload its trials,
read their analysis. The list is cut from the session's saliency results (eq. 6 maps)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from stimloop_contract.phase_three import PhaseThreeAnalysis, PhaseThreeList, PhaseThreeRequest
from stimloop_contract.system import Accepted

from stimloop.api.deps import (
    READ,
    AnyCaller,
    RedisDep,
    SessionId,
    SettingsDep,
    StoreDep,
)
from stimloop.api.errors import ApiError, problem_responses
from stimloop.api.media import BINARY, CSV, answer
from stimloop.api.uploads import UPLOAD, receive
from stimloop.sessions.exports import phase_three_csv
from stimloop.sessions.jobs import job_pending
from stimloop.storage.session import PhaseThreeInfo
from stimloop.storage.store import Store
from stimloop.worker.queue import enqueue, job_info

router = APIRouter(prefix="/v1/sessions", tags=["phase three"], responses=problem_responses())


def request_key(req: PhaseThreeRequest) -> str:
    text = json.dumps(req.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_request(st: Store, session_id: str, req: PhaseThreeRequest) -> None:
    """4xx, saying what to do, unless every channel and saliency result asked for exists."""
    record = st.get_session(session_id)
    files = st.files(session_id)
    if not files.has_channels():
        raise ApiError(
            409,
            "Conflict",
            f"no fitted models yet (state {record.state}); phase three "
            "needs phase one's readouts and saliency maps",
        )
    metas = files.saliency_results()
    if not metas:
        raise ApiError(
            409,
            "No saliency yet",
            "phase three cuts fragments from saliency maps and this session has none; "
            "POST .../saliency for each channel first (the rig's `stimloop-rig saliency`)",
        )
    fitted = {row["channel"]: row for row in files.channels()["channels"]}
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
    responses={200: {"model": Accepted, "description": "Already built for this request"}},
    summary="Build the phase-three list: fragments of the visualised pairs (a job)",
)
def build_phase_three(
    req: PhaseThreeRequest,
    session_id: SessionId,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
    caller: AnyCaller,
    replace: bool = Query(False, description="Replace a list built for another request"),
) -> Response:
    check_request(st, session_id, req)
    key = request_key(req)
    links = {
        "list": f"/v1/sessions/{session_id}/phase3",
        "stimuli": f"/v1/sessions/{session_id}/phase3/stimuli.zip",
    }
    files = st.files(session_id)
    with st.locked(session_id) as rec:
        current = rec.phase3.key if rec.phase3 else None
        built = files.has_phase_three_list()
        if current == key and built:
            done = Accepted(session=session_id, status="done", links=links)
            return JSONResponse(done.model_dump(), status_code=200)
        busy = built or job_pending(rec, "phase3", r)  # a failed build blocks nothing
        if current not in (None, key) and busy and not replace:
            raise ApiError(
                409,
                "Conflict",
                "a phase-three list for another request exists (or is being built); add "
                "?replace=true to build this one instead, which discards the other list's "
                "trials and analysis",
            )
        job = enqueue(
            cfg,
            r,
            "phase3",
            session_id,
            req,
            key,
            rec.generation,
            session=session_id,
            owner=caller.id,
            rig=rec.rig,
        )
        rec.phase3 = PhaseThreeInfo(key=key, job=job.id)
        rec.jobs["phase3"] = job.id
    links["job"] = f"/v1/jobs/{job.id}"
    body = Accepted(job=job_info(job, cfg), session=session_id, status="queued", links=links)
    return JSONResponse(body.model_dump(), status_code=202)


def stored_list(st: Store, session_id: str) -> dict[str, Any]:
    return st.files(session_id).phase_three_list()


@router.get(
    "/{session_id}/phase3",
    response_model=PhaseThreeList,
    dependencies=[Depends(READ)],
    summary="The phase-three list and its presentation sequence",
)
def get_phase_three_list(session_id: SessionId, st: StoreDep) -> dict:
    return stored_list(st, session_id)


@router.get(
    "/{session_id}/phase3.csv",
    dependencies=[Depends(READ)],
    response_class=Response,
    responses=answer(CSV, "The list for the stimulus program: order, id, kind, channels, why"),
    summary="The phase-three list as CSV, for the stimulus program",
)
def get_phase_three_csv(session_id: SessionId, st: StoreDep) -> Response:
    return Response(phase_three_csv(stored_list(st, session_id)), media_type=CSV)


@router.get(
    "/{session_id}/phase3/stimuli.zip",
    dependencies=[Depends(READ)],
    response_class=Response,
    responses=answer(BINARY, "A zip of every image of the list with its manifest.json"),
    summary="The phase-three images with a manifest.json, for the stimulus program",
)
def get_phase_three_stimuli(session_id: SessionId, st: StoreDep) -> Response:
    stored_list(st, session_id)  # 404 saying why when there is no list
    return FileResponse(st.files(session_id).phase_three_zip, media_type=BINARY)


@router.put(
    "/{session_id}/phase3/trials",
    summary="Upload phase three's trials (JSON columns, NPZ or a MAT-file); starts their analysis",
    **UPLOAD,
)
async def upload_phase_three(
    request: Request,
    session_id: SessionId,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
    replace: bool = Query(False),
) -> Accepted:
    return await receive("phase3", session_id, request, replace, cfg, st, r)


@router.get(
    "/{session_id}/phase3/analysis",
    response_model=PhaseThreeAnalysis,
    dependencies=[Depends(READ)],
    summary="Retained response per fragment kind, the tests, predicted vs recorded, stability",
)
def get_phase_three_analysis(session_id: SessionId, st: StoreDep) -> dict:
    return st.files(session_id).phase_three_analysis()
