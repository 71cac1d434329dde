"""The session report: one self-contained HTML page (figures inlined as PNG).

Fig. 3a (predicted vs recorded correlation per channel on held-out bodies and objects, with the
p = 0.05 line and the test/retest stability), Fig. 3b (responses to the visualised objects
against the mean object and body responses), the saliency grid (Fig. 4/5), the tables of
inclusion, stability and selectivity with their statistics, phase three (the fragments beside
their maps, retained response per kind with the tests), and the provenance (backbone, weights
sha256, seeds, versions) at the bottom.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from scipy import stats
from stimloop_contract.configs import Windows
from stimloop_contract.result_tables import (
    analysis_rows,
    categories,
    fit_metric_rows,
    phase_three_rows,
)

from stimloop.reports.figures import FragmentRow, PairPanel, fragments_figure, grid_figure
from stimloop.storage.session import SessionFiles
from stimloop.storage.store import Store


def critical_r(n: int, alpha: float = 0.05) -> float:
    """The smallest |r| significant at ``alpha`` (two-sided) with ``n`` pairs, under rho = 0."""
    if n < 3:
        return float("nan")
    t = stats.t.ppf(1 - alpha / 2, n - 2)
    return float(t / np.sqrt(n - 2 + t**2))


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _img(data: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


NORMALISED_CAP = 2.0  # Fig. 3a's axis ends here; larger normalised r sit on the edge


def fig3a(analysis: dict[str, Any]) -> str:
    return _png(fig3a_figure(analysis))


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


def fig3b(rows: list[dict[str, Any]], preferred: str) -> str:
    return _png(fig3b_figure(rows, preferred))


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


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "&ndash;"
        if isinstance(value, float):
            return f"{value:.3g}"
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(k))}</td>" for k, _ in columns) + "</tr>" for r in rows
    )
    return f"<div class=wide><table><tr>{head}</tr>{body}</table></div>"


def _means(
    columns: dict[str, np.ndarray], channel: str, ids: set[str] | None, windows: Windows
) -> dict[str, float]:
    """Per-stimulus mean net rate of one channel; counts become rates with the session's own
    windows (A.2: response minus baseline, each divided by its length)."""
    out: dict[str, list[float]] = {}
    response_s = windows.response[1] - windows.response[0]
    baseline_s = windows.baseline[1] - windows.baseline[0]
    values = (
        columns["rate"]
        if "rate" in columns
        else columns["response_count"] / response_s - columns["baseline_count"] / baseline_s
    )
    for s, c, v in zip(columns["stimulus"], columns["channel"], values):
        if c == channel and (ids is None or s in ids):
            out.setdefault(str(s), []).append(float(v))
    return {s: float(np.mean(v)) for s, v in out.items()}


def _sd(values: dict[str, float]) -> float:
    """SD over images of their mean responses (ddof 1; 0 below two)."""
    v = list(values.values())
    return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def retained_figure(rows: list[dict[str, Any]]) -> str:
    return _png(retained_figure_figure(rows))


def retained_figure_figure(rows: list[dict[str, Any]]) -> Figure:
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


def phase_three_section(
    files: SessionFiles, preferred: str, images: dict[str, dict[str, Any]]
) -> list[str]:
    """The phase-three part of the report: each fragmented source beside its map and its
    fragments, and, after the recording, retained responses per kind with the tests."""
    if not files.has_phase_three_list():
        return []
    plan = files.phase_three_list()
    rows = []
    fragments = [e for e in plan["entries"] if e["kind"] != "intact"]
    first_q = min((e["q"] for e in fragments), default=None)
    seen: set[tuple[str, str]] = set()
    for e in fragments:
        key = (e["channels"][0], e["source"])
        if key in seen:
            continue
        seen.add(key)
        arrays = files.saliency_arrays(e["saliency_key"])
        display = arrays["display_in" if e["source_category"] == preferred else "display_out"]
        own = [f for f in fragments if (f["channels"][0], f["source"]) == key and f["q"] == first_q]
        rows.append(
            FragmentRow(
                f"{key[0]}: {key[1]}",
                images[e["source_category"]][e["source"]](),
                display,
                [
                    (
                        f"{f['kind']} (q {f['q']:g})",
                        read_image(files.phase_three_image(f["stimulus"])),
                    )
                    for f in own
                ],
            )
        )
    parts = [
        "<h2>Phase three: the highlighted fragments</h2>",
        f"<p>{len(fragments)} fragments of {len(seen)} visualised images (each kept "
        "fraction q of the foreground: salient = where the eq. 6 map is highest, complement "
        "= where it is lowest, random = one region at a seeded place), their intact sources "
        f"and {len(plan['stability_images'])} stability images, each shown "
        f"{plan['config']['repeats']} times.</p>",
    ]
    if rows:
        figure = base64.b64encode(fragments_figure(rows)).decode()
        parts.append(_img(figure, "Phase-three fragments"))
    if not files.has_phase_three_analysis():
        parts.append("<p>No phase-three recording yet.</p>")
        return parts
    rows3 = phase_three_rows(files.phase_three_analysis())
    if rows3:
        parts.append(_img(retained_figure(rows3), "Retained response per fragment kind"))
        columns = [("channel", "channel")]
        for kind in ("salient", "complement", "random"):
            if f"retained_{kind}" in rows3[0]:
                columns += [
                    (f"retained_{kind}", f"retained {kind}"),
                    (f"predicted_{kind}", "predicted"),
                ]
        for other in ("complement", "random"):
            if f"vs_{other}_test" in rows3[0]:
                columns += [
                    (f"vs_{other}_test", f"salient vs {other}: test"),
                    (f"vs_{other}_statistic", "statistic"),
                    (f"vs_{other}_p", "p (two-sided)"),
                    (f"vs_{other}_salient_above", "salient above"),
                ]
        columns += [
            ("r_predicted", "r predicted vs recorded"),
            ("p_predicted", "p"),
            ("stability_r_phase1", "stability r (phase 1)"),
            ("stability_r_phase2", "stability r (phase 2)"),
        ]
        parts.append(_table(rows3, columns))
    return parts


def _sanity_words(verdict: dict[str, Any] | None) -> str:
    if not verdict:
        return "not run"

    def word(ok: bool | None) -> str:
        return "not run" if ok is None else "passed" if ok else "FAILED"

    model = verdict.get("model_verdict") or word(verdict["model_passed"])
    return f"{model if verdict['model_passed'] else 'FAILED (' + model + ')'}, " + word(
        verdict["data_passed"]
    )


def sanity_section(files: SessionFiles, metas: list[dict[str, Any]]) -> list[str]:
    """The cascade strip of every checked saliency result, with what the checks mean."""
    checked = [m for m in metas if m.get("sanity")]
    if not checked:
        return []
    parts = [
        "<h3>Sanity checks of the maps (Adebayo et al. 2018)</h3>",
        "<p>A map that barely changes when the model is randomised shows the method, not the "
        "neuron. Each strip shows a pair's maps as computed, then after re-drawing the "
        "readout's weights and re-initialising the backbone block by block from the top "
        "(model randomisation), and after refitting the readout on phase one with the "
        "stimulus labels permuted (data randomisation); under each map its similarity to "
        "the original. A check passes when its most randomised maps fall below the "
        "threshold on both images. The verdict judges the signed maps by default: their "
        "magnitude keeps the readout location's receptive field through the cascade, so a "
        "bright region says where the readout looks more than what it looks for.</p>",
    ]
    for meta in checked:
        path = files.sanity_file(meta["key"], "png")
        if path is not None:
            strip = base64.b64encode(path.read_bytes()).decode()
            parts.append(_img(strip, f"Sanity checks of {meta['channel']}"))
    return parts


FIT_METRICS_TEXT = (
    "<p>Per channel and predicted image set, with percentile bootstrap {conf:.0%} intervals "
    "over stimuli ({n_boot} resamplings, seeded). <i>r</i>: Pearson r of predicted and "
    "recorded means. <i>Noise ceiling</i>: the Spearman-Brown corrected split-half r of the "
    "recorded means (A.2), the r<sup>2</sup> a perfect model could reach. "
    "<i>r<sup>2</sup>/ceiling</i>: max(r, 0)<sup>2</sup> / ceiling, clipped to [0, 1] "
    "(unclipped in the CSV). <i>Oracle r</i>: each trial against the mean of its "
    "stimulus's other repeats. <i>FEV</i> = 1 &minus; s<sup>2</sup>/Var[y] and "
    "<i>FEVE</i> = 1 &minus; (MSE &minus; s<sup>2</sup>)/(Var[y] &minus; s<sup>2</sup>), "
    "with s<sup>2</sup> the mean variance across repeats, Var[y] the variance of all "
    "trials and MSE the mean squared error of the prediction over trials.</p>"
)


def fit_metrics_section(analysis: dict[str, Any]) -> list[str]:
    """The fit metrics table (values with their intervals) and the fraction of oracle."""
    rows = fit_metric_rows(analysis)
    if not rows:
        return []
    config = analysis.get("config", {})

    def interval(row: dict[str, Any], key: str) -> str:
        value, low, high = row[key], row[f"{key}_low"], row[f"{key}_high"]
        if value is None or not np.isfinite(value):
            return "&ndash;"
        if low is None or not np.isfinite(low):
            return f"{value:.2f}"
        return f"{value:.2f} [{low:.2f}, {high:.2f}]"

    head = [
        "channel",
        "images",
        "stimuli x repeats",
        "r",
        "noise ceiling",
        "r<sup>2</sup>/ceiling",
        "oracle r",
        "FEV",
        "FEVE",
    ]
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{cell}</td>"
            for cell in (
                html.escape(str(row["channel"])),
                html.escape(str(row["images"])),
                f"{row['n_stimuli']} x {row['mean_repeats']:.1f}",
                interval(row, "r"),
                interval(row, "noise_ceiling"),
                interval(row, "r2_over_ceiling"),
                interval(row, "oracle_r"),
                "&ndash;" if row["fev"] is None else f"{row['fev']:.2f}",
                interval(row, "feve"),
            )
        )
        + "</tr>"
        for row in rows
    )
    summary = analysis.get("summary", {})
    fractions = [
        f"{html.escape(cat)}: {value:.2f}"
        for cat, value in [
            (
                f"held-out {categories(analysis)['preferred']}",
                summary.get("fraction_of_oracle_preferred"),
            ),
            *summary.get("fraction_of_oracle", {}).items(),
        ]
        if value is not None and np.isfinite(value)
    ]
    return [
        "<h2>Fit metrics</h2>",
        FIT_METRICS_TEXT.format(
            conf=config.get("confidence", 0.95), n_boot=config.get("bootstrap", 1000)
        ),
        "<div class=wide><table><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + f"</tr>{body}</table></div>",
        "<p>Fraction of oracle (the slope through the origin of r against oracle r across "
        "channels, Lurz et al. 2021): " + ("; ".join(fractions) or "&ndash;") + ".</p>",
    ]


def _summary(summary: dict[str, Any]) -> list[str]:
    """The summary's fractions as text, per category where a test is per category."""

    def said(v: dict[str, Any]) -> str | None:
        if "passed" in v:
            return f"{v['passed']}/{v['of']}"
        if "used" in v:  # the mean FEVE's channels (FEV floor)
            return f"{v['used']} used, {v['left_out']} left out (FEV below {v['fev_floor']:g})"
        return None

    out = []
    for key, value in summary.items():
        name = html.escape(key.replace("_", " "))
        if isinstance(value, dict) and said(value) is not None:
            out.append(f"{name}: {said(value)}")
        elif isinstance(value, dict):
            out += [
                f"{name} ({html.escape(cat)}): {said(v)}"
                for cat, v in value.items()
                if isinstance(v, dict) and said(v) is not None
            ]
    return out


