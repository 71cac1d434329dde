"""Saliency maps (parallel backpropagation) and their sanity checks: requests and results."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from stimloop_contract.configs import (
    Coverage,
    SaliencyMethod,
    SaliencySettings,
    Sigma,
)
from stimloop_contract.ids import Id, StimulusId, Strict
from stimloop_contract.selection import Provenance

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


# the one refusal of a default pair before phase two (the API's 409; a worker's, if the trials
# went away meanwhile)
DEFAULT_PAIR_NEEDS_PHASE_TWO = (
    "the default pair needs phase two's recorded responses to the other categories; upload "
    "phase two, or name x_out and x_in"
)


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
