"""Trial uploads as JSON: one row per trial, columns checked as in a trial table."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from stimloop_contract.ids import Strict
from stimloop_contract.sessions import Phase

# an NPZ body of trial columns is accepted under these media types (a MAT-file is recognised by
# its header under the first one too: ``matfiles.MAT_MEDIA_TYPE``)
NPZ_MEDIA_TYPES = ("application/octet-stream", "application/x-npz", "application/npz")


class TrialUpload(Strict):
    """One phase's trials as columns of equal length. Give ``rate`` (net spikes/s), or
    ``baseline_count`` and ``response_count`` (spikes in the session's windows)."""

    stimulus: list[str] = Field(min_length=1)
    channel: list[str] = Field(min_length=1)
    repeat: list[int] | None = None
    onset: list[float] | None = None  # seconds from the recording's start (the NWB timeline)
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
        for name in ("channel", "repeat", "onset", "rate", "baseline_count", "response_count"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(f"column '{name}' has {len(values)} values, 'stimulus' has {n}")
        for name in ("onset", "baseline_count", "response_count"):
            values = getattr(self, name)
            if values is not None and min(values) < 0:
                raise ValueError(f"'{name}' cannot be negative")
        return self


# ------------------------------------------------------------------ a phase followed live


class BatchReceipt(BaseModel):
    """A batch of a phase followed live, acknowledged: the server holds batches 1 to
    ``batches`` (``rows`` trial rows in all). ``repeated``: this batch was already held with
    the same trials, and nothing was written."""

    phase: Phase
    batch: int
    batches: int
    rows: int
    repeated: bool
    message: str


class CloseLive(Strict):
    """Close a phase followed live: ``batches`` is how many the follower sent; the server
    must hold exactly those before their trials become the phase's upload."""

    batches: int = Field(ge=1, le=1_000_000)
    recording_start: AwareDatetime | None = Field(
        None,
        description="When the phase's recording started, ISO 8601 with its UTC offset: the "
        "trials' onsets count from it, and the NWB export places the phase by it.",
    )


class LiveChannel(BaseModel):
    """One channel while a phase is followed: its trials so far, how many stimuli they
    cover, and their mean net rate (spikes/s, the session's windows)."""

    channel: str
    trials: int
    stimuli: int
    mean_net_rate: float | None


class LiveStatus(BaseModel):
    """What the server holds of a phase followed live."""

    phase: Phase
    batches: int
    rows: int
    closed: bool
    channels: list[LiveChannel]
