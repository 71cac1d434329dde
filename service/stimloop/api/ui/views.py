"""What the live pages show, read from the same store and job states as ``/v1``: plain rows
for the templates (which escape every value)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import numpy as np
from redis import Redis
from stimloop_contract.result_tables import analysis_rows, key_columns, phase_three_rows
from stimloop_contract.sessions import SessionSettings

from stimloop.api.errors import ApiError
from stimloop.api.jobs import fetch_job
from stimloop.runtime.settings import Settings
from stimloop.sessions.jobs import actions_now, observed
from stimloop.sessions.live import live_status
from stimloop.sessions.nwb_export import missing_metadata
from stimloop.sessions.session_jobs import failure_line, job_rows
from stimloop.storage.registry import weights_problem
from stimloop.storage.session import Phase, SessionRecord
from stimloop.storage.session_states import SHOWN_JOB, STATES, WORDS
from stimloop.storage.store import Store
from stimloop.worker.queue import job_info

PHASES: tuple[Phase, ...] = get_args(Phase)


SORTS = ("created", "label", "subject", "state", "changed")


def session_rows(
    st: Store,
    cfg: Settings,
    r: Redis,
    state: str | None = None,
    subject: str | None = None,
    text: str | None = None,
    since: str | None = None,
    until: str | None = None,
    sort: str = "created",
) -> list[dict[str, Any]]:
    """One row per session as a reader sees it (``observed``: a failed preparation shows
    failed), only those matching every filter given: ``state``; ``subject`` (the animal's
    id); ``text`` (in the label, the animal's id or the notes, any case); created on or after
    ``since`` and on or before ``until`` (dates, YYYY-MM-DD). Sorted by ``sort`` (``SORTS``),
    the newest first for the times."""
    rows = []
    needle = (text or "").strip().lower()
    for stored in st.list_sessions():
        rec = observed(stored, cfg, r)
        config = rec.config
        animal = config.subject.subject_id if config.subject else ""
        day = rec.created[:10]
        if (
            (state and rec.state != state)
            or (subject and animal != subject)
            or (since and day < since)
            or (until and day > until)
        ):
            continue
        if needle and needle not in " ".join([config.label or "", animal, config.notes]).lower():
            continue
        last = rec.history[-1]["time"] if rec.history else rec.created
        rows.append(
            {
                "id": rec.id,
                "label": config.label or "",
                "subject": animal,
                "notes": config.notes,
                "state": rec.state,
                "failed_in": rec.failed_in if rec.state == "failed" else None,
                "channels": len(config.channels),
                "created": rec.created,
                "changed": last,
            }
        )
    newest_first = sort in ("created", "changed")
    key = sort if sort in SORTS else "created"

    def order(row: dict[str, Any]) -> tuple:
        first = STATES.index(row["state"]) if key == "state" else row[key].lower()
        return (first, row["created"])

    return sorted(rows, key=order, reverse=newest_first)


def subjects(st: Store) -> list[str]:
    """The animals' ids of every session, for the list's filter."""
    return sorted(
        {rec.config.subject.subject_id for rec in st.list_sessions() if rec.config.subject}
    )


# the sections of a session's settings the create form takes as JSON (stimloop-rig --config's)
SETTING_SECTIONS = {"fit", "inclusion", "selection", "analysis", "windows"}


def create_form(st: Store, registry: dict[str, Any], weights_dir: Path) -> dict[str, Any]:
    """What the create form offers: the registered sets by category (the paper's three
    fields each list every set, their own category first) and the backbones, each with
    whether its weights are in place (chosen: the paper's when ready, else the first ready
    one)."""
    sets = sorted(st.list_sets(), key=lambda rec: rec.id)

    def choices(category: str) -> list[dict[str, Any]]:
        mine = [rec for rec in sets if rec.category == category]
        others = [rec for rec in sets if rec.category != category]
        return [
            {"id": rec.id, "category": rec.category, "count": rec.count} for rec in mine + others
        ]

    backbones = [
        {"name": name, "problem": weights_problem(spec, weights_dir)}
        for name, spec in sorted(registry.items())
    ]
    ready = [b["name"] for b in backbones if b["problem"] is None]
    paper = SessionSettings.model_fields["backbone"].default  # the paper's robust ResNet-50
    return {
        "body": choices("body"),
        "object": choices("object"),
        "control_body": choices("control_body"),
        "backbones": backbones,
        "chosen_backbone": paper if paper in ready else (ready[0] if ready else None),
    }


def create_request(
    backbone: str,
    sets: tuple[str, str, str],
    channels: str,
    label: str,
    subject: tuple[str, str, str, str],
    notes: str,
    seed: str,
    split: str,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The create form's fields as a ``PaperSessionCreate`` request (validated by the
    caller): channels split at commas, spaces or lines; empty fields left out; ``split``
    ("80,20,20") into the fit's settings; line breaks of the notes as typed."""
    asked: dict[str, Any] = {
        **extra,
        "backbone": backbone,
        "body_set": sets[0],
        "object_set": sets[1],
        "control_body_set": sets[2],
        "channels": [c for c in re.split(r"[\s,;]+", channels) if c],
        "notes": notes.replace("\r\n", "\n"),
        "seed": seed.strip() or "0",
    }
    if label.strip():
        asked["label"] = label.strip()
    subject_id, species, sex, age = (part.strip() for part in subject)
    if subject_id or species or sex or age:
        fields = {"subject_id": subject_id, "species": species, "sex": sex, "age": age}
        asked["subject"] = {k: v for k, v in fields.items() if v}
    if split.strip():
        fit = dict(asked.get("fit") or {})
        fit["split"] = [part.strip() for part in split.split(",")]
        asked["fit"] = fit
    return asked


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
    shown = info.model_dump(include={"id", "kind", "state", "stage", "progress", "message"})
    shown["failure"] = failure_line(info.kind, info.error) if info.state == "failed" else None
    return shown


def following(st: Store, rec: SessionRecord) -> dict[str, Any] | None:
    """The phase being followed live (batches held, not yet closed): per channel its trials
    so far (``sessions.live.live_status``)."""
    for phase in PHASES:
        if phase not in rec.uploads and st.files(rec.id).live_batches(phase):
            return live_status(st, rec.id, phase).model_dump(mode="json")
    return None


def progress(
    st: Store, cfg: Settings, r: Redis, session_id: str, role: str, caller_id: str
) -> dict[str, Any]:
    """What the page's script refreshes every second: the state, the job it waits on, every
    job of the session (``session_jobs.job_rows``), a phase being followed."""
    rec = observed(st.get_session(session_id), cfg, r)
    return {
        "state": rec.state,
        "words": WORDS[rec.state],
        "job": current_job(cfg, r, rec),
        "jobs": job_rows(cfg, r, session_id, role, caller_id),
        "following": following(st, rec),
    }


def uploads_offered(st: Store, rec: SessionRecord) -> list[dict[str, Any]]:
    """The phases whose trials the page offers to upload now, each with whether it replaces
    an upload already in (phase one: always, a second one replaces; phase two: once the list
    is stored; phase three: once its list is built)."""
    files = st.files(rec.id)
    offered = [("phase1", "Phase one", True)]
    offered.append(("phase2", "Phase two", files.has_selection()))
    offered.append(("phase3", "Phase three", files.has_phase_three_list()))
    return [
        {
            "phase": phase,
            "title": title,
            "replace": phase in rec.uploads,
            "trials": rec.uploads[phase].trials if phase in rec.uploads else None,
        }
        for phase, title, ready in offered
        if ready
    ]


def _cell(value: float) -> int:
    """A readout location in [-1, 1] as a cell of the 7 x 7 map (1-7)."""
    return int(np.clip(np.round((value + 1) / 2 * 6), 0, 6)) + 1


def session_view(
    st: Store,
    cfg: Settings,
    r: Redis,
    session_id: str,
    on_s: float,
    off_s: float,
    role: str,
    caller_id: str,
) -> dict[str, Any]:
    """Everything the session page shows, for what the session has so far; ``role`` and
    ``caller_id``: who looks (the buttons they may use)."""
    rec = observed(st.get_session(session_id), cfg, r)
    files = st.files(session_id)
    config = rec.config
    view: dict[str, Any] = {
        "id": rec.id,
        "state": rec.state,
        "words": WORDS[rec.state],
        "states": [(s, s == rec.state) for s in STATES],
        "actions": actions_now(rec, cfg, r),
        "error": rec.error,
        "failed_in": rec.failed_in if rec.state == "failed" else None,
        "config": config,
        "created": rec.created,
        "job": current_job(cfg, r, rec),
        "jobs": job_rows(cfg, r, session_id, role, caller_id),
        "uploads": uploads_offered(st, rec) if role == "rig" else [],
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
            "registration": selection.get("registration"),
            "level": (selection.get("predictions") or {}).get("level"),
        }
        view["downloads"].append(("selection-csv", "the phase-two list (CSV)"))
        view["downloads"].append(("sequence-csv", "the presentation sequence (CSV)"))
        view["downloads"].append(("selection-mat", "the list and the sequence (MATLAB/Octave)"))
        if selection.get("registration"):
            view["downloads"].append(
                ("registration-json", "the registered predictions (JSON; its sha256 is the hash)")
            )
    if analysis:
        rows = analysis_rows(analysis, metrics=False)
        view["analysis"] = {"columns": key_columns(rows), "rows": rows}
        view["summary"] = analysis["summary"]
        view["scoring"] = analysis.get("scoring")
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
        view["downloads"] += [("phase3sequence-csv", "the phase-three sequence (CSV)")]
        view["downloads"] += [("stimuli-zip", "the phase-three images (zip)")]
    if files.has_phase_three_analysis():
        view["phase3"] = phase_three_rows(files.phase_three_analysis())
    if analysis or metas:
        view["downloads"].append(("report-html", "the session report (HTML)"))
    if "phase1" in rec.uploads:
        missing = missing_metadata(rec)
        if missing:
            what = f"a draft NWB file (the animal's {', '.join(missing)} missing: not for DANDI)"
            view["downloads"].append(("draft-nwb", what))
        else:
            view["downloads"].append(("session-nwb", "the session on the record (NWB, for DANDI)"))
    return view
