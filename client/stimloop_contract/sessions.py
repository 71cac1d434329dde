"""Sessions: what a session is created with, and what it answers about itself."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from stimloop_contract.configs import (
    AnalysisConfig,
    InclusionConfig,
    ReadoutConfig,
    SelectionConfig,
    Windows,
)
from stimloop_contract.ids import UNIQUE, Id, Strict


class CandidateSetRequest(Strict):
    """A candidate set of a session: phase two shows each channel's picks from it."""

    set: Id = Field(description="A registered stimulus set's id")
    preferred: bool | None = Field(
        None,
        description="Whether its images are of the preferred category (the paper's control "
        "bodies): they are tested against every other category's in the selectivity test. "
        "Default: when the set's category is the preferred set's, or 'control_' and it",
    )


# free text a person types (notes): no control characters but tab and line breaks
TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
Label = Annotated[
    str,
    Field(
        min_length=1,
        max_length=120,
        pattern=r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$",
        description="A name to tell the session apart: one line, 1-120 characters",
        examples=["M1 day 12, array A"],
    ),
]


class Subject(Strict):
    """The animal, as NWB's Subject and DANDI ask for it: its id, species, sex and age
    (DANDI's critical fields). Only the id is required at creation; an export for the archive
    names what is missing."""

    subject_id: Id = Field(description="The animal's id in the lab, e.g. M1")
    species: str | None = Field(
        None,
        max_length=80,
        pattern=r"^[A-Z][a-z]+ [a-z]+( [a-z]+)?$",
        description="Latin binomial, e.g. 'Macaca mulatta'",
        examples=["Macaca mulatta"],
    )
    sex: Literal["M", "F", "U", "O"] | None = Field(
        None, description="M, F, U (unknown) or O (other), as NWB writes it"
    )
    age: str | None = Field(
        None,
        max_length=32,
        pattern=r"^P(\d+[YMWD])+(/(P(\d+[YMWD])+)?)?$",
        description="ISO 8601 duration, e.g. P7Y (seven years) or a range P6Y/P8Y",
        examples=["P7Y"],
    )


class SessionSettings(Strict):
    """What every session names besides its sets: backbone, channels, settings, seed. Each
    analysis window must end after it starts (422 otherwise: the one rule here that the
    schema cannot state)."""

    backbone: Id = "resnet50_robust_l2_eps3"
    channels: list[Id] = Field(
        min_length=1,
        max_length=1024,
        json_schema_extra=UNIQUE,
        description="The probe's channels, distinct, each 1-64 letters, digits, '_', '-', '.'",
    )
    fit: ReadoutConfig = ReadoutConfig()
    inclusion: InclusionConfig = InclusionConfig()
    selection: SelectionConfig = SelectionConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    windows: Windows = Windows()
    seed: int = Field(0, ge=0, le=2**32 - 1)
    label: Label | None = None
    subject: Subject | None = Field(None, description="The animal recorded from")
    notes: str = Field(
        "",
        max_length=4000,
        pattern=TEXT,
        description="The operator's notes on the session (up to 4000 characters)",
    )

    @field_validator("channels")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dupes = sorted({c for c in v if v.count(c) > 1})
        if dupes:
            raise ValueError(f"duplicate channel names: {dupes[:5]}")
        return v


class SessionCreate(SessionSettings):
    """A session over a preferred set (the readouts are trained on it; phase one shows it)
    and candidate sets (phase two shows picks from each), each of its own category. The
    sets must exist (404), differ from each other and in category, and at least one be of
    another category than the preferred (409 otherwise); the preferred set must hold the
    fit's split (409)."""

    preferred_set: Id = Field(description="The set the channels prefer: bodies in the paper")
    candidate_sets: list[CandidateSetRequest] = Field(
        min_length=1,
        max_length=16,
        json_schema_extra=UNIQUE,
        description="Candidate sets, each of its own category: objects and control bodies in "
        "the paper",
    )

    def sets(self) -> tuple[str, list[CandidateSetRequest]]:
        return self.preferred_set, self.candidate_sets


