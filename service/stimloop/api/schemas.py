"""Request and response models of the API: validated at the edge, torch-free (the rig client
imports them too). A session's settings are the science's own configs
(``science/configs.py``: the paper's defaults, bounds and rules, written once)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stimloop.science.configs import (
    AnalysisConfig,
    Coverage,
    Feather,
    Fraction,
    FragmentKind,
    InclusionConfig,
    PhaseThreeConfig,
    ReadoutConfig,
    Repeats,
    SaliencyMethod,
    SaliencySettings,
    SelectionConfig,
    Sigma,
    Windows,
)
from stimloop.storage.session import (
    Phase,
    PhaseThreeInfo,
    SessionConfig,
    SessionRecord,
    UploadInfo,
)

ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CATEGORY = r"^[a-z][a-z0-9_]{0,31}$"
Category = Annotated[
    str,
    Field(
        pattern=CATEGORY,
        description="What a set's images are: body, object, control_body in the paper; any "
        "other (face, scene, ...) as 1-32 lowercase letters, digits and '_'",
        examples=["body", "object", "control_body", "face"],
    ),
]
Role = Literal["rig", "analyst"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CandidateSetRequest(Strict):
    """A candidate set of a session: phase two shows each channel's picks from it."""

    set: str = Field(pattern=ID, description="A registered stimulus set's id")
    preferred: bool | None = Field(
        None,
        description="Whether its images are of the preferred category (the paper's control "
        "bodies): they are tested against every other category's in the selectivity test. "
        "Default: when the set's category is the preferred set's, or 'control_' and it",
    )


class SessionCreate(Strict):
    """A session over a preferred set (the readouts are trained on it; phase one shows it)
    and candidate sets (phase two shows picks from each). The paper's three sets can be
    named by ``body_set``, ``object_set`` and ``control_body_set`` instead."""

    backbone: str = "resnet50_robust_l2_eps3"
    preferred_set: str | None = Field(
        None, pattern=ID, description="The set the channels prefer: bodies in the paper"
    )
    candidate_sets: list[CandidateSetRequest] | None = Field(
        None,
        min_length=1,
        max_length=16,
        description="Candidate sets, each of its own category: objects and control bodies in "
        "the paper",
    )
    body_set: str | None = Field(
        None, pattern=ID, description="The paper's form: the preferred set, of category body"
    )
    object_set: str | None = Field(
        None, pattern=ID, description="The paper's form: a candidate set of category object"
    )
    control_body_set: str | None = Field(
        None,
        pattern=ID,
        description="The paper's form: a candidate set of category control_body (preferred)",
    )
    channels: list[str] = Field(min_length=1, max_length=1024)
    fit: ReadoutConfig = ReadoutConfig()
    inclusion: InclusionConfig = InclusionConfig()
    selection: SelectionConfig = SelectionConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    windows: Windows = Windows()
    seed: int = Field(0, ge=0, le=2**32 - 1)

    @field_validator("channels")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if not re.match(ID, c)]
        if bad:
            raise ValueError(
                f"channel names must be 1-64 letters, digits, '_', '-', '.': {bad[:3]}"
            )
        dupes = sorted({c for c in v if v.count(c) > 1})
        if dupes:
            raise ValueError(f"duplicate channel names: {dupes[:5]}")
        return v

    @model_validator(mode="after")
    def _one_form(self) -> SessionCreate:
        paper = (self.body_set, self.object_set, self.control_body_set)
        general = self.preferred_set is not None or self.candidate_sets is not None
        if general and any(v is not None for v in paper):
            raise ValueError(
                "name the sets either as preferred_set and candidate_sets, or as the paper's "
                "body_set, object_set and control_body_set, not both"
            )
        if general and (self.preferred_set is None or self.candidate_sets is None):
            raise ValueError("give both preferred_set and candidate_sets")
        if not general and None in paper:
            raise ValueError(
                "name the sets: preferred_set and candidate_sets, or body_set, object_set and "
                "control_body_set"
            )
        if self.candidate_sets is not None:
            ids = [c.set for c in self.candidate_sets]
            if len(set(ids)) != len(ids) or self.preferred_set in ids:
                raise ValueError("each set may appear once among the session's sets")
        return self

    def sets(self) -> tuple[str, list[CandidateSetRequest]]:
        """The preferred set and the candidate sets, whichever form named them."""
        if self.preferred_set is not None and self.candidate_sets is not None:
            return self.preferred_set, self.candidate_sets
        assert self.body_set and self.object_set and self.control_body_set
        return self.body_set, [
            CandidateSetRequest(set=self.object_set, preferred=False),
            CandidateSetRequest(set=self.control_body_set, preferred=True),
        ]

    def paper_categories(self) -> dict[str, str]:
        """For the paper's form: each named set's required category."""
        if self.body_set is None:
            return {}
        return {
            str(self.body_set): "body",
            str(self.object_set): "object",
            str(self.control_body_set): "control_body",
        }


