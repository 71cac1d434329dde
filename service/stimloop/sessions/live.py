"""A phase followed live (``stimloop-rig follow``): its trials arrive as numbered batches while
the animal is recorded, and closing the phase makes them its upload.

Batches are numbered 1, 2, ... by the follower. Each is held once: the same batch again (a
retry whose answer was lost) is acknowledged without writing anything; another batch under a
held number, or a batch before its predecessor, is refused (409) naming what the server holds,
so the follower can resend from there. Every batch passes the upload's checks of names (the
session's channels, the phase's stimuli) in an upload process, as an upload does. Closing
checks that the server holds every batch the follower sent, orders the rows channel by channel
(as a recording's folder gives them) and hands them to the one upload path
(``receive_phase``): the same checks, the same idempotency and the same job as an upload.
"""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np
from anyio.to_thread import run_sync
from redis import Redis
from stimloop_contract.sessions import Phase
from stimloop_contract.system import Accepted
from stimloop_contract.trials import BatchReceipt, LiveChannel, LiveStatus

from stimloop.runtime.parse_pool import ParseFailedError
from stimloop.runtime.settings import Settings
from stimloop.sessions.batches import Batch, prepare_and_store_batch
from stimloop.sessions.errors import InvalidInputError, StateConflictError
from stimloop.sessions.jobs import receive_phase
from stimloop.sessions.uploads import UploadPool, expected_ids
from stimloop.storage.store import Store


async def receive_batch(
    phase: Phase,
    session_id: str,
    number: int,
    data: bytes,
    uploads: UploadPool,
    cfg: Settings,
    st: Store,
) -> BatchReceipt:
    """Check and hold one batch (in an upload process, as an upload)."""
    expected = await run_sync(expected_ids, phase, session_id, st, cfg)
    expected = replace(expected, required=())  # a batch holds part of the phase
    try:
        return await run_sync(
            uploads.pool.run,
            prepare_and_store_batch,
            Batch(data, expected, st.root, session_id, phase, number),
        )
    except ParseFailedError as exc:
        raise InvalidInputError(
            f"the batch could not be read: {exc}; send its trials as JSON columns",
            title="Unreadable batch",
        ) from None


def ordered(columns: dict[str, np.ndarray], channels: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The rows channel by channel in the session's order, each channel's in arrival order:
    the order a recording's folder gives them."""
    rank = {c: k for k, c in enumerate(channels)}
    keys = np.array([rank.get(str(c), len(rank)) for c in columns["channel"]], np.int64)
    order = np.argsort(keys, kind="stable")
    return {k: v[order] for k, v in columns.items()}


async def close_live(
    phase: Phase,
    session_id: str,
    batches: int,
    uploads: UploadPool,
    cfg: Settings,
    st: Store,
    r: Redis,
    recording_start: datetime | None = None,
) -> Accepted:
    """The held batches become the phase's upload (with the recording's start where the
    follower gave it), once the server holds every batch the follower sent (``batches``);
    closing again is the same upload again (idempotent)."""
    files = st.files(session_id)
    record = st.get_session(session_id)
    held = files.live_batches(phase)
    if not held:
        raise StateConflictError(
            f"no batches of {phase} are held; follow the phase (stimloop-rig follow) or "
            f"upload its trials (PUT .../{phase})"
        )
    if len(held) != batches:
        raise StateConflictError(
            f"the follower sent {batches} batches of {phase} and the server holds "
            f"{len(held)}; "
            + (
                f"send batches {len(held) + 1} to {batches} (each is taken once), then close"
                if len(held) < batches
                else f"close with the {len(held)} batches it holds"
            )
        )
    columns = ordered(await run_sync(files.live_columns, phase), tuple(record.config.channels))
    body = io.BytesIO()
    arrays: dict[str, Any] = dict(columns)
    np.savez(body, **arrays)
    return await receive_phase(
        phase,
        session_id,
        "application/x-npz",
        body.getvalue(),
        False,
        uploads,
        cfg,
        st,
        r,
        recording_start=recording_start,
    )


def live_status(st: Store, session_id: str, phase: Phase) -> LiveStatus:
    """What the server holds of ``phase`` followed live: per channel its trials, the stimuli
    they cover and their mean net rate (the session's windows)."""
    record = st.get_session(session_id)
    files = st.files(session_id)
    held = files.live_batches(phase)
    summary = files.live_summary(phase, record.config.windows)["channels"]
    rows: list[LiveChannel] = []
    if held:
        for channel in record.config.channels:
            got = summary.get(channel, {"trials": 0, "stimuli": [], "rate_sum": 0.0})
            rows.append(
                LiveChannel(
                    channel=channel,
                    trials=got["trials"],
                    stimuli=len(got["stimuli"]),
                    mean_net_rate=got["rate_sum"] / got["trials"] if got["trials"] else None,
                )
            )
    return LiveStatus(
        phase=phase,
        batches=len(held),
        rows=sum(int(b["rows"]) for b in held),
        closed=phase in record.uploads,
        channels=rows,
    )
