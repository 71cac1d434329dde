"""Request and response models of the API: validated at the edge, torch-free (the rig client
imports them too). Defaults are the paper's (sec. 4, A.2)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Category = Literal["body", "object", "control_body"]
Role = Literal["rig", "analyst"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FitSettings(Strict):
    """Readout fitting (sec. 4)."""

    lr: float = Field(1e-4, gt=0, le=1)
    epochs: int = Field(2500, ge=1, le=100_000)
    l_half_weight: float = Field(0.1, ge=0)
    l_half_eps: float = Field(1e-6, gt=0)
    split: tuple[int, int, int] = (400, 50, 25)
    batch_size: int = Field(64, ge=1)
    jitter: float = Field(0.1, ge=0)
    silhouettes: bool = True
    mu_init: Literal["grid", "centre"] = "grid"

    @field_validator("split")
    @classmethod
    def _split(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if v[0] < 1 or v[1] < 2 or v[2] < 3:
            raise ValueError("split needs train >= 1, validation >= 2 and test >= 3 bodies")
        return v


class InclusionSettings(Strict):
    min_net_response: float = 5.0
    selectivity_alpha: float = Field(0.01, gt=0, lt=1)
    min_reliability: float = Field(0.5, ge=-1, le=1)
    split_half_splits: int = Field(100, ge=1, le=10_000)
    min_repeats: int = Field(2, ge=2)


class SelectionSettings(Strict):
    n_top: int = Field(1, ge=0, le=100)
    n_bottom: int = Field(1, ge=0, le=100)
    n_similar: int = Field(1, ge=0, le=100)
    stability_bodies: int = Field(75, ge=0, le=10_000)
    repeats: int = Field(8, ge=1, le=100)


class AnalysisSettings(Strict):
    min_stability: float = Field(0.60, ge=-1, le=1)
    alpha: float = Field(0.05, gt=0, lt=1)
    ceiling_splits: int = Field(100, ge=10, le=10_000)


class WindowSettings(Strict):
    """Seconds around stimulus onset, half-open [start, end)."""

    baseline: tuple[float, float] = (-0.075, 0.025)
    response: tuple[float, float] = (0.050, 0.250)

    @model_validator(mode="after")
    def _order(self) -> WindowSettings:
        for name in ("baseline", "response"):
            start, end = getattr(self, name)
            if end <= start:
                raise ValueError(f"the {name} window must end after it starts")
        return self


class SessionCreate(Strict):
    backbone: str = "resnet50_robust_l2_eps3"
    body_set: str = Field(pattern=ID)
    object_set: str = Field(pattern=ID)
    control_body_set: str = Field(pattern=ID)
    channels: list[str] = Field(min_length=1, max_length=1024)
    fit: FitSettings = FitSettings()
    inclusion: InclusionSettings = InclusionSettings()
    selection: SelectionSettings = SelectionSettings()
    analysis: AnalysisSettings = AnalysisSettings()
    windows: WindowSettings = WindowSettings()
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


class SaliencyRequest(Strict):
    channel: str
    object: str | None = Field(None, description="Object id; with body, else the default pair")
    body: str | None = None
    method: Literal["gradient", "integrated_gradients", "smoothgrad"] = "gradient"
    coverage: float | None = Field(
        None, gt=0, le=1, description="Fraction of s; None: device default"
    )
    sigma: float = Field(4.0, ge=0, le=50)

    @model_validator(mode="after")
    def _pair(self) -> SaliencyRequest:
        if (self.object is None) != (self.body is None):
            raise ValueError("name both the object and the body, or neither for the default pair")
        return self


FragmentKind = Literal["salient", "complement", "random"]


class PhaseThreeRequest(Strict):
    """What phase three shows (the paper's sec. 6 proposal; see the README's phase three)."""

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
    q: list[float] = Field(
        [0.25],
        min_length=1,
        max_length=10,
        description="Fractions of each image's foreground kept, each in (0, 1)",
    )
    kinds: list[FragmentKind] = Field(["salient", "complement", "random"], min_length=1)
    feather: float = Field(2.0, ge=0, le=20, description="Edge softening (Gaussian sigma, px)")
    repeats: int = Field(8, ge=1, le=100)

    @field_validator("q")
    @classmethod
    def _q(cls, v: list[float]) -> list[float]:
        bad = [q for q in v if not 0 < q < 1]
        if bad:
            raise ValueError(f"every q must be in (0, 1) (a fraction of the foreground): {bad}")
        if len(set(v)) != len(v):
            raise ValueError(f"q values repeat: {v}")
        return v

    @field_validator("kinds", "channels", "saliency")
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
    id: str
    created: str
    state: str
    generation: int = Field(
        0, description="Fencing token: starts anew with each upload, refit or failure"
    )
    failed_in: str | None = Field(None, description="fit or analysis, when state is failed")
    config: dict[str, Any]
    uploads: dict[str, Any]
    jobs: dict[str, str]
    error: str | None
    history: list[dict[str, Any]]
    provenance: dict[str, Any]


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None


class TokenInfo(BaseModel):
    role: Role
    name: str
