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
from scipy import stats
from stimloop_rig.tables import analysis_rows, categories, phase_three_rows

from stimloop.reports.figures import FragmentRow, PairPanel, fragments_figure, grid_figure
from stimloop.science.configs import Windows
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
    channels = analysis["channels"]
    names = [c["channel"] for c in channels]
    cats = categories(analysis)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(names)), 3.2))
    colors = iter(["tab:orange", "tab:green", "tab:purple", "tab:pink", "tab:olive"])
    series = [
        (
            f"held-out {cats['preferred']}",
            "tab:blue",
            [c["generalisation_preferred"] for c in channels],
        ),
        *(
            (other, next(colors, "tab:gray"), [c["generalisation"].get(other) for c in channels])
            for other in cats["others"]
        ),
        ("test/retest", "tab:brown", [c["stability"] for c in channels]),
    ]
    top = 1.0
    for label, color, tests in series:
        r = np.array([t["r"] if t else np.nan for t in tests], float)
        ax.scatter(x, r, color=color, label=label, s=18, zorder=3)
        if np.isfinite(r).any():
            ax.axhline(np.nanmean(r), color=color, ls="--", lw=1)
        ns = [t["n"] for t in tests if t]
        if ns and label != "test/retest":
            ax.axhline(critical_r(int(np.median(ns))), color="black", ls="--", lw=0.8)
            normalised = np.array([t["r_normalised"] if t else np.nan for t in tests], float)
            ax.scatter(
                x,
                np.where(normalised > NORMALISED_CAP, np.nan, normalised),
                facecolors="none",
                edgecolors=color,
                s=30,
                zorder=3,
                label=f"{label}, r / sqrt(noise ceiling)",
            )
            over = normalised > NORMALISED_CAP  # a ceiling near 0: shown at the cap, marked
            if over.any():
                ax.scatter(
                    x[over],
                    np.full(over.sum(), NORMALISED_CAP),
                    marker="^",
                    color=color,
                    s=30,
                    zorder=3,
                    label=f"{label}, normalised r above {NORMALISED_CAP:g}",
                )
            top = max(top, float(np.nanmax(normalised, initial=1.0)))
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set_ylabel("Pearson r")
    ax.set_ylim(-1, min(top, NORMALISED_CAP) + 0.05)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(
        "Predicted vs recorded: r (filled), normalised r (open); black dashed: p = 0.05",
        fontsize=9,
    )
    return _png(fig)


def fig3b(rows: list[dict[str, Any]], preferred: str) -> str:
    """The visualised x_out's response against the mean of its category and of the preferred
    set (Fig. 3b: the visualised object against the mean object and the mean body)."""
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(rows)), 3))
    x = np.arange(len(rows))
    ax.scatter(x, [r["x_out_response"] for r in rows], color="tab:red", label="visualised x_out")
    ax.scatter(
        x,
        [r["mean_other"] for r in rows],
        color="tab:orange",
        marker="_",
        s=200,
        label="mean of its category",
    )
    ax.scatter(
        x,
        [r["mean_preferred"] for r in rows],
        color="tab:blue",
        marker="_",
        s=200,
        label=f"mean {preferred}",
    )
    ax.set_xticks(x, [r["channel"] for r in rows], rotation=90, fontsize=7)
    ax.set_ylabel("net response (spikes/s)")
    ax.legend(fontsize=7)
    return _png(fig)


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
    return f"<table><tr>{head}</tr>{body}</table>"


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


