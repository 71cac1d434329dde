"""Saliency figures render to PNGs of the expected layout."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from stimloop.reports.figures import PairPanel, grid_figure, pair_figure


def panel(channel: str, s: float) -> PairPanel:
    rng = np.random.default_rng(0)
    image = rng.random((224, 224, 3))
    return PairPanel(
        channel,
        "object_0001",
        "body_0002",
        image,
        image,
        rng.random((224, 224)) * s,
        rng.random((224, 224)) * s,
        s,
        s / 2,
        s / 3,
    )


def test_pair_and_grid_figures_are_pngs():
    single = Image.open(io.BytesIO(pair_figure(panel("ch01", 0.8))))
    assert single.format == "PNG" and single.width > single.height
    grid = Image.open(io.BytesIO(grid_figure([panel(f"ch{i}", 0.1 * i) for i in range(5)])))
    assert grid.format == "PNG" and grid.width > single.width


def test_zero_maps_still_render_and_empty_grid_is_refused():
    zero = panel("ch0", 0.0)
    assert pair_figure(zero)[:4] == b"\x89PNG"
    with pytest.raises(ValueError):
        grid_figure([])
