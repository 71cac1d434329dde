"""Analysis rows keep every statistic beside its p-value; missing models give None."""

from __future__ import annotations

from stimloop_rig.tables import analysis_rows


def test_rows_carry_statistics_with_p_values():
    analysis = {
        "channels": [
            {
                "channel": "a",
                "stability": {"r": 0.7, "p": 0.001, "passed": True},
                "selectivity": {
                    "u": 12.0,
                    "p_two_sided": 0.2,
                    "p_bodies_greater": 0.1,
                    "median_bodies": 3.0,
                    "median_objects": 2.0,
                    "passed": False,
                },
                "generalisation_bodies": {
                    "r": 0.5,
                    "p": 0.02,
                    "noise_ceiling": 0.64,
                    "r_normalised": 0.625,
                },
                "generalisation_objects": None,
            }
        ]
    }
    [row] = analysis_rows(analysis)
    assert (row["stability_r"], row["stability_p"], row["stable"]) == (0.7, 0.001, True)
    assert (row["mann_whitney_u"], row["mw_p_two_sided"], row["mw_p_bodies_greater"]) == (
        12.0,
        0.2,
        0.1,
    )
    assert (row["r_bodies"], row["p_bodies"]) == (0.5, 0.02)
    assert (row["noise_ceiling_bodies"], row["r_normalised_bodies"]) == (0.64, 0.625)
    assert row["body_selective"] is False
    assert row["r_objects"] is None and row["p_objects"] is None
