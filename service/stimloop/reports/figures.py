"""Figures (matplotlib, PNG): saliency pairs as in the paper's Fig. 4, grids of them, the
sanity checks' cascade strip, and the report's Fig. 3a (prediction and stability per channel),
Fig. 3b (responses to the visualised images) and phase three's retained responses."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from stimloop_contract.result_tables import categories

if TYPE_CHECKING:  # the API draws reports and stays torch-free
    from stimloop.science.sanity import SanityResult


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


def _draw_pair(axes, panel: PairPanel, vmax: float, fontsize: float = 8) -> None:
    for ax, image, saliency, label in (
        (axes[0], panel.object_image, panel.display_out, f"x_out: {panel.object_id}"),
        (axes[1], panel.body_image, panel.display_in, f"x_in: {panel.body_id}"),
    ):
        _overlay(ax, image, saliency, vmax)
        ax.set_title(label, fontsize=fontsize)
        ax.set_xticks([])
        ax.set_yticks([])


def _title(panel: PairPanel) -> str:
    return (
        f"{panel.channel}: shared features s = {panel.s:.3f}; map norms "
        f"{panel.norm_out:.3f} (x_out), {panel.norm_in:.3f} (x_in), each <= s"
    )


CAPTION = (
    "Colour: |I(x)|, where each image drives the features the channel weights and the other "
    "image shares (eq. 6); one scale for all maps, transparent where zero."
)


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _vmax(panels: Sequence[PairPanel]) -> float:
    peak = max((float(max(p.display_out.max(), p.display_in.max())) for p in panels), default=0.0)
    return peak if peak > 0 else 1.0


def _colour_scale(fig, axes, vmax: float) -> None:
    """The maps' colour bar: |I(x)| from 0 to ``vmax``."""
    mappable = plt.cm.ScalarMappable(
        norm=matplotlib.colors.Normalize(0.0, vmax), cmap=plt.get_cmap("inferno")
    )
    bar = fig.colorbar(mappable, ax=axes, fraction=0.025, pad=0.02)
    bar.set_label("|I(x)| (eq. 6)", fontsize=8)
    bar.ax.tick_params(labelsize=7)


def pair_figure(panel: PairPanel) -> bytes:
    """The object on the left, the body on the right, both maps on one colour scale."""
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.4), layout="constrained")
    vmax = _vmax([panel])
    _draw_pair(axes, panel, vmax)
    _colour_scale(fig, axes, vmax)
    fig.suptitle(_title(panel), fontsize=9)
    return png(fig)


def grid_figure(panels: Sequence[PairPanel], columns: int = 2) -> bytes:
    """Several channels' pairs (Fig. 4/5), two pairs to a row so that a map stays readable in
    a 900 px window, one shared colour scale (with its bar) so intensities compare, and a
    caption in words."""
    return png(grid_figure_figure(panels, columns))


