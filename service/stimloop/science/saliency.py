"""Parallel backpropagation: shared-feature saliency maps (sec. 3.3, eq. 4-7, A.1.2).

For a channel ``(mu, w)`` and a pair ``(x_out, x_in)`` (an object and a body):

* ``beta_i = a_in_i w_i a_out_i w_i / (|a_in * w| |a_out * w|)`` (eq. 5), summing to ``s``;
* for each feature ``i`` a pixel attribution ``g_i = d a_i / d x`` of each image (vanilla
  gradient, Integrated Gradients without the final ``x`` multiplication, or SmoothGrad),
  Gaussian-smoothed and normalised to unit L2 norm;
* ``I(x) = sum_i beta_i g_i`` (eq. 6) for both images, so that ``|I|_2 <= s`` (eq. 7).

Attribution methods share one shape (Captum's lesson): a method only says at which inputs the
feature Jacobian is taken, and its attribution is the mean Jacobian over them. Adding a method
is adding one class to ``METHODS``.

Cost: one forward per image (over a method's points), then per-feature gradients. On a GPU a
chunk of features is one batched vector-Jacobian product (``is_grads_batched``); on a CPU a loop
of backward passes over the retained graph is faster (``strategy="auto"`` picks).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from stimloop_contract.configs import Coverage, SaliencyMethod, SaliencySettings, Sigma
from torch import nn
from torch.nn import functional as nnf

from stimloop.science.readout_model import bilinear_weights
from stimloop.science.similarity import pairwise

Strategy = Literal["auto", "loop", "batched"]
Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------- attribution methods


@dataclass(frozen=True)
class Gradient:
    """Vanilla gradient (sec. 3.3): the Jacobian at ``x``."""

    name: ClassVar[str] = "gradient"

    def points(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``[3, H, W]`` -> ``[1, 3, H, W]``."""
        return x[None]


