"""Sanity checks of a saliency result's maps (Adebayo et al. 2018): ask for them (a job),
read their similarities and verdicts, and the cascade strip. Every saliency result of a
session, with its verdict where checked, is listed here too."""

from __future__ import annotations

from pathlib import Path as FilePath

from fastapi import APIRouter, Depends, Path
from fastapi.responses import FileResponse, JSONResponse, Response
from stimloop_contract.saliency import SaliencyResult, SanityChecks, SanityRequest
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
from stimloop.api.media import BINARY, answer
from stimloop.storage.atomic import read_json
from stimloop.storage.store import Store
from stimloop.worker.queue import enqueue, job_info

router = APIRouter(prefix="/v1/sessions", tags=["saliency"], responses=problem_responses())

KEY = Path(pattern=r"^[0-9a-f]{16}$", description="A saliency result's key")


@router.get(
    "/{session_id}/saliency",
    response_model=list[SaliencyResult],
    dependencies=[Depends(READ)],
    summary="Every saliency result of the session, with its sanity verdict where checked",
)
def list_saliency(session_id: SessionId, st: StoreDep) -> list[dict]:
    st.get_session(session_id)  # 404 for an unknown session
    return st.files(session_id).saliency_results()


def links(session_id: str, key: str) -> dict[str, str]:
    base = f"/v1/sessions/{session_id}/saliency/{key}"
    return {"sanity": f"{base}/sanity", "png": f"{base}/sanity.png", "saliency": base}


@router.post(
    "/{session_id}/saliency/{key}/sanity",
    status_code=202,
    response_model=Accepted,
    responses={200: {"model": Accepted, "description": "Already checked: the result's links"}},
    summary="Sanity checks of a saliency result's maps (a job)",
)
def request_sanity(
    req: SanityRequest,
    session_id: SessionId,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
    caller: AnyCaller,
    key: str = KEY,
) -> Response:
    record = st.get_session(session_id)
    files = st.files(session_id)
    if files.saliency_file(key, "json") is None:
        raise ApiError(
            404,
            "Not found",
            f"no saliency result {key!r} (yet): ask for the maps first "
            f"(POST /v1/sessions/{session_id}/saliency) and wait for their job",
        )
    found = files.sanity_file(key, "json")
    if found is not None and _same_request(read_json(found), req):
        body = Accepted(session=session_id, status="done", links=links(session_id, key))
        return JSONResponse(body.model_dump(), status_code=200)
    job = enqueue(
        cfg,
        r,
        "sanity",
        session_id,
        key,
        req,
        record.generation,
        session=session_id,
        owner=caller.id,
        rig=record.rig,
    )
    found_links = {**links(session_id, key), "job": f"/v1/jobs/{job.id}"}
    body = Accepted(job=job_info(job, cfg), session=session_id, status="queued", links=found_links)
    return JSONResponse(body.model_dump(), status_code=202)


def _same_request(stored: dict, req: SanityRequest) -> bool:
    """Checks already stored answer ``req`` when its verdict settings are theirs (the features
    per map too, where the request names them)."""
    return (
        stored.get("metric") == req.metric
        and stored.get("max_similarity") == req.max_similarity
        and (req.max_features is None or stored.get("max_features") == req.max_features)
    )


def _sanity_file(st: Store, session_id: str, key: str, suffix: str) -> FilePath:
    st.get_session(session_id)
    path = st.files(session_id).sanity_file(key, suffix)  # type: ignore[arg-type]
    if path is None:
        raise ApiError(
            404,
            "Not found",
            f"no sanity checks of saliency result {key!r} (yet): POST "
            f"/v1/sessions/{session_id}/saliency/{key}/sanity, or ask for the maps with "
            '"sanity": true',
        )
    return path


@router.get(
    "/{session_id}/saliency/{key}/sanity",
    response_model=SanityChecks,
    response_model_by_alias=True,
    dependencies=[Depends(READ)],
    summary="A saliency result's sanity checks: similarities per randomisation step, verdicts",
)
def get_sanity(session_id: SessionId, st: StoreDep, key: str = KEY) -> dict:
    return read_json(_sanity_file(st, session_id, key, "json"))


@router.get(
    "/{session_id}/saliency/{key}/sanity.png",
    dependencies=[Depends(READ)],
    response_class=Response,
    responses=answer(BINARY, "The cascade strip: PNG bytes"),
    summary="The sanity checks' cascade strip: the maps after each randomisation step (PNG)",
)
def get_sanity_figure(session_id: SessionId, st: StoreDep, key: str = KEY) -> Response:
    return FileResponse(_sanity_file(st, session_id, key, "png"), media_type=BINARY)
