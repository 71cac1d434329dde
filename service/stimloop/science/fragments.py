"""Phase three's stimuli: fragments of a visualised pair, cut by the saliency map (sec. 6).

The paper closes with its next step: "future work could test these visualizations by
presenting highlighted fragments to the subject in a closed-loop fashion". For one channel
and one image of a visualised pair, with ``D`` the eq. (6) display map (``|I(x)|`` over the
colour channels) resized to the image and ``F`` the image's foreground (pixels that differ
from the gray background), every fragment keeps the same number of foreground pixels,
``k = round(q |F|)``, on the background:

* ``salient``: the ``k`` foreground pixels where ``D`` is largest;
* ``complement``: the ``k`` foreground pixels where ``D`` is smallest;
* ``random``: one contiguous region of ``k`` foreground pixels around a seeded random point
  (grown by distance from the point through connected foreground pixels);
* ``intact``: the image itself (not made here: it is the source).

The kept region's edge is feathered (Gaussian, ``feather`` px) inside the foreground, so no
sharp artificial contour adds a feature the image did not have. Ties in ``D`` are broken by
raster order, so a fragment is a pure function of (image, map, q, seed).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from stimloop_contract.configs import KINDS, Feather, Fraction, FragmentKind, check_fields

from stimloop.science.images import border_color, foreground_mask
from stimloop.science.seeds import channel_rng


@dataclass(frozen=True)
class FragmentConfig:
    """``q``: the kept fraction of the foreground; ``feather``: the edge's Gaussian sigma in
    image pixels (0: a hard edge). Bounds as ``configs.PhaseThreeConfig``'s."""

    q: Fraction = 0.25
    feather: Feather = 2.0

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class Fragment:
    """One phase-three stimulus. ``image``: ``[H, W, 3]`` uint8; ``mask``: ``[H, W]`` bool, the
    kept pixels (``area`` of them, all in the foreground); ``alpha``: ``[H, W]`` the feathered
    mask the image was composited with."""

    id: str
    source: str
    channel: str
    kind: FragmentKind
    q: float
    area: int
    foreground_area: int
    seed: int  # with the channel and ``stream``, derives the random region's draws
    stream: str
    image: np.ndarray
    mask: np.ndarray
    alpha: np.ndarray


def fragment_id(source: str, channel: str, kind: str, q: float) -> str:
    """An id that names the fragment's source image, channel, kind and q."""
    return f"{source}__{channel}__{kind}__q{q:g}"


def resize_map(display: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A ``[h, w]`` map bilinearly resized to ``shape`` (the image's ``[H, W]``): the maps are
    taken at the backbone's input size, the fragments are cut at the stimulus' own size."""
    display = np.asarray(display, dtype=np.float32)
    if display.shape == tuple(shape):
        return display
    image = Image.fromarray(display, mode="F").resize(
        (shape[1], shape[0]), Image.Resampling.BILINEAR
    )
    return np.asarray(image, dtype=np.float32)


def kept_pixels(foreground: np.ndarray, q: float) -> int:
    """``k = round(q |F|)``, at least one pixel; ``ValueError`` for an empty foreground."""
    total = int(foreground.sum())
    if total == 0:
        raise ValueError("the image has no foreground (it is all background)")
    return max(1, round(q * total))


def ranked_mask(display: np.ndarray, foreground: np.ndarray, k: int, most: bool) -> np.ndarray:
    """The ``k`` foreground pixels with the largest (``most``) or smallest ``display``; ties
    by raster order. ``[H, W]`` bool."""
    index = np.flatnonzero(foreground.ravel())
    values = display.ravel()[index].astype(np.float64)
    order = np.argsort(-values if most else values, kind="stable")
    mask = np.zeros(foreground.size, dtype=bool)
    mask[index[order[:k]]] = True
    return mask.reshape(foreground.shape)


def contiguous_mask(foreground: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """One 4-connected region of exactly ``k`` foreground pixels: from a random foreground
    point (drawn among the pieces of the foreground that hold ``k`` pixels), the ``k``
    connected foreground pixels nearest to it, each added next to one already in."""
    labels, _ = ndimage.label(foreground)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    eligible = np.flatnonzero((labels.ravel() > 0) & (sizes[labels.ravel()] >= k))
    if len(eligible) == 0:
        raise ValueError(
            f"no connected piece of the foreground holds {k} pixels (the largest has "
            f"{int(sizes.max())}); use a smaller q"
        )
    h, w = foreground.shape
    start = int(eligible[rng.integers(len(eligible))])
    sy, sx = divmod(start, w)
    mask = np.zeros((h, w), dtype=bool)
    queued = np.zeros((h, w), dtype=bool)
    heap = [(0, start)]
    queued[sy, sx] = True
    taken = 0
    while heap and taken < k:
        _, pixel = heapq.heappop(heap)
        y, x = divmod(pixel, w)
        mask[y, x] = True
        taken += 1
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= ny < h and 0 <= nx < w and foreground[ny, nx] and not queued[ny, nx]:
                queued[ny, nx] = True
                heapq.heappush(heap, ((ny - sy) ** 2 + (nx - sx) ** 2, ny * w + nx))
    return mask


def feathered(mask: np.ndarray, foreground: np.ndarray, sigma: float) -> np.ndarray:
    """The mask's edge softened by a Gaussian of ``sigma`` px, kept inside the foreground:
    ``[H, W]`` float in [0, 1] (the mask itself when ``sigma`` is 0)."""
    alpha = mask.astype(np.float64)
    if sigma > 0:
        alpha = ndimage.gaussian_filter(alpha, sigma, mode="constant")
    return np.clip(alpha, 0.0, 1.0) * foreground


def composite(image: np.ndarray, alpha: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """``alpha * image + (1 - alpha) * background``, ``[H, W, 3]`` uint8."""
    out = alpha[..., None] * image.astype(np.float64) + (1 - alpha[..., None]) * np.array(
        background, dtype=np.float64
    )
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def make_fragments(
    image: np.ndarray,
    display: np.ndarray,
    source: str,
    channel: str,
    config: FragmentConfig = FragmentConfig(),
    kinds: tuple[str, ...] = KINDS,
    seed: int = 0,
) -> list[Fragment]:
    """The fragments of one image for one channel (see the module's docstring).

    ``image``: ``[H, W, 3]`` uint8 on a uniform background; ``display``: ``[h, w]`` eq. (6)
    display map of this image for this channel. The random region's point comes from the
    stream (seed, channel, source and q), so it is reproduced from the recorded seed.
    """
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown fragment kinds {unknown}; choose from {list(KINDS)}")
    image = np.asarray(image, dtype=np.uint8)
    background = border_color(image)
    foreground = foreground_mask(image, background)
    k = kept_pixels(foreground, config.q)
    saliency = resize_map(display, foreground.shape)
    purpose = f"fragment:{source}:{config.q:g}"
    stream = channel_rng(seed, channel, purpose)
    out = []
    for kind in kinds:
        if kind == "salient":
            mask = ranked_mask(saliency, foreground, k, most=True)
        elif kind == "complement":
            mask = ranked_mask(saliency, foreground, k, most=False)
        else:
            mask = contiguous_mask(foreground, k, stream)
        alpha = feathered(mask, foreground, config.feather)
        out.append(
            Fragment(
                fragment_id(source, channel, kind, config.q),
                source,
                channel,
                kind,  # type: ignore[arg-type]
                config.q,
                int(mask.sum()),
                int(foreground.sum()),
                int(seed),
                purpose,
                composite(image, alpha, background),
                mask,
                alpha,
            )
        )
    return out
