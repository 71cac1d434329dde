"""The phase-two list: each channel's picks, why each stimulus is shown, and provenance."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from stimloop_contract.configs import (
    SelectionConfig,
)


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
    role: Literal["top", "bottom", "similar", "level"]
    rank: int = Field(description="1 = first in its role; for a level, 1 = the lowest")
    predicted: float = Field(description="The readout's prediction, spikes/s")
    similarity: float | None = Field(description="Eq. (2) to the channel's reference image")
    sd: float | None = Field(None, description="The prediction's total sd, spikes/s")
    lower: float | None = Field(None, description="Its interval at the nominal level")
    upper: float | None = None
    centre: float | None = Field(
        None,
        description="The interval's centre: the prediction, or where the category's intervals "
        "are calibrated on images held out of the fit, the calibrated interval's middle",
    )
    target: float | None = Field(None, description="A level's evenly spaced predicted level")


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


class Predictions(BaseModel):
    """What the model predicts for every selected image (rows) and included channel
    (columns), with the intervals: registered when the list is stored."""

    channels: list[str]
    stimuli: list[str]
    categories: list[str]
    predicted: list[list[float]] = Field(description="[image][channel], spikes/s")
    sd: list[list[float | None]]
    lower: list[list[float | None]]
    upper: list[list[float | None]]
    level: float = Field(description="The intervals' nominal coverage")
    ensemble: dict[str, Any] = Field(
        description="The bootstrap ensemble: size, seed, rule, and each calibrated category's line"
    )
    centre: list[list[float | None]] | None = Field(
        None, description="The intervals' centres where a calibration moved them"
    )


class Selection(BaseModel):
    """Per channel the picks and why; the phase-two list and its presentation sequence."""

    channels: list[ChannelPicks]
    phase_two: PhaseTwoList
    config: SelectionConfig
    sequence: list[str]
    provenance: Provenance
    predictions: Predictions | None = None
    registration: str | None = Field(
        None, description="sha256 of the registered predictions (GET .../registration)"
    )


class Registration(BaseModel):
    """The list's predictions as registered before phase two: frozen, with their hash."""

    sha256: str = Field(description="sha256 of the registered file's bytes")
    session: str
    registered_at: str
    predictions: Predictions
    readout_sha256: str = Field(description="sha256 of the readouts the predictions came from")
    weights_sha256: str
    settings: dict[str, Any] = Field(description="selection, fit and inclusion settings; seed")
    provenance: Provenance
