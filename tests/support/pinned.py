"""The paper-default session's pinned output, in today's names."""

from __future__ import annotations


def in_categories(old: dict) -> dict:
    """The pinned output with today's names: bodies are the preferred set, control bodies
    the preferred candidates, objects the one other category."""
    selection, analysis = old["selection"], old["analysis"]
    for c in selection["channels"]:
        c["reference"] = c.pop("reference_body")
    p2 = selection["phase_two"]
    p2["stability_images"] = p2.pop("stability_bodies")
    p2["stability_rule"] = p2["stability_rule"].replace(
        "bodies ranked", "images of the preferred set ranked"
    )
    selection["config"]["stability_images"] = selection["config"].pop("stability_bodies")
    renames = {
        "p_bodies_greater": "p_preferred_greater",
        "median_bodies": "median_preferred",
        "median_objects": "median_other",
        "n_bodies": "n_preferred",
        "n_objects": "n_other",
        "bodies_above": "preferred_above",
    }
    for c in analysis["channels"]:
        test = {"other": "object", **{renames.get(k, k): v for k, v in c["selectivity"].items()}}
        c["selectivity"], c["selective"] = [test], test["passed"]
        c["generalisation_preferred"] = c.pop("generalisation_bodies")
        objects = c.pop("generalisation_objects")
        c["generalisation"] = {"object": objects} if objects else {}
    s = analysis["summary"]
    analysis["summary"] = {
        "stable": s["stable"],
        "selective_among_stable": s["body_selective_among_stable"],
        "preferred_significant_positive_among_stable": s[
            "bodies_significant_positive_among_stable"
        ],
        "significant_positive_among_stable": {
            "object": s["objects_significant_positive_among_stable"]
        },
        "mean_r_preferred": s["mean_r_bodies"],
        "mean_r": {"object": s["mean_r_objects"]},
        "mean_r_normalised_preferred": s["mean_r_normalised_bodies"],
        "mean_r_normalised": {"object": s["mean_r_normalised_objects"]},
        "mean_stability_r": s["mean_stability_r"],
    }
    return old
