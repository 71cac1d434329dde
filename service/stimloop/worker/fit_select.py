"""After phase one: fit every channel's readout, select the phase-two list (sec. 3-4)."""

from __future__ import annotations

from typing import Any

import numpy as np

from stimloop.science.configs import InclusionConfig, ReadoutConfig, SelectionConfig
from stimloop.science.readout import FittedReadout
from stimloop.science.selection import presentation_sequence, select
from stimloop.storage import session_states
from stimloop.storage.activations import Activations
from stimloop.storage.store import read_npz, write_json
from stimloop.worker.fitting import (
    FitResult,
    channel_rows,
    fit_recording,
    save_readout,
    trials_from_columns,
)
from stimloop.worker.resources import (
    Report,
    Resources,
    StopCheck,
    provenance,
    quiet,
    windows_of,
)


def fit_and_select(
    res: Resources,
    session_id: str,
    report: Report = quiet,
    should_stop: StopCheck | None = None,
    generation: int | None = None,
) -> dict[str, Any]:
    """Fit, predict and select for the session's ``generation`` (None: the current one);
    everything is written under the fence, so a stale run writes nothing."""
    store = res.store
    with res.fenced(session_id, generation) as rec:
        store.transition(rec, "fitting", "fit started")
        config = rec["config"]
        generation = session_states.generation(rec)
    columns = read_npz(store.path(session_id, "phase1.npz"))
    trials = trials_from_columns(columns, windows_of(config))
    report("activations", 0.0, "reading body maps")
    body_ids, body_maps = res.maps(config["backbone"], config["body_set"], report=report)
    shown = set(trials.stimulus)
    body_ids_shown = [i for i in body_ids if i in shown]
    keep = [i for i, b in enumerate(body_ids) if b in shown]
    body_maps = body_maps[keep]
    backbone = res.backbone(config["backbone"])
    act = Activations(
        body_ids_shown, body_maps, [""] * len(keep), config["backbone"], backbone.weights_sha256
    )
    readout_cfg = ReadoutConfig.from_dict(config["fit"])
    sil = None
    if readout_cfg.silhouettes:
        report("silhouettes", 0.0, "silhouette maps of the training bodies")
        sil_maps = res.silhouette_maps(
            config["backbone"], config["body_set"], body_ids_shown, report=report
        )
        sil = Activations(body_ids_shown, sil_maps, [""] * len(keep), "", "")

    def progress(epoch: int, total: int, best: float) -> None:
        if epoch % max(1, total // 100) == 0 or epoch == total:
            report("fitting", epoch / total, f"epoch {epoch}/{total}, best val loss {best:.4g}")

    result = fit_recording(
        act,
        trials,
        silhouettes=sil,
        inclusion=InclusionConfig(**config["inclusion"]),
        readout=readout_cfg,
        seed=config["seed"],
        device=str(backbone.device),
        progress=progress,
        should_stop=should_stop,
    )
    report(
        "selecting",
        0.0,
        f"{len(result.included)} of {len(config['channels'])} channels included",
    )
    selection = select_for(res, config, result, body_ids_shown, body_maps, report)
    prov = provenance(config, backbone.weights_sha256)
    with res.fenced(session_id, generation) as rec:
        write_json(
            store.path(session_id, "channels.json"), {"channels": channel_rows(result), **prov}
        )
        if result.readout is not None:
            save_readout(store.session_dir(session_id), result.readout)
        write_json(store.path(session_id, "selection.json"), {**selection, **prov})
        store.transition(
            rec,
            "selected",
            "selection ready",
            included=len(result.included),
            phase_two_images=len(selection["phase_two"]["entries"]),
        )
    report("done", 1.0, "phase-two list ready")
    return {"included": result.included, "phase_two": len(selection["phase_two"]["entries"])}


def select_for(
    res: Resources,
    config: dict[str, Any],
    result: FitResult,
    body_ids: list[str],
    body_maps: np.ndarray,
    report: Report = quiet,
) -> dict[str, Any]:
    cands = [
        res.candidates(config["backbone"], config["object_set"], "object", report),
        res.candidates(config["backbone"], config["control_body_set"], "control_body", report),
    ]
    report("selecting", 0.5, "predicting and ranking the candidates")
    table = result.table
    means = np.stack([table.mean[table.channel_index(v.channel)] for v in result.inclusion])
    readout = result.readout
    if readout is None:  # every channel excluded: an empty selection with the reasons
        readout = FittedReadout(
            [],
            np.zeros((0, 2)),
            np.zeros((0, 1)),
            np.zeros(0),
            np.zeros(0, int),
            {},
            {},
            {},
            {},
            ReadoutConfig(),
            0,
            "",
        )
    sel_cfg = SelectionConfig(**config["selection"])
    selection = select(
        readout,
        result.inclusion,
        body_ids,
        means,
        body_maps,
        cands,
        sel_cfg,
        seed=config["seed"],
    )
    out = selection.to_dict()
    stimuli = selection.phase_two.stimuli
    out["sequence"] = (
        presentation_sequence(stimuli, sel_cfg.repeats, config["seed"])
        if len(stimuli) > 1
        else stimuli * sel_cfg.repeats
    )
    return out
