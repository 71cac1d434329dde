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


def test_the_jobs_and_actions_of_each_state_are_the_tables_and_agree_with_the_transitions():
    from stimloop.worker.queue import JOBS

    for table in (ss.WORDS, ss.WAITS_ON, ss.SHOWN_JOB, ss.ACTIONS):
        assert set(table) <= set(ss.STATES)
    assert set(ss.WORDS) == set(ss.STATES)
    assert set(ss.WAITS_ON.values()) | set(ss.STARTED_BY.values()) | set(ss.SHOWN_JOB.values()) <= (
        set(JOBS)
    )
    for state, kind in ss.WAITS_ON.items():  # a dead job fails the session: the table allows it
        assert (state, "failed") in ss.TRANSITIONS and ss.SHOWN_JOB[state] == kind
    for phase, state in ss.RECEIVED.items():  # an upload starts the job its state waits on
        assert ("created" if phase == "phase1" else "selected", state) in ss.TRANSITIONS
        assert ss.STARTED_BY[phase] in (ss.WAITS_ON.get(state), ss.SHOWN_JOB.get(state))
    for state in ss.STATES:  # "fit again" only where the table lets the fit be queued again
        if ss.offers(state, "fit_again"):
            assert (state, "phase1_received") in ss.TRANSITIONS
    assert not ss.offers("fitting", "fit_again") and not ss.offers("created", "fit_again")


def test_no_other_module_keeps_a_table_of_states():
    """A dict keyed by two or more state names anywhere but the state table is a second truth."""
    import ast
    from pathlib import Path

    service = Path(ss.__file__).resolve().parents[1]
    names = set(ss.STATES)
    found = []
    for path in service.rglob("*.py"):
        if path.name == "session_states.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if len(keys & names) >= 2:
                    found.append(f"{path.relative_to(service)}:{node.lineno}")
    assert found == []
