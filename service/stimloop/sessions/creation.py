"""What a request must satisfy before anything is stored or queued: a known backbone, and a
session's sets (registered, of distinct categories, sharing no ids, enough preferred images
for the fit's split). Each refusal says what to do."""

from __future__ import annotations

import numpy as np
from redis import Redis
from stimloop_contract.configs import SelectionConfig
from stimloop_contract.sessions import AnySessionCreate, PaperSessionCreate

from stimloop import __version__
from stimloop.runtime.settings import Settings
from stimloop.sessions.errors import StateConflictError, UnknownItemError
from stimloop.storage.registry import load_registry, weights_problem
from stimloop.storage.session import CandidateSet, SessionConfig, SessionRecord
from stimloop.storage.set_record import SetRecord
from stimloop.storage.store import Store
from stimloop.worker.queue import enqueue


def create(
    req: AnySessionCreate,
    cfg: Settings,
    st: Store,
    r: Redis,
    rig: str,
    idempotency_key: str | None = None,
) -> SessionRecord:
    """A new session (its backbone ready, its sets checked, ``session_config``) and its
    warming job; ``rig``: the creating token's id (the session's turn in the queues). With an
    ``idempotency_key`` seen before from the same token, the session that key created."""
    require_backbone(cfg, req.backbone, weights=True)
    record, new = st.create_session(
        session_config(st, req),
        {"stimloop_version": __version__, "seed": req.seed, "rig": rig},
        key=f"{rig}:{idempotency_key}" if idempotency_key else None,
    )
    if not new:
        return record  # a retry: the first create's session, nothing new
    job = enqueue(cfg, r, "warm", record.id, session=record.id, rig=record.rig)
    with st.locked(record.id) as rec:
        rec.jobs["warm"] = job.id
        return rec


def require_backbone(cfg: Settings, name: str, weights: bool = False) -> None:
    """404 unless ``name`` is in the registry (the message lists the known ones); with
    ``weights``, 409 unless its weights file is present and matches the registry's sha256,
    so that a session is refused before the animal works, not after phase one."""
    registry = load_registry(cfg.registry_path)
    if name not in registry:
        raise UnknownItemError(
            f"backbone {name!r} is not in the registry: {sorted(registry)}",
            title="Unknown backbone",
        )
    problem = weights_problem(registry[name], cfg.weights_dir) if weights else None
    if problem:
        raise StateConflictError(problem, title="Backbone not ready")


def is_preferred(category: str, preferred_category: str) -> bool:
    """The default of a candidate set's ``preferred``: its category is the preferred one, or
    that one's controls (``control_body`` for ``body``)."""
    return category in (preferred_category, f"control_{preferred_category}")


def refuse_small_candidate_sets(
    records: dict[str, SetRecord], sets: list[str], selection: SelectionConfig
) -> None:
    """409 when a candidate set holds fewer images than one channel's picks need from it (the
    top, bottom and most similar counts; the graded mode's levels), before the animal works
    rather than when the fit ends."""
    if selection.mode == "graded":
        need, what = max(selection.levels, selection.n_similar), f"{selection.levels} levels"
    else:
        need = max(selection.n_top, selection.n_bottom, selection.n_similar)
        what = "the top, bottom and most similar counts"
    for set_id in sets:
        held = selection.calibration
        if records[set_id].count - held < need:
            shown = f", less the {held} shown in phase one for calibration," if held else ""
            raise StateConflictError(
                f"candidate set {set_id!r} holds {records[set_id].count} images{shown}; each "
                f"channel picks {need} of them ({what}): register a larger set, or lower the "
                "counts (selection.levels, n_top, n_bottom, n_similar, calibration)",
                title="Set too small",
            )


def calibration_images(
    records: dict[str, SetRecord], candidates: list[CandidateSet], count: int, seed: int
) -> dict[str, list[str]]:
    """``count`` images of each candidate set, drawn with the session's seed (one stream per
    set, in the session's order), for phase one to show beside the preferred set: each
    category's intervals are calibrated on them (``science.intervals``)."""
    if count == 0:
        return {}
    return {
        c.category: draw_calibration(records[c.set].ids, count, seed, index)
        for index, c in enumerate(candidates)
    }


