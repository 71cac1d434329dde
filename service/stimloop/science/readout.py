"""The neuron model: a Gaussian readout with linear weights, fitted for all channels at once.

Paper sec. 3.1 and 4. Per channel ``c`` a location ``mu_c`` in [-1, 1]^2 on the ``[2048, 7, 7]``
feature map (x then y, bilinear with ``align_corners=True`` semantics), read out to
``a_c = F(x)[:, mu_c]`` (2048), and ``y_c = <a_c, w_c> + b_c`` (eq. 1 plus a bias). Training
jitters the location around ``mu`` (Gaussian, ``jitter`` in map units); evaluation uses ``mu``.
Loss: MSE on the recorded responses (spikes/s) + 0.1 * smoothed L_{1/2}(w); Adam, lr 1e-4, 2500
epochs, the epoch with the lowest validation loss is kept (epoch 0 is the starting readout);
bodies split 400/50/25 with a recorded seed; silhouettes of the training bodies are added with
the same targets. The start (not in the paper): each channel's best map cell and its ridge
solution there (``grid_init``), so the gradient fit refines a readout the data support instead
of having to push every weight out of the penalty's steep region around zero.

Cost: a step is one ``[B*49, 2048] x [2048, C]`` product (``z = X w^T``) followed by the
bilinear weights ``[B, C, 49]`` contracted against ``z``, not a per-channel ``grid_sample``.
Channels are independent: the loss is a sum of per-channel terms, Adam is element-wise, and
all per-channel randomness comes from the channel's name, so a channel fitted alone or with
others gets the same result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import stats
from stimloop_contract.configs import ReadoutConfig

from stimloop.science.readout_model import GaussianReadout, bilinear_weights
from stimloop.science.seeds import channel_torch_generator
from stimloop.science.trainer import (
    Best,
    Draws,
    EagerEpochs,
    GraphEpochs,
    LossConfig,
    TrainingData,
)

FitProgress = Callable[[int, int, float], None]  # (epoch, epochs, mean best val loss)


@dataclass(frozen=True)
class Split:
    """Row indices of the bodies used for training, validation and testing."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int

    def ids(self, ids: Sequence[str]) -> dict[str, list[str]]:
        return {name: [ids[i] for i in getattr(self, name)] for name in ("train", "val", "test")}


def make_split(n: int, sizes: tuple[int, int, int], seed: int) -> Split:
    """A seeded random split of ``n`` bodies into ``sizes`` (leftover bodies stay unused)."""
    if sum(sizes) > n:
        raise ValueError(
            f"the split {sizes[0]}/{sizes[1]}/{sizes[2]} needs {sum(sizes)} bodies, but only {n} "
            "have responses; use a smaller split in the fit config"
        )
    order = np.random.default_rng([seed, 0x5917]).permutation(n)
    a, b, c = sizes
    return Split(
        np.sort(order[:a]), np.sort(order[a : a + b]), np.sort(order[a + b : a + b + c]), seed
    )


