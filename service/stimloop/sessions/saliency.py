"""Asking for a channel's saliency maps: the checks a request must pass (the channel fitted,
the pair's images in the session's sets, phase two for the default pair) and its job, for
``/v1`` and the live pages alike."""

from __future__ import annotations

import hashlib
import json

from redis import Redis
from stimloop_contract.saliency import DEFAULT_PAIR_NEEDS_PHASE_TWO, SaliencyRequest
from stimloop_contract.system import Accepted

from stimloop.runtime.settings import Settings
from stimloop.sessions.errors import StateConflictError, UnknownItemError
from stimloop.storage.store import Store
from stimloop.worker.queue import enqueue, job_info


def saliency_key(req: SaliencyRequest) -> str:
    text = json.dumps(req.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def start_saliency(
    req: SaliencyRequest,
    session_id: str,
    cfg: Settings,
    st: Store,
    r: Redis,
    owner: str,
) -> Accepted:
    """The queued job and the result's links (status "queued"), or the links alone when the
    maps are computed (status "done"). ``owner``: the asking token's id, kept with the job."""
    record = st.get_session(session_id)
    files = st.files(session_id)
    if not files.has_channels():
        raise StateConflictError(f"no fitted models yet (state {record.state})")
    names = {row["channel"]: row for row in files.channels()["channels"]}
    if req.channel not in names:
        raise UnknownItemError(
            f"channel {req.channel!r} is not in the session", title="Unknown channel"
        )
    if not names[req.channel]["included"]:
        raise StateConflictError(
            f"channel {req.channel!r} was excluded "
            f"({names[req.channel]['reason']}), so it has no fitted model",
            title="No model",
        )
    config = record.config
    pair = req.pair()
    if pair is not None:
        x_out, x_in = pair
        others = {i for c in config.others for i in st.get_set(c.set).ids}
        preferred = set(st.get_set(config.preferred_set).ids)
        if x_out not in others:
            raise UnknownItemError(
                f"x_out {x_out!r} is not in the candidate sets of other categories "
                f"({', '.join(c.set for c in config.others)})",
                title="Unknown image",
            )
        if x_in not in preferred:
            raise UnknownItemError(
                f"x_in {x_in!r} is not in the preferred set {config.preferred_set!r}",
                title="Unknown image",
            )
    elif "phase2" not in record.uploads:
        raise StateConflictError(DEFAULT_PAIR_NEEDS_PHASE_TWO)
    key = saliency_key(req)
    links = {
        k: f"/v1/sessions/{session_id}/saliency/{key}{suffix}"
        for k, suffix in (("metadata", ""), ("arrays", ".npz"), ("png", ".png"))
    }
    if files.saliency_file(key, "json") is not None:
        return Accepted(session=session_id, status="done", links=links)
    job = enqueue(
        cfg,
        r,
        "saliency",
        session_id,
        req,
        key,
        record.generation,
        session=session_id,
        owner=owner,
        rig=record.rig,
    )
    links["job"] = f"/v1/jobs/{job.id}"
    return Accepted(job=job_info(job, cfg), session=session_id, status="queued", links=links)