def _label(column: str) -> str:
    """A table heading for an analysis column, naming its test and unit (``mw_p_object`` ->
    ``Mann-Whitney p, two-sided (vs object)``)."""
    for prefix, label in (
        ("mw_u_", "Mann-Whitney U (vs {})"),
        ("mw_p_greater_", "Mann-Whitney p, one-sided: preferred > {}"),
        ("mw_p_", "Mann-Whitney p, two-sided (vs {})"),
        ("median_", "median response, {} (spikes/s)"),
        ("noise_ceiling_", "noise ceiling, {} (split-half, Spearman-Brown)"),
        ("r_normalised_", "r / sqrt(noise ceiling), {}"),
        ("r_", "prediction r (Pearson), {}"),
        ("p_", "p (Pearson r = 0), {}"),
    ):
        if column.startswith(prefix):
            return label.format(column.removeprefix(prefix).replace("_", " "))
    return {
        "stability_r": "test/retest r (Pearson, phase 1 vs 2)",
        "stability_p": "p (Pearson r = 0)",
        "stable": "stable (test/retest r > 0.6)",
        "selective": "selective (Mann-Whitney p two-sided < alpha, preferred above, vs every "
        "category)",
        "fit_flag": "fit flagged (held-out r not significantly positive, or FEVE interval "
        "reaching 0)",
    }.get(column, column.replace("_", " "))


