"""What the live pages show, read from the same store and job states as ``/v1``: plain rows
for the templates (which escape every value)."""

from __future__ import annotations

from typing import Any, get_args

import numpy as np
from redis import Redis
from stimloop_contract.result_tables import analysis_rows, key_columns, phase_three_rows

from stimloop.api.errors import ApiError
from stimloop.api.jobs import fetch_job
from stimloop.runtime.settings import Settings
from stimloop.sessions.jobs import observed
from stimloop.sessions.live import live_status
from stimloop.storage.session import Phase, SessionRecord
from stimloop.storage.session_states import ACTIONS, SHOWN_JOB, STATES, WORDS
from stimloop.storage.store import Store
from stimloop.worker.queue import job_info

PHASES: tuple[Phase, ...] = get_args(Phase)


def session_rows(st: Store, state: str | None) -> list[dict[str, Any]]:
    """One row per session, newest first; only ``state``'s when given."""
    rows = []
    for rec in st.list_sessions():
        if state and rec.state != state:
            continue
        last = rec.history[-1]["time"] if rec.history else rec.created
        rows.append(
            {
                "id": rec.id,
                "state": rec.state,
                "channels": len(rec.config.channels),
                "created": rec.created,
                "changed": last,
            }
        )
    return sorted(rows, key=lambda row: row["created"], reverse=True)


def current_job(cfg: Settings, r: Redis, rec: SessionRecord) -> dict[str, Any] | None:
    """The job that the session's state waits for (the fit, the analysis, the warming), or
    else the latest of its jobs; its kind, state, stage, progress and message."""
    name = SHOWN_JOB.get(rec.state)
    job_id = rec.jobs.get(name) if name else None
    if job_id is None and rec.jobs:
        job_id = list(rec.jobs.values())[-1]
    if job_id is None:
        return None
    try:
        info = job_info(fetch_job(job_id, r, cfg), cfg)
    except ApiError:  # expired, or from another deployment: nothing to show
        return None
    return info.model_dump(include={"id", "kind", "state", "stage", "progress", "message", "error"})


def following(st: Store, rec: SessionRecord) -> dict[str, Any] | None:
    """The phase being followed live (batches held, not yet closed): per channel its trials
    so far (``sessions.live.live_status``)."""
    for phase in PHASES:
        if phase not in rec.uploads and st.files(rec.id).live_batches(phase):
            return live_status(st, rec.id, phase).model_dump(mode="json")
    return None


def progress(st: Store, cfg: Settings, r: Redis, session_id: str) -> dict[str, Any]:
    rec = observed(st.get_session(session_id), cfg, r)
    return {
        "state": rec.state,
        "words": WORDS[rec.state],
        "job": current_job(cfg, r, rec),
        "following": following(st, rec),
    }


def _cell(value: float) -> int:
    """A readout location in [-1, 1] as a cell of the 7 x 7 map (1-7)."""
    return int(np.clip(np.round((value + 1) / 2 * 6), 0, 6)) + 1


def session_view(
    st: Store, cfg: Settings, r: Redis, session_id: str, on_s: float, off_s: float
) -> dict[str, Any]:
    """Everything the session page shows, for what the session has so far."""
    rec = observed(st.get_session(session_id), cfg, r)
    files = st.files(session_id)
    config = rec.config
    view: dict[str, Any] = {
        "id": rec.id,
        "state": rec.state,
        "words": WORDS[rec.state],
        "states": [(s, s == rec.state) for s in STATES],
        "actions": ACTIONS.get(rec.state, ()),
        "error": rec.error,
        "config": config,
        "job": current_job(cfg, r, rec),
        "on_s": on_s,
        "off_s": off_s,
        "downloads": [],
        "following": following(st, rec),
    }
    if files.has_trials("phase1"):
        cols = files.trial_columns("phase1")
        rows = []
        for channel in config.channels:
            mine = cols["channel"] == channel
            _, counts = np.unique(cols["stimulus"][mine], return_counts=True)
            rows.append(
                {
                    "channel": channel,
                    "trials": int(mine.sum()),
                    "repeats": f"{counts.min()}-{counts.max()}" if len(counts) else "-",
                }
            )
        view["phase1"] = rows
    analysis = files.analysis() if files.has_analysis() else None
    held_out = {}
    if analysis:
        held_out = {c["channel"]: c["generalisation_preferred"] for c in analysis["channels"]}
    if files.has_channels():
        view["inclusion"] = files.channels()["channels"]
        view["fit"] = [
            {
                "channel": row["channel"],
                "r_test": row.get("r_test"),
                "p_test": row.get("p_test"),
                "ceiling": (held_out.get(row["channel"]) or {}).get("noise_ceiling"),
                "normalised": (held_out.get(row["channel"]) or {}).get("r_normalised"),
                "cell": f"({_cell(row['mu_x'])}, {_cell(row['mu_y'])})",
                "flag": row.get("fit_flag"),
            }
            for row in view["inclusion"]
            if row["included"] and "mu_x" in row
        ]
        if files.has_readouts():
            view["downloads"].append(("models-npz", "the readouts (NPZ)"))
    if files.has_selection():
        selection = files.selection()
        sets = config.sets
        view["picks"] = [
            {
                "channel": c["channel"],
                "reference": c.get("reference"),
                "by_category": {
                    cat: [
                        {**p, "set": sets.get(p["category"], "")}
                        for p in c["picks"]
                        if p["category"] == cat
                    ]
                    for cat in dict.fromkeys(p["category"] for p in c["picks"])
                },
            }
            for c in selection["channels"]
            if c["included"]
        ]
        shown = len(selection["sequence"])
        view["list"] = {
            "images": len(selection["phase_two"]["entries"]),
            "stability": len(selection["phase_two"]["stability_images"]),
            "presentations": shown,
            "repeats": selection["config"].get("repeats"),
            "seconds": shown * (on_s + off_s),
        }
        view["downloads"].append(("selection-csv", "the phase-two list (CSV)"))
    if analysis:
        rows = analysis_rows(analysis, metrics=False)
        view["analysis"] = {"columns": key_columns(rows), "rows": rows}
        view["summary"] = analysis["summary"]
        view["downloads"].append(("analysis-csv", "the analysis, a row per channel (CSV)"))
        view["downloads"].append(("analysis-json", "the analysis (JSON)"))
    metas = files.saliency_results()
    view["saliency"] = metas
    view["fitted_channels"] = [row["channel"] for row in view.get("fit", [])]
    if files.has_phase_three_list():
        plan = files.phase_three_list()
        view["phase3_fragments"] = [
            e for e in plan["entries"] if e["kind"] in ("salient", "complement", "random")
        ][:24]
        view["downloads"] += [("phase3-csv", "the phase-three list (CSV)")]
        view["downloads"] += [("stimuli-zip", "the phase-three images (zip)")]
    if files.has_phase_three_analysis():
        view["phase3"] = phase_three_rows(files.phase_three_analysis())
    if analysis or metas:
        view["downloads"].append(("report-html", "the session report (HTML)"))
    return view
