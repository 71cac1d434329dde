"""The session state machine, in one module that the API, the workers and the pages read:
every state and what it means, every allowed change and who makes it, the job each state waits
on, the job each upload starts, and the actions each state offers.

A session record carries ``state`` and ``generation``, a fencing token. Every change that
starts new work or discards old work (an upload, a replaced upload, a resubmitted fit, a job
found failed or abandoned) increments the generation, and every job carries the generation it
was started for. A job whose generation is no longer the session's is stale: it writes nothing
and changes no state (``Store.fenced``). So a job the queue or a slow worker runs late can
never rewind a session or overwrite newer results.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, Protocol, get_args

from stimloop_contract.sessions import Phase, SessionState
from stimloop_contract.system import JobKind

State = SessionState
STATES: tuple[State, ...] = get_args(State)

# what each state means, in the words the pages and the rig show
WORDS: dict[State, str] = {
    "created": "waiting for phase one",
    "phase1_received": "phase one in; the fit is queued",
    "fitting": "fitting the readouts and selecting phase two",
    "selected": "the phase-two list is ready",
    "phase2_received": "phase two in; the analysis is queued",
    "analysed": "analysed",
    "failed": "failed",
}

# (from, to): who or what makes the change. Nothing else is allowed.
TRANSITIONS: dict[tuple[State, State], str] = {
    ("created", "phase1_received"): "rig: PUT .../phase1",
    ("phase1_received", "fitting"): "worker: the fit job starts",
    ("fitting", "selected"): "worker: the fit job finishes (the phase-two list is stored)",
    ("fitting", "failed"): "worker: the fit job fails; or API: its worker is found dead",
    ("fitting", "phase1_received"): "rig: DELETE /v1/jobs/{fit job} (cancelled)",
    ("selected", "phase2_received"): "rig: PUT .../phase2",
    ("phase2_received", "analysed"): "worker: the analysis job finishes",
    ("phase2_received", "failed"): "worker: the analysis job fails; or API: its worker is dead",
    ("failed", "phase1_received"): "rig: POST .../fit, or PUT .../phase1 again",
    ("failed", "phase2_received"): "rig: PUT .../phase2 again (reruns the analysis)",
    # replacing an upload (?replace=true) discards what was derived from it
    **{
        (state, "phase1_received"): "rig: PUT .../phase1?replace=true"
        for state in ("phase1_received", "fitting", "selected", "phase2_received", "analysed")
    },
    **{
        (state, "phase2_received"): "rig: PUT .../phase2?replace=true"
        for state in ("phase2_received", "analysed")
    },
}


# the job a session in this state waits on: when that job dies, the session fails
WAITS_ON: dict[State, JobKind] = {"fitting": "fit", "phase2_received": "analysis"}

# the state an upload of phase one or two puts a session in (phase three's has none: it is
# tracked beside the state)
RECEIVED: dict[Phase, State] = {"phase1": "phase1_received", "phase2": "phase2_received"}

# the job an upload of each phase starts
STARTED_BY: dict[Phase, JobKind] = {
    "phase1": "fit",
    "phase2": "analysis",
    "phase3": "phase3_analysis",
}

# the job whose stage and progress a session's page shows in this state
SHOWN_JOB: dict[State, JobKind] = {
    "created": "warm",
    "phase1_received": "fit",
    "fitting": "fit",
    "phase2_received": "analysis",
}

# what a person may do to a session in each state (the pages' buttons; the API checks the same)
Action = Literal["fit_again", "default_pair_maps"]
ACTIONS: dict[State, tuple[Action, ...]] = {
    "phase1_received": ("fit_again",),
    "failed": ("fit_again",),
    "analysed": ("default_pair_maps",),
}


def offers(state: State, action: Action) -> bool:
    """Whether a session in ``state`` offers ``action`` (``ACTIONS``)."""
    return action in ACTIONS.get(state, ())


class Stateful(Protocol):
    """What the table moves: a session record (``storage.session.SessionRecord``)."""

    id: str
    state: State
    generation: int
    history: list[dict[str, Any]]


class IllegalTransitionError(ValueError):
    """A change of state the table does not allow; the message says which and from where."""


class StaleJobError(RuntimeError):
    """A job started for an older generation of the session: it must write nothing."""


def allowed(state: State) -> list[State]:
    """The states reachable from ``state``."""
    return [to for (frm, to) in TRANSITIONS if frm == state]


def transition(record: Stateful, to: State, event: str, bump: bool = False, **detail: Any) -> None:
    """Move a locked record to ``to`` (refusing a change the table does not allow), log why in
    its history, and increment its generation when ``bump`` (new work, or old work void)."""
    frm = record.state
    if to not in STATES:
        raise IllegalTransitionError(f"unknown state {to!r}")
    if (frm, to) not in TRANSITIONS:
        raise IllegalTransitionError(
            f"the session is {frm}; it cannot become {to} (from {frm} it can become "
            f"{', '.join(allowed(frm)) or 'nothing'})"
        )
    record.state = to
    if bump:
        record.generation += 1
    note(record, event, **detail)


def note(record: Stateful, event: str, **detail: Any) -> None:
    """An event in the record's history that changes no state (phase three's track)."""
    record.history.append(
        {"time": now(), "event": event, "state": record.state, "generation": record.generation}
        | detail
    )


def check_generation(record: Stateful, job_generation: int | None) -> None:
    """``StaleJobError`` unless the job was started for the record's current generation."""
    if job_generation is not None and job_generation != record.generation:
        raise StaleJobError(
            f"this job was started for generation {job_generation} of session "
            f"{record.id}, which is now at generation {record.generation} "
            f"({record.state}): it writes nothing"
        )


def table_markdown() -> str:
    """The table for the README: from, to, who triggers it."""
    rows = ["| from | to | who or what |", "|---|---|---|"]
    rows += [f"| {frm} | {to} | {who} |" for (frm, to), who in TRANSITIONS.items()]
    return "\n".join(rows)


def now() -> str:
    """The time of an event, UTC, to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")
