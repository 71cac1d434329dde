"""Figures (matplotlib, PNG): saliency pairs as in the paper's Fig. 4, and grids of them."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


@dataclass(frozen=True)
class PairPanel:
    """What one Fig. 4 panel shows: both images ``[H, W, 3]`` (floats in [0, 1] or uint8), their
    2-D saliency maps ``[H, W]``, and the numbers for the title."""

    channel: str
    object_id: str
    body_id: str
    object_image: np.ndarray
    body_image: np.ndarray
    display_out: np.ndarray
    display_in: np.ndarray
    s: float
    norm_out: float
    norm_in: float


def _overlay(ax, image: np.ndarray, saliency: np.ndarray, vmax: float) -> None:
    """The image, and over it the map as colour whose opacity grows with saliency (zero
    saliency leaves the image as it is), stretched to the image's size."""
    ax.imshow(image)
    level = np.clip(np.asarray(saliency, dtype=float) / vmax, 0.0, 1.0)
    overlay = plt.get_cmap("inferno")(level)
    overlay[..., 3] = 0.85 * level
    ax.imshow(overlay, extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))


def _draw_pair(axes, panel: PairPanel, vmax: float) -> None:
    for ax, image, saliency, label in (
        (axes[0], panel.object_image, panel.display_out, panel.object_id),
        (axes[1], panel.body_image, panel.display_in, panel.body_id),
    ):
        _overlay(ax, image, saliency, vmax)
        ax.set_title(label, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])


def _title(panel: PairPanel) -> str:
    return (
        f"{panel.channel}: s = {panel.s:.3f}, |I(obj)| = {panel.norm_out:.3f}, "
        f"|I(body)| = {panel.norm_in:.3f}"
    )


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _vmax(panels: Sequence[PairPanel]) -> float:
    peak = max((float(max(p.display_out.max(), p.display_in.max())) for p in panels), default=0.0)
    return peak if peak > 0 else 1.0


def pair_figure(panel: PairPanel) -> bytes:
    """The object on the left, the body on the right, both maps on one colour scale."""
    fig, axes = plt.subplots(1, 2, figsize=(5.2, 2.9))
    _draw_pair(axes, panel, _vmax([panel]))
    fig.suptitle(_title(panel), fontsize=8)
    return _png(fig)


def grid_figure(panels: Sequence[PairPanel], columns: int = 3) -> bytes:
    """Several channels' pairs (Fig. 4/5), one shared colour scale so intensities compare."""
    if not panels:
        raise ValueError("a grid figure needs at least one saliency result")
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(4.4 * columns, 2.5 * rows), squeeze=False)
    vmax = _vmax(panels)
    for k in range(rows * columns):
        pair = axes[k // columns, 2 * (k % columns) : 2 * (k % columns) + 2]
        if k < len(panels):
            _draw_pair(pair, panels[k], vmax)
            pair[0].text(0, -0.25, _title(panels[k]), transform=pair[0].transAxes, fontsize=7)
        else:
            for ax in pair:
                ax.axis("off")
    fig.tight_layout()
    return _png(fig)


@dataclass(frozen=True)
class FragmentRow:
    """One row of the phase-three figure: a source image with its saliency map, then its
    fragments ``[(label, image [H, W, 3])]``."""

    title: str
    image: np.ndarray
    display: np.ndarray
    fragments: list[tuple[str, np.ndarray]]


def fragments_figure(rows: Sequence[FragmentRow]) -> bytes:
    """Each source beside its map and its fragments (salient, complement, random, ...)."""
    if not rows:
        raise ValueError("a fragment figure needs at least one row")
    width = 1 + max(len(r.fragments) for r in rows)
    fig, axes = plt.subplots(
        len(rows), width, figsize=(1.9 * width, 2.0 * len(rows)), squeeze=False
    )
    for ax_row, row in zip(axes, rows):
        _overlay(ax_row[0], row.image, row.display, float(row.display.max()) or 1.0)
        ax_row[0].set_title(row.title, fontsize=7)
        for ax, (label, image) in zip(ax_row[1:], row.fragments):
            ax.imshow(image)
            ax.set_title(label, fontsize=7)
        for ax in ax_row:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in ax_row[1 + len(row.fragments) :]:
            ax.axis("off")
    fig.tight_layout()
    return _png(fig)
