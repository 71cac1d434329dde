"""A batch of a phase followed live, checked and held in an upload process (``live`` says how
batches are numbered and held). This module imports only what an upload process needs: the
trials' checks and the store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stimloop_contract.sessions import Phase
from stimloop_contract.trials import BatchReceipt

from stimloop.sessions.errors import StateConflictError
from stimloop.sessions.uploads import Expected, check_ids, decode, digest
from stimloop.storage.store import Store

# the states in which a phase's batches are taken (phase three is a track of its own)
TAKES_BATCHES: dict[Phase, tuple[str, ...]] = {
    "phase1": ("created",),
    "phase2": ("selected",),
    "phase3": ("selected", "phase2_received", "analysed"),
}


@dataclass(frozen=True)
class Batch:
    """One batch as the upload process receives it."""

    data: bytes  # JSON columns (TrialUpload)
    expected: Expected
    store_root: Path
    session_id: str
    phase: Phase
    number: int


def prepare_and_store_batch(batch: Batch) -> BatchReceipt:
    """In an upload process: decode and check the batch's trials, then hold it under the
    session's lock if it is the next one (module docstring)."""
    columns, _ = decode("application/json", batch.data, batch.expected.max_unpacked)
    check_ids(columns, batch.expected)
    sha = digest(columns)
    st = Store(batch.store_root)
    phase, number = batch.phase, batch.number
    with st.locked(batch.session_id) as rec:
        if phase in rec.uploads:
            raise StateConflictError(
                f"{phase} is closed: its trials are stored ({rec.uploads[phase].trials} rows); "
                "it takes no more batches"
            )
        if rec.state not in TAKES_BATCHES[phase]:
            raise StateConflictError(
                f"the session is {rec.state}: {phase} is followed only while the session is "
                f"{' or '.join(TAKES_BATCHES[phase])}"
            )
        files = st.files(batch.session_id)
        held = files.live_batches(phase)
        if number <= len(held):
            if held[number - 1]["sha256"] == sha:
                return receipt(phase, number, held, repeated=True)
            raise StateConflictError(
                f"batch {number} of {phase} is already held with other trials (sha256 "
                f"{held[number - 1]['sha256'][:12]}...); a batch is sent once under its number: "
                f"resend it unchanged, or send the next one as batch {len(held) + 1}"
            )
        if number > len(held) + 1:
            raise StateConflictError(
                f"batch {number} of {phase} arrived before batch {len(held) + 1}; the server "
                f"holds batches 1 to {len(held)}: send from batch {len(held) + 1} on, in order"
            )
        held = files.write_live_batch(phase, columns, sha)
    return receipt(phase, number, held, repeated=False)


def receipt(phase: Phase, number: int, held: list[dict], repeated: bool) -> BatchReceipt:
    rows = sum(int(b["rows"]) for b in held)
    said = "was already held; nothing written" if repeated else "held"
    return BatchReceipt(
        phase=phase,
        batch=number,
        batches=len(held),
        rows=rows,
        repeated=repeated,
        message=f"batch {number} {said}; {len(held)} batches, {rows} trial rows in all",
    )
