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


def analysis_rows(analysis: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per channel of ``GET /v1/sessions/{id}/analysis``, its columns named for the
    session's categories (the paper's: ``mw_p_object``, ``median_control_body``, ``r_body``,
    ``r_object``); missing values are None."""
    names = categories(analysis)
    side = "+".join(names["preferred_candidates"]) or names["preferred"]
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
        tests = [(names["preferred"], c["generalisation_preferred"])]
        tests += [(other, c["generalisation"].get(other)) for other in names["others"]]
        for name, g in tests:
            row[f"r_{name}"] = (g or {}).get("r")
            row[f"p_{name}"] = (g or {}).get("p")
            row[f"noise_ceiling_{name}"] = (g or {}).get("noise_ceiling")
            row[f"r_normalised_{name}"] = (g or {}).get("r_normalised")
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
    retained responses and test p-values), in the rows' own order."""
    if not rows:
        return []
    keys = list(rows[0])
    wanted = {"channel", "stability_r", "stable", "selective"}
    wanted |= {k for k in keys if k.startswith("mw_p_") and not k.startswith("mw_p_greater")}
    wanted |= {k for k in keys if k.startswith("r_") and not k.startswith("r_normalised")}
    wanted |= {
        k for k in keys if k.startswith("retained_") or (k.startswith("vs_") and k.endswith("_p"))
    }
    return [k for k in keys if k in wanted]