class TrialUpload(Strict):
    """One phase's trials as columns of equal length. Give ``rate`` (net spikes/s), or
    ``baseline_count`` and ``response_count`` (spikes in the session's windows)."""

    stimulus: list[str] = Field(min_length=1)
    channel: list[str] = Field(min_length=1)
    repeat: list[int] | None = None
    rate: list[float] | None = None
    baseline_count: list[int] | None = None
    response_count: list[int] | None = None

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="after")
    def _shape(self) -> TrialUpload:
        n = len(self.stimulus)
        has_counts = self.baseline_count is not None and self.response_count is not None
        if self.rate is None and not has_counts:
            raise ValueError("give 'rate', or both 'baseline_count' and 'response_count'")
        if self.rate is not None and (self.baseline_count or self.response_count):
            raise ValueError("give either 'rate' or the window counts, not both")
        for name in ("channel", "repeat", "rate", "baseline_count", "response_count"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(f"column '{name}' has {len(values)} values, 'stimulus' has {n}")
        for name in ("baseline_count", "response_count"):
            values = getattr(self, name)
            if values is not None and min(values) < 0:
                raise ValueError(f"'{name}' cannot be negative")
        return self


class StimulusSetCreate(Strict):
    """Register the images of a directory below the stimulus root."""

    id: str = Field(pattern=ID, description="Name of the set, e.g. 'bodies_2024'.")
    category: Category
    directory: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[^\x00]+$",
        description="Relative to the server's stimulus root (no NUL bytes; each part at most "
        "255 bytes).",
    )

    @field_validator("directory")
    @classmethod
    def _parts(cls, value: str) -> str:
        if any(len(part.encode()) > 255 for part in value.split("/")):
            raise ValueError("a folder name is longer than 255 bytes")
        return value


class StimulusSetInfo(BaseModel):
    id: str
    category: Category
    count: int
    source: str
    ids: list[str]
    sha256: list[str]


class ActivationsRequest(Strict):
    backbone: str
    stimulus_set: str = Field(pattern=ID)


SALIENCY = SaliencySettings()


class SaliencyRequest(Strict):
    """A channel's pair (both named, or neither for sec. 5.2's default pair) and the
    ``SaliencySettings`` (their defaults and bounds are the science's). As in eq. (4)-(6),
    ``x_out`` is an image of another category than the channel's preferred one (an object in
    the paper) and ``x_in`` an image of the preferred set (a body)."""

    channel: str
    x_out: str | None = Field(
        None, description="A candidate image of another category (an object); with x_in"
    )
    x_in: str | None = Field(None, description="An image of the preferred set (a body); with x_out")
    method: SaliencyMethod = SALIENCY.method
    coverage: Coverage | None = Field(
        SALIENCY.coverage, description="Fraction of s; None: device default"
    )
    sigma: Sigma = SALIENCY.sigma

    @model_validator(mode="after")
    def _pair(self) -> SaliencyRequest:
        if (self.x_out is None) != (self.x_in is None):
            raise ValueError("name both x_out and x_in, or neither for the default pair")
        return self


PHASE_THREE = PhaseThreeConfig()


class PhaseThreeRequest(Strict):
    """What phase three shows (the paper's sec. 6 proposal; see the README's phase three).
    The fragment settings' defaults, bounds and rules are ``PhaseThreeConfig``'s."""

    channels: list[str] | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="Default: every included channel with a saliency result",
    )
    saliency: list[str] | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="Saliency result keys to cut fragments from; default: per channel its "
        "default-pair result, else its first by key",
    )
    q: list[Fraction] = Field(
        list(PHASE_THREE.q),
        min_length=1,
        max_length=10,
        description="Fractions of each image's foreground kept, each in (0, 1)",
    )
    kinds: list[FragmentKind] = Field(list(PHASE_THREE.kinds), min_length=1)
    feather: Feather = Field(PHASE_THREE.feather, description="Edge softening (px)")
    repeats: Repeats = PHASE_THREE.repeats

    @model_validator(mode="after")
    def _config(self) -> PhaseThreeRequest:
        self.config()  # the config's own rules (distinct values)
        return self

    def config(self) -> PhaseThreeConfig:
        return PhaseThreeConfig(tuple(self.q), tuple(self.kinds), self.feather, self.repeats)

    @field_validator("channels", "saliency")
    @classmethod
    def _distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"values repeat: {sorted({x for x in v if v.count(x) > 1})}")
        return v


class JobInfo(BaseModel):
    id: str
    kind: str | None = None
    session: str | None = None
    state: str
    stage: str | None = None
    progress: float = 0.0
    message: str | None = None
    error: str | None = None
    result: Any = None
    result_link: str | None = None
    enqueued_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None


class Accepted(BaseModel):
    """202: work was queued (or was already done, for a repeated idempotent request)."""

    job: JobInfo | None = None
    session: str | None = None
    status: str
    links: dict[str, str] = {}


class SessionInfo(BaseModel):
    """A session as ``GET /v1/sessions/{id}`` shows it (its stored record)."""

    id: str
    created: str
    state: str
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
    def of(cls, record: SessionRecord) -> SessionInfo:
        return cls.model_validate(record.model_dump(exclude={"schema_version"}))


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
