"""After phase one: fit every channel's readout, select the phase-two list (sec. 3-4).

The readouts are trained on the preferred set's images (bodies in the paper); the picks come
from each candidate set (objects, control bodies), labelled by its category."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import numpy as np
from stimloop_contract.configs import ReadoutConfig

from stimloop.science.candidate_cells import maps_of_cells
from stimloop.science.intervals import (
    Calibration,
    Ensemble,
    calibrate,
    fit_ensemble,
    standard_error,
    with_residual,
)
from stimloop.science.readout import FittedReadout
from stimloop.science.responses import response_table, trials_from_columns
from stimloop.science.selection import Candidates, presentation_sequence, select
from stimloop.storage.activations import Activations
from stimloop.storage.session import SessionConfig, SessionFiles
from stimloop.storage.session_states import transition
from stimloop.worker.context import (
    Report,
    StopCheck,
    WorkerContext,
    provenance,
    quiet,
)
from stimloop.worker.fitting import (
    FitResult,
    channel_rows,
    fit_recording,
)


def fit_and_select(
    res: WorkerContext,
    session_id: str,
    report: Report = quiet,
    should_stop: StopCheck | None = None,
    generation: int | None = None,
) -> dict[str, Any]:
    """Fit, predict and select for the session's ``generation`` (None: the current one);
    everything is written under the fence, so a stale run writes nothing."""
    with res.fenced(session_id, generation) as rec:
        transition(rec, "fitting", "fit started")
        config = rec.config
        generation = rec.generation
    files = res.store.files(session_id)
    trials = files.trials("phase1", config.windows)
    report("activations", 0.0, "reading the preferred set's maps")
    ids, maps = res.maps(config.backbone, config.preferred_set, report=report)
    shown = set(trials.stimulus)
    ids_shown = [i for i in ids if i in shown]
    keep = [i for i, b in enumerate(ids) if b in shown]
    maps = maps[keep]
    backbone = res.backbone(config.backbone)
    act = Activations(ids_shown, maps, [""] * len(keep), config.backbone, backbone.weights_sha256)
    sil = None
    if config.fit.silhouettes:
        report("silhouettes", 0.0, "silhouette maps of the training images")
        sil_maps = res.silhouette_maps(config.backbone, config.preferred_set, ids_shown, report)
        sil = Activations(ids_shown, sil_maps, [""] * len(keep), "", "")

    def progress(epoch: int, total: int, best: float) -> None:
        if epoch % max(1, total // 100) == 0 or epoch == total:
            report("fitting", epoch / total, f"epoch {epoch}/{total}, best val loss {best:.4g}")

    result = fit_recording(
        act,
        trials,
        silhouettes=sil,
        inclusion=config.inclusion,
        readout=config.fit,
        seed=config.seed,
        device=str(backbone.device),
        progress=progress,
        should_stop=should_stop,
    )
    report(
        "selecting",
        0.0,
        f"{len(result.included)} of {len(config.channels)} channels included",
    )
    selection = select_for(res, config, result, ids_shown, maps, files, report)
    prov = provenance(config, backbone.weights_sha256)
    with res.fenced(session_id, generation) as rec:
        files.write_channels({"channels": channel_rows(result, config.analysis.alpha), **prov})
        if result.readout is not None:
            files.save_readout(result.readout)
        if selection["predictions"] is not None and result.readout is not None:
            document = registration_document(
                session_id, config, selection["predictions"], result.readout, prov
            )
            rec.registration = files.register(document, rec.registration)
            selection["registration"] = rec.registration
        files.write_selection({**selection, **prov})
        transition(
            rec,
            "selected",
            "selection ready",
            included=len(result.included),
            phase_two_images=len(selection["phase_two"]["entries"]),
            registration=rec.registration,
        )
    report("done", 1.0, "phase-two list ready")
    return {"included": result.included, "phase_two": len(selection["phase_two"]["entries"])}


def select_for(
    res: WorkerContext,
    config: SessionConfig,
    result: FitResult,
    ids: list[str],
    maps: np.ndarray,
    files: SessionFiles,
    report: Report = quiet,
) -> dict[str, Any]:
    """Sec. 3.2 and 4's picks from every candidate set, the stability images and the
    presentation sequence. ``ids``/``maps``: the preferred set's images shown in phase one;
    ``files``: the session's, where phase one showed calibration images."""
    cands = [
        res.candidates(config.backbone, c.set, c.category, report) for c in config.candidate_sets
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
    ensemble = None
    if result.readout is not None:
        report(
            "selecting",
            0.4,
            f"{config.selection.ensemble} bootstrap readouts per channel for the intervals",
        )
        device = res.backbone(config.backbone).device
        ensemble = ensemble_for(
            result, ids, maps, config.selection.ensemble, config.seed, str(device)
        )
        if files.has_calibration("phase1"):
            ensemble = ensemble.with_calibrations(
                calibrations_for(files, config, result.readout, cands)
            )
    selection = select(
        readout,
        result.inclusion,
        ids,
        means,
        maps,
        cands,
        config.selection,
        seed=config.seed,
        ensemble=ensemble,
        held=config.calibration_ids,
    )
    out = selection.to_dict()
    out["registration"] = None
    stimuli = selection.phase_two.stimuli
    repeats = config.selection.repeats
    out["sequence"] = (
        presentation_sequence(stimuli, repeats, config.seed)
        if len(stimuli) > 1
        else stimuli * repeats
    )
    return out


def ensemble_for(
    result: FitResult,
    ids: list[str],
    maps: np.ndarray,
    size: int,
    seed: int,
    device: str = "cpu",
) -> Ensemble:
    """The bootstrap ensemble of the included channels (``science.intervals``): members on the
    readouts' training bodies, the residual term on their validation and test bodies.
    ``ids``/``maps``: the preferred set's images shown in phase one, ``[N, F, H, W]``."""
    readout = result.readout
    assert readout is not None
    table = result.table
    rows = [table.channel_index(c) for c in readout.channels]
    column = {s: i for i, s in enumerate(table.stimuli)}
    at = {s: i for i, s in enumerate(ids)}

    def part(*names: str) -> tuple[list[int], np.ndarray, np.ndarray]:
        chosen = [s for name in names for s in readout.split_ids[name]]
        cols = [column[s] for s in chosen]
        means = table.mean[np.ix_(rows, cols)].T  # [n, C]
        sem = standard_error(table.values[np.ix_(rows, cols)]).T
        return [at[s] for s in chosen], means, sem

    train, train_means, _ = part("train")
    held, held_means, held_sem = part("val", "test")
    members = fit_ensemble(
        readout, maps[train], train_means, range(len(train)), size, seed, device=device
    )
    return with_residual(members, readout, maps[held], held_means, held_sem)


def calibrations_for(
    files: SessionFiles,
    config: SessionConfig,
    readout: FittedReadout,
    candidates: list[Candidates],
) -> list[Calibration]:
    """Each candidate category's ``Calibration`` on the calibration images phase one showed
    (``science.intervals``): the fitted readout's predictions for them (from the candidates'
    cell-major maps) against their recorded means. A category none of whose images has trials
    is left uncalibrated; phase one must have shown some (``has_calibration``)."""
    trials = trials_from_columns(files.calibration_columns("phase1"), config.windows)
    shown = set(trials.stimulus.tolist())
    rows = [config.channels.index(c) for c in readout.channels]
    _, h, w = readout.map_shape
    out = []
    for cand in candidates:
        ids = [i for i in config.calibration.get(cand.category, []) if i in shown]
        if not ids:
            continue
        at = {s: i for i, s in enumerate(cand.ids)}
        maps = maps_of_cells(cand.cells[:, [at[i] for i in ids]].cpu(), h, w)  # [n, F, H, W]
        table = response_table(trials.only(ids), stimuli=ids, channels=config.channels)
        means = table.mean[rows].T  # [n, C]
        sem = standard_error(table.values[rows]).T
        out.append(calibrate(cand.category, readout.predict(maps), means, sem))
    return out


def registration_document(
    session_id: str,
    config: SessionConfig,
    predictions: dict[str, Any],
    readout: FittedReadout,
    prov: dict[str, Any],
) -> dict[str, Any]:
    """What is registered: the predictions with their intervals, the readouts' and weights'
    hashes, the settings that chose them and when."""
    return {
        "session": session_id,
        "registered_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "predictions": predictions,
        "readout_sha256": readout.sha256(),
        "weights_sha256": readout.weights_sha256,
        "settings": {
            "selection": asdict(config.selection),
            "fit": asdict(config.fit),
            "inclusion": asdict(config.inclusion),
            "seed": config.seed,
        },
        **prov,
    }
