"""Request and response models of the API: validated at the edge, torch-free (the rig client
imports them too). A session's settings are the science's own configs
(``science/configs.py``: the paper's defaults, bounds and rules, written once)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict
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

ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # sets, channels, backbones: 1-64 characters
# Stimulus ids: 1-128 characters, so every name derived from one (a fragment's id with its
# channel, kind and q; a file name) fits the file system's 255 bytes.
STIMULUS_ID = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$"
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
Id = Annotated[str, Field(pattern=ID)]
StimulusId = Annotated[str, Field(pattern=STIMULUS_ID)]
Role = Literal["rig", "analyst"]
UNIQUE: JsonDict = {"uniqueItems": True}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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

    id: Id = Field(description="Name of the set, e.g. 'bodies_2024'.")
    category: Category
    directory: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[^\x00]+$",
        description="A folder below the server's stimulus root (relative, no NUL bytes); one "
        "that does not exist there, or leads out of it, is 404 or 403.",
    )


class StimulusSetInfo(BaseModel):
    id: str
    category: str
    count: int
    source: str
    ids: list[str]
    sha256: list[str]


class ActivationsRequest(Strict):
    """Cache a registered set's maps for a registered backbone (404 for an unknown one)."""

    backbone: Id
    stimulus_set: Id


SALIENCY = SaliencySettings()


class SaliencyOptions(Strict):
    """A channel's saliency maps and the ``SaliencySettings`` (their defaults and bounds are
    the science's). The channel must be in the session (404) and have a fitted model (409)."""

    channel: Id
    method: SaliencyMethod = SALIENCY.method
    coverage: Coverage | None = Field(
        SALIENCY.coverage, description="Fraction of s; None: device default"
    )
    sigma: Sigma = SALIENCY.sigma
    sanity: bool = Field(
        False,
        description="Also run the sanity checks of the maps (Adebayo et al. 2018) with their "
        "defaults (see SanityRequest)",
    )

    def pair(self) -> tuple[str, str] | None:
        return None


class DefaultPairRequest(SaliencyOptions):
    """Sec. 5.2's default pair: among the channel's top-5 recorded images of other
    categories and its top-15 of the preferred set, the most similar (needs phase two: 409
    before it)."""


class NamedPairRequest(SaliencyOptions):
    """A named pair, as in eq. (4)-(6): ``x_out`` an image of another category than the
    preferred one (an object in the paper), ``x_in`` an image of the preferred set (a body);
    images not in those sets are 404."""

    x_out: StimulusId = Field(description="A candidate image of another category (an object)")
    x_in: StimulusId = Field(description="An image of the preferred set (a body)")

    def pair(self) -> tuple[str, str] | None:
        return self.x_out, self.x_in


SaliencyRequest = DefaultPairRequest | NamedPairRequest

SanityMetric = Literal["spearman_abs_and_signed", "spearman", "spearman_abs", "ssim", "hog"]


class SanityRequest(Strict):
    """Sanity checks of a saliency result's maps (Adebayo et al. 2018): the model cascade
    (the readout's w and mu re-drawn, the backbone re-initialised from the top) and the refit
    on permuted labels. A check passes when its most randomised maps' ``metric`` similarity to
    the original is below ``max_similarity`` on both images; the default requires the
    Spearman r of |map| and of the signed map both below it (see the README)."""

    metric: SanityMetric = Field(
        "spearman_abs_and_signed",
        description="The verdict's similarity (all four are reported); the default: the "
        "Spearman r of |map| and of the signed map, both",
    )
    max_similarity: float = Field(0.5, ge=-1, le=1)
    max_features: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Features per map; None: all on a GPU, the server's "
        "STIMLOOP_SANITY_CPU_FEATURES (32) on a CPU",
    )


PHASE_THREE = PhaseThreeConfig()


