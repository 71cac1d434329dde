"""Sanity checks of saliency maps (Adebayo et al. 2018, "Sanity checks for saliency maps").

A map that barely changes when the model is randomised explains the method, not the neuron.
For one channel ``(mu, w)`` and one pair of images, with ``maps(backbone, mu, w)`` the method
under test (parallel backpropagation, eq. 4-7, or any other):

* **model randomisation, cascading from the top**: the readout re-drawn (``w`` Gaussian with
  the same norm, the location ``mu`` uniform in [-1, 1]^2), then the backbone's blocks
  re-initialised one more at a time from the last (``layer4.1``, ``layer4.0``, ``layer3``,
  ``layer2``, ``layer1``, the stem), each with PyTorch's default initialisation of its layers
  and a seed per step. After each step the BatchNorm statistics of every re-initialised block
  so far are re-estimated on the pair's two images (one forward in training mode), so a block
  above a newly re-initialised one keeps statistics of the inputs it now gets and no NaN
  appears. The maps are recomputed after every step.
* **data randomisation**: the maps of the channel's readout refit on phase one with the
  stimulus labels permuted (the refit is the caller's: the science has no recordings).
* **similarity** of each randomised map to the original, as Adebayo et al. report it:
  Spearman rank correlation of ``|map|`` and of the signed map, SSIM of ``|map|`` scaled to
  [0, 1], and the Pearson r of the HOG features of ``|map|`` (scikit-image). A map is ``[3, H,
  W]``; ``|map|`` is the L2 norm over colour channels, the signed map their sum.
* **verdict**, fixed before any map was looked at: a check passes when the maps of its most
  randomised model (the whole cascade; the permuted labels) are dissimilar from the original
  on both images. The field is split on which rank correlation decides (Adebayo et al. report
  both; Quantus' MPRT ranks ``|map|``, ``abs=True``), and the report, the cascade strip and the
  pages show ``|map|``; so the default (``spearman_abs_and_signed``) requires both Spearman r
  below ``max_similarity`` (0.5, halfway between an unchanged ranking and an unrelated one),
  and a map whose sign changes while its magnitude does not is reported as split, not passed
  ("sign depends on the model; where the map looks does not"). Every similarity is reported,
  with the statistics that failed named, so a reader can judge by another.
* **eMPRT** (Hedstroem et al. 2023), reported beside the verdict: the relative rise in the
  map's complexity (the discrete entropy of the signed map's 100-bin histogram) from the
  original to the fully randomised model, ``(C_random - C_original) / C_original`` per image.
  Randomising bottom-up or top-down ends at the same fully randomised model (every block and
  the readout re-drawn from the same seeds, every BatchNorm recalibrated), so the end point of
  this cascade is eMPRT's. A rise above 0 says the map became noisier when the model lost its
  learned parameters, as a map that explains the model should.

The negative control is ``EdgeDetector``: a Sobel edge map of each image, which no
randomisation of the model can change, so it must fail both checks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage, stats
from skimage.feature import hog
from skimage.metrics import structural_similarity
from torch import nn

from stimloop.science.seeds import channel_rng

MapPair = tuple[np.ndarray, np.ndarray]  # ([3, H, W] of x_out, [3, H, W] of x_in)
Maps = Callable[[nn.Module, Sequence[float] | np.ndarray, np.ndarray], MapPair]
Metric = Literal["spearman_abs_and_signed", "spearman_abs", "spearman", "ssim", "hog"]
DECISIVE: dict[str, tuple[str, ...]] = {"spearman_abs_and_signed": ("spearman_abs", "spearman")}
SPLIT = (
    "split: the sign depends on the model; where the map looks does not (its envelope "
    "outlives the randomised parameters)"
)
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class SanityConfig:
    """The verdict's similarity and threshold, and the seed of every random draw."""

    metric: Metric = "spearman_abs_and_signed"
    max_similarity: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not -1.0 <= self.max_similarity <= 1.0:
            raise ValueError("max_similarity must be in [-1, 1]")


@dataclass(frozen=True)
class Similarity:
    """One randomised map against the original (each in [-1, 1]; 1: unchanged)."""

    spearman_abs: float
    spearman: float
    ssim: float
    hog: float


