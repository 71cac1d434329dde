"""After phase two: stability, selectivity and generalisation per channel (sec. 4, 5.1), for
the session's categories: the preferred candidates (control bodies) against each other
category (objects), and the readout's predictions on the held-out preferred images and on
each other category's picks, those read from the predictions registered with the list (checked
against the hash the session recorded), which are then scored."""

from __future__ import annotations

from typing import Any

from stimloop.science.analysis import analyse as analyse_tables
from stimloop.science.responses import response_table
from stimloop.science.scoring import score
from stimloop.science.selection import PredictionTable, selection_from_dict
from stimloop.storage.registration import RegistrationError
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
    registered, registered_sha = None, None
    if record.registration is not None:
        # the registered copy, checked against the hash the record kept, is what is scored (a
        # file without a recorded hash is no registration: a list stored before there were any)
        document, registered_sha = files.registration(record.registration)
        registered = PredictionTable.from_dict(document["predictions"])
    if files.has_readouts():
        readout = files.readout()
        report("predicting", 0.3, "predictions for the phase-two picks and held-out images")
        shown = {**others, **candidates}
        if registered is not None:
            if readout.sha256() != document["readout_sha256"]:
                raise RegistrationError(
                    f"the stored readouts (sha256 {readout.sha256()}) are not the ones the "
                    f"predictions were registered with ({document['readout_sha256']})"
                )
            row = {s: i for i, s in enumerate(registered.stimuli)}
            for category, ids in shown.items():
                if ids:
                    predictions[category] = registered.predicted[[row[i] for i in ids]]
        else:  # a list stored before predictions were registered
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
    scoring = None
    if registered is not None and registered_sha is not None:
        report("scoring", 0.8, f"the registered predictions ({registered_sha[:12]}...)")
        reasons = {e.stimulus: [(r.channel, r.role, r.rank) for r in e.reasons] for e in entries}
        scoring = score(registered, registered_sha, reasons, t2, config.analysis, config.seed)
    weights = readout.weights_sha256 if readout else res.backbone(config.backbone).weights_sha256
    with res.fenced(session_id, record.generation) as rec:
        names = {
            "preferred": config.preferred_category,
            "preferred_candidates": [c.category for c in config.preferred_candidates],
            "others": [c.category for c in config.others],
        }
        files.write_analysis(
            {
                "categories": names,
                **result.to_dict(),
                "scoring": scoring.to_dict() if scoring else None,
                **provenance(config, weights),
            }
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
