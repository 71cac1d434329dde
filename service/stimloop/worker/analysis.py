"""After phase two: stability, selectivity and generalisation per channel (sec. 4, 5.1)."""

from __future__ import annotations

from typing import Any

from stimloop.science.analysis import analyse as analyse_tables
from stimloop.science.configs import AnalysisConfig
from stimloop.science.responses import response_table
from stimloop.science.selection import selection_from_dict
from stimloop.storage.store import read_json, read_npz, write_json
from stimloop.worker.fitting import load_readout, trials_from_columns
from stimloop.worker.resources import Report, Resources, provenance, quiet, windows_of


def analyse(
    res: Resources, session_id: str, report: Report = quiet, generation: int | None = None
) -> dict[str, Any]:
    store = res.store
    record, generation = res.session_for_job(session_id, generation)
    config = record["config"]
    windows = windows_of(config)
    p1 = trials_from_columns(read_npz(store.path(session_id, "phase1.npz")), windows)
    p2 = trials_from_columns(read_npz(store.path(session_id, "phase2.npz")), windows)
    selection = selection_from_dict(read_json(store.path(session_id, "selection.json")))
    channels = config["channels"]
    t1 = response_table(p1, channels=channels)
    t2 = response_table(p2, channels=channels)
    entries = selection.phase_two.entries
    objects = [e.stimulus for e in entries if e.category == "object"]
    controls = [e.stimulus for e in entries if e.category == "control_body"]
    readout = None
    obj_pred = test_pred = None
    if store.path(session_id, "readouts.npz").is_file():
        readout = load_readout(store.session_dir(session_id))
        report("predicting", 0.3, "predictions for the phase-two objects and test bodies")
        if objects:
            _, obj_maps = res.maps(config["backbone"], config["object_set"], objects)
            obj_pred = readout.predict(obj_maps)
        test_ids = readout.split_ids["test"]
        _, test_maps = res.maps(config["backbone"], config["body_set"], test_ids)
        test_pred = readout.predict(test_maps)
    result = analyse_tables(
        t1,
        t2,
        readout,
        selection.phase_two.stability_bodies,
        objects,
        controls,
        obj_pred,
        test_pred,
        AnalysisConfig(**config.get("analysis", {})),
        seed=config["seed"],
    )
    weights = readout.weights_sha256 if readout else res.backbone(config["backbone"]).weights_sha256
    with res.fenced(session_id, generation) as rec:
        write_json(
            store.path(session_id, "analysis.json"),
            {**result.to_dict(), **provenance(config, weights)},
        )
        store.transition(rec, "analysed", "analysis ready")
    report("done", 1.0, "analysis ready")
    return result.summary
