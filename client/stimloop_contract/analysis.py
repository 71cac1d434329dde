"""The analysis after phase two: stability, selectivity, generalisation, fit metrics, models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from stimloop_contract.configs import (
    AnalysisConfig,
)
from stimloop_contract.selection import Provenance


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


class Line(BaseModel):
    """Least squares of recorded on predicted (calibration: slope 1, intercept 0)."""

    slope: float | None
    intercept: float | None
    r: float | None
    p: float | None
    n: int


class Graded(BaseModel):
    """The graded levels' dose-response: Spearman's rho of recorded on predicted."""

    rho: float | None
    p: float | None
    n: int
    line: Line | None


class ChannelScore(BaseModel):
    """One channel's registered predictions scored on its picked images."""

    channel: str
    n: int
    nominal: float
    inside: int = Field(
        description="Picked images whose recorded mean lies in the interval widened by its "
        "standard error"
    )
    coverage: float | None
    coverage_p: float | None = Field(description="Exact binomial test against the nominal level")
    coverage_unwidened: float | None
    calibration: Line | None
    graded: Graded | None
    metrics: FitMetrics | None
    points: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Per picked image: stimulus, role, predicted, sd, recorded mean, its sem, "
        "the widened interval's half width and whether the mean lies inside it",
    )


class Scoring(BaseModel):
    registration: str = Field(description="sha256 of the registered predictions scored")
    level: float
    channels: list[ChannelScore]
    summary: dict[str, Any]


class Analysis(BaseModel):
    """Stability, selectivity and generalisation per channel, each with its p-value; the
    registered predictions' scores."""

    categories: Categories
    channels: list[ChannelAnalysis]
    summary: dict[str, Any]
    config: AnalysisConfig
    provenance: Provenance
    scoring: Scoring | None = None


class Models(BaseModel):
    """Per channel its inclusion statistics (each with its p-value) and fit metrics; the
    readouts' settings, seed and split (None when no channel was included)."""

    channels: list[dict[str, float | int | str | bool | None]]
    provenance: Provenance
    readouts: dict[str, Any] | None