@dataclass(frozen=True)
class Step:
    """The maps after one randomisation step, against the original maps."""

    name: str  # "readout", "layer4.1", ..., "stem"; "labels permuted" for the data check
    out: Similarity  # x_out's map (the object)
    in_: Similarity  # x_in's map (the body)

    def worst(self, metric: Metric) -> float:
        """The highest similarity of the two images (of each statistic ``metric`` names): a
        check needs both maps changed."""
        names = DECISIVE.get(metric, (metric,))
        return max(max(getattr(self.out, n), getattr(self.in_, n)) for n in names)

    def failed_on(self, metric: Metric, limit: float) -> list[str]:
        """The statistics ``metric`` names that stay at or above ``limit`` on either image."""
        names = DECISIVE.get(metric, (metric,))
        return [n for n in names if max(getattr(self.out, n), getattr(self.in_, n)) >= limit]


def verdict(failed_on: list[str]) -> str:
    """The model check in words: passed, split (the sign changed, the magnitude did not) or
    failed with the statistics that stayed similar."""
    if not failed_on:
        return "passed"
    if failed_on == ["spearman_abs"]:
        return SPLIT
    return "failed: the maps stay similar by " + " and ".join(failed_on)


@dataclass
class SanityResult:
    """Both checks for one channel and pair; ``maps``: step name -> the ``|map|`` ``[H, W]``
    of both images (``"original"`` first), for the cascade strip."""

    method: str
    model_steps: list[Step]
    data_step: Step | None
    model_passed: bool
    data_passed: bool | None  # None: no refit was given
    config: SanityConfig
    maps: dict[str, MapPair] = field(default_factory=dict)
    emprt: dict[str, Any] = field(default_factory=dict)

    @property
    def statistics(self) -> tuple[str, ...]:
        """The similarities the verdict's metric decides by."""
        return DECISIVE.get(self.config.metric, (self.config.metric,))

    @property
    def model_failed_on(self) -> list[str]:
        return self.model_steps[-1].failed_on(self.config.metric, self.config.max_similarity)

    @property
    def model_verdict(self) -> str:
        return verdict(self.model_failed_on)

    @property
    def passed(self) -> bool:
        return self.model_passed and self.data_passed is not False

    def summary(self) -> dict[str, Any]:
        """The verdicts with the similarities behind them (JSON-ready; no maps)."""
        metric = self.config.metric
        return {
            "method": self.method,
            "passed": self.passed,
            "model_passed": self.model_passed,
            "model_verdict": self.model_verdict,
            "model_failed_on": self.model_failed_on,
            "data_passed": self.data_passed,
            "metric": metric,
            "max_similarity": self.config.max_similarity,
            "model_similarity": self.model_steps[-1].worst(metric),
            "data_similarity": None if self.data_step is None else self.data_step.worst(metric),
            "model_steps": [step_dict(s) for s in self.model_steps],
            "data_step": None if self.data_step is None else step_dict(self.data_step),
            "emprt": self.emprt,
            "seed": self.config.seed,
        }


def step_dict(step: Step) -> dict[str, Any]:
    return {"name": step.name, "out": asdict(step.out), "in": asdict(step.in_)}


# --------------------------------------------------------------------------- similarity


def magnitude(m: np.ndarray) -> np.ndarray:
    """``[3, H, W]`` -> ``[H, W]``: the L2 norm over colour channels (``|map|``)."""
    return np.sqrt((np.asarray(m, np.float64) ** 2).sum(0))


def _unit(x: np.ndarray) -> np.ndarray:
    top = x.max()
    return x / top if top > 0 else np.zeros_like(x)