class PhaseThreeRequest(Strict):
    """What phase three shows (the paper's sec. 6 proposal; see the README's phase three).
    The fragment settings' defaults, bounds and rules are ``PhaseThreeConfig``'s. Channels
    and saliency keys must be the session's (404), channels fitted and with maps (409), and
    the keys of the channels asked for (409)."""

    channels: list[Id] | None = Field(
        None,
        min_length=1,
        max_length=1024,
        json_schema_extra=UNIQUE,
        description="Default: every included channel with a saliency result",
    )
    saliency: list[Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]] | None = Field(
        None,
        min_length=1,
        max_length=1024,
        json_schema_extra=UNIQUE,
        description="Saliency result keys to cut fragments from; default: per channel its "
        "default-pair result, else its first by key",
    )
    q: list[Fraction] = Field(
        list(PHASE_THREE.q),
        min_length=1,
        max_length=10,
        json_schema_extra=UNIQUE,
        description="Fractions of each image's foreground kept, each in (0, 1), distinct",
    )
    kinds: list[FragmentKind] = Field(
        list(PHASE_THREE.kinds), min_length=1, json_schema_extra=UNIQUE
    )
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
    """A job: its state, the stage and progress it reports, its error or result."""

    id: str
    kind: str | None = None
    session: str | None = None
    state: str = Field(
        description="queued, started, finished, failed (its worker's heartbeat lapsed, or it "
        "raised), canceled, stopped, deferred or scheduled"
    )
    stage: str | None = None
    progress: float = 0.0
    message: str | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
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
    def of(cls, record: BaseModel) -> SessionInfo:
        """From the stored record (``storage.session.SessionRecord``)."""
        return cls.model_validate(record.model_dump(exclude={"schema_version"}))


