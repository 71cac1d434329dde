"""Phase three: the fragments' request, the list for the rig, and their analysis."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator, model_validator

from stimloop_contract.analysis import Correlation
from stimloop_contract.configs import (
    Feather,
    Fraction,
    FragmentKind,
    PhaseThreeConfig,
    Repeats,
)
from stimloop_contract.ids import UNIQUE, Id, Strict
from stimloop_contract.selection import Provenance

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
