"""Sessions: create, upload the phases, read the selection, analysis, models and saliency.

Each route parses, authorises, calls the function that does the work (``session_jobs`` for
uploads and jobs, the store for results) and shapes the answer.
"""

from __future__ import annotations

from pathlib import Path as FilePath

from anyio.to_thread import run_sync
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from stimloop_contract.analysis import Analysis, Models
from stimloop_contract.saliency import SaliencyRequest, SaliencyResult
from stimloop_contract.selection import Registration, Selection
from stimloop_contract.sessions import AnySessionCreate, Phase, SessionInfo
from stimloop_contract.system import Accepted
from stimloop_contract.trials import BatchReceipt, CloseLive, LiveStatus

from stimloop.api.deps import (
    READ,
    RIG,
    AnyCaller,
    RedisDep,
    RigCaller,
    SessionId,
    SettingsDep,
    StoreDep,
    body_bytes,
)
from stimloop.api.errors import ApiError, problem_responses
from stimloop.api.media import BINARY, CSV, answer
from stimloop.api.uploads import UPLOAD, RecordingStart, receive
from stimloop.sessions.creation import create
from stimloop.sessions.errors import StateConflictError
from stimloop.sessions.exports import report_html, selection_csv
from stimloop.sessions.jobs import observed, resubmit_fit
from stimloop.sessions.live import close_live, live_status, receive_batch
from stimloop.sessions.nwb_export import nwb_bytes
from stimloop.sessions.saliency import start_saliency
from stimloop.storage.atomic import read_json
from stimloop.storage.registration import RegistrationError
from stimloop.storage.store import Store

router = APIRouter(prefix="/v1/sessions", tags=["sessions"], responses=problem_responses())


@router.post(
    "",
    status_code=201,
    response_model=SessionInfo,
    summary="Create a session (warms its candidates' activations on a worker)",
)
def create_session(
    req: AnySessionCreate,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
    caller: RigCaller,
    idempotency_key: str | None = Header(
        None,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Send the same key again (a retry) to get the session it created, once.",
    ),
) -> SessionInfo:
    return SessionInfo.of(create(req, cfg, st, r, caller.id, idempotency_key))


@router.get(
    "", response_model=list[SessionInfo], dependencies=[Depends(READ)], summary="Every session"
)
def list_sessions(st: StoreDep, cfg: SettingsDep, r: RedisDep) -> list[SessionInfo]:
    return [SessionInfo.of(observed(rec, cfg, r)) for rec in st.list_sessions()]


@router.get(
    "/{session_id}",
    response_model=SessionInfo,
    dependencies=[Depends(READ)],
    summary="A session: its config, state, uploads, jobs and history",
)
def get_session(
    session_id: SessionId,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
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
    session_id: SessionId,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
) -> Accepted:
    return resubmit_fit(st, session_id, cfg, r)


@router.put(
    "/{session_id}/phase1",
    summary="Upload phase one's trials (JSON columns, NPZ or a MAT-file); starts fit-and-select",
    **UPLOAD,
)
async def upload_phase_one(
    request: Request,
    session_id: SessionId,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
    replace: bool = Query(False),
    recording_start: RecordingStart = None,
) -> Accepted:
    return await receive("phase1", session_id, request, replace, cfg, st, r, recording_start)


@router.put(
    "/{session_id}/phase2", summary="Upload phase two's trials; starts the analysis", **UPLOAD
)
async def upload_phase_two(
    request: Request,
    session_id: SessionId,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
    replace: bool = Query(False),
    recording_start: RecordingStart = None,
) -> Accepted:
    return await receive("phase2", session_id, request, replace, cfg, st, r, recording_start)


# ------------------------------------------------------------------ a phase followed live

BATCH_DESCRIPTION = (
    "Part of a phase's trials as JSON columns (TrialUpload), sent while the phase is recorded "
    "(stimloop-rig follow). Batches are numbered 1, 2, ...: the same batch again is "
    "acknowledged and nothing is written; another batch under a held number, or one that "
    "arrives before its predecessor, is 409 saying which the server holds. 422 unless every "
    "stimulus is one the phase may show and every channel the session's; at most "
    "STIMLOOP_MAX_JSON_BYTES (1 MiB), a few seconds of trials."
)
BATCH_BODY = {
    "requestBody": {
        "required": True,
        "description": BATCH_DESCRIPTION,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TrialUpload"}}},
    }
}


@router.put(
    "/{session_id}/{phase}/batches/{number}",
    response_model=BatchReceipt,
    dependencies=[Depends(RIG)],
    openapi_extra=BATCH_BODY,
    summary="Send the next batch of a phase followed live",
)
async def put_batch(
    request: Request,
    session_id: SessionId,
    phase: Phase,
    cfg: SettingsDep,
    st: StoreDep,
    number: int = Path(ge=1, le=1_000_000),
) -> BatchReceipt:
    data = await body_bytes(request, cfg)
    uploads = request.app.state.uploads
    return await receive_batch(phase, session_id, number, data, uploads, cfg, st)


@router.get(
    "/{session_id}/{phase}/live",
    response_model=LiveStatus,
    dependencies=[Depends(READ)],
    summary="What the server holds of a phase followed live, per channel",
)
def get_live(session_id: SessionId, phase: Phase, st: StoreDep) -> LiveStatus:
    return live_status(st, session_id, phase)


@router.post(
    "/{session_id}/{phase}/close",
    status_code=202,
    response_model=Accepted,
    dependencies=[Depends(RIG)],
    summary="Close a phase followed live: its batches become its upload and its job starts",
)
async def close_phase(
    request: Request,
    session_id: SessionId,
    phase: Phase,
    req: CloseLive,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
) -> Accepted:
    uploads = request.app.state.uploads
    return await close_live(
        phase, session_id, req.batches, uploads, cfg, st, r, req.recording_start
    )


