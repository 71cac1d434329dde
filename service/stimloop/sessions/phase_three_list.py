"""Building phase three's list: the checks a request must pass (the channels fitted and with
saliency maps, the keys the session's) and its job, for ``/v1`` and the live pages alike."""

from __future__ import annotations

import hashlib
import json

from redis import Redis
from stimloop_contract.phase_three import PhaseThreeRequest
from stimloop_contract.system import Accepted

from stimloop.runtime.settings import Settings
from stimloop.sessions.errors import InvalidInputError, StateConflictError, UnknownItemError
from stimloop.sessions.jobs import job_pending
from stimloop.storage.session import PhaseThreeInfo
from stimloop.storage.store import Store
from stimloop.worker.queue import enqueue, job_info


def request_key(req: PhaseThreeRequest) -> str:
    text = json.dumps(req.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_request(st: Store, session_id: str, req: PhaseThreeRequest) -> None:
    """4xx, saying what to do, unless every channel and saliency result asked for exists."""
    record = st.get_session(session_id)
    files = st.files(session_id)
    if not files.has_channels():
        raise StateConflictError(
            f"no fitted models yet (state {record.state}); phase three "
            "needs phase one's readouts and saliency maps"
        )
    metas = files.saliency_results()
    if not metas:
        raise StateConflictError(
            "phase three cuts fragments from saliency maps and this session has none; "
            "POST .../saliency for each channel first (the rig's `stimloop-rig saliency`)",
            title="No saliency yet",
        )
    fitted = {row["channel"]: row for row in files.channels()["channels"]}
    with_maps = {m["channel"] for m in metas}
    for channel in req.channels or []:
        if channel not in fitted:
            raise UnknownItemError(
                f"channel {channel!r} is not in the session", title="Unknown channel"
            )
        if not fitted[channel]["included"]:
            raise StateConflictError(
                f"channel {channel!r} was excluded ({fitted[channel]['reason']}), so it has "
                "no fitted model and no saliency maps",
                title="No model",
            )
        if channel not in with_maps:
            raise StateConflictError(
                f"channel {channel!r} has no saliency result; POST .../saliency with "
                f'{{"channel": "{channel}"}} first',
                title="No saliency yet",
            )
    keys = {m["key"]: m for m in metas}
    for key in req.saliency or []:
        if key not in keys:
            raise UnknownItemError(f"no saliency result {key!r}", title="Unknown saliency result")
        if req.channels is not None and keys[key]["channel"] not in req.channels:
            raise InvalidInputError(
                f"saliency result {key!r} is of channel {keys[key]['channel']!r}, which is "
                "not among the channels asked for",
                title="Inconsistent request",
            )


def start_phase_three(
    req: PhaseThreeRequest,
    session_id: str,
    cfg: Settings,
    st: Store,
    r: Redis,
    owner: str,
    replace: bool = False,
) -> Accepted:
    """The list's job (status "queued"), or its links alone when the list for this request
    is built (status "done"). 409 while a list for another request exists or is being built,
    unless ``replace``. ``owner``: the asking token's id, kept with the job."""
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
            return Accepted(session=session_id, status="done", links=links)
        busy = built or job_pending(rec, "phase3", r)  # a failed build blocks nothing
        if current not in (None, key) and busy and not replace:
            raise StateConflictError(
                "a phase-three list for another request exists (or is being built); add "
                "?replace=true to build this one instead, which discards the other list's "
                "trials and analysis"
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
            owner=owner,
            rig=rec.rig,
        )
        rec.phase3 = PhaseThreeInfo(key=key, job=job.id)
        rec.jobs["phase3"] = job.id
    links["job"] = f"/v1/jobs/{job.id}"
    return Accepted(job=job_info(job, cfg), session=session_id, status="queued", links=links)