HOW_TO_READ = """<section class=howto><h2>How to read this report</h2>
<p><b>The loop.</b> In phase one the monkey saw the preferred set (bodies in the paper) while
the probe recorded each channel. For every channel that responded reliably, a readout was fitted:
a location on the backbone's 7 x 7 feature map and a weight per feature, predicting the
channel's response to an image (sec. 3.1). Phase two showed images the readouts picked from
the candidate sets (the best, worst and most similar per channel) and repeated preferred
images to check that the recording stayed stable (sec. 4).</p>
<p><b>s, the shared features.</b> For one channel and two images, s is the cosine similarity of
the two images' features, each weighted by the channel's readout weights (eq. 2-3): 1 when the
channel sees the two images through the same features, 0 when they share none. The pairs shown
are an image of another category (x_out, an object) and one of the preferred set (x_in, a body)
with high s (sec. 5.2).</p>
<p><b>The maps.</b> Parallel backpropagation (sec. 3.3, eq. 4-7) traces the shared features
back to the pixels of both images at once: bright where a pixel drives features that the
channel weights and that the other image shares. A map's size is bounded by s (eq. 7). The
sanity checks below test whether the maps change when the model is randomised, as they must
if they explain the model rather than the image.</p>
<p><b>The fragments.</b> Phase three (the paper's proposal, sec. 6) cut each visualised image
into its most salient part, the least salient part of the same area and a random part, showed
them, and measured how much of the intact image's response each kept: if the maps are right,
the salient fragment keeps the most.</p>
<p>Tests are named in each column heading; responses are net rates in spikes/s (response
window minus baseline window, A.2); every p is two-sided unless the heading says otherwise.</p>
</section>"""


