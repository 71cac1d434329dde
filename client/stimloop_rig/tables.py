"""Flat per-channel rows of a session's analysis, for tables and CSV files (torch-free).

One place decides which numbers a table of the analysis shows: every verdict with its
statistic and p-value.
"""

from __future__ import annotations

from typing import Any


def analysis_rows(analysis: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per channel of ``GET /v1/sessions/{id}/analysis``; missing values are None."""
    rows = []
    for c in analysis["channels"]:
        sel = c["selectivity"]
        row = {
            "channel": c["channel"],
            "stability_r": c["stability"]["r"],
            "stability_p": c["stability"]["p"],
            "stable": c["stability"]["passed"],
            "mann_whitney_u": sel["u"],
            "mw_p_two_sided": sel["p_two_sided"],
            "mw_p_bodies_greater": sel["p_bodies_greater"],
            "median_control_bodies": sel["median_bodies"],
            "median_objects": sel["median_objects"],
            "body_selective": sel["passed"],
        }
        for key, name in (
            ("generalisation_bodies", "bodies"),
            ("generalisation_objects", "objects"),
        ):
            row[f"r_{name}"] = (c[key] or {}).get("r")
            row[f"p_{name}"] = (c[key] or {}).get("p")
            row[f"noise_ceiling_{name}"] = (c[key] or {}).get("noise_ceiling")
            row[f"r_normalised_{name}"] = (c[key] or {}).get("r_normalised")
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
