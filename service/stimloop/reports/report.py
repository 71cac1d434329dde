"""The session report: one self-contained HTML page (figures inlined as PNG), rendered from
``templates/report.html`` with Jinja2 (escaping on).

Fig. 3a (predicted vs recorded correlation per channel on held-out bodies and objects, with the
p = 0.05 line and the test/retest stability), the registered predictions scored (coverage of
their intervals, calibration, graded levels, with the calibration figure), Fig. 3b (responses
to the visualised objects against the mean object and body responses), the saliency grid
(Fig. 4/5), the tables of inclusion, stability and selectivity with their statistics, phase
three (the fragments beside their maps, retained response per kind with the tests), and the
provenance (backbone, weights sha256, seeds, versions) at the bottom. This module gathers what
the page shows; the figures are ``figures``'; the words and the layout are the template's.
"""

from __future__ import annotations

import base64
from functools import cache
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from stimloop_contract.configs import Windows
from stimloop_contract.result_tables import (
    analysis_rows,
    categories,
    fit_metric_rows,
    phase_three_rows,
)

from stimloop.reports.figures import (
    FragmentRow,
    PairPanel,
    calibration_figure,
    fig3a_figure,
    fig3b_figure,
    fragments_figure,
    grid_figure,
    png,
    retained_figure,
)
from stimloop.storage.session import SessionFiles
from stimloop.storage.store import Store

DASH = Markup("&ndash;")  # an empty cell