class PaperSessionCreate(SessionSettings):
    """The paper's three sets by name: bodies preferred, objects, control bodies (compared
    with the objects in the selectivity test). The same rules as the general form."""

    body_set: Id = Field(description="The preferred set (bodies)")
    object_set: Id = Field(description="The candidate set of objects")
    control_body_set: Id = Field(description="The candidate set of control bodies")

    def sets(self) -> tuple[str, list[CandidateSetRequest]]:
        return self.body_set, [
            CandidateSetRequest(set=self.object_set, preferred=False),
            CandidateSetRequest(set=self.control_body_set, preferred=True),
        ]


AnySessionCreate = SessionCreate | PaperSessionCreate


Phase = Literal["phase1", "phase2", "phase3"]


class CandidateSet(BaseModel):
    """A candidate set of the session, its category and whether it is of the preferred one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    set: str
    category: str
    preferred: bool  # of the preferred category: tested against every other category


class SessionConfig(BaseModel):
    """What a session was created with: backbone, sets, channels, every setting, seed."""

    model_config = ConfigDict(extra="forbid")

    backbone: str
    preferred_set: str
    preferred_category: str
    candidate_sets: list[CandidateSet]
    channels: list[str]
    fit: ReadoutConfig = ReadoutConfig()
    inclusion: InclusionConfig = InclusionConfig()
    selection: SelectionConfig = SelectionConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    windows: Windows = Windows()
    seed: int = 0
    label: str | None = None
    subject: Subject | None = None
    notes: str = ""
    calibration: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per candidate category, the images phase one shows beside the preferred "
        "set to calibrate the intervals (selection.calibration of each set, drawn with the "
        "seed); they are neither fitted on nor picked",
    )

    @property
    def calibration_ids(self) -> frozenset[str]:
        """Every calibration image (ids are unique across a session's sets)."""
        return frozenset(i for ids in self.calibration.values() for i in ids)

    @property
    def others(self) -> list[CandidateSet]:
        """The candidate sets of other categories (objects), in the session's order."""
        return [c for c in self.candidate_sets if not c.preferred]

    @property
    def preferred_candidates(self) -> list[CandidateSet]:
        """The candidate sets of the preferred category (control bodies)."""
        return [c for c in self.candidate_sets if c.preferred]

    def set_of(self, category: str) -> str:
        """The set holding a category's images (the preferred set for its own category)."""
        if category == self.preferred_category:
            return self.preferred_set
        for c in self.candidate_sets:
            if c.category == category:
                return c.set
        raise KeyError(f"the session has no {category!r} images")

    @property
    def sets(self) -> dict[str, str]:
        """Category -> set id, the preferred set under the preferred category."""
        out = {c.category: c.set for c in self.candidate_sets}
        return {self.preferred_category: self.preferred_set, **out}


class UploadInfo(BaseModel):
    """A phase's stored trials: their sha256 and count, and where the rig said so, the time
    its recording started (what the trials' onsets count from)."""

    sha256: str
    trials: int
    recording_start: AwareDatetime | None = None


class PhaseThreeInfo(BaseModel):
    """Phase three beside the state: the list's request key and image count, the building
    job, and the last phase-three job's error (None when it succeeded)."""

    key: str | None = None
    images: int | None = None
    job: str | None = None
    error: str | None = None


# The session's states, in the order a session goes through them (the service's state table,
# ``storage/session_states.py``, says how it moves between them).
SessionState = Literal[
    "created", "phase1_received", "fitting", "selected", "phase2_received", "analysed", "failed"
]


class SessionInfo(BaseModel):
    """A session as ``GET /v1/sessions/{id}`` shows it (its stored record)."""

    id: str
    created: str
    state: SessionState
    generation: int = Field(
        0, description="Fencing token: starts anew with each upload, refit or failure"
    )
    failed_in: str | None = Field(None, description="fit or analysis, when state is failed")
    config: SessionConfig
    uploads: dict[Phase, UploadInfo]
    jobs: dict[str, str]
    error: str | None
    history: list[dict[str, Any]]
    provenance: dict[str, Any]
    phase3: PhaseThreeInfo | None = Field(
        None,
        description="Phase three beside the state: the list's request key and image count, "
        "and the last phase-three job's error (null when it succeeded)",
    )

    @classmethod
    def of(cls, record: BaseModel) -> SessionInfo:
        """From the stored record (``storage.session.SessionRecord``)."""
        return cls.model_validate(record.model_dump(exclude={"schema_version"}))
