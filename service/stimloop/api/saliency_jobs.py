"""Asking for a channel's saliency maps: the checks a request must pass (the channel fitted,
the pair's images in the session's sets, phase two for the default pair) and its job, for
``/v1`` and the live pages alike."""

from __future__ import annotations

import hashlib
import json

from fastapi.responses import JSONResponse, Response
from redis import Redis
from stimloop_contract.saliency import SaliencyRequest
from stimloop_contract.system import Accepted

from stimloop.api.deps import Caller
from stimloop.api.errors import ApiError
from stimloop.api.jobs import job_info
from stimloop.runtime.settings import Settings
from stimloop.storage.store import Store
from stimloop.worker.queue import enqueue


def saliency_key(req: SaliencyRequest) -> str:
    text = json.dumps(req.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def start_saliency(
    req: SaliencyRequest,
    session_id: str,
    cfg: Settings,
    st: Store,
    r: Redis,
    caller: Caller,
) -> Response:
    """202 with the job and the result's links, or 200 with the links when computed."""
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