def grid_figure_figure(panels: Sequence[PairPanel], columns: int = 2):
    if not panels:
        raise ValueError("a grid figure needs at least one saliency result")
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(
        rows,
        2 * columns,
        figsize=(5.4 * columns + 0.8, 3.3 * rows + 0.5),
        squeeze=False,
        layout="constrained",
    )
    vmax = _vmax(panels)
    for k in range(rows * columns):
        pair = axes[k // columns, 2 * (k % columns) : 2 * (k % columns) + 2]
        if k < len(panels):
            p = panels[k]
            _draw_pair(pair, p, vmax)
            pair[0].set_xlabel(f"{p.channel}: s = {p.s:.3f} (shared features)", fontsize=8)
            pair[1].set_xlabel(f"|I|: {p.norm_out:.3f} (x_out), {p.norm_in:.3f} (x_in)", fontsize=8)
        else:
            for ax in pair:
                ax.axis("off")
    _colour_scale(fig, axes, vmax)
    fig.supxlabel(CAPTION, fontsize=8)
    return fig


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
    return png(fig)


def cascade_figure(
    result: SanityResult, image_out: np.ndarray, image_in: np.ndarray, channel: str
) -> bytes:
    """The sanity checks as Adebayo et al. draw them: per image (rows: x_out, x_in) the image,
    the original ``|map|`` and the map after each cascade step (the readout, then the blocks
    from the top down) and after the refit on permuted labels; each map scaled to its own
    maximum, titled with its similarity to the original: the Spearman r of ``|map|`` (what the
    strip shows) and of the signed map, or the verdict's other metric."""
    names_ = result.statistics
    steps = [*result.model_steps, *([result.data_step] if result.data_step else [])]
    names = ["original", *(s.name for s in steps)]
    fig, axes = plt.subplots(
        2, len(names) + 1, figsize=(1.35 * (len(names) + 1), 3.2), squeeze=False
    )
    for row, (image, side) in enumerate(((image_out, "out"), (image_in, "in"))):
        axes[row, 0].imshow(image)
        axes[row, 0].set_title("x_out (object)" if side == "out" else "x_in (body)", fontsize=7)
        for col, name in enumerate(names, start=1):
            shown = result.maps[name][row]
            axes[row, col].imshow(shown, cmap="inferno", vmin=0, vmax=float(shown.max()) or 1.0)
            if name == "original":
                label = "original" if row == 0 else ""
            else:
                step = steps[col - 2]
                sim = step.out if side == "out" else step.in_
                value = "/".join(f"{getattr(sim, n):.2f}" for n in names_)
                label = f"{name}\n{value}" if row == 0 else value
            axes[row, col].set_title(label, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    verdict = f"model randomisation {result.model_verdict}" + (
        ""
        if result.data_passed is None
        else f", data randomisation {'passed' if result.data_passed else 'FAILED'}"
    )
    fig.suptitle(
        f"{channel}, {result.method}: {' / '.join(names_)} similarity to the original under "
        f"each map (passes below {result.config.max_similarity:g}); {verdict}",
        fontsize=8,
    )
    fig.tight_layout()
    return png(fig)


# ------------------------------------------------------------------ the report's


def critical_r(n: int, alpha: float = 0.05) -> float:
    """The smallest |r| significant at ``alpha`` (two-sided) with ``n`` pairs, under rho = 0."""
    if n < 3:
        return float("nan")
    from scipy import stats  # here: the pair figures need no scipy

    t = stats.t.ppf(1 - alpha / 2, n - 2)
    return float(t / np.sqrt(n - 2 + t**2))


NORMALISED_CAP = 2.0  # Fig. 3a's axis ends here; larger normalised r sit on the edge


def fig3a_figure(analysis: dict[str, Any]) -> Figure:
    """Fig. 3a: per channel the prediction r on held-out preferred images and on each
    category's phase-two picks (filled), normalised by the noise ceiling (open), and the
    test/retest r; each series' mean and p = 0.05 line in its colour, the stability criterion
    and r = 0 as reference lines, the legend beside the plot."""
    channels = analysis["channels"]
    names = [c["channel"] for c in channels]
    cats = categories(analysis)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.5, 0.45 * len(names) + 3.5), 3.6))
    colors = iter(["tab:orange", "tab:green", "tab:purple", "tab:pink", "tab:olive"])
    series = [
        (
            f"held-out {cats['preferred']}",
            "tab:blue",
            [c["generalisation_preferred"] for c in channels],
        ),
        *(
            (other, next(colors, "tab:gray"), [c["generalisation"].get(other) for c in channels])
            for other in [*cats["others"], *cats["preferred_candidates"]]
            if any(c["generalisation"].get(other) for c in channels)
        ),
        ("test/retest", "tab:brown", [c["stability"] for c in channels]),
    ]
    shown = [0.0]
    for label, color, tests in series:
        r = np.array([t["r"] if t and t["r"] is not None else np.nan for t in tests], float)
        ax.scatter(x, r, color=color, label=f"r, {label}", s=22, zorder=3)
        shown += list(r[np.isfinite(r)])
        if np.isfinite(r).any():
            mean = float(np.nanmean(r))
            ax.axhline(mean, color=color, ls="--", lw=1, label=f"mean r, {label} ({mean:.2f})")
        ns = [t["n"] for t in tests if t]
        if ns and label != "test/retest":
            n = int(np.median(ns))
            ax.axhline(
                critical_r(n), color=color, ls=":", lw=1.2, label=f"p = 0.05, {label} (n = {n})"
            )
            normalised = np.array(
                [
                    t["r_normalised"] if t and t["r_normalised"] is not None else np.nan
                    for t in tests
                ],
                float,
            )
            ax.scatter(
                x,
                np.where(normalised > NORMALISED_CAP, np.nan, normalised),
                facecolors="none",
                edgecolors=color,
                s=34,
                zorder=3,
                label=f"r / sqrt(noise ceiling), {label}",
            )
            over = normalised > NORMALISED_CAP  # a ceiling near 0: shown at the cap, marked
            if over.any():
                ax.scatter(
                    x[over],
                    np.full(over.sum(), NORMALISED_CAP),
                    marker="^",
                    color=color,
                    s=34,
                    zorder=3,
                    label=f"normalised r above {NORMALISED_CAP:g}, {label}",
                )
            finite = normalised[np.isfinite(normalised)]
            shown += list(np.minimum(finite, NORMALISED_CAP))
    stable = float(analysis.get("config", {}).get("min_stability", 0.6))
    ax.axhline(
        stable, color="tab:brown", ls="-.", lw=1.2, label=f"stable: test/retest r > {stable:g}"
    )
    ax.axhline(0.0, color="0.4", lw=0.8, label="r = 0")
    ax.set_xticks(x, names, rotation=90, fontsize=8)
    ax.set_ylabel("Pearson r")
    low = max(-1.05, min(min(shown), stable) - 0.1)
    ax.set_ylim(low, max(1.0, max(shown)) + 0.05)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title("Predicted vs recorded responses, and test/retest stability", fontsize=10)
    fig.tight_layout()
    return fig