def retained_figure(rows: list[dict[str, Any]]) -> str:
    """Per channel, the recorded retained response of each fragment kind (bars) beside the
    readout's expectation (black marks)."""
    kinds = [k for k in ("salient", "complement", "random") if f"retained_{k}" in rows[0]]
    fig, ax = plt.subplots(figsize=(max(5.5, 1.5 * len(rows)), 3.2))
    x = np.arange(len(rows))
    width = 0.8 / max(len(kinds), 1)
    colors = {"salient": "tab:red", "complement": "tab:blue", "random": "tab:gray"}
    for n, kind in enumerate(kinds):
        pos = x + (n - (len(kinds) - 1) / 2) * width
        recorded = [r.get(f"retained_{kind}") for r in rows]
        ax.bar(
            pos,
            [np.nan if v is None else v for v in recorded],
            width,
            color=colors[kind],
            label=kind,
        )
        expected = [r.get(f"predicted_{kind}") for r in rows]
        ax.scatter(
            pos,
            [np.nan if v is None else v for v in expected],
            color="black",
            marker="_",
            s=120,
            zorder=3,
        )
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xticks(x, [r["channel"] for r in rows], rotation=90, fontsize=7)
    ax.set_ylabel("retained response R(fragment) / R(intact)")
    ax.legend(fontsize=7)
    ax.set_title(
        "Recorded (bars) and predicted (black marks); dashed: the intact image", fontsize=8
    )
    return _png(fig)


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


def _summary(summary: dict[str, Any]) -> list[str]:
    """The summary's fractions as text, per category where a test is per category."""
    out = []
    for key, value in summary.items():
        name = key.replace("_", " ")
        if isinstance(value, dict) and "passed" in value:
            out.append(f"{html.escape(name)}: {value['passed']}/{value['of']}")
        elif isinstance(value, dict):
            out += [
                f"{html.escape(name)} ({html.escape(cat)}): {v['passed']}/{v['of']}"
                for cat, v in value.items()
                if isinstance(v, dict)
            ]
    return out


def _label(column: str) -> str:
    """A table heading for an analysis column (``mw_p_object`` -> ``p two-sided (object)``)."""
    for prefix, label in (
        ("mw_u_", "Mann-Whitney U vs {}"),
        ("mw_p_greater_", "p preferred > {}"),
        ("mw_p_", "p two-sided vs {}"),
        ("median_", "median {}"),
        ("noise_ceiling_", "noise ceiling {}"),
        ("r_normalised_", "normalised r {}"),
        ("r_", "r {}"),
        ("p_", "p {}"),
    ):
        if column.startswith(prefix):
            return label.format(column.removeprefix(prefix).replace("_", " "))
    return {
        "stable": "stable (r > 0.6)",
        "selective": "selective (p two-sided < alpha, preferred above, vs every category)",
    }.get(column, column.replace("_", " "))


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
            "<p><b>Backbone resnet50_random is a seeded random-init stand-in, not the "
            "paper's robust ResNet-50.</b></p>"
        )
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
                            "mean_preferred": float(np.mean(list(preferred.values()))),
                        }
                    )
        if rows3b:
            parts += [
                "<h2>Responses to the visualised images (Fig. 3b)</h2>",
                _img(fig3b(rows3b, config.preferred_category), "Figure 3b"),
            ]
        grid = base64.b64encode(grid_figure(panels)).decode()
        parts += [
            "<h2>Shared-feature saliency (Fig. 4/5)</h2>",
            _img(grid, "Saliency grid"),
            _table(
                metas,
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
                ],
            ),
        ]
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
                    ("responsive_statistic", "max mean (spikes/s)"),
                    ("responsive_p", "p"),
                    ("selective_statistic", "Kruskal-Wallis H"),
                    ("selective_p", "p"),
                    ("reliable_statistic", "split-half (SB)"),
                    ("reliable_p", "p"),
                    ("r_test", "test r"),
                    ("p_test", "p"),
                    ("reason", "reason"),
                ],
            ),
        ]
    if analysis:
        rows = analysis_rows(analysis)
        parts += [
            "<h2>Stability, selectivity and generalisation</h2>",
            _table(rows, [(k, _label(k)) for k in rows[0]] if rows else []),
        ]
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
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>stimloop "
        f"{html.escape(session_id)}</title><style>{style}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