def _rank_r(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman r; a constant map shares no ranking with another (0), only with its equal."""
    a, b = a.ravel(), b.ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(stats.spearmanr(a, b).statistic)


def _hog_r(a: np.ndarray, b: np.ndarray) -> float:
    cell = max(2, min(a.shape) // 8)
    ha = hog(a, pixels_per_cell=(cell, cell), cells_per_block=(2, 2))
    hb = hog(b, pixels_per_cell=(cell, cell), cells_per_block=(2, 2))
    if np.ptp(ha) == 0 or np.ptp(hb) == 0:
        return 1.0 if np.array_equal(ha, hb) else 0.0
    return float(np.corrcoef(ha, hb)[0, 1])


def complexity(m: np.ndarray, bins: int = 100) -> float:
    """eMPRT's complexity of a ``[3, H, W]`` map (Hedstroem et al. 2023): the discrete entropy
    (nats) of the histogram of the signed map's values in ``bins`` equal bins."""
    counts, _ = np.histogram(np.asarray(m, np.float64).sum(0).ravel(), bins=bins)
    return float(stats.entropy(counts))  # Shannon entropy of counts / counts.sum()


def complexity_rise(original: np.ndarray, randomised: np.ndarray) -> float:
    """eMPRT's score: ``(C_random - C_original) / C_original``; NaN for a constant original."""
    before = complexity(original)
    return (complexity(randomised) - before) / before if before > 0 else float("nan")


def similarity(original: np.ndarray, randomised: np.ndarray) -> Similarity:
    """Adebayo et al.'s similarities of two ``[3, H, W]`` maps."""
    a, b = magnitude(original), magnitude(randomised)
    ua, ub = _unit(a), _unit(b)
    return Similarity(
        spearman_abs=_rank_r(a, b),
        spearman=_rank_r(np.asarray(original).sum(0), np.asarray(randomised).sum(0)),
        ssim=float(structural_similarity(ua, ub, data_range=1.0)),
        hog=_hog_r(ua, ub),
    )


# --------------------------------------------------------------------------- randomisation


def cascade_blocks(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone's blocks from the top down: each block of the last stage, then each
    earlier stage, then the stem (``conv1`` + ``bn1``). ``backbone.trunk``: the
    ``FeatureExtractor``'s ``[conv1, bn1, relu, maxpool, layer1, ..., layerK[:b+1]]``."""
    trunk = backbone.trunk
    if not isinstance(trunk, nn.Sequential):
        raise TypeError("the cascade needs a FeatureExtractor-like backbone with a trunk")
    last = len(trunk) - 4  # the stage number of the truncated last stage
    top = trunk[-1]
    assert isinstance(top, nn.Sequential)
    blocks = [(f"layer{last}.{i}", b) for i, b in reversed(list(enumerate(top)))]
    blocks += [(f"layer{k}", trunk[3 + k]) for k in range(last - 1, 0, -1)]
    blocks.append(("stem", nn.Sequential(trunk[0], trunk[1])))
    return blocks


def reinitialise(block: nn.Module, seed: int) -> None:
    """Every layer of ``block`` to PyTorch's default initialisation, from ``seed``: drawn on a
    CPU copy with the CPU generator, so a seed gives the same weights on every device."""
    fresh = copy.deepcopy(block).to("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    block.load_state_dict(fresh.state_dict())


def recalibrate(backbone: nn.Module, blocks: Sequence[nn.Module], images: torch.Tensor) -> None:
    """Re-estimate the BatchNorm statistics of ``blocks`` (every block re-initialised so far)
    on ``images`` ``[m, 3, H, W]`` in one forward in training mode (each normalises by the
    statistics of the inputs it now gets, from the blocks below), then back to evaluation."""
    norms = [
        m
        for block in blocks
        for m in block.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        backbone(images)
    for m in norms:
        m.eval()


def permuted_labels(targets: np.ndarray, seed: int, channel: str) -> np.ndarray:
    """The data check's targets: a channel's stimulus means ``[N]`` permuted across the
    stimuli, from the channel's own seeded stream."""
    return np.asarray(targets)[
        channel_rng(seed, channel, "label-permutation").permutation(len(targets))
    ]


def redrawn_readout(w: np.ndarray, seed: int) -> np.ndarray:
    """A Gaussian ``w`` ``[F]`` with the original's norm: the top of the cascade."""
    z = np.random.default_rng(seed).normal(size=np.shape(w))
    return z / np.linalg.norm(z) * float(np.linalg.norm(w))


def redrawn_location(seed: int) -> np.ndarray:
    """A readout location ``mu`` ``[2]`` drawn uniformly in [-1, 1]^2 (sec. 3.1's range)."""
    return np.random.default_rng([seed, 2]).uniform(-1.0, 1.0, 2)


# --------------------------------------------------------------------------- the checks


def sanity_checks(
    backbone: nn.Module,
    maps: Maps,
    mu: Sequence[float] | np.ndarray,
    w: np.ndarray,
    images: torch.Tensor,
    *,
    refit: tuple[Sequence[float] | np.ndarray, np.ndarray] | None = None,
    method: str = "parallel_backprop",
    config: SanityConfig = SanityConfig(),
    progress: Progress | None = None,
) -> SanityResult:
    """Both checks for one channel and pair.

    ``backbone``: ``[m, 3, H, W]`` -> feature maps, with a ``trunk`` (``cascade_blocks``);
    ``maps(backbone, mu, w)`` -> the ``[3, H, W]`` maps of ``x_out`` and ``x_in``; ``images``:
    ``[2, 3, H, W]``, the pair, for the BatchNorm statistics; ``refit``: ``(mu, w)`` of the
    readout refit on permuted labels (None: no data check). The original backbone is left as
    it was (the cascade works on a copy).
    """
    device = next(backbone.parameters()).device
    total = 2 + len(cascade_blocks(backbone)) + (refit is not None)
    done = 0

    def tick(name: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, name)

    w = np.asarray(w, np.float32)
    original = maps(backbone, mu, w)
    tick("original")
    shown = {"original": (magnitude(original[0]), magnitude(original[1]))}

    def step(name: str, pair: MapPair) -> Step:
        shown[name] = (magnitude(pair[0]), magnitude(pair[1]))
        return Step(name, similarity(original[0], pair[0]), similarity(original[1], pair[1]))

    w_random = redrawn_readout(w, config.seed).astype(np.float32)
    mu_random = redrawn_location(config.seed)
    last = maps(backbone, mu_random, w_random)
    steps = [step("readout", last)]
    tick("readout")
    clone = copy.deepcopy(backbone)
    done_blocks: list[nn.Module] = []
    for k, (name, block) in enumerate(cascade_blocks(clone)):
        reinitialise(block, config.seed + 1 + k)
        done_blocks.append(block)
        recalibrate(clone, done_blocks, images.to(device))
        last = maps(clone, mu_random, w_random)
        steps.append(step(name, last))
        tick(name)
    del clone
    emprt = {  # Hedstroem et al. 2023: the complexity's rise to the fully randomised model
        "out": complexity_rise(original[0], last[0]),
        "in": complexity_rise(original[1], last[1]),
        "complexity_original": [complexity(original[0]), complexity(original[1])],
        "complexity_randomised": [complexity(last[0]), complexity(last[1])],
        "bins": 100,
    }
    data_step = None
    if refit is not None:
        data_step = step("labels permuted", maps(backbone, refit[0], np.asarray(refit[1])))
        tick("labels permuted")
    limit = config.max_similarity
    return SanityResult(
        method=method,
        model_steps=steps,
        data_step=data_step,
        model_passed=bool(steps[-1].worst(config.metric) < limit),
        data_passed=None if data_step is None else bool(data_step.worst(config.metric) < limit),
        config=config,
        maps=shown,
        emprt=emprt,
    )


@dataclass(frozen=True)
class EdgeDetector:
    """The negative control: the Sobel gradient magnitude of each image, the same whatever
    the model (Adebayo et al.'s edge detector). ``x_out``, ``x_in``: ``[3, H, W]``."""

    x_out: torch.Tensor
    x_in: torch.Tensor

    def __call__(
        self, backbone: nn.Module, mu: Sequence[float] | np.ndarray, w: np.ndarray
    ) -> MapPair:
        return self.edges(self.x_out), self.edges(self.x_in)

    @staticmethod
    def edges(x: torch.Tensor) -> np.ndarray:
        grey = x.detach().cpu().double().numpy().mean(0)
        magnitude_ = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))
        return np.repeat(magnitude_[None], 3, axis=0).astype(np.float32)
