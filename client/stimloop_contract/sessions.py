"""Sessions: what a session is created with, and what it answers about itself."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    sha256: str
    trials: int


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
