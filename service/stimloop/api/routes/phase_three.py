"""Phase three: build the fragment list (a job), read it, fetch its images, upload its trials,
read their analysis. The list is cut from the session's saliency results (eq. 6 maps)."""

from __future__ import annotations

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
from stimloop.api.errors import problem_responses
from stimloop.api.media import BINARY, CSV, answer
from stimloop.api.uploads import UPLOAD, RecordingStart, receive
from stimloop.sessions.exports import phase_three_csv
from stimloop.sessions.phase_three_list import start_phase_three
from stimloop.storage.store import Store

router = APIRouter(prefix="/v1/sessions", tags=["phase three"], responses=problem_responses())


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
    accepted = start_phase_three(req, session_id, cfg, st, r, caller.id, replace)
    return JSONResponse(
        accepted.model_dump(), status_code=200 if accepted.status == "done" else 202
    )


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
    recording_start: RecordingStart = None,
) -> Accepted:
    return await receive("phase3", session_id, request, replace, cfg, st, r, recording_start)


@router.get(
    "/{session_id}/phase3/analysis",
    response_model=PhaseThreeAnalysis,
    dependencies=[Depends(READ)],
    summary="Retained response per fragment kind, the tests, predicted vs recorded, stability",
)
def get_phase_three_analysis(session_id: SessionId, st: StoreDep) -> dict:
    return st.files(session_id).phase_three_analysis()
