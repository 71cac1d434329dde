"""Before a session: cache a set's maps; when a session is created: warm its candidates."""

from __future__ import annotations

from typing import Any

from stimloop.worker.context import Report, WorkerContext, quiet


def precompute(
    res: WorkerContext, backbone: str, set_id: str, report: Report = quiet
) -> dict[str, Any]:
    ids, _ = res.maps(backbone, set_id, report=report)
    return {
        "stimulus_set": set_id,
        "backbone": backbone,
        "images": len(ids),
        "weights_sha256": res.backbone(backbone).weights_sha256,
    }


def warm_session(res: WorkerContext, session_id: str, report: Report = quiet) -> dict[str, Any]:
    """Load (computing misses) every map the session's turnaround needs, reporting each set's
    progress: the candidates (kept in memory), the bodies and their silhouettes."""
    config = res.store.get_session(session_id).config
    for c in config.candidate_sets:
        report("warming", 0.0, f"loading {c.set}")
        res.candidates(config.backbone, c.set, c.category, report=report)
    ids, _ = res.maps(config.backbone, config.preferred_set, report=report, stage="warming")
    if config.fit.silhouettes:
        report("warming", 0.0, "silhouette maps of the preferred set")
        res.silhouette_maps(config.backbone, config.preferred_set, ids, report=report)
    report("done", 1.0, "candidates warm")
    return {"warm": True}