def as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A tensor view of an array (copied only when numpy strides demand it)."""
    if isinstance(x, np.ndarray) and not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    return torch.as_tensor(x)


def readout_features(maps: torch.Tensor, mu: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """``a = F(x)[:, mu]`` for every image and channel (sec. 3.1, 4).

    ``maps``: ``[N, F, H, W]``; ``mu``: ``[C, 2]``. Returns float32 ``[N, C, F]``, computed from
    the four neighbouring cells (the same bilinear weights as ``bilinear_weights``).
    """
    n, f, h, w = maps.shape
    mu = mu.to(torch.float32)
    px = ((mu[:, 0] + 1) / 2 * (w - 1)).clamp(0, w - 1)
    py = ((mu[:, 1] + 1) / 2 * (h - 1)).clamp(0, h - 1)
    x0 = px.floor().clamp(max=w - 2).long()
    y0 = py.floor().clamp(max=h - 2).long()
    fx, fy = px - x0, py - y0
    corners = [
        (y0, x0, (1 - fy) * (1 - fx)),
        (y0, x0 + 1, (1 - fy) * fx),
        (y0 + 1, x0, fy * (1 - fx)),
        (y0 + 1, x0 + 1, fy * fx),
    ]
    out = torch.empty(n, len(mu), f, dtype=torch.float32, device=maps.device)
    for start in range(0, n, chunk):
        block = maps[start : start + chunk]
        acc = torch.zeros(len(block), len(mu), f, dtype=torch.float32, device=maps.device)
        for yy, xx, weight in corners:
            acc += (
                block[:, :, yy, xx].permute(0, 2, 1).float() * weight.to(maps.device)[None, :, None]
            )
        out[start : start + chunk] = acc
    return out


@dataclass
class FittedReadout:
    """The fitted models of ``C`` channels: a plain value with its metrics, seed and hash.

    ``mu`` ``[C, 2]`` (x, y in [-1, 1]); ``w`` ``[C, F]`` and ``b`` ``[C]`` in spikes/s;
    ``loss``/``r``/``p`` map "train"/"val"/"test" to ``[C]`` arrays (MSE in (spikes/s)^2,
    Pearson r and its two-sided p of predictions against recorded means).
    """

    channels: list[str]
    mu: np.ndarray
    w: np.ndarray
    b: np.ndarray
    best_epoch: np.ndarray
    loss: dict[str, np.ndarray]
    r: dict[str, np.ndarray]
    p: dict[str, np.ndarray]
    split_ids: dict[str, list[str]]
    config: ReadoutConfig
    seed: int
    weights_sha256: str
    map_shape: tuple[int, int, int] = (2048, 7, 7)
    extra: dict[str, Any] = field(default_factory=dict)

    def features(self, maps: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Read-out feature vectors ``a`` at each channel's ``mu``: ``[N, C, F]``."""
        return readout_features(as_tensor(maps), torch.as_tensor(self.mu))

    def predict(self, maps: np.ndarray | torch.Tensor) -> np.ndarray:
        """Predicted net responses ``[N, C]`` in spikes/s (eq. 1 plus bias)."""
        a = self.features(maps)
        return (a * torch.as_tensor(self.w, dtype=torch.float32)).sum(-1).numpy() + self.b

    def select(self, channels: Sequence[str]) -> FittedReadout:
        """The same models restricted to ``channels`` (in that order)."""
        idx = [self.channels.index(c) for c in channels]
        pick = lambda d: {k: v[idx] for k, v in d.items()}  # noqa: E731
        return FittedReadout(
            list(channels),
            self.mu[idx],
            self.w[idx],
            self.b[idx],
            self.best_epoch[idx],
            pick(self.loss),
            pick(self.r),
            pick(self.p),
            self.split_ids,
            self.config,
            self.seed,
            self.weights_sha256,
            self.map_shape,
            self.extra,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything as named arrays (for NPZ)."""
        out = {
            "channels": np.array(self.channels),
            "mu": self.mu,
            "w": self.w,
            "b": self.b,
            "best_epoch": self.best_epoch,
        }
        for metric in ("loss", "r", "p"):
            for split, values in getattr(self, metric).items():
                out[f"{metric}_{split}"] = values
        return out

    def sha256(self) -> str:
        """A hash of the models themselves (channels, ``mu``, ``w``, ``b``: names, dtypes,
        shapes and bytes), so a registration names exactly the readouts it came from."""
        h = hashlib.sha256()
        arrays = self.arrays()
        for name in ("channels", "mu", "w", "b"):
            a = np.ascontiguousarray(arrays[name])
            h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def metadata(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "seed": self.seed,
            "weights_sha256": self.weights_sha256,
            "map_shape": list(self.map_shape),
            "split_ids": self.split_ids,
            **self.extra,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> FittedReadout:
        splits = ("train", "val", "test")
        return cls(
            channels=[str(c) for c in arrays["channels"]],
            mu=arrays["mu"],
            w=arrays["w"],
            b=arrays["b"],
            best_epoch=arrays["best_epoch"],
            loss={s: arrays[f"loss_{s}"] for s in splits},
            r={s: arrays[f"r_{s}"] for s in splits},
            p={s: arrays[f"p_{s}"] for s in splits},
            split_ids=meta["split_ids"],
            config=ReadoutConfig.from_dict(meta["config"]),
            seed=int(meta["seed"]),
            weights_sha256=meta["weights_sha256"],
            map_shape=tuple(meta["map_shape"]),
        )


def pearson(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Pearson r and two-sided p over the finite pairs (NaN when undefined)."""
    ok = np.isfinite(pred) & np.isfinite(target)
    if ok.sum() < 3 or np.ptp(pred[ok]) == 0 or np.ptp(target[ok]) == 0:
        return float("nan"), float("nan")
    result = stats.pearsonr(pred[ok], target[ok])
    return float(result.statistic), float(result.pvalue)


@dataclass(frozen=True)
class RidgeStart:
    """Where the gradient fit starts: per channel a map cell and its ridge solution there.

    ``mu`` ``[C, 2]`` (x, y in [-1, 1], a cell centre); ``w`` ``[C, F]``, ``b`` ``[C]`` in the
    targets' units; ``ridge`` ``[C]`` the chosen penalty; ``loo`` ``[C]`` its leave-one-out MSE.
    """

    mu: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor
    ridge: torch.Tensor
    loo: torch.Tensor


RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # penalties, as fractions of the kernel's mean diagonal


def ridge_loo(evals: torch.Tensor, evecs: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
    """Closed-form leave-one-out MSE of ridge regressions, for every penalty of ``RIDGE_GRID``.

    ``evals`` ``[B, N]`` (non-negative), ``evecs`` ``[B, N, N]``: eigendecompositions of ``B``
    centred kernels; ``yc`` ``[N, C]`` centred targets. Returns ``[B, len(RIDGE_GRID), C]``.
    The hat matrix is the centred kernel's plus ``1/N`` for the intercept; each penalty is a
    fraction of its kernel's mean diagonal.
    """
    n = yc.shape[0]
    scale = evals.sum(1, keepdim=True) / n  # each kernel's mean diagonal
    proj = evecs.transpose(1, 2) @ yc  # [B, N, C]
    squares = evecs.square()
    out = []
    for frac in RIDGE_GRID:
        shrink = evals / (evals + frac * scale + 1e-12)  # [B, N]
        hat_diag = (squares @ shrink[..., None])[..., 0] + 1.0 / n
        fitted = evecs @ (shrink[..., None] * proj)
        resid = (yc - fitted) / (1 - hat_diag).clamp(min=1e-9)[..., None]
        out.append(resid.square().mean(1))
    return torch.stack(out, 1)


def grid_init(x: torch.Tensor, y: torch.Tensor, width: int, subdivide: int = 1) -> RidgeStart:
    """Starting readouts: per channel, the map cell and ridge solution that predict it best.

    Not in the paper, which does not say how ``mu`` and ``w`` start. A readout's location
    gradient only sees neighbouring cells, so from the centre it rarely travels far in 2500
    epochs; and from ``w = 0`` the smoothed L_{1/2} penalty, steepest just off zero, holds back
    every weight whose data gradient is weaker than its slope. So for each position of a
    lattice over the map (the cell centres, and with ``subdivide = s`` also ``s - 1`` evenly
    spaced points between neighbouring centres, read out bilinearly as eq. (1) does) and each
    penalty in ``RIDGE_GRID``, a ridge regression is scored by its closed-form leave-one-out
    error (hat matrix of the centred kernel plus ``1/N`` for the intercept); each channel
    starts at its best (position, penalty) with that ridge solution (dual form,
    ``w = A_p^T (K + lambda I)^-1 y_c``). ``x``: ``[N, H*W, F]`` training maps; ``y``:
    ``[N, C]`` targets with NaN where missing (treated as the channel's mean).
    """
    n, cells, _ = x.shape
    height = cells // width
    lat_w, lat_h = subdivide * (width - 1) + 1, subdivide * (height - 1) + 1
    gx = torch.arange(lat_w, dtype=torch.float64) / (lat_w - 1) * 2 - 1
    gy = torch.arange(lat_h, dtype=torch.float64) / (lat_h - 1) * 2 - 1
    lattice = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1).reshape(-1, 2)  # [P, 2]
    sampling = bilinear_weights(lattice, height, width)  # [P, H*W], at most 4 non-zero
    dev = x.device
    sampling = sampling.to(dev)
    y = y.double().to(dev)
    y_mean = torch.nanmean(y, 0)
    yc = torch.nan_to_num(y - y_mean)  # missing targets sit at the mean: no pull
    ridges = torch.tensor(RIDGE_GRID, dtype=torch.float64)
    loo = torch.empty(len(lattice), len(ridges), y.shape[1], dtype=torch.float64, device=dev)

    def centred(p: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Read-out features at lattice position ``p`` (at most 4 cells), centred: ``[N, F]``,
        and their mean ``[F]``."""
        used = torch.nonzero(sampling[p] > 0).flatten().tolist()
        a = torch.stack([sampling[p, u].double() * x[:, u].double() for u in used]).sum(0)
        a_mean = a.mean(0)
        return a - a_mean, a_mean

    def kernel(p: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        ac, a_mean = centred(p)
        evals, evecs = torch.linalg.eigh(ac @ ac.T)
        return ac, a_mean, evals.clamp(min=0), evecs

    for start in range(0, len(lattice), 8):  # positions in batches: one batched eigh each
        ps = list(range(start, min(start + 8, len(lattice))))
        grams = torch.stack([(lambda ac: ac @ ac.T)(centred(p)[0]) for p in ps])
        evals, evecs = torch.linalg.eigh(grams)  # [B, N], [B, N, N]
        loo[ps] = ridge_loo(evals.clamp(min=0), evecs, yc)
    loo = loo.cpu()
    yc, y_mean = yc.cpu(), y_mean.cpu()
    flat = loo.reshape(-1, y.shape[1]).argmin(0)  # [C] over (cell, penalty)
    best_position, best_ridge = flat // len(ridges), flat % len(ridges)
    c_count, f = y.shape[1], x.shape[2]
    w0 = torch.zeros(c_count, f, dtype=torch.float64)
    b0 = y_mean.clone()
    lam = torch.zeros(c_count, dtype=torch.float64)
    for p in best_position.unique().tolist():
        ac, a_mean, evals, evecs = (t.cpu() for t in kernel(p))
        scale = evals.sum() / n
        for c in torch.nonzero(best_position == p).flatten().tolist():
            lam[c] = ridges[best_ridge[c]] * scale
            alpha = evecs @ ((evecs.T @ yc[:, c]) / (evals + lam[c] + 1e-12))
            w0[c] = ac.T @ alpha
            b0[c] = y_mean[c] - a_mean @ w0[c]
    mu = lattice[best_position].float()
    best_loo = loo.reshape(-1, c_count).gather(0, flat[None])[0]
    return RidgeStart(mu, w0.float(), b0.float(), lam, best_loo)


def _as_rows(maps: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """``[N, F, H, W]`` -> float32 ``[N, H*W, F]`` on ``device`` (rows of the big product)."""
    t = as_tensor(maps)
    return t.to(device=device, dtype=torch.float32).flatten(2).transpose(1, 2).contiguous()


def _use_graph(strategy: str, device: torch.device) -> str:
    """ "" (eager), "static" (graph-ready buffers, no capture) or "cuda" (captured graph)."""
    if strategy not in ("auto", "eager", "graph"):
        raise ValueError(f"strategy must be auto, eager or graph, not {strategy!r}")
    if strategy == "eager" or (strategy == "auto" and device.type != "cuda"):
        return ""
    return "cuda" if device.type == "cuda" else "static"


def fit_readouts(
    maps: np.ndarray | torch.Tensor,
    targets: np.ndarray,
    channels: Sequence[str],
    split: Split,
    *,
    body_ids: Sequence[str] | None = None,
    silhouette_maps: np.ndarray | torch.Tensor | None = None,
    config: ReadoutConfig = ReadoutConfig(),
    seed: int = 0,
    weights_sha256: str = "",
    device: str | torch.device = "cpu",
    progress: FitProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
    strategy: str = "auto",
    progress_every: int = 1,
) -> FittedReadout:
    """Fit one readout per channel on the bodies' feature maps.

    ``maps``: ``[N, F, H, W]`` body features; ``targets``: ``[N, C]`` mean net responses
    (spikes/s, NaN where a channel has no trials of a body); ``silhouette_maps``:
    ``[len(split.train), F, H, W]``, the silhouettes of ``split.train`` in that order (used when
    ``config.silhouettes``). ``progress(epoch, epochs, mean best validation loss)`` is called
    every ``progress_every`` epochs (each call waits for the device); ``should_stop()`` lets a
    job be cancelled between epochs. ``strategy``: "eager" (a Python loop of steps), "graph"
    (whole epochs on static buffers, captured as a CUDA graph on a GPU) or "auto" (graph on
    CUDA, eager elsewhere); both give the same result for a seed.
    """
    device = torch.device(device)
    targets = np.asarray(targets, dtype=np.float64)
    n, c = targets.shape
    if len(maps) != n or len(channels) != c:
        raise ValueError(
            f"{len(maps)} maps and {len(channels)} channels for targets {targets.shape}"
        )
    if body_ids is not None and len(body_ids) != n:
        raise ValueError(f"{len(body_ids)} body ids for {n} maps")
    if len(set(channels)) != c:
        raise ValueError("channel names must be unique")
    _, f, h, w = maps.shape
    # The MSE is taken on the recorded responses (spikes/s), as in the paper: standardising
    # each channel would multiply the penalty's weight by std^1.5 in recorded units.
    std = np.nanstd(targets[split.train], axis=0)
    if not (np.isfinite(std).all() and (std > 0).all()):
        bad = [channels[int(i)] for i in np.flatnonzero(~(np.isfinite(std) & (std > 0)))]
        raise ValueError(f"channels with constant or missing training responses: {bad[:5]}")

    x_train = _as_rows(maps[split.train], device)
    y_train = torch.as_tensor(targets[split.train], dtype=torch.float32, device=device)
    if config.silhouettes and silhouette_maps is not None:
        if len(silhouette_maps) != len(split.train):
            raise ValueError("silhouette_maps must hold one map per training body")
        x_train = torch.cat([x_train, _as_rows(silhouette_maps, device)])
        y_train = torch.cat([y_train, y_train])
    x_val = _as_rows(maps[split.val], device)
    y_val = torch.as_tensor(targets[split.val], dtype=torch.float32, device=device)
    m_train, m_val = torch.isfinite(y_train), torch.isfinite(y_val)
    y_train, y_val = torch.nan_to_num(y_train), torch.nan_to_num(y_val)

    model = GaussianReadout(c, f, h, w).to(device)
    n_bodies = len(split.train)  # silhouettes repeat the targets: score the bodies only
    ridge_start = None
    with torch.no_grad():
        if config.mu_init == "grid":
            y_known = torch.where(m_train[:n_bodies], y_train[:n_bodies], float("nan"))
            ridge_start = grid_init(x_train[:n_bodies], y_known, w, config.grid_subdivide)
            model.mu.copy_(ridge_start.mu)
            model.w.copy_(ridge_start.w)
            model.b.copy_(ridge_start.b)
        else:  # the plain start: centre, w = 0, b = the training mean
            model.b.copy_(torch.as_tensor(np.nanmean(targets[split.train], axis=0)))
    graph = _use_graph(strategy, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, capturable=graph == "cuda")
    draws = Draws(
        torch.Generator().manual_seed(seed),
        [channel_torch_generator(seed, ch, "jitter") for ch in channels],
    )
    data = TrainingData(x_train, y_train, m_train.float(), x_val, y_val, m_val.float())
    best = Best(model)
    model.eval()
    best.update(model, x_val, y_val, data.m_val, torch.tensor(0, device=device))  # the start
    loss = LossConfig(config.l_half_weight, config.l_half_eps)
    epochs = (
        GraphEpochs(model, optimizer, data, best, config.batch_size, loss, graph == "cuda")
        if graph
        else EagerEpochs(model, optimizer, data, best, config.batch_size, loss)
    )
    for epoch in range(1, config.epochs + 1):
        if should_stop is not None and should_stop():
            raise InterruptedError("fit cancelled")
        order, noise = draws.epoch(len(x_train), config.jitter)
        epochs.run(epoch, order, noise)
        if progress is not None and (epoch % progress_every == 0 or epoch == config.epochs):
            progress(epoch, config.epochs, float(best.val.mean().cpu()))

    fitted = FittedReadout(
        channels=list(channels),
        mu=best.params["mu"].cpu().numpy().astype(np.float64),
        w=best.params["w"].cpu().numpy(),
        b=best.params["b"].cpu().double().numpy(),
        best_epoch=best.epoch.cpu().numpy(),
        loss={},
        r={},
        p={},
        split_ids=split.ids(body_ids) if body_ids is not None else {},
        config=config,
        seed=seed,
        weights_sha256=weights_sha256,
        map_shape=(f, h, w),
        extra=(
            {"ridge_start": ridge_start.ridge.tolist(), "ridge_start_loo": ridge_start.loo.tolist()}
            if ridge_start is not None
            else {}
        ),
    )
    for name in ("train", "val", "test"):
        rows = getattr(split, name)
        pred = fitted.predict(maps[rows])
        rec = targets[rows]
        fitted.loss[name] = np.nanmean((pred - rec) ** 2, axis=0)
        rp = [pearson(pred[:, j], rec[:, j]) for j in range(c)]
        fitted.r[name] = np.array([v[0] for v in rp])
        fitted.p[name] = np.array([v[1] for v in rp])
    return fitted
