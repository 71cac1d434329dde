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
