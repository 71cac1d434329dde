"""After phase two: stability, selectivity and generalisation per channel (sec. 4, 5.1), for
the session's categories: the preferred candidates (control bodies) against each other
category (objects), and the readout's predictions on the held-out preferred images and on
each other category's picks."""

from __future__ import annotations

from typing import Any

from stimloop.science.analysis import analyse as analyse_tables
from stimloop.science.responses import response_table
from stimloop.science.selection import selection_from_dict
from stimloop.storage.session_states import transition
from stimloop.worker.context import Report, WorkerContext, provenance, quiet


def analyse(
    res: WorkerContext, session_id: str, report: Report = quiet, generation: int | None = None
) -> dict[str, Any]:
    record, files = res.session_for_job(session_id, generation)
    config = record.config
    channels = config.channels
    t1 = response_table(files.trials("phase1", config.windows), channels=channels)
    t2 = response_table(files.trials("phase2", config.windows), channels=channels)
    selection = selection_from_dict(files.selection())
    entries = selection.phase_two.entries
    preferred = {c.category for c in config.preferred_candidates}
    preferred_picks = [e.stimulus for e in entries if e.category in preferred]

    def picks(category: str) -> list[str]:
        return [e.stimulus for e in entries if e.category == category]

    others = {c.category: picks(c.category) for c in config.others}
    candidates = {c.category: picks(c.category) for c in config.preferred_candidates}
    readout = None
    predictions, test_pred = {}, None
    if files.has_readouts():
        readout = files.readout()
        report("predicting", 0.3, "predictions for the phase-two picks and held-out images")
        shown = {**others, **candidates}
        for c in [*config.others, *config.preferred_candidates]:
            if shown[c.category]:
                _, maps = res.maps(config.backbone, c.set, shown[c.category])
                predictions[c.category] = readout.predict(maps)
        test_ids = readout.split_ids["test"]
        _, test_maps = res.maps(config.backbone, config.preferred_set, test_ids)
        test_pred = readout.predict(test_maps)
    report("analysing", 0.6, "stability, selectivity and generalisation per channel")
    result = analyse_tables(
        t1,
        t2,
        readout,
        selection.phase_two.stability_images,
        preferred_picks,
        others,
        predictions,
        test_pred,
        config.analysis,
        seed=config.seed,
        candidates=candidates,
    )
    weights = readout.weights_sha256 if readout else res.backbone(config.backbone).weights_sha256
    with res.fenced(session_id, record.generation) as rec:
        names = {
            "preferred": config.preferred_category,
            "preferred_candidates": [c.category for c in config.preferred_candidates],
            "others": [c.category for c in config.others],
        }
        files.write_analysis(
            {"categories": names, **result.to_dict(), **provenance(config, weights)}
        )
        if readout is not None:  # what the recording was compared with, for the export
            shown = {**others, **candidates}
            compared = {c: (shown[c], v) for c, v in predictions.items()}
            if test_pred is not None:
                compared["test"] = (list(readout.split_ids["test"]), test_pred)
            files.write_predictions(list(readout.channels), compared)
        transition(rec, "analysed", "analysis ready")
    report("done", 1.0, "analysis ready")
    return result.summary
