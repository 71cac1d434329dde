"""Every setting of the science, once: defaults from the paper, bounds, and cross-field rules.

Torch-free and pydantic-free. The API uses these dataclasses directly as its request fields
(pydantic validates a dataclass by its annotations: the ``Annotated`` bounds and ``Literal``
choices below, then ``__post_init__``), so a default, a bound or a rule is written here and
nowhere else. Configs made in code are checked by the same annotations (``check_fields``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

from annotated_types import Ge, Gt, Le, Lt

# pydantic reads this at the API: unknown keys and NaN/infinite numbers are refused
STRICT = {"extra": "forbid", "allow_inf_nan": False}


def check_fields(config: Any) -> None:
    """``ValueError`` naming the first field outside its ``Annotated`` bounds or its
    ``Literal`` choices (the rules pydantic applies at the API)."""
    hints = get_type_hints(type(config), include_extras=True)
    for f in fields(config):
        hint, value = hints[f.name], getattr(config, f.name)
        for bound in getattr(hint, "__metadata__", ()):
            for kind, ok, word in (
                (Gt, lambda v, b: v > b.gt, "greater than {b.gt}"),
                (Ge, lambda v, b: v >= b.ge, "at least {b.ge}"),
                (Lt, lambda v, b: v < b.lt, "less than {b.lt}"),
                (Le, lambda v, b: v <= b.le, "at most {b.le}"),
            ):
                if isinstance(bound, kind) and not ok(value, bound):
                    raise ValueError(f"{f.name} must be {word.format(b=bound)}, not {value!r}")
        base = get_args(hint)[0] if get_origin(hint) is Annotated else hint
        if get_origin(base) is Literal and value not in get_args(base):
            raise ValueError(f"{f.name} must be one of {list(get_args(base))}, not {value!r}")


@dataclass(frozen=True)
class ReadoutConfig:
    """Fitting hyper-parameters; the defaults are the paper's (sec. 4) where it gives them."""

    __pydantic_config__ = STRICT

    lr: Annotated[float, Gt(0), Le(1)] = 1e-4
    epochs: Annotated[int, Ge(1), Le(100_000)] = 2500
    l_half_weight: Annotated[float, Ge(0)] = 0.1  # weight of the smoothed L_{1/2} penalty
    l_half_eps: Annotated[float, Gt(0)] = 1e-6  # smoothing: sum_i (w_i^2 + eps)^(1/4)
    # train / validation / test images of the preferred set (bodies); each bound in the schema
    split: tuple[Annotated[int, Ge(1)], Annotated[int, Ge(2)], Annotated[int, Ge(3)]] = (
        400,
        50,
        25,
    )
    batch_size: Annotated[int, Ge(1)] = 64  # not given in the paper
    jitter: Annotated[float, Ge(0)] = 0.1  # std of the location noise, [-1, 1] map units
    silhouettes: bool = True  # augment training with the bodies' silhouettes (sec. 4)
    mu_init: Literal["grid", "centre"] = "grid"  # grid: best ridge position and its w; centre: 0
    grid_subdivide: Annotated[int, Ge(1), Le(4)] = 2  # start lattice: points per cell spacing

    def __post_init__(self) -> None:
        check_fields(self)
        if len(self.split) != 3 or min(self.split) < 1 or self.split[1] < 2 or self.split[2] < 3:
            raise ValueError("split needs train >= 1, validation >= 2 and test >= 3 bodies")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReadoutConfig:
        values = dict(data)
        if "split" in values:
            values["split"] = tuple(values["split"])
        return cls(**values)