def fig3b_figure(rows: list[dict[str, Any]], preferred: str) -> Figure:
    """Fig. 3b: the visualised x_out's recorded response against its category's and the
    preferred set's responses (mean with +-1 SD over images), on an axis from zero."""
    fig, ax = plt.subplots(figsize=(max(5.5, 0.6 * len(rows) + 3.0), 3.2))
    x = np.arange(len(rows))
    ax.errorbar(
        x - 0.12,
        [r["mean_other"] for r in rows],
        yerr=[r.get("sd_other", 0.0) for r in rows],
        fmt="s",
        color="tab:orange",
        capsize=3,
        label="its category: mean +- SD over images",
    )
    ax.errorbar(
        x + 0.12,
        [r["mean_preferred"] for r in rows],
        yerr=[r.get("sd_preferred", 0.0) for r in rows],
        fmt="o",
        color="tab:blue",
        capsize=3,
        label=f"{preferred}: mean +- SD over images",
    )
    ax.scatter(
        x, [r["x_out_response"] for r in rows], color="tab:red", marker="*", s=90, zorder=3,
        label="the visualised image (x_out)",
    )  # fmt: skip
    values = [
        v
        for r in rows
        for v in (
            r["x_out_response"],
            r["mean_other"] - r.get("sd_other", 0.0),
            r["mean_preferred"] - r.get("sd_preferred", 0.0),
        )
    ]
    ax.axhline(0.0, color="0.4", lw=0.8, label="no response (0 spikes/s)")
    ax.set_ylim(bottom=min(0.0, min(values) * 1.1))
    ax.set_xticks(x, [r["channel"] for r in rows], rotation=90, fontsize=8)
    ax.set_ylabel("net response (spikes/s)")
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title("Responses to the visualised images (phase two)", fontsize=10)
    fig.tight_layout()
    return fig