def cell(value: Any) -> Any:
    """A table cell: floats to 3 significant digits, None as a dash (escaped by Jinja2)."""
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:.3g}"
    return value


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("stimloop.reports", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["cell"] = cell
    return env


def inline(data: bytes) -> str:
    """PNG bytes as the base64 text of a data URL."""
    return base64.b64encode(data).decode()


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


def phase_three_part(
    files: SessionFiles, preferred: str, images: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """Phase three: each fragmented source beside its map and its fragments, and, after the
    recording, retained responses per kind with the tests."""
    if not files.has_phase_three_list():
        return None
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
    part: dict[str, Any] = {
        "fragments": len(fragments),
        "sources": len(seen),
        "stability": len(plan["stability_images"]),
        "repeats": plan["config"]["repeats"],
        "figure": inline(fragments_figure(rows)) if rows else None,
        "recorded": files.has_phase_three_analysis(),
        "rows": [],
    }
    if not part["recorded"]:
        return part
    rows3 = phase_three_rows(files.phase_three_analysis())
    if rows3:
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
        part.update(rows=rows3, columns=columns, retained=inline(png(retained_figure(rows3))))
    return part


def _sanity_words(verdict: dict[str, Any] | None) -> str:
    if not verdict:
        return "not run"

    def word(ok: bool | None) -> str:
        return "not run" if ok is None else "passed" if ok else "FAILED"

    model = verdict.get("model_verdict") or word(verdict["model_passed"])
    return f"{model if verdict['model_passed'] else 'FAILED (' + model + ')'}, " + word(
        verdict["data_passed"]
    )


def fit_part(analysis: dict[str, Any]) -> dict[str, Any] | None:
    """The fit metrics table (values with their intervals) and the fraction of oracle."""
    rows = fit_metric_rows(analysis)
    if not rows:
        return None
    config = analysis.get("config", {})

    def interval(row: dict[str, Any], key: str) -> str:
        value, low, high = row[key], row[f"{key}_low"], row[f"{key}_high"]
        if value is None or not np.isfinite(value):
            return DASH
        if low is None or not np.isfinite(low):
            return f"{value:.2f}"
        return f"{value:.2f} [{low:.2f}, {high:.2f}]"

    summary = analysis.get("summary", {})
    fractions = [
        f"{cat}: {value:.2f}"
        for cat, value in [
            (
                f"held-out {categories(analysis)['preferred']}",
                summary.get("fraction_of_oracle_preferred"),
            ),
            *summary.get("fraction_of_oracle", {}).items(),
        ]
        if value is not None and np.isfinite(value)
    ]
    return {
        "confidence": config.get("confidence", 0.95),
        "bootstrap": config.get("bootstrap", 1000),
        "rows": [
            (
                row["channel"],
                row["images"],
                f"{row['n_stimuli']} x {row['mean_repeats']:.1f}",
                interval(row, "r"),
                interval(row, "noise_ceiling"),
                interval(row, "r2_over_ceiling"),
                interval(row, "oracle_r"),
                DASH if row["fev"] is None else f"{row['fev']:.2f}",
                interval(row, "feve"),
            )
            for row in rows
        ],
        "fractions": fractions,
    }


def scoring_part(analysis: dict[str, Any]) -> dict[str, Any] | None:
    """The registered predictions scored: the hash, a row per channel, the calibration
    figure and the pooled coverage."""
    scoring = analysis.get("scoring")
    if not scoring:
        return None

    def fmt(value: Any, spec: str = "{:.2f}") -> Any:
        return DASH if value is None or not np.isfinite(value) else spec.format(value)

    def feve(m: dict[str, Any] | None) -> Any:
        if not m or m["feve"]["value"] is None:
            return DASH
        e = m["feve"]
        if e["low"] is None:
            return fmt(e["value"])
        return f"{e['value']:.2f} [{e['low']:.2f}, {e['high']:.2f}]"

    rows = []
    for c in scoring["channels"]:
        line, graded = c.get("calibration") or {}, c.get("graded") or {}
        rows.append(
            (
                c["channel"],
                c["n"],
                f"{c['inside']} ({fmt(c['coverage'], '{:.0%}')})",
                fmt(c["coverage_unwidened"], "{:.0%}"),
                fmt(c["coverage_p"], "{:.3g}"),
                fmt(line.get("slope")),
                fmt(line.get("intercept"), "{:.1f}"),
                fmt(graded.get("rho")),
                feve(c.get("metrics")),
            )
        )
    return {
        "registration": scoring["registration"],
        "level": scoring["level"],
        "rows": rows,
        "summary": scoring["summary"],
        "figure": inline(png(calibration_figure(scoring))),
    }


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
        name = key.replace("_", " ")
        if isinstance(value, dict) and said(value) is not None:
            out.append(f"{name}: {said(value)}")
        elif isinstance(value, dict):
            out += [
                f"{name} ({cat}): {said(v)}"
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


def read_image(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


SALIENCY_COLUMNS = [
    ("channel", "channel"),
    ("x_out", "x_out"),
    ("x_out_category", "category"),
    ("x_in", "x_in ({preferred})"),
    ("s", "s"),
    ("norm_out", "|I(x_out)|"),
    ("norm_in", "|I(x_in)|"),
    ("covered", "fraction of s"),
    ("method", "method"),
    ("sanity_verdict", "sanity checks (model, data)"),
]
INCLUSION_COLUMNS = [
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
]


def saliency_part(
    files: SessionFiles, preferred: str, windows: Windows, images: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """The saliency grid (Fig. 4/5) with its table, Fig. 3b once phase two is recorded, and
    the sanity checks' strips."""
    metas = files.saliency_results()
    if not metas:
        return None
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
                images[preferred][meta["x_in"]](),
                arrays["display_out"],
                arrays["display_in"],
                meta["s"],
                meta["norm_out"],
                meta["norm_in"],
            )
        )
        if p2 is not None:
            others = _means(p2, meta["channel"], set(images[category]), windows)
            preferred_means = _means(p1, meta["channel"], None, windows)
            if meta["x_out"] in others:
                rows3b.append(
                    {
                        "channel": meta["channel"],
                        "x_out_response": others[meta["x_out"]],
                        "mean_other": float(np.mean(list(others.values()))),
                        "sd_other": _sd(others),
                        "mean_preferred": float(np.mean(list(preferred_means.values()))),
                        "sd_preferred": _sd(preferred_means),
                    }
                )
    strips = []
    for meta in metas:
        path = files.sanity_file(meta["key"], "png") if meta.get("sanity") else None
        if path is not None:
            strips.append((meta["channel"], inline(path.read_bytes())))
    return {
        "fig3b": inline(png(fig3b_figure(rows3b, preferred))) if rows3b else None,
        "grid": inline(grid_figure(panels)),
        "rows": [{**m, "sanity_verdict": _sanity_words(m.get("sanity"))} for m in metas],
        "columns": [(k, label.format(preferred=preferred)) for k, label in SALIENCY_COLUMNS],
        "strips": strips,
        "provenance": metas[0].get("provenance", {}),
    }


def build_report(store: Store, session_id: str, images: dict[str, dict[str, Any]]) -> str:
    """The HTML report of a session.

    ``images``: per category of the session, image id -> a function returning the
    ``[H, W, 3]`` image (the maps are drawn over it at any size).
    """
    record = store.get_session(session_id)
    files = store.files(session_id)
    config = record.config
    found = files.analysis() if files.has_analysis() else None
    analysis = None
    if found:
        rows = analysis_rows(found, metrics=False)
        analysis = {
            "fig3a": inline(png(fig3a_figure(found))),
            "summary": _summary(found["summary"]),
            "rows": rows,
            "columns": [(k, _label(k)) for k in rows[0]] if rows else [],
            "fit": fit_part(found),
            "scoring": scoring_part(found),
        }
    saliency = saliency_part(files, config.preferred_category, config.windows, images)
    inclusion = None
    channels = files.channels() if files.has_channels() else None
    if channels:
        inclusion = {"rows": channels["channels"], "columns": INCLUSION_COLUMNS}
    provenance = (
        (found or {}).get("provenance")
        or (saliency or {}).get("provenance")
        or (channels or {}).get("provenance")
        or {}
    )
    return (
        environment()
        .get_template("report.html")
        .render(
            session_id=session_id,
            state=record.state,
            config=config,
            analysis=analysis,
            saliency=saliency,
            phase_three=phase_three_part(files, config.preferred_category, images),
            inclusion=inclusion,
            provenance=sorted({**record.provenance, **provenance}.items()),
        )
    )