class Problem(BaseModel):
    """RFC 9457 problem details; ``detail`` says what was wrong and how to fix it."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None


# ---------------------------------------------------------------------- answers


class WorkerDevice(BaseModel):
    name: str
    device: str
    pid: int
    host: str


class BackboneInfo(BaseModel):
    """A registered backbone; ``ready`` when sessions can use it, else ``problem`` says why
    (its weights missing, or not the registry's sha256)."""

    name: str
    format: str
    weights: str | None
    weights_present: bool
    ready: bool
    problem: str | None
    layer: str
    description: str


class Health(BaseModel):
    """Always 200: ``status`` is ok, or degraded with ``problems`` saying what to fix."""

    status: Literal["ok", "degraded"]
    problems: list[str]
    version: str
    device: str
    redis: bool
    workers: int
    worker_devices: list[WorkerDevice]
    backbones: list[BackboneInfo]


class Provenance(BaseModel):
    """What every stored result carries."""

    stimloop_version: str
    seed: int
    backbone: str
    weights_sha256: str
    torch_version: str


class Pick(BaseModel):
    stimulus: str
    category: str
    role: Literal["top", "bottom", "similar"]
    rank: int
    predicted: float = Field(description="The readout's prediction, spikes/s")
    similarity: float | None = Field(description="Eq. (2) to the channel's reference image")


class ChannelPicks(BaseModel):
    channel: str
    included: bool
    reason: str = Field(description="Why excluded; empty when included")
    reference: str | None = Field(
        description="The preferred-set image with the highest recorded phase-one response"
    )
    reference_response: float | None
    picks: list[Pick]


class Reason(BaseModel):
    channel: str
    role: str
    rank: int
    predicted: float
    similarity: float | None


class ListEntry(BaseModel):
    stimulus: str
    category: str
    reasons: list[Reason]


class PhaseTwoList(BaseModel):
    entries: list[ListEntry]
    stability_images: list[str]
    seed: int
    stability_rule: str


class Selection(BaseModel):
    """Per channel the picks and why; the phase-two list and its presentation sequence."""

    channels: list[ChannelPicks]
    phase_two: PhaseTwoList
    config: SelectionConfig
    sequence: list[str]
    provenance: Provenance


class Correlation(BaseModel):
    r: float | None
    p: float | None
    n: int
    passed: bool


class Estimate(BaseModel):
    """A value and its bootstrap percentile interval over stimuli."""

    value: float | None
    low: float | None
    high: float | None


class FitMetrics(BaseModel):
    """The field's fit metrics with intervals (formulas in the README's "Fit metrics")."""

    n_stimuli: int
    mean_repeats: float
    r: Estimate
    noise_ceiling: Estimate
    r2_over_ceiling: Estimate
    r2_over_ceiling_unclipped: float | None
    r2_over_ceiling_brainscore: float | None = Field(
        None, description="r^2 / ceiling as Brain-Score defines it (r squared, any sign)"
    )
    undefined: str | None = Field(
        None, description="Why the metrics are NaN: constant responses or predictions"
    )
    oracle_r: Estimate
    fev: float | None
    feve: Estimate
    n_boot: int
    confidence: float


class Generalisation(Correlation):
    noise_ceiling: float | None
    r_normalised: float | None
    metrics: FitMetrics | None = None


class Selectivity(BaseModel):
    """The preferred candidates (control bodies) against one other category (objects)."""

    other: str
    u: float | None
    p_two_sided: float | None
    p_preferred_greater: float | None
    median_preferred: float | None
    median_other: float | None
    n_preferred: int
    n_other: int
    effect: float | None
    significant: bool
    preferred_above: bool
    passed: bool


class ChannelAnalysis(BaseModel):
    channel: str
    stability: Correlation
    selectivity: list[Selectivity]
    selective: bool
    generalisation_preferred: Generalisation | None
    generalisation: dict[str, Generalisation]
    fit_flag: str | None = Field(
        None,
        description="Why the fit should not be trusted: held-out r not significantly "
        "positive, or its FEVE interval reaching 0 (None: no flag)",
    )


class Categories(BaseModel):
    preferred: str
    preferred_candidates: list[str]
    others: list[str]


class Analysis(BaseModel):
    """Stability, selectivity and generalisation per channel, each with its p-value."""

    categories: Categories
    channels: list[ChannelAnalysis]
    summary: dict[str, Any]
    config: AnalysisConfig
    provenance: Provenance


class Models(BaseModel):
    """Per channel its inclusion statistics (each with its p-value) and fit metrics; the
    readouts' settings, seed and split (None when no channel was included)."""

    channels: list[dict[str, float | int | str | bool | None]]
    provenance: Provenance
    readouts: dict[str, Any] | None


class SanityVerdict(BaseModel):
    """The sanity checks' verdicts in a saliency result (the details: its ``/sanity``)."""

    passed: bool
    model_passed: bool
    model_verdict: str = Field(
        "",
        description="passed; split (the sign changed, the magnitude did not); or failed, "
        "naming the statistics that stayed similar",
    )
    model_failed_on: list[str] = Field(default_factory=list)
    data_passed: bool | None
    metric: str
    max_similarity: float
    model_similarity: float
    data_similarity: float | None


class SaliencyResult(BaseModel):
    """A saliency result's metadata: the pair, s, the maps' norms (eq. 7: each <= s), the
    fraction of s the features used cover, the method."""

    key: str
    channel: str
    x_out: str
    x_out_category: str
    x_in: str
    default_pair: bool
    s: float
    coverage_requested: float | None
    covered: float
    features_used: int
    norm_out: float
    norm_in: float
    method: str
    config: dict[str, Any]
    provenance: Provenance
    fit_flag: str | None = Field(
        None,
        description="Why the channel's fit should not be trusted (held-out r not "
        "significantly positive); None: no flag",
    )
    sanity: SanityVerdict | None = None


class SanitySimilarity(BaseModel):
    spearman_abs: float
    spearman: float
    ssim: float
    hog: float


class SanityStep(BaseModel):
    name: str
    out: SanitySimilarity
    in_: SanitySimilarity = Field(alias="in")


class SanityChecks(SanityVerdict):
    """A saliency result's sanity checks: the verdicts, and the similarity of each randomised
    map to the original, per step of the model cascade and for the permuted-label refit."""

    key: str
    channel: str
    x_out: str
    x_in: str
    method: str
    model_steps: list[SanityStep]
    data_step: SanityStep | None
    emprt: dict[str, Any] | None = Field(
        None,
        description="eMPRT (Hedstroem et al. 2023): the relative rise in each map's complexity "
        "from the original to the fully randomised model (out, in), and the complexities",
    )
    seed: int
    max_features: int | None
    permutation_seed: int
    provenance: Provenance


class PhaseThreeEntry(BaseModel):
    stimulus: str
    kind: str
    source: str
    source_category: str
    channels: list[str]
    predicted: dict[str, float]
    q: float | None
    area: int | None
    foreground_area: int | None
    seed: int | None
    stream: str | None
    saliency_key: str | None
    sha256: str | None


class PhaseThreeList(BaseModel):
    """The fragments, their intact sources and the stability images, with the sequence."""

    entries: list[PhaseThreeEntry]
    stability_images: list[str]
    sequence: list[str]
    config: dict[str, Any]
    seed: int
    key: str
    request: dict[str, Any]
    provenance: Provenance


class KindResult(BaseModel):
    kind: str
    fragments: int
    recorded_mean: float | None
    predicted_mean: float | None
    recorded_retained: float | None
    predicted_retained: float | None
    retained_n: int
    recorded_retained_sd: float | None = None


class Comparison(BaseModel):
    other: str
    test: str
    statistic: float | None
    p: float | None
    n: int
    difference: float | None
    salient_above: bool
    significant: bool
    predicted_above: bool


class ChannelPhaseThree(BaseModel):
    channel: str
    kinds: list[KindResult]
    comparisons: list[Comparison]
    prediction: Correlation
    stability_phase_one: Correlation
    stability_phase_two: Correlation | None


class PhaseThreeAnalysis(BaseModel):
    """Retained responses per fragment kind, salient against the others, predicted against
    recorded, and the recording's stability."""

    channels: list[ChannelPhaseThree]
    summary: dict[str, Any]
    config: dict[str, Any]
    trials_sha256: str
    provenance: Provenance
