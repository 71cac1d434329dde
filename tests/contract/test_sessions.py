"""What a session is created with: the label, the animal and the notes, as typed by a person
and as NWB's Subject asks for them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from stimloop_contract.sessions import PaperSessionCreate, SessionConfig

SETS = {"body_set": "b", "object_set": "o", "control_body_set": "c", "channels": ["ch1"]}


@pytest.mark.parametrize(
    "about",
    [
        {"label": "M1 day 12, array A", "notes": "left hemisphere\r\nreward\t0.2 ml"},
        {"label": "Affe 3 (Tag 2): ü"},
        {"subject": {"subject_id": "M1"}},
        {"subject": {"subject_id": "M1", "species": "Macaca mulatta", "sex": "F", "age": "P7Y"}},
        {"subject": {"subject_id": "M-1.b", "age": "P6Y6M"}},
        {"subject": {"subject_id": "M1", "age": "P6Y/P8Y"}},
    ],
)
def test_what_a_person_types_is_taken(about):
    made = PaperSessionCreate(**SETS, **about)
    assert made.model_dump(include=set(about), exclude_none=True) == about


@pytest.mark.parametrize(
    ("about", "field"),
    [
        ({"label": ""}, "label"),
        ({"label": "   "}, "label"),
        ({"label": "a\nb"}, "label"),
        ({"label": "a\x01b"}, "label"),
        ({"label": "x" * 121}, "label"),
        ({"notes": "a\x00"}, "notes"),
        ({"notes": "x" * 4001}, "notes"),
        ({"subject": {"species": "Macaca mulatta"}}, "subject.subject_id"),
        ({"subject": {"subject_id": "../M1"}}, "subject.subject_id"),
        ({"subject": {"subject_id": "M1", "species": "macaque"}}, "subject.species"),
        ({"subject": {"subject_id": "M1", "sex": "male"}}, "subject.sex"),
        ({"subject": {"subject_id": "M1", "age": "7 years"}}, "subject.age"),
        ({"subject": {"subject_id": "M1", "age": "P"}}, "subject.age"),
        ({"subject": {"subject_id": "M1", "weight": "9 kg"}}, "subject.weight"),
    ],
)
def test_what_cannot_be_kept_is_refused_naming_the_field(about, field):
    with pytest.raises(ValidationError) as caught:
        PaperSessionCreate(**SETS, **about)
    assert field in {".".join(map(str, e["loc"])) for e in caught.value.errors()}


def test_sessions_stored_before_the_label_read_as_unlabelled():
    old = SessionConfig.model_validate(
        {
            "backbone": "resnet50_random",
            "preferred_set": "b",
            "preferred_category": "body",
            "candidate_sets": [{"set": "o", "category": "object", "preferred": False}],
            "channels": ["ch1"],
        }
    )
    assert old.label is None and old.subject is None and old.notes == ""
