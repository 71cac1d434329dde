"""Image helpers the loop uses on any stimulus, the lab's or the procedural ones: PNG bytes,
the background colour, the foreground and sec. 4's silhouette augmentation. ``[H, W, 3]``
uint8 arrays in; the drawing of the procedural stimuli is ``stimuli``'s."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode_png(image: np.ndarray) -> bytes:
    """Deterministic PNG bytes of a ``[H, W, 3]`` uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def border_color(image: np.ndarray) -> tuple[int, int, int]:
    """The background colour of a stimulus: the median of its outermost pixels."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return tuple(int(v) for v in np.median(border, axis=0))  # type: ignore[return-value]


def foreground_mask(
    image: np.ndarray, background: tuple[int, int, int] | None = None, tolerance: int = 6
) -> np.ndarray:
    """``[H, W]`` bool: pixels that differ from the background by more than ``tolerance``.

    ``background`` defaults to the image's border colour, so the lab's own stimuli work too.
    """
    bg = border_color(image) if background is None else background
    diff = np.abs(image.astype(np.int16) - np.array(bg, dtype=np.int16))
    return diff.max(axis=-1) > tolerance


def silhouette(
    image: np.ndarray, background: tuple[int, int, int] | None = None, dark: int = 40
) -> np.ndarray:
    """The training-set augmentation of sec. 4: the foreground as a flat dark shape on the
    same gray background. ``[H, W, 3]`` uint8 in, same shape out."""
    bg = border_color(image) if background is None else background
    out = np.empty_like(image)
    out[...] = np.array(bg, dtype=np.uint8)
    out[foreground_mask(image, bg)] = dark
    return out
