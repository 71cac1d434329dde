"""Analysis rows keep every statistic beside its p-value, their columns named for the
session's categories; missing models give None."""

from __future__ import annotations

from stimloop_contract.result_tables import analysis_rows


def test_rows_carry_statistics_with_p_values_named_for_the_categories():
    analysis = {
        "categories": {
            "preferred": "body",
            "preferred_candidates": ["control_body"],
            "others": ["object", "face"],
        },
        "channels": [
            {
                "channel": "a",
                "stability": {"r": 0.7, "p": 0.001, "passed": True},
                "selectivity": [
                    {
                        "other": other,
                        "u": u,
                        "p_two_sided": 0.2,
                        "p_preferred_greater": 0.1,
                        "median_preferred": 3.0,
                        "median_other": 2.0,
                        "passed": False,
                    }
                    for other, u in (("object", 12.0), ("face", 7.0))
                ],
                "selective": False,
                "generalisation_preferred": {
                    "r": 0.5,
                    "p": 0.02,
                    "noise_ceiling": 0.64,
                    "r_normalised": 0.625,
                },
                "generalisation": {},
            }
        ],
    }
    [row] = analysis_rows(analysis)
    assert (row["stability_r"], row["stability_p"], row["stable"]) == (0.7, 0.001, True)
    assert (row["mw_u_object"], row["mw_p_object"], row["mw_p_greater_object"]) == (12.0, 0.2, 0.1)
    assert row["mw_u_face"] == 7.0
    assert (row["median_control_body"], row["median_object"]) == (3.0, 2.0)
    assert (row["r_body"], row["p_body"]) == (0.5, 0.02)
    assert (row["noise_ceiling_body"], row["r_normalised_body"]) == (0.64, 0.625)
    assert row["selective"] is False
    assert row["r_object"] is None and row["p_object"] is None and row["r_face"] is None