@dataclass(frozen=True)
class InclusionConfig:
    """Thresholds of sec. 4 / A.2, with the paper's values as defaults."""

    __pydantic_config__ = STRICT

    min_net_response: float = 5.0  # spikes/s, responsive
    selectivity_alpha: Annotated[float, Gt(0), Lt(1)] = 0.01  # Kruskal-Wallis p below this
    min_reliability: Annotated[float, Ge(-1), Le(1)] = 0.5  # Spearman-Brown split-half r
    split_half_splits: Annotated[int, Ge(1), Le(10_000)] = 100  # seeded splits, averaged
    min_repeats: Annotated[int, Ge(2)] = 2  # every stimulus needs this many repeats

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class SelectionConfig:
    """How many candidates per channel, category and role; the stability bodies; the sequence."""

    __pydantic_config__ = STRICT

    n_top: Annotated[int, Ge(0), Le(100)] = 1
    n_bottom: Annotated[int, Ge(0), Le(100)] = 1
    n_similar: Annotated[int, Ge(0), Le(100)] = 1
    stability_images: Annotated[int, Ge(0), Le(10_000)] = 75  # sec. 4: "a subset of 75"
    repeats: Annotated[int, Ge(1), Le(100)] = 8  # presentations of each image (A.2: 8x)
    # not in the paper: "graded" picks, per channel and set, the candidates nearest ``levels``
    # evenly spaced predicted responses (a dose-response curve, as feature accentuation's 11)
    mode: Literal["paper", "graded"] = "paper"
    levels: Annotated[int, Ge(2), Le(100)] = 11
    # the paper ranks by the prediction; "confident" ranks the top picks by their interval's
    # lower bound and the bottom picks by its upper bound
    ranking: Literal["central", "confident"] = "central"
    ensemble: Annotated[int, Ge(2), Le(1000)] = 32  # bootstrap readouts per channel (intervals)
    interval: Annotated[float, Ge(0.5), Lt(1)] = 0.9  # the intervals' nominal coverage
    # not in the paper: images of each candidate set shown in phase one beside the preferred
    # set, held out of the fit and of the picks, on which each category's intervals are
    # calibrated (a readout fitted on bodies misjudges objects' level; 0: uncalibrated)
    calibration: Annotated[int, Ge(0), Le(1000)] = 0

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class AnalysisConfig:
    """After phase two (sec. 4, 5.1)."""

    __pydantic_config__ = STRICT

    min_stability: Annotated[float, Ge(-1), Le(1)] = 0.60  # test/retest r above this
    alpha: Annotated[float, Gt(0), Lt(1)] = 0.05  # selectivity and generalisation
    ceiling_splits: Annotated[int, Ge(10), Le(10_000)] = 100  # split halves per noise ceiling
    bootstrap: Annotated[int, Ge(100), Le(100_000)] = 1000  # resamplings of stimuli per interval
    confidence: Annotated[float, Ge(0.5), Lt(1)] = 0.95  # the intervals' coverage
    # a session's mean FEVE leaves out channels whose FEV is below this (Sensorium's rule)
    fev_floor: Annotated[float, Ge(0), Le(1)] = 0.15

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class Windows:
    """Analysis windows around stimulus onset, in seconds, half-open ``[start, end)`` (A.2:
    baseline -75..+25 ms, response +50..+250 ms)."""

    __pydantic_config__ = STRICT

    # (start, end) in seconds from onset; end > start (a rule no schema can state: 422)
    baseline: tuple[Annotated[float, Ge(-10), Le(10)], Annotated[float, Ge(-10), Le(10)]] = (
        -0.075,
        0.025,
    )
    response: tuple[Annotated[float, Ge(-10), Le(10)], Annotated[float, Ge(-10), Le(10)]] = (
        0.050,
        0.250,
    )

    def __post_init__(self) -> None:
        for name, (start, end) in (("baseline", self.baseline), ("response", self.response)):
            if not end > start:
                raise ValueError(f"the {name} window must end after it starts, got {(start, end)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Windows:
        """From a stored session config's ``windows`` (lists), defaults where absent."""
        return cls(**{k: tuple(v) for k, v in (data or {}).items()})

    @property
    def baseline_s(self) -> float:
        return self.baseline[1] - self.baseline[0]

    @property
    def response_s(self) -> float:
        return self.response[1] - self.response[0]


FragmentKind = Literal["salient", "complement", "random"]
KINDS: tuple[FragmentKind, ...] = get_args(FragmentKind)
Fraction = Annotated[float, Gt(0), Lt(1)]  # a kept fraction of an image's foreground
Feather = Annotated[float, Ge(0), Le(20)]  # edge softening, Gaussian sigma in pixels
Repeats = Annotated[int, Ge(1), Le(100)]


@dataclass(frozen=True)
class PhaseThreeConfig:
    """What phase three shows (sec. 6's proposal): the kept fractions ``q`` of each image's
    foreground, the fragment kinds, their edges' feathering and the repeats (as phase two)."""

    __pydantic_config__ = STRICT

    q: tuple[Fraction, ...] = (0.25,)
    kinds: tuple[FragmentKind, ...] = KINDS
    feather: Feather = 2.0
    repeats: Repeats = 8

    def __post_init__(self) -> None:
        check_fields(self)
        if not 1 <= len(self.q) <= 10 or any(not 0 < q < 1 for q in self.q):
            raise ValueError(f"give 1 to 10 q values, each in (0, 1), not {list(self.q)}")
        if len(set(self.q)) != len(self.q):
            raise ValueError(f"q values repeat: {list(self.q)}")
        if (
            not self.kinds
            or set(self.kinds) - set(KINDS)
            or len(set(self.kinds)) != len(self.kinds)
        ):
            raise ValueError(f"kinds must be distinct, of {list(KINDS)}, not {list(self.kinds)}")


SaliencyMethod = Literal["gradient", "integrated_gradients", "smoothgrad"]
Coverage = Annotated[float, Gt(0), Le(1)]  # a fraction of s (eq. 5's sum)
Sigma = Annotated[float, Ge(0), Le(50)]  # Gaussian smoothing of each feature's map, px at 224


@dataclass(frozen=True)
class SaliencySettings:
    """What an analyst chooses for a saliency map (sec. 3.3, A.1.2): the attribution method,
    the covered fraction of ``s`` (None: the device's default) and the maps' smoothing."""

    __pydantic_config__ = STRICT

    method: SaliencyMethod = "gradient"
    coverage: Coverage | None = None
    sigma: Sigma = 4.0

    def __post_init__(self) -> None:
        check_fields(self)
        if self.coverage is not None and not 0 < self.coverage <= 1:
            raise ValueError(f"coverage must be in (0, 1], not {self.coverage}")
