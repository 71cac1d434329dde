"""The session state machine: one table, illegal changes refused, generations as fences."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from stimloop.storage import session_states as ss


@dataclass
class Record:
    """What the table moves (``session_states.Stateful``), without a session around it."""

    id: str = "abc"
    state: str = "created"
    generation: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def record(state: str = "created", generation: int = 0) -> Record:
    return Record(state=state, generation=generation)


def test_every_state_is_reachable_and_can_move_on():
    reachable = {"created"} | {to for (_, to) in ss.TRANSITIONS}
    assert reachable == set(ss.STATES)
    for state in ss.STATES:
        assert ss.allowed(state), state  # no dead end: failed and analysed can move on too


def test_illegal_changes_are_refused_and_leave_the_record_alone():
    rec = record("analysed", 3)
    with pytest.raises(ss.IllegalTransitionError, match="analysed; it cannot become fitting"):
        ss.transition(rec, "fitting", "a late job", bump=False)
    assert rec == record("analysed", 3)
    with pytest.raises(ss.IllegalTransitionError, match="unknown state"):
        ss.transition(rec, "done", "?", bump=False)
    # the rewind of the old bug: a finished session back to fitting, then to selected
    for frm, to in (("analysed", "fitting"), ("analysed", "selected"), ("selected", "fitting")):
        assert (frm, to) not in ss.TRANSITIONS


def test_generation_bumps_only_when_asked_and_history_records_it():
    rec = record()
    ss.transition(rec, "phase1_received", "phase1 received", bump=True)
    ss.transition(rec, "fitting", "fit started", bump=False)
    assert rec.generation == 1 and rec.state == "fitting"
    assert [h["generation"] for h in rec.history] == [1, 1]
    ss.check_generation(rec, 1)
    ss.check_generation(rec, None)  # a job from before generations existed: not fenced
    with pytest.raises(ss.StaleJobError, match="generation 0"):
        ss.check_generation(rec, 0)


def test_the_readme_shows_the_table():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert ss.table_markdown() in readme
