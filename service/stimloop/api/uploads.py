"""A phase's trials over HTTP: the body read on the event loop (size-capped) and handed to
the use case (``sessions.jobs.receive_phase``), and the request body every upload route
declares in the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from pydantic import AwareDatetime
from redis import Redis
from stimloop_contract.system import Accepted

from stimloop.api.deps import RIG, body_bytes
from stimloop.api.media import BINARY, body
from stimloop.runtime.settings import Settings
from stimloop.sessions.jobs import receive_phase
from stimloop.storage.session import Phase
from stimloop.storage.store import Store

UPLOAD_BODY = body(
    BINARY,
    "The trials as JSON columns (TrialUpload), as an NPZ file of the same columns "
    "(application/octet-stream; application/x-npz is accepted too) or of spike times "
    "(spikes_<channel>, event_times, event_codes, code_ids: counted in the session's windows), "
    "as a MATLAB v5/v7 MAT-file of them or of XDream's stimulusID and tEvokedResp "
    "(application/octet-stream or application/x-matlab-data), or as a CSV table of them "
    "(text/csv; see the README). 422 unless the columns "
    "are of equal length with either rate or both window counts, every stimulus is one the "
    "phase may show (phase one: the preferred set; phase two and three: every image of their "
    "list, each with trials) and every channel the session's, and no two rows share a "
    "(stimulus, channel, repeat). Other trials for a phase already received: 409 unless "
    "replace=true.",
    {"$ref": "#/components/schemas/TrialUpload"},
)
# what every upload route declares besides its path and summary (``router.put(..., **UPLOAD)``)
UPLOAD: dict[str, Any] = {
    "status_code": 202,
    "response_model": Accepted,
    "dependencies": [Depends(RIG)],
    "openapi_extra": UPLOAD_BODY,
}
# when the phase's recording started (ISO 8601 with its UTC offset): the trials' onsets count
# from it, and the session's NWB file places the phase's presentations on its timeline by it
RecordingStart = Annotated[
    AwareDatetime | None,
    Query(
        description="When the phase's recording started, ISO 8601 with its UTC offset (e.g. "
        "2026-12-06T14:03:00+01:00): the trials' onset column counts seconds from it, and the "
        "NWB export places the phase on the session's timeline by it. Optional; the same "
        "trials with another start are other data (409 unless replace=true)."
    ),
]


async def receive(
    phase: Phase,
    session_id: str,
    request: Request,
    replace: bool,
    cfg: Settings,
    st: Store,
    r: Redis,
    recording_start: datetime | None = None,
) -> Accepted:
    """The request's body, by its media type, to the session's upload of ``phase``."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    data = await body_bytes(request, cfg)
    uploads = request.app.state.uploads
    return await receive_phase(
        phase, session_id, kind, data, replace, uploads, cfg, st, r, recording_start=recording_start
    )
