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


def test_fig3a_marks_normalised_r_beyond_its_axis(monkeypatch):
    """A noise ceiling near 0 makes r / sqrt(ceiling) huge: the point sits on the axis' edge,
    marked and named in the legend, instead of vanishing off the plot."""
    import matplotlib.pyplot as plt
    from stimloop.reports import report

    figures = []
    monkeypatch.setattr(report, "_png", lambda fig: figures.append(fig) or "")

    def channel(name: str, normalised: float) -> dict:
        r = {"r": 0.7, "p": 0.001, "n": 25, "passed": True, "r_normalised": normalised}
        return {
            "channel": name,
            "generalisation_preferred": r,
            "generalisation": {"object": {**r, "r_normalised": 0.8}},
            "stability": {"r": 0.8, "p": 0.001, "n": 75, "passed": True},
        }

    categories = {"preferred": "body", "preferred_candidates": [], "others": ["object"]}
    report.fig3a(
        {"categories": categories, "channels": [channel("ch01", 8.5), channel("ch02", 0.9)]}
    )
    ax = figures[0].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "held-out body, normalised r above 2" in labels
    assert "object, normalised r above 2" not in labels
    assert ax.get_ylim()[1] == pytest.approx(report.NORMALISED_CAP + 0.05)
    plt.close(figures[0])