# ------------------------------------------------------------------ results


@router.get(
    "/{session_id}/selection",
    response_model=Selection,
    dependencies=[Depends(READ)],
    summary="Per-channel picks and the phase-two list with its presentation sequence",
)
def get_selection(session_id: SessionId, st: StoreDep) -> dict:
    return st.files(session_id).selection()


@router.get(
    "/{session_id}/registration",
    response_model=Registration,
    dependencies=[Depends(READ)],
    summary="The list's predictions with intervals, registered before phase two, and their hash",
)
def get_registration(session_id: SessionId, st: StoreDep) -> dict:
    record = st.get_session(session_id)
    files = st.files(session_id)
    if not files.has_registration():
        raise files.missing("registered predictions")
    try:
        document, sha = files.registration(record.registration)
    except RegistrationError as exc:
        raise StateConflictError(str(exc)) from None
    return {**document, "sha256": sha}


@router.get(
    "/{session_id}/selection.csv",
    dependencies=[Depends(READ)],
    response_class=Response,
    responses=answer(CSV, "The phase-two list for the stimulus program: order, id, category, why"),
    summary="The phase-two list as CSV, for the stimulus program",
)
def get_selection_csv(session_id: SessionId, st: StoreDep) -> Response:
    return Response(selection_csv(st, session_id), media_type=CSV)


@router.get(
    "/{session_id}/analysis",
    response_model=Analysis,
    dependencies=[Depends(READ)],
    summary="Stability, selectivity and generalisation per channel, and the summary",
)
def get_analysis(session_id: SessionId, st: StoreDep) -> dict:
    return st.files(session_id).analysis()


@router.get(
    "/{session_id}/models",
    response_model=Models,
    dependencies=[Depends(READ)],
    summary="Per-channel inclusion statistics and fit metrics, and the readouts' settings",
)
def get_models(session_id: SessionId, st: StoreDep) -> dict:
    files = st.files(session_id)
    return {**files.channels(), "readouts": files.readouts_meta()}


@router.get(
    "/{session_id}/models.npz",
    dependencies=[Depends(READ)],
    response_class=Response,
    responses=answer(BINARY, "The readouts' arrays as NPZ: channels, mu, w, b, metrics"),
    summary="The fitted readouts' arrays (NPZ)",
)
def get_models_npz(session_id: SessionId, st: StoreDep) -> Response:
    files = st.files(session_id)
    files.channels()  # 404 saying why before the fit
    if not files.has_readouts():
        raise ApiError(404, "Not found", "no channel was included, so no readout was fitted")
    return FileResponse(files.readouts_npz, media_type=BINARY)


@router.post(
    "/{session_id}/saliency",
    status_code=202,
    response_model=Accepted,
    responses={200: {"model": Accepted, "description": "Already computed: the result's links"}},
    summary="Shared-feature saliency maps for a channel and a pair (a job)",
)
def request_saliency(
    req: SaliencyRequest,
    session_id: SessionId,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
    caller: AnyCaller,
) -> Response:
    accepted = start_saliency(req, session_id, cfg, st, r, caller.id)
    return JSONResponse(
        accepted.model_dump(), status_code=200 if accepted.status == "done" else 202
    )


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
def get_saliency_arrays(session_id: SessionId, st: StoreDep, key: str = KEY) -> Response:
    return FileResponse(_saliency_file(st, session_id, key, "npz"), media_type=BINARY)


@router.get(
    "/{session_id}/saliency/{key}.png",
    dependencies=[Depends(READ)],
    response_class=Response,
    responses=answer(BINARY, "The pair with its maps, as a figure: PNG bytes"),
    summary="A saliency result's figure (PNG)",
)
def get_saliency_figure(session_id: SessionId, st: StoreDep, key: str = KEY) -> Response:
    return FileResponse(_saliency_file(st, session_id, key, "png"), media_type=BINARY)


@router.get(
    "/{session_id}/saliency/{key}",
    response_model=SaliencyResult,
    dependencies=[Depends(READ)],
    summary="A saliency result's metadata: the pair, s, the maps' norms, coverage",
)
def get_saliency(session_id: SessionId, st: StoreDep, key: str = KEY) -> dict:
    return read_json(_saliency_file(st, session_id, key, "json"))


@router.get(
    "/{session_id}/report",
    dependencies=[Depends(READ)],
    response_class=HTMLResponse,
    summary="The session report: one self-contained HTML page",
)
def get_report(session_id: SessionId, st: StoreDep) -> HTMLResponse:
    return HTMLResponse(report_html(st, session_id))


@router.get(
    "/{session_id}/export.nwb",
    dependencies=[Depends(READ)],
    response_class=Response,
    responses=answer(BINARY, "The session as one NWB file (HDF5), ready for DANDI"),
    summary="The session on the record: one NWB file with every image, trial and decision",
)
async def export_nwb(
    session_id: SessionId,
    st: StoreDep,
    draft: bool = Query(
        False,
        description="Export even when the animal's species, sex or age are missing (the "
        "file then fails DANDI's checks; the x-stimloop-warning header says what is missing)",
    ),
) -> Response:
    """409 unless the session has phase one's trials and (without ``draft``) the animal's
    DANDI-critical fields; built in a thread (images compressed: seconds for a paper-sized
    session)."""
    body, warnings = await run_sync(nwb_bytes, st, session_id, draft)
    headers = {"content-disposition": f'attachment; filename="{session_id}.nwb"'}
    if warnings:
        headers["x-stimloop-warning"] = "; ".join(warnings)
    return Response(body, media_type=BINARY, headers=headers)
