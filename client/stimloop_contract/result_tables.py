"""Flat per-channel rows of a session's analysis, for tables and CSV files (torch-free).

One place decides which numbers a table of the analysis shows: every verdict with its
statistic and p-value.
"""

from __future__ import annotations

from typing import Any


def categories(analysis: dict[str, Any]) -> dict[str, Any]:
    """The session's categories as its analysis names them: ``preferred`` (body),
    ``preferred_candidates`` (control_body) and ``others`` (object)."""
    found = analysis.get("categories")
    if found:
        return found
    others = (
        [t["other"] for t in analysis["channels"][0]["selectivity"]] if analysis["channels"] else []
    )
    return {"preferred": "preferred", "preferred_candidates": [], "others": others}


def sanity_by_channel(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per channel, the sanity verdicts of its checked saliency results (``GET
    /v1/sessions/{id}/saliency``): ``maps_sanity`` is True when every checked result passed
    both checks, with the count of checked results and the worst similarities."""
    found: dict[str, dict[str, Any]] = {}
    for meta in results:
        verdict = meta.get("sanity")
        if not verdict:
            continue
        row = found.setdefault(
            meta["channel"],
            {"maps_sanity": True, "maps_sanity_checked": 0, "maps_sanity_model_similarity": None},
        )
        row["maps_sanity"] = row["maps_sanity"] and bool(verdict["passed"])
        row["maps_sanity_checked"] += 1
        worst = row["maps_sanity_model_similarity"]
        value = verdict["model_similarity"]
        row["maps_sanity_model_similarity"] = value if worst is None else max(worst, value)
    return found


def analysis_rows(
    analysis: dict[str, Any],
    metrics: bool = True,
    sanity: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per channel of ``GET /v1/sessions/{id}/analysis``, its columns named for the
    session's categories (the paper's: ``mw_p_object``, ``median_control_body``, ``r_body``,
    ``r_object``); missing values are None. The fit metrics follow each prediction r: its
    95% interval (``r_low_object``, ``r_high_object``), the ceiling's, ``r2_over_ceiling``
    (clipped) and ``..._unclipped``, ``oracle_r``, ``fev`` and ``feve`` with its interval.
    ``sanity`` (``sanity_by_channel``) adds the maps' sanity verdict per channel."""
    names = categories(analysis)
    side = "+".join(names["preferred_candidates"]) or names["preferred"]
    scored = {s["channel"]: s for s in (analysis.get("scoring") or {}).get("channels", [])}
    rows = []
    for c in analysis["channels"]:
        row: dict[str, Any] = {
            "channel": c["channel"],
            "stability_r": c["stability"]["r"],
            "stability_p": c["stability"]["p"],
            "stable": c["stability"]["passed"],
        }
        for t in c["selectivity"]:
            other = t["other"]
            row[f"mw_u_{other}"] = t["u"]
            row[f"mw_p_{other}"] = t["p_two_sided"]
            row[f"mw_p_greater_{other}"] = t["p_preferred_greater"]
            row[f"median_{side}"] = t["median_preferred"]
            row[f"median_{other}"] = t["median_other"]
        row["selective"] = c["selective"]
        row["fit_flag"] = c.get("fit_flag")
        tests = [(names["preferred"], c["generalisation_preferred"])]
        tests += [
            (name, c["generalisation"].get(name))
            for name in [*names["others"], *names["preferred_candidates"]]
        ]
        for name, g in tests:
            row[f"r_{name}"] = (g or {}).get("r")
            row[f"p_{name}"] = (g or {}).get("p")
            row[f"noise_ceiling_{name}"] = (g or {}).get("noise_ceiling")
            row[f"r_normalised_{name}"] = (g or {}).get("r_normalised")
            if metrics:
                row.update(metric_columns(name, (g or {}).get("metrics")))
        if analysis.get("scoring"):
            row.update(scoring_columns(scored.get(c["channel"])))
        if sanity is not None:
            row.update(
                sanity.get(
                    c["channel"],
                    {
                        "maps_sanity": None,
                        "maps_sanity_checked": 0,
                        "maps_sanity_model_similarity": None,
                    },
                )
            )
        rows.append(row)
    return rows


def scoring_columns(score: dict[str, Any] | None) -> dict[str, Any]:
    """A channel's registered predictions scored (``analysis["scoring"]``): picked images
    scored, the fraction inside their interval (widened by the recorded sem) and its binomial
    p, the calibration line, the graded levels' rho and FEVE on the picks (None: unscored)."""
    score = score or {}
    line, graded = score.get("calibration") or {}, score.get("graded") or {}
    feve = ((score.get("metrics") or {}).get("feve") or {}).get("value")
    return {
        "picks_scored": score.get("n"),
        "coverage": score.get("coverage"),
        "coverage_p": score.get("coverage_p"),
        "calibration_slope": line.get("slope"),
        "calibration_intercept": line.get("intercept"),
        "graded_rho": graded.get("rho"),
        "feve_picks": feve,
    }


METRIC_COLUMNS = ("r", "noise_ceiling", "r2_over_ceiling", "oracle_r", "feve")


def metric_columns(name: str, metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The fit metrics of one prediction as columns named for their formulas and ``name``."""
    m = metrics or {}
    row: dict[str, Any] = {}
    for key in METRIC_COLUMNS:
        estimate = m.get(key) or {}
        if key not in ("r", "noise_ceiling"):  # their values have columns of their own
            row[f"{key}_{name}"] = estimate.get("value")
        row[f"{key}_low_{name}"] = estimate.get("low")
        row[f"{key}_high_{name}"] = estimate.get("high")
    row[f"r2_over_ceiling_unclipped_{name}"] = m.get("r2_over_ceiling_unclipped")
    row[f"r2_over_ceiling_brainscore_{name}"] = m.get("r2_over_ceiling_brainscore")
    row[f"fev_{name}"] = m.get("fev")
    row[f"metrics_undefined_{name}"] = m.get("undefined")
    return row


def fit_metric_rows(analysis: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per channel and predicted image set (the held-out preferred images, each
    candidate category's phase-two picks): the fit metrics with their intervals."""
    names = categories(analysis)
    rows = []
    for c in analysis["channels"]:
        sets = [(f"held-out {names['preferred']}", c["generalisation_preferred"])]
        sets += sorted(c["generalisation"].items())
        for images, g in sets:
            m = (g or {}).get("metrics")
            if not m:
                continue
            row: dict[str, Any] = {
                "channel": c["channel"],
                "images": images,
                "n_stimuli": m["n_stimuli"],
                "mean_repeats": m["mean_repeats"],
            }
            for key in METRIC_COLUMNS:
                row[key] = m[key]["value"]
                row[f"{key}_low"] = m[key]["low"]
                row[f"{key}_high"] = m[key]["high"]
            row["r2_over_ceiling_unclipped"] = m["r2_over_ceiling_unclipped"]
            row["r2_over_ceiling_brainscore"] = m.get("r2_over_ceiling_brainscore")
            row["fev"] = m["fev"]
            row["undefined"] = m.get("undefined")
            rows.append(row)
    return rows


def phase_three_rows(analysis: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per channel of ``GET /v1/sessions/{id}/phase3/analysis``: retained response
    per fragment kind (recorded and predicted), salient against each other kind (test,
    statistic, p), predicted vs recorded r, and stability against phases one and two."""
    rows = []
    for c in analysis["channels"]:
        row: dict[str, Any] = {"channel": c["channel"]}
        for k in c["kinds"]:
            row[f"retained_{k['kind']}"] = k["recorded_retained"]
            row[f"retained_sd_{k['kind']}"] = k.get("recorded_retained_sd")
            row[f"predicted_{k['kind']}"] = k["predicted_retained"]
        for t in c["comparisons"]:
            other = t["other"]
            row[f"vs_{other}_test"] = t["test"]
            row[f"vs_{other}_statistic"] = t["statistic"]
            row[f"vs_{other}_p"] = t["p"]
            row[f"vs_{other}_salient_above"] = t["salient_above"]
        row["r_predicted"] = c["prediction"]["r"]
        row["p_predicted"] = c["prediction"]["p"]
        row["stability_r_phase1"] = c["stability_phase_one"]["r"]
        row["stability_r_phase2"] = (c["stability_phase_two"] or {}).get("r")
        rows.append(row)
    return rows


def key_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The columns a terminal shows first: each verdict with its statistic or p-value (the
    stability r, the selectivity p against each category, the prediction r; phase three's
    retained responses and test p-values), in the rows' own order; none empty in every row."""
    if not rows:
        return []
    keys = list(rows[0])
    wanted = {"channel", "stability_r", "stable", "selective", "maps_sanity", "fit_flag"}
    wanted |= {"coverage"}
    wanted |= {k for k in keys if k.startswith("mw_p_") and not k.startswith("mw_p_greater")}
    wanted |= {
        k
        for k in keys
        if k.startswith("r_") and not k.startswith(("r_normalised", "r_low_", "r_high_"))
    }
    wanted |= {
        k
        for k in keys
        if (k.startswith("retained_") and not k.startswith("retained_sd_"))
        or (k.startswith("vs_") and k.endswith("_p"))
    }
    return [k for k in keys if k in wanted and any(row.get(k) is not None for row in rows)]
