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


def test_fig3a_marks_normalised_r_beyond_its_axis():
    """A noise ceiling near 0 makes r / sqrt(ceiling) huge: the point sits on the axis' edge,
    marked and named in the legend, instead of vanishing off the plot."""
    import matplotlib.pyplot as plt
    from stimloop.reports import figures as fg

    def channel(name: str, normalised: float) -> dict:
        r = {"r": 0.7, "p": 0.001, "n": 25, "passed": True, "r_normalised": normalised}
        return {
            "channel": name,
            "generalisation_preferred": r,
            "generalisation": {"object": {**r, "r_normalised": 0.8}},
            "stability": {"r": 0.8, "p": 0.001, "n": 75, "passed": True},
        }

    categories = {"preferred": "body", "preferred_candidates": [], "others": ["object"]}
    figure = fg.fig3a_figure(
        {"categories": categories, "channels": [channel("ch01", 8.5), channel("ch02", 0.9)]}
    )
    ax = figure.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "normalised r above 2, held-out body" in labels
    assert "normalised r above 2, object" not in labels
    assert ax.get_ylim()[1] == pytest.approx(fg.NORMALISED_CAP + 0.05)
    plt.close(figure)


# ------------------------------------------------------------------ the report's figures


def correlation(r: float, n: int = 25, **extra) -> dict:
    return {"r": r, "p": 0.01, "n": n, "passed": r > 0, **extra}


def analysis(n_channels: int = 4) -> dict:
    """An analysis as the API stores it: bodies preferred, objects and control bodies."""
    rng = np.random.default_rng(1)
    channels = []
    for k in range(n_channels):
        gen = correlation(float(rng.uniform(0.2, 0.7)), noise_ceiling=0.5, r_normalised=0.8)
        channels.append(
            {
                "channel": f"ch{k:02d}",
                "stability": correlation(float(rng.uniform(0.5, 0.9)), 12),
                "generalisation_preferred": gen,
                "generalisation": {"object": gen, "control_body": gen},
            }
        )
    return {
        "categories": {
            "preferred": "body",
            "preferred_candidates": ["control_body"],
            "others": ["object"],
        },
        "channels": channels,
        "config": {"min_stability": 0.6},
    }


def legend_outside(fig) -> tuple[list[str], bool]:
    """The legend's texts, and whether it lies right of the plot (not over the data)."""
    (ax,) = [a for a in fig.axes if a.get_legend() is not None]
    legend = ax.get_legend()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    outside = legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1
    return [t.get_text() for t in legend.get_texts()], outside


def horizontal_lines(ax) -> set[float]:
    return {
        round(float(line.get_ydata()[0]), 3)
        for line in ax.get_lines()
        if len(set(line.get_ydata())) == 1
    }


def test_fig3a_names_every_line_and_draws_the_papers_thresholds():
    from stimloop.reports.figures import critical_r, fig3a_figure

    fig = fig3a_figure(analysis())
    texts, outside = legend_outside(fig)
    assert outside
    assert "stable: test/retest r > 0.6" in texts and "r = 0" in texts
    assert any(t.startswith("p = 0.05, held-out body (n = 25)") for t in texts)
    assert any(t.startswith("mean r, object") for t in texts)
    assert any(t.startswith("r, control_body") for t in texts)  # control bodies predicted too
    ax = fig.axes[0]
    lines = horizontal_lines(ax)
    assert {0.6, 0.0, round(critical_r(25), 3)} <= lines
    low, high = ax.get_ylim()
    assert -0.2 < low < 0 and high <= 1.1  # where the data are, not -1 to 1.2


def test_fig3b_starts_rates_at_zero_and_shows_the_spread():
    from stimloop.reports.figures import fig3b_figure

    rows = [
        {"channel": "ch01", "x_out_response": 42.0, "mean_other": 35.0, "sd_other": 4.0,
         "mean_preferred": 50.0, "sd_preferred": 6.0},
        {"channel": "ch02", "x_out_response": 38.0, "mean_other": 31.0, "sd_other": 3.0,
         "mean_preferred": 47.0, "sd_preferred": 5.0},
    ]  # fmt: skip
    fig = fig3b_figure(rows, "body")
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == 0.0
    texts, outside = legend_outside(fig)
    assert outside and any("SD" in t for t in texts)
    assert len(ax.containers) == 2  # the two error-bar series


def test_the_retained_response_has_error_bars_and_a_legend_beside_it():
    from stimloop.reports.figures import retained_figure

    row = {"channel": "ch01"}
    for kind, value in (("salient", 0.8), ("complement", 0.4), ("random", 0.6)):
        row |= {f"retained_{kind}": value, f"retained_sd_{kind}": 0.1, f"predicted_{kind}": value}
    fig = retained_figure([row])
    texts, outside = legend_outside(fig)
    assert outside and "the intact image (1)" in texts and "predicted by the readout" in texts
    from matplotlib.container import BarContainer

    bars = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    assert len(bars) == 3 and all(b.errorbar is not None for b in bars)


def test_saliency_maps_are_readable_in_a_900_px_window_with_their_colour_scale():
    from stimloop.reports.figures import grid_figure_figure

    fig = grid_figure_figure([panel(f"ch{i}", 0.1 * (i + 1)) for i in range(5)])
    bars = [a for a in fig.axes if a.get_ylabel() == "|I(x)| (eq. 6)"]
    assert len(bars) == 1  # one shared colour scale
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    page = 900 - 2 * 32  # the report's body inside a 900 px window (2em margins)
    width = fig.get_window_extent(renderer).width
    maps = [a for a in fig.axes if a not in bars and a.images]
    assert maps
    for ax in maps:
        shown = ax.get_window_extent(renderer).width / width * min(page, width)
        assert shown >= 150, shown  # was about 110 px, unreadable
        assert ax.get_title() and ax.get_title().split(":")[0] in ("x_out", "x_in")
    assert "Colour: |I(x)|" in fig._supxlabel.get_text()