def read_image(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def build_report(store: Store, session_id: str, images: dict[str, dict[str, Any]]) -> str:
    """The HTML report of a session.

    ``images``: per category of the session, image id -> a function returning the
    ``[H, W, 3]`` image (the maps are drawn over it at any size).
    """
    record = store.get_session(session_id)
    files = store.files(session_id)
    config = record.config
    parts = [
        f"<h1>stimloop session {html.escape(session_id)}</h1>",
        f"<p>State: <b>{html.escape(record.state)}</b>; channels: "
        f"{len(config.channels)}; backbone {html.escape(config.backbone)}; preferred "
        f"category {html.escape(config.preferred_category)} (set "
        f"{html.escape(config.preferred_set)}); candidates "
        + ", ".join(
            f"{html.escape(c.category)} ({html.escape(c.set)}"
            + (", preferred" if c.preferred else "")
            + ")"
            for c in config.candidate_sets
        )
        + ".</p>",
    ]
    if config.backbone == "resnet50_random":
        parts.append(
            "<p class=warn><b>Backbone resnet50_random is a seeded random-init stand-in, not the "
            "paper's robust ResNet-50.</b></p>"
        )
    parts.append(HOW_TO_READ)
    provenance: dict[str, Any] = {}
    analysis = files.analysis() if files.has_analysis() else None
    if analysis:
        provenance = analysis.get("provenance", {})
        parts += [
            "<h2>Model generalisation and stability (Fig. 3a)</h2>",
            _img(fig3a(analysis), "Figure 3a"),
        ]
        parts.append("<p>" + "; ".join(_summary(analysis["summary"])) + "</p>")
    else:
        parts.append("<p>No analysis yet: it is computed after phase two.</p>")

    metas = files.saliency_results()
    if metas:
        panels, rows3b = [], []
        p1 = files.trial_columns("phase1")
        p2 = files.trial_columns("phase2") if files.has_trials("phase2") else None
        for meta in metas:
            arrays = files.saliency_arrays(meta["key"])
            category = meta["x_out_category"]
            panels.append(
                PairPanel(
                    meta["channel"],
                    meta["x_out"],
                    meta["x_in"],
                    images[category][meta["x_out"]](),
                    images[config.preferred_category][meta["x_in"]](),
                    arrays["display_out"],
                    arrays["display_in"],
                    meta["s"],
                    meta["norm_out"],
                    meta["norm_in"],
                )
            )
            if p2 is not None:
                others = _means(p2, meta["channel"], set(images[category]), config.windows)
                preferred = _means(p1, meta["channel"], None, config.windows)
                if meta["x_out"] in others:
                    rows3b.append(
                        {
                            "channel": meta["channel"],
                            "x_out_response": others[meta["x_out"]],
                            "mean_other": float(np.mean(list(others.values()))),
                            "sd_other": _sd(others),
                            "mean_preferred": float(np.mean(list(preferred.values()))),
                            "sd_preferred": _sd(preferred),
                        }
                    )
        if rows3b:
            parts += [
                "<h2>Responses to the visualised images (Fig. 3b)</h2>",
                _img(fig3b(rows3b, config.preferred_category), "Figure 3b"),
            ]
        grid = base64.b64encode(grid_figure(panels)).decode()
        rows = [{**m, "sanity_verdict": _sanity_words(m.get("sanity"))} for m in metas]
        parts += [
            "<h2>Shared-feature saliency (Fig. 4/5)</h2>",
            _img(grid, "Saliency grid"),
            _table(
                rows,
                [
                    ("channel", "channel"),
                    ("x_out", "x_out"),
                    ("x_out_category", "category"),
                    ("x_in", f"x_in ({config.preferred_category})"),
                    ("s", "s"),
                    ("norm_out", "|I(x_out)|"),
                    ("norm_in", "|I(x_in)|"),
                    ("covered", "fraction of s"),
                    ("method", "method"),
                    ("sanity_verdict", "sanity checks (model, data)"),
                ],
            ),
        ]
        parts += sanity_section(files, metas)
        provenance = provenance or metas[0].get("provenance", {})

    parts += phase_three_section(files, config.preferred_category, images)

    if files.has_channels():
        channels = files.channels()
        provenance = provenance or channels.get("provenance", {})
        parts += [
            "<h2>Inclusion (A.2)</h2>",
            _table(
                channels["channels"],
                [
                    ("channel", "channel"),
                    ("included", "included"),
                    ("responsive_statistic", "best stimulus mean (spikes/s; >= 5)"),
                    ("responsive_p", "p (Wilcoxon signed-rank, best stimulus > 0)"),
                    ("selective_statistic", "Kruskal-Wallis H"),
                    ("selective_p", "p (Kruskal-Wallis; < 0.01)"),
                    ("reliable_statistic", "split-half r, Spearman-Brown (> 0.5)"),
                    ("reliable_p", "p (Pearson r = 0)"),
                    ("r_test", "held-out r (Pearson)"),
                    ("p_test", "p (Pearson r = 0)"),
                    ("fit_flag", "fit flagged (held-out r not significantly positive)"),
                    ("reason", "reason"),
                ],
            ),
        ]
    if analysis:
        rows = analysis_rows(analysis, metrics=False)
        parts += [
            "<h2>Stability, selectivity and generalisation</h2>",
            _table(rows, [(k, _label(k)) for k in rows[0]] if rows else []),
        ]
        parts += fit_metrics_section(analysis)
    prov = {**record.provenance, **provenance}
    parts.append(
        "<hr><p class=prov>"
        + "; ".join(
            f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in sorted(prov.items())
        )
        + f"; seed {config.seed}</p>"
    )
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:"
        "collapse;font-size:12px;margin:1em 0}td,th{border:1px solid #bbb;padding:2px 6px}"
        "img{max-width:100%}.prov{font-size:11px;color:#444}"
        ".wide{overflow-x:auto}.warn{background:#fff3cd;border:1px solid #d39e00;padding:.5em}"
        ".howto{background:#f4f6f8;padding:.2em 1em;font-size:14px}"
        "@media print{img{page-break-inside:avoid}table{font-size:10px}}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>stimloop "
        f"{html.escape(session_id)}</title><style>{style}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
