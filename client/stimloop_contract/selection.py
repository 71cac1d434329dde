"""The phase-two list: each channel's picks, why each stimulus is shown, and provenance."""

from __future__ import annotations

from typing import Literal

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
