"""Before a session: cache a set's maps; when a session is created: warm its candidates."""

from __future__ import annotations

from typing import Any

from stimloop.worker.resources import Report, Resources, quiet


def precompute(
    res: Resources, backbone: str, set_id: str, report: Report = quiet
) -> dict[str, Any]:
    ids, _ = res.maps(backbone, set_id, report=report)
    return {
        "stimulus_set": set_id,
        "backbone": backbone,
        "images": len(ids),
        "weights_sha256": res.backbone(backbone).weights_sha256,
    }


def warm_session(res: Resources, session_id: str, report: Report = quiet) -> dict[str, Any]:
    """Load (computing misses) every map the session's turnaround needs, reporting each set's
    progress: the candidates (kept in memory), the bodies and their silhouettes."""
    config = res.store.get_session(session_id)["config"]
    for key, category in (("object_set", "object"), ("control_body_set", "control_body")):
        report("warming", 0.0, f"loading {config[key]}")
        res.candidates(config["backbone"], config[key], category, report=report)
    ids, _ = res.maps(config["backbone"], config["body_set"], report=report, stage="warming")
    if config["fit"].get("silhouettes", True):
        report("warming", 0.0, "silhouette maps of the bodies")
        res.silhouette_maps(config["backbone"], config["body_set"], ids, report=report)
    report("done", 1.0, "candidates warm")
    return {"warm": True}