@dataclass(frozen=True)
class IntegratedGradients:
    """A.1.2: ``(1/m) sum_k J(k/m x)`` from a zero image, without multiplying by ``x``."""

    name: ClassVar[str] = "integrated_gradients"
    steps: int = 16

    def points(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``[3, H, W]`` -> ``[m, 3, H, W]`` at ``k/m x``, ``k = 1..m``."""
        if self.steps < 1:
            raise ValueError("Integrated Gradients needs at least one step")
        alphas = torch.arange(1, self.steps + 1, dtype=x.dtype, device=x.device) / self.steps
        return alphas.view(-1, 1, 1, 1) * x[None]


@dataclass(frozen=True)
class SmoothGrad:
    """SmoothGrad: the mean Jacobian over ``n`` noisy copies, noise in [0, 1] pixel units,
    inputs clipped back into [0, 1]."""

    name: ClassVar[str] = "smoothgrad"
    samples: int = 16
    noise: float = 0.1

    def points(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.samples < 1 or self.noise < 0:
            raise ValueError("SmoothGrad needs samples >= 1 and noise >= 0")
        noise = torch.randn((self.samples, *x.shape), generator=generator).to(x.device)
        return (x[None] + self.noise * noise).clamp(0.0, 1.0)


METHODS: dict[str, type] = {m.name: m for m in (Gradient, IntegratedGradients, SmoothGrad)}


def make_method(name: str, **options: Any) -> Gradient | IntegratedGradients | SmoothGrad:
    """A method by name (``gradient``, ``integrated_gradients``, ``smoothgrad``)."""
    if name not in METHODS:
        raise ValueError(f"unknown attribution method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name](**options)


# --------------------------------------------------------------------------- the pieces


SETTINGS = SaliencySettings()


@dataclass(frozen=True)
class SaliencyConfig:
    """Parallel-backpropagation settings.

    ``coverage``: the fewest top features by ``beta`` whose sum reaches this fraction of ``s``
    (1.0: every feature with ``beta > 0``, the exact eq. 6). ``None`` means the device default:
    1.0 on a GPU, ``CPU_COVERAGE`` on a CPU, where each feature costs a backward pass.
    """

    method: SaliencyMethod = SETTINGS.method
    method_options: dict[str, Any] = field(default_factory=dict)
    sigma: Sigma = SETTINGS.sigma  # Gaussian smoothing of each feature's map, px at 224 px
    coverage: Coverage | None = SETTINGS.coverage
    strategy: Strategy = "auto"
    chunk: int = 32  # features per batched vector-Jacobian product
    seed: int = 0  # SmoothGrad noise
    max_features: int | None = None  # at most this many of the covering features (top beta)

    def __post_init__(self) -> None:
        SaliencySettings(self.method, self.coverage, self.sigma)  # their bounds, once
        make_method(self.method, **self.method_options)
        if self.max_features is not None and self.max_features < 1:
            raise ValueError("max_features must be at least 1 (None: no limit)")


CPU_COVERAGE = 0.95


def weights_beta(a_in: torch.Tensor, a_out: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Eq. (5): ``beta_i = a_in_i w_i a_out_i w_i / (|a_in * w| |a_out * w|)``.

    ``[F]`` each; all zeros when either weighted vector is zero (then ``s = 0``).
    """
    u_in, u_out = a_in * w, a_out * w
    denom = u_in.norm() * u_out.norm()
    if denom == 0:
        return torch.zeros_like(u_in)
    return u_in * u_out / denom


def covering_features(beta: torch.Tensor, coverage: float) -> torch.Tensor:
    """The fewest features, by decreasing ``beta`` (ties by index), whose sum reaches
    ``coverage`` of the positive ``beta``'s sum; all features with ``beta > 0`` at 1.0."""
    positive = torch.nonzero(beta > 0).flatten()
    if len(positive) == 0:
        return positive
    order = positive[torch.argsort(-beta[positive], stable=True)]
    if coverage >= 1.0:
        return order
    cumulative = torch.cumsum(beta[order].double(), 0)
    k = int(torch.searchsorted(cumulative, coverage * cumulative[-1]).item()) + 1
    return order[: min(k, len(order))]


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian, radius ``ceil(3 sigma)``."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()


def smooth_and_normalise(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian-smooth each ``[3, H, W]`` map (reflect padding, separable) and scale it to
    unit L2 norm over all its values; a zero map stays zero. ``[K, 3, H, W]`` in and out."""
    if sigma > 0:
        kernel = gaussian_kernel(sigma).to(maps)
        r = (len(kernel) - 1) // 2
        k, c, h, w = maps.shape
        flat = maps.reshape(k * c, 1, h, w)
        flat = nnf.conv2d(nnf.pad(flat, (r, r, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
        flat = nnf.conv2d(nnf.pad(flat, (0, 0, r, r), mode="reflect"), kernel.view(1, 1, -1, 1))
        maps = flat.reshape(k, c, h, w)
    norms = maps.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return torch.where(norms > 0, maps / norms.clamp(min=1e-30), torch.zeros_like(maps))


def resolve_strategy(strategy: Strategy, device: torch.device) -> Literal["loop", "batched"]:
    """``auto``: batched vector-Jacobian products on a GPU, a loop of backward passes on a CPU
    (measured fastest on 2 cores; see benchmarks/saliency.py)."""
    if strategy == "auto":
        return "batched" if device.type == "cuda" else "loop"
    return strategy


class ReadoutAt(nn.Module):
    """``x`` ``[m, 3, H, W]`` -> read-out features ``a`` ``[m, F]`` at one location ``mu``."""

    k: torch.Tensor  # buffer: the bilinear weights of the channel's location

    def __init__(self, backbone: nn.Module, mu: Sequence[float], map_hw: tuple[int, int]) -> None:
        super().__init__()
        self.backbone = backbone
        k = bilinear_weights(torch.as_tensor(mu, dtype=torch.float32), *map_hw)
        self.register_buffer("k", k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x).float()
        return feats.flatten(2) @ self.k.to(feats.device)


def attribution_sum(
    readout: ReadoutAt,
    x: torch.Tensor,
    features: torch.Tensor,
    weights: torch.Tensor,
    method: Gradient | IntegratedGradients | SmoothGrad,
    *,
    sigma: float,
    strategy: Literal["loop", "batched"],
    chunk: int = 32,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """``sum_i weights_i * normalise(smooth(g_i))`` over ``features`` for one image ``x``.

    ``g_i`` is the method's mean Jacobian row of feature ``i`` over its points. One forward,
    then one backward per feature (loop) or one batched VJP per chunk of features.
    Returns float32 ``[3, H, W]``.
    """
    device = readout.k.device
    generator = generator or torch.Generator().manual_seed(0)
    points = method.points(x.to(device), generator).detach().requires_grad_(True)
    a = readout(points)  # [m, F]
    total = torch.zeros(x.shape, dtype=torch.float32, device=device)
    done = 0
    for start in range(0, len(features), chunk):
        idx = features[start : start + chunk].to(device)
        if strategy == "batched":
            grad_out = torch.zeros(len(idx), *a.shape, device=device)
            grad_out[torch.arange(len(idx)), :, idx] = 1.0
            (g,) = torch.autograd.grad(
                a, points, grad_out, retain_graph=True, is_grads_batched=True
            )
            g = g.mean(1)  # [q, 3, H, W]
        else:
            g = torch.stack(
                [
                    torch.autograd.grad(a[:, i].sum(), points, retain_graph=True)[0].mean(0)
                    for i in idx.tolist()
                ]
            )
        g = smooth_and_normalise(g.float(), sigma)
        total += torch.einsum("k,kchw->chw", weights[idx].to(device).float(), g)
        done += len(idx)
        if progress is not None:
            progress(done, len(features))
    return total.detach()


@dataclass
class SaliencyResult:
    """Both maps of one (object, body) pair for one channel, with the numbers behind them.

    ``map_out`` / ``map_in``: ``[3, H, W]`` float32 (eq. 6); ``display_*``: ``[H, W]``, the L2
    norm over the colour channels (so ``|display|_2 = |map|_2``); ``beta``: ``[F]`` (eq. 5).
    """

    s: float
    beta: np.ndarray
    features: np.ndarray  # indices used, by decreasing beta
    coverage_requested: float
    covered: float  # sum of the used beta over the sum of positive beta (1.0 when s = 0)
    map_out: np.ndarray
    map_in: np.ndarray
    norm_out: float
    norm_in: float
    method: str
    config: dict[str, Any]

    @property
    def display_out(self) -> np.ndarray:
        return np.sqrt((self.map_out**2).sum(0))

    @property
    def display_in(self) -> np.ndarray:
        return np.sqrt((self.map_in**2).sum(0))

    def metadata(self) -> dict[str, Any]:
        return {
            "s": self.s,
            "coverage_requested": self.coverage_requested,
            "covered": self.covered,
            "features_used": len(self.features),
            "norm_out": self.norm_out,
            "norm_in": self.norm_in,
            "method": self.method,
            "config": self.config,
        }


def parallel_backprop(
    backbone: nn.Module,
    x_out: torch.Tensor,
    x_in: torch.Tensor,
    mu: Sequence[float],
    w: np.ndarray | torch.Tensor,
    config: SaliencyConfig = SaliencyConfig(),
    map_hw: tuple[int, int] = (7, 7),
    progress: Progress | None = None,
) -> SaliencyResult:
    """Eq. (4)-(7) for one channel and one (out-of-category, in-category) image pair.

    ``backbone``: ``[m, 3, H, W]`` in [0, 1] -> ``[m, F, h, w]``; ``x_out``, ``x_in``: ``[3, H,
    W]`` in [0, 1]; ``mu``: (x, y) in [-1, 1]; ``w``: ``[F]``. ``progress(done, total)`` counts
    feature gradients over both images.
    """
    device = next(backbone.parameters()).device
    readout = ReadoutAt(backbone, mu, map_hw).to(device)
    w_t = torch.as_tensor(np.asarray(w), dtype=torch.float32, device=device)
    with torch.no_grad():
        a_out = readout(x_out[None].to(device))[0]
        a_in = readout(x_in[None].to(device))[0]
    beta = weights_beta(a_in, a_out, w_t)
    s = float(beta.sum())
    coverage = config.coverage
    if coverage is None:
        coverage = 1.0 if device.type == "cuda" else CPU_COVERAGE
    features = covering_features(beta, coverage)[: config.max_features]
    positive = float(beta[beta > 0].double().sum())
    covered = float(beta[features].double().sum()) / positive if positive > 0 else 1.0
    method = make_method(config.method, **config.method_options)
    strategy = resolve_strategy(config.strategy, device)
    total = 2 * len(features)

    def step(offset: int) -> Progress | None:
        if progress is None:
            return None
        return lambda done, _n: progress(offset + done, total)

    maps = []
    for k, x in enumerate((x_out, x_in)):
        if len(features) == 0:
            maps.append(torch.zeros(x.shape))
            continue
        maps.append(
            attribution_sum(
                readout,
                x,
                features,
                beta,
                method,
                sigma=config.sigma,
                strategy=strategy,
                chunk=config.chunk,
                generator=torch.Generator().manual_seed(config.seed + k),
                progress=step(k * len(features)),
            ).cpu()
        )
    map_out, map_in = (m.numpy().astype(np.float32) for m in maps)
    options = {**asdict(config), "coverage": coverage, "strategy": strategy}
    return SaliencyResult(
        s=s,
        beta=beta.cpu().numpy(),
        features=features.cpu().numpy(),
        coverage_requested=coverage,
        covered=covered,
        map_out=map_out,
        map_in=map_in,
        norm_out=float(np.linalg.norm(map_out)),
        norm_in=float(np.linalg.norm(map_in)),
        method=method.name,
        config=options,
    )


def top_recorded(means: np.ndarray, ids: Sequence[str], n: int) -> list[str]:
    """Sec. 5.2's candidates: the ``n`` stimuli with the highest recorded mean (``[S]``, NaN
    counts as lowest), ties by the smaller id."""
    values = np.nan_to_num(np.asarray(means, np.float64), nan=-np.inf)
    order = np.lexsort((np.asarray(ids), -values))
    return [ids[i] for i in order[:n]]


def default_pair(
    a_objects: np.ndarray,
    a_bodies: np.ndarray,
    w: np.ndarray,
    object_ids: Sequence[str],
    body_ids: Sequence[str],
) -> tuple[str, str, float]:
    """Sec. 5.2: among a channel's top recorded objects and bodies (``top_recorded``;
    read-out features ``[n_obj, F]`` and ``[n_body, F]``), the pair with the highest ``s``;
    ties by ids."""
    s = pairwise(a_objects, a_bodies, w).numpy()  # eq. (2), [n_obj, n_body]
    i_obj, i_body = np.meshgrid(np.arange(len(object_ids)), np.arange(len(body_ids)), indexing="ij")
    objs = np.asarray(object_ids)[i_obj.ravel()]
    bods = np.asarray(body_ids)[i_body.ravel()]
    order = np.lexsort((bods, objs, -s.ravel()))  # highest s, then smallest ids
    best = order[0]
    return str(objs[best]), str(bods[best]), float(s.ravel()[best])