def draw_calibration(ids: list[str], count: int, seed: int, index: int) -> list[str]:
    """``count`` of a set's image ``ids`` for calibration, sorted: the draw of the session's
    ``index``-th candidate set with its ``seed`` (the same whatever order the set lists)."""
    ordered = sorted(ids)
    rng = np.random.default_rng([seed, 0xCA11B, index])
    return sorted(ordered[i] for i in rng.choice(len(ordered), count, replace=False))


def session_config(st: Store, req: AnySessionCreate) -> SessionConfig:
    """The session's config with each set's category read from its registration. 404 for a
    set that does not exist; 409 unless the sets are distinct, the paper's form names sets
    of its categories, the candidate sets' categories differ, one is of another category than
    the preferred, no two sets share an image id, and the preferred set holds the split."""
    preferred_id, requested = req.sets()
    named = [preferred_id, *(c.set for c in requested)]
    if len(set(named)) != len(named):
        raise StateConflictError(
            f"each set may appear once among the session's sets; named: {named}",
            title="Sets repeat",
        )
    records = {s: st.get_set(s) for s in named}
    if isinstance(req, PaperSessionCreate):
        for field, category in (
            ("body_set", "body"),
            ("object_set", "object"),
            ("control_body_set", "control_body"),
        ):
            set_id = getattr(req, field)
            if records[set_id].category != category:
                raise StateConflictError(
                    f"{field} {set_id!r} holds {records[set_id].category} images, not "
                    f"{category}; name a {category} set, or name the sets as preferred_set "
                    "and candidate_sets",
                    title="Wrong category",
                )
    preferred_category = records[preferred_id].category
    candidates = [
        CandidateSet(
            set=c.set,
            category=records[c.set].category,
            preferred=(
                c.preferred
                if c.preferred is not None
                else is_preferred(records[c.set].category, preferred_category)
            ),
        )
        for c in requested
    ]
    categories = [c.category for c in candidates]
    repeated = sorted({c for c in categories if categories.count(c) > 1})
    if repeated:
        raise StateConflictError(
            f"candidate sets {[c.set for c in candidates if c.category in repeated]} are all "
            f"of category {repeated[0]!r}; the phase-two list names picks by category, so "
            "merge them into one set or register them under distinct categories",
            title="Categories repeat",
        )
    if all(c.preferred for c in candidates):
        raise StateConflictError(
            "every candidate set is of the preferred category; the selectivity test needs a "
            "candidate set of another category (objects in the paper)",
            title="No other category",
        )
    refuse_shared_ids(records)
    count = records[preferred_id].count
    if sum(req.fit.split) > count:
        raise StateConflictError(
            f"the fit split {list(req.fit.split)} (train, validation, test) needs "
            f"{sum(req.fit.split)} images of the preferred set; {preferred_id!r} has {count}: "
            "give a smaller split (fit.split in the request; stimloop-rig create-session "
            "--split, e.g. 80,20,20 for 120 images)",
            title="Split too large",
        )
    refuse_small_candidate_sets(records, [c.set for c in candidates], req.selection)
    return SessionConfig(
        backbone=req.backbone,
        preferred_set=preferred_id,
        preferred_category=preferred_category,
        candidate_sets=candidates,
        channels=req.channels,
        fit=req.fit,
        inclusion=req.inclusion,
        selection=req.selection,
        analysis=req.analysis,
        windows=req.windows,
        seed=req.seed,
        label=req.label,
        subject=req.subject,
        notes=req.notes,
        calibration=calibration_images(records, candidates, req.selection.calibration, req.seed),
    )


def refuse_shared_ids(records: dict[str, SetRecord]) -> None:
    """422 when two of the session's sets share image ids.

    Every table of a session (phase-two list, trials, analysis) names images by id alone, so
    an object and a control body with one id could not be told apart.
    """
    ids = {s: set(r.ids) for s, r in records.items()}
    names = list(ids)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            shared = sorted(ids[first] & ids[second])
            if shared:
                raise StateConflictError(
                    f"sets {first!r} and {second!r} share {len(shared)} image ids, e.g. "
                    f"{shared[:10]}; a session names images by id alone, so give the images "
                    "of each set distinct ids (a manifest.json with an 'id' per file) and "
                    "register the set again",
                    title="Stimulus ids shared between sets",
                )