def retained_figure(rows: list[dict[str, Any]]) -> Figure:
    """Per channel, the recorded retained response of each fragment kind (bars, +-1 SD over
    its fragments) beside the readout's expectation (black marks); the intact image at 1 and
    no response at 0 as reference lines; the legend beside the plot."""
    kinds = [k for k in ("salient", "complement", "random") if f"retained_{k}" in rows[0]]
    fig, ax = plt.subplots(figsize=(max(6.5, 1.5 * len(rows) + 3.0), 3.4))
    x = np.arange(len(rows))
    width = 0.8 / max(len(kinds), 1)
    colors = {"salient": "tab:red", "complement": "tab:blue", "random": "tab:gray"}

    def values(key: str) -> list[float]:
        return [np.nan if r.get(key) is None else r[key] for r in rows]

    for n, kind in enumerate(kinds):
        pos = x + (n - (len(kinds) - 1) / 2) * width
        ax.bar(
            pos,
            values(f"retained_{kind}"),
            width,
            yerr=np.nan_to_num(values(f"retained_sd_{kind}")),
            capsize=3,
            color=colors[kind],
            label=f"{kind}: recorded, mean +- SD over fragments",
        )
        ax.scatter(
            pos,
            values(f"predicted_{kind}"),
            color="black",
            marker="_",
            s=140,
            zorder=3,
            label="predicted by the readout" if n == 0 else None,
        )
    ax.axhline(1.0, color="black", lw=0.8, ls="--", label="the intact image (1)")
    ax.axhline(0.0, color="0.4", lw=0.8, label="no response (0)")
    ax.set_xticks(x, [r["channel"] for r in rows], rotation=90, fontsize=8)
    ax.set_ylabel("retained response R(fragment) / R(intact)")
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title("Phase three: how much of the response each fragment keeps", fontsize=10)
    fig.tight_layout()
    return fig


def calibration_figure(scoring: dict[str, Any]) -> Figure:
    """The registered predictions against phase two: per channel (a panel each, at most 16)
    each picked image's recorded mean (+- its standard error) against its prediction, above it
    the interval the scoring used (widened by the sem; about the calibration line where the
    category's intervals were calibrated) as a grey bar, inside filled, outside open (the
    scoring's verdicts); the identity line and the least-squares line of recorded on predicted."""
    channels = [c for c in scoring["channels"] if c["points"]][:16]
    columns = min(4, max(1, len(channels)))
    rows = max(1, -(-len(channels) // columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(2.6 * columns, 2.5 * rows), squeeze=False, sharex=False
    )
    for ax in axes.flat[len(channels) :]:
        ax.axis("off")
    for ax, channel in zip(axes.flat, channels):
        pts = channel["points"]
        pred = np.array([p["predicted"] for p in pts], float)
        rec = np.array([np.nan if p["recorded"] is None else p["recorded"] for p in pts], float)
        mid = np.array([p.get("centre", p["predicted"]) for p in pts], float)
        half = np.array([np.nan if p["half_width"] is None else p["half_width"] for p in pts])
        sem = np.nan_to_num(np.array([p["sem"] or 0.0 for p in pts], float))
        inside = np.array([p["inside"] for p in pts], bool)  # the scoring's verdict
        ax.vlines(pred, mid - half, mid + half, colors="0.8", lw=3, label="interval")
        ax.errorbar(pred, rec, yerr=sem, fmt="none", ecolor="0.5", lw=0.8)
        ax.scatter(pred[inside], rec[inside], s=16, color="tab:blue", label="inside")
        ax.scatter(
            pred[~inside],
            rec[~inside],
            s=16,
            facecolors="none",
            edgecolors="tab:red",
            label="outside",
        )
        finite = np.concatenate(
            [
                pred,
                rec[np.isfinite(rec)],
                (mid + half)[np.isfinite(half)],
                (mid - half)[np.isfinite(half)],
            ]
        )
        lo, hi = float(finite.min()), float(finite.max())
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.3", lw=0.8, ls=":")
        line = channel.get("calibration")
        if line and line.get("slope") is not None:
            xs = np.array([lo - pad, hi + pad])
            ax.plot(xs, line["slope"] * xs + line["intercept"], color="tab:orange", lw=1)
        covered = channel.get("coverage")
        shown = "–" if covered is None else f"{covered:.0%}"
        ax.set_title(f"{channel['channel']}: {shown} inside", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].set_xlabel("predicted (spikes/s)", fontsize=7)
    axes[0, 0].set_ylabel("recorded (spikes/s)", fontsize=7)
    axes[0, 0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    return fig
