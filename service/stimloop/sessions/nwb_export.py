"""A session on the record: one NWB file holding its animal, every image it showed, each
phase's trials, the loop's every decision (the phase-two list and why each image is on it,
the inclusion verdicts, the readouts and their fit metrics, the predictions the recording was
compared with), the analysis, the maps and phase three, and the provenance (stimloop's
version, backbone and weights sha256, every setting and seed, the sets' content hashes, each
job's time). Torch-free: the API exports without loading a model.

Layout, for a reader with pynwb (``README.md``, "A session on the record"):
``/general/subject`` the animal; ``/stimulus/templates/presented_images`` every image shown
(``Images``, named by id, with ``order_of_images``); where a phase's trials carry onsets and
its upload the recording's start, ``/stimulus/presentation/phase{1,2,3}_presentations``
(``IndexSeries`` into those images, at each onset) and the phase as an epoch (``/intervals/
epochs``, tagged with it); ``/processing/stimloop`` the tables: ``phase{1,2,3}_trials``
(stimulus, its index in ``order_of_images``, channel, repeat, onset, net rate in spikes/s and
the window counts where uploaded), ``phase_two_list``, ``picks`` (with each
prediction's interval), ``registered_predictions`` (the registered copy, its sha256 in the
description), ``inclusion``, ``readouts``, ``predictions``, ``analysis``, ``scoring`` and
``scoring_points`` (the registered predictions against phase two), ``saliency``,
``phase_three_list``, ``phase_three_analysis``, ``provenance``, and the maps as
``saliency_maps`` (``Images``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from stimloop_contract.configs import Windows
from stimloop_contract.result_tables import analysis_rows, phase_three_rows
from stimloop_contract.spike_times import counts_from_spike_times

from stimloop import __version__
from stimloop.sessions.errors import StateConflictError
from stimloop.sessions.exports import selection_csv
from stimloop.storage.atomic import read_npz
from stimloop.storage.session import PHASES, Phase, SessionFiles, SessionRecord, net_trials
from stimloop.storage.store import Store

# the Subject's fields DANDI checks as critical (nwbinspector --config dandi)
DANDI_SUBJECT = ("subject_id", "species", "sex", "age")

EXPERIMENT = (
    "Closed-loop stimulus selection (stimloop): phase one's responses to the preferred set "
    "fit a readout of a CNN's feature maps per channel; phase two shows, per channel, the "
    "other categories' images the readout predicts highest and lowest and the preferred "
    "category's controls most similar to the channel's reference image, plus repeated "
    "preferred-set images; stability, selectivity and generalisation are measured on phase "
    "two; shared-feature saliency maps and phase three's fragments follow."
)


def missing_metadata(record: SessionRecord) -> list[str]:
    """The DANDI-critical fields of the animal that the session was created without."""
    subject = record.config.subject
    if subject is None:
        return list(DANDI_SUBJECT)
    return [name for name in DANDI_SUBJECT if getattr(subject, name) in (None, "")]


def export_nwb(st: Store, session_id: str, out: Path, draft: bool = False) -> list[str]:
    """Write the session's NWB file to ``out``; returns the warnings (what a draft lacks).

    Refused (``StateConflictError``, 409) when the animal's DANDI-critical fields are
    missing, unless ``draft``; when the NWB extra (pynwb) is not installed; before phase
    one's trials are in."""
    try:
        from pynwb import NWBHDF5IO
    except ImportError:
        raise StateConflictError(
            "the NWB export needs pynwb, which this server does not have: install it with "
            "pip install 'stimloop[nwb]' and restart",
            title="NWB support not installed",
        ) from None
    record = st.get_session(session_id)
    missing = missing_metadata(record)
    if missing and not draft:
        raise StateConflictError(
            f"DANDI needs the animal's {', '.join(missing)}, and session {session_id} was "
            f"created without {'it' if len(missing) == 1 else 'them'}: export a draft "
            "(--draft; ?draft=true over HTTP) and add what is missing to the file, or create "
            "sessions with the animal (stimloop-rig create-session --subject M1 --species "
            "'Macaca mulatta' --sex M --age P7Y)",
            title="Not ready for the archive",
        )
    if "phase1" not in record.uploads:
        raise StateConflictError(
            f"session {session_id} has no trials yet (state {record.state}): the file records "
            "what was shown and recorded, so export once phase one is in",
            title="Nothing recorded yet",
        )
    verb = "is" if len(missing) == 1 else "are"
    warnings = [f"a draft: the animal's {', '.join(missing)} {verb} missing"] if missing else []
    files = st.files(session_id)
    uploaded = {p: files.recorded_columns(p) for p in PHASES if p in record.uploads}  # once
    nwbfile, notes = build_nwbfile(st, record, uploaded)
    warnings += notes
    out.parent.mkdir(parents=True, exist_ok=True)
    with NWBHDF5IO(str(out), "w") as io_:
        io_.write(nwbfile)
    return warnings


def build_nwbfile(
    st: Store, record: SessionRecord, uploaded: dict[Phase, dict[str, np.ndarray]]
) -> tuple[Any, list[str]]:
    """The session as a ``pynwb.NWBFile`` (in memory) and what it could not hold (the
    export's warnings); ``uploaded``: each phase's stored trial columns."""
    from pynwb import NWBFile, ProcessingModule
    from pynwb.file import Subject

    config = record.config
    files = st.files(record.id)
    start, offsets, notes = timeline(record, uploaded)
    nwbfile = NWBFile(
        session_description=config.label or f"stimloop closed-loop session {record.id}",
        identifier=f"stimloop-{record.id}-generation-{record.generation}",
        session_start_time=start,
        session_id=record.id,
        experiment_description=EXPERIMENT,
        keywords=["closed loop", "stimulus selection", "CNN readout", "inferotemporal cortex"],
        notes=config.notes or None,
        was_generated_by=[["stimloop", __version__]],
        source_script=f"stimloop {__version__}: stimloop export nwb {record.id}",
        source_script_file_name="stimloop",
    )
    if config.subject is not None:
        nwbfile.subject = Subject(
            subject_id=config.subject.subject_id,
            species=config.subject.species,
            sex=config.subject.sex,
            age=config.subject.age,
            description="the animal recorded from, as named when the session was created",
        )
    module = ProcessingModule(
        name="stimloop",
        description="the closed loop's trials, decisions, analysis and provenance "
        "(stimloop's tables; images in /stimulus/templates/presented_images)",
    )
    nwbfile.add_processing_module(module)

    module.add(categories_table(record))
    order = presented_images(st, record, uploaded)
    templates = images_container(order)
    nwbfile.add_stimulus_template(templates)
    index = {image_id: k for k, (image_id, _, _) in enumerate(order)}
    for phase, columns in uploaded.items():
        net_rate = net_trials(columns, config.windows).net_rate  # as the analysis
        module.add(trials_table(columns, net_rate, config.windows, phase, index))
        if phase in offsets:
            onsets, shown = presentations(columns)
            at = offsets[phase] + onsets
            lost = sorted(set(shown) - set(index))
            if lost:  # an image whose file is gone from the server (a phase-three fragment)
                notes.append(
                    f"{phase}'s presentations are not in the file: {len(lost)} of its "
                    f"images have no file on the server (e.g. {lost[:3]}); its trials and its "
                    "epoch are kept"
                )
            else:
                nwbfile.add_stimulus(presentation_series(phase, at, shown, index, templates))
            nwbfile.add_epoch(
                start_time=max(0.0, float(at[0]) + min(0.0, config.windows.baseline[0])),
                stop_time=float(at[-1]) + config.windows.response[1],
                tags=[phase],
            )
    notes += add_units(nwbfile, files, record, uploaded, offsets)
    if files.has_selection():
        module.add(phase_two_list(st, record.id))
        module.add(picks_table(files.selection()))
    if record.registration is not None:
        module.add(registration_table(*files.registration(record.registration)))
    if files.has_channels():
        module.add(
            table(
                "inclusion",
                "per channel the inclusion verdict of A.2 (responsiveness, Kruskal-Wallis p, "
                "split-half reliability) and the fit's metrics on the held-out bodies",
                files.channels()["channels"],
            )
        )
    if files.has_readouts():
        module.add(readouts_table(read_npz(files.readouts_npz)))
    if files.has_predictions():
        module.add(predictions_table(*files.predictions()))
    if files.has_analysis():
        analysis = files.analysis()
        module.add(
            table(
                "analysis",
                "per channel stability (test/retest Pearson r on the repeated images), "
                "selectivity (Mann-Whitney U of the preferred candidates against each other "
                "category, two-sided p) and generalisation (Pearson r of predicted on "
                "recorded means, with the noise ceiling and FEVE)",
                analysis_rows(analysis),
            )
        )
        if analysis.get("scoring"):
            module.add(scoring_table(analysis["scoring"]))
            points = [
                {"channel": c["channel"], **point}
                for c in analysis["scoring"]["channels"]
                for point in c["points"]
            ]
            module.add(
                table(
                    "scoring_points",
                    "per channel and picked image: the registered prediction and its sd "
                    "(spikes/s), the recorded phase-two mean and its standard error",
                    points,
                )
            )
    metas = files.saliency_results()
    if metas:
        module.add(saliency_table(metas))
        module.add(saliency_images(files, metas))
    if files.has_phase_three_list():
        entries = files.phase_three_list()["entries"]
        rows = [{**e, "channels": ";".join(e["channels"])} for e in entries]
        module.add(table("phase_three_list", "phase three's fragments and their sources", rows))
    if files.has_phase_three_analysis():
        rows = phase_three_rows(files.phase_three_analysis())
        if rows:
            module.add(table("phase_three_analysis", "retained response per fragment kind", rows))
    module.add(provenance_table(st, record))
    return nwbfile, notes


# ------------------------------------------------------------------ the timeline


def timeline(
    record: SessionRecord, uploaded: dict[Phase, dict[str, np.ndarray]]
) -> tuple[datetime, dict[Phase, float], list[str]]:
    """The file's session start, each placed phase's offset on it (s) and what could not be
    placed. A phase is placed when its trials carry onsets and its upload the recording's
    start: its onsets count from that start. The session starts at the earliest of its
    creation and those recordings' starts, so that no time in the file is negative."""
    created = datetime.fromisoformat(record.created)
    starts: dict[Phase, datetime] = {}
    notes = []
    for phase, columns in uploaded.items():
        started = record.uploads[phase].recording_start
        if "onset" in columns and started is not None:
            starts[phase] = started
        elif "onset" in columns:
            notes.append(
                f"{phase}'s trials have onsets but its upload no recording start: its "
                f"presentations are in {phase}_trials only, not on the file's timeline; upload "
                "it again with the recording's start (stimloop-rig --recording-start, or "
                "?recording_start= with replace=true) to place them"
            )
        else:
            notes.append(
                f"{phase}'s trials have no onsets: the file holds no presentation times and no "
                f"epoch for {phase} (a table with an onset column, or a recording or spike "
                "times read by stimloop-rig, gives them)"
            )
    start = min([created, *starts.values()])
    return start, {p: (t - start).total_seconds() for p, t in starts.items()}, notes


def presentations(columns: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each presentation once (the trial rows of every channel share it), in time order: its
    onset (s from the recording's start) ``[P]`` and its stimulus ``[P]``."""
    onset, stimulus = columns["onset"].astype(np.float64), columns["stimulus"].astype(str)
    pairs = sorted({(float(t), str(s)) for t, s in zip(onset, stimulus, strict=True)})
    return np.array([t for t, _ in pairs]), np.array([s for _, s in pairs])


def presentation_series(
    phase: str, at: np.ndarray, shown: np.ndarray, index: dict[str, int], templates: Any
) -> Any:
    """A phase's presentations as an ``IndexSeries`` into the presented images: at each
    onset ``at`` (s on the file's timeline), the index of the image shown. Onsets a constant
    step apart (to 1 ns, nwbinspector's tolerance) are written as a start and a rate, as
    NWB's best practices ask."""
    from pynwb.image import IndexSeries

    steps = np.diff(at)
    regular = len(at) > 2 and steps[0] > 0 and len(np.unique(steps.round(9))) == 1
    timing: dict[str, Any] = (
        {"starting_time": float(at[0]), "rate": 1.0 / float(steps[0])}
        if regular
        else {"timestamps": at}
    )
    return IndexSeries(
        name=f"{phase}_presentations",
        data=np.array([index[s] for s in shown], dtype=np.uint32),
        indexed_images=templates,
        unit="N/A",
        **timing,
        description=f"{phase}'s stimulus presentations: at each onset the index of the image "
        "shown in /stimulus/templates/presented_images/order_of_images",
    )


# ------------------------------------------------------------------ spike times


Placed = dict[Phase, tuple[dict[str, np.ndarray], tuple[float, float]]]


def add_units(
    nwbfile: Any,
    files: SessionFiles,
    record: SessionRecord,
    uploaded: dict[Phase, dict[str, np.ndarray]],
    offsets: dict[Phase, float],
) -> list[str]:
    """The recorded spike times of the phases uploaded with them (a spike-times NPZ, the
    rig's recordings), in ``Units``: one unit per channel, its spikes of every placed phase on
    the file's timeline, each phase's recording an observation interval, and its electrode
    (the session's channel of that name). Returns what was left out, and why."""
    placed, resolutions, notes = placed_spike_times(files, record, uploaded, offsets)
    if not placed:
        return notes
    if None in resolutions:
        notes.append(
            "the spike times' resolution is not known (a spike-times NPZ without its "
            "'resolution'): Units has none, which DANDI's inspector reports; stimloop-rig "
            "sends it with a recording's spikes"
        )
    else:  # the coarsest of the phases' clocks
        nwbfile.units = _units(max(r for r in resolutions if r is not None))
    channels = [c for c in record.config.channels if any(c in t for t, _ in placed.values())]
    device = nwbfile.create_device(
        name="acquisition_system",
        description="the rig's acquisition system, whose channels the session names "
        "(stimloop is not told its make or model)",
    )
    group = nwbfile.create_electrode_group(
        name="channels",
        description="the session's recording channels, one electrode each",
        location="unknown",
        device=device,
    )
    nwbfile.add_electrode_column(name="channel", description="the session's channel name")
    for channel in channels:
        nwbfile.add_electrode(group=group, location="unknown", channel=channel)
    nwbfile.add_unit_column(
        name="channel", description="the session's channel whose spikes the unit holds"
    )
    for row, channel in enumerate(channels):
        mine = [(t[channel], span) for t, span in placed.values() if channel in t]
        nwbfile.add_unit(
            spike_times=np.sort(np.concatenate([t for t, _ in mine])),
            obs_intervals=[list(span) for _, span in mine],
            electrodes=[row],
            channel=channel,
        )
    return notes


def placed_spike_times(
    files: SessionFiles,
    record: SessionRecord,
    uploaded: dict[Phase, dict[str, np.ndarray]],
    offsets: dict[Phase, float],
) -> tuple[Placed, list[float | None], list[str]]:
    """Each phase's stored spike trains on the file's timeline with its recording's span (s),
    their resolutions, and why a phase's were left out: no recording start, spikes that no
    longer give the stored counts, spikes before the recording's start, or a recording that
    overlaps an earlier phase's."""
    windows = record.config.windows
    placed: Placed = {}
    resolutions: list[float | None] = []
    notes = []
    for phase, columns in uploaded.items():
        if not files.has_spike_times(phase):
            continue
        if phase not in offsets:
            notes.append(
                f"{phase}'s spike times are not in Units: its upload has no recording start, "
                "so they have no place on the file's timeline"
            )
            continue
        trains, resolution = files.spike_times(phase)
        if not counts_agree(trains, columns, windows):
            notes.append(
                f"{phase}'s stored spike times do not give its stored trials' counts (an upload "
                "interrupted while it was written?): they are left out of Units; upload the "
                "phase again with replace=true to store both anew"
            )
            continue
        first = min([0.0, *(float(t.min()) for t in trains.values() if len(t))])
        if first < 0:
            notes.append(
                f"{phase} has spikes {-first:.3f} s before its recording's start: its spike "
                "times are left out of Units (check the spike times' clock)"
            )
            continue
        last = max(
            [float(columns["onset"].max()) + windows.response[1]]
            + [float(t.max()) for t in trains.values() if len(t)]
        )
        interval = (offsets[phase], offsets[phase] + last)
        overlap = [p for p, (_, (a, b)) in placed.items() if a < interval[1] and interval[0] < b]
        if overlap:
            notes.append(
                f"{phase}'s recording overlaps {overlap[0]}'s on the timeline (one recording "
                f"for both?): only {overlap[0]}'s spike times are in Units"
            )
            continue
        placed[phase] = ({c: offsets[phase] + t for c, t in trains.items()}, interval)
        resolutions.append(resolution)
    return placed, resolutions, notes


def _units(resolution: float) -> Any:
    from pynwb.misc import Units

    return Units(
        name="units",
        description="per session channel its recorded spikes (sorted units or threshold "
        "crossings, as the rig read them), on the file's timeline",
        resolution=resolution,
    )


def counts_agree(
    trains: dict[str, np.ndarray], columns: dict[str, np.ndarray], windows: Windows
) -> bool:
    """Whether the spike ``trains`` (channel -> s) cut at the trials' onsets in the session's
    ``windows`` give exactly the stored counts of every channel's trials."""
    if "onset" not in columns or set(trains) != set(columns["channel"].astype(str).tolist()):
        return False
    for channel, times in trains.items():
        mine = columns["channel"].astype(str) == channel
        counted = counts_from_spike_times(
            {channel: times},
            columns["onset"][mine],
            columns["stimulus"][mine],
            baseline=windows.baseline,
            response=windows.response,
        )
        for name in ("baseline_count", "response_count"):
            if not np.array_equal(counted[name], columns[name][mine]):
                return False
    return True


# ------------------------------------------------------------------ images


def presented_images(
    st: Store, record: SessionRecord, uploaded: dict[Phase, dict[str, np.ndarray]]
) -> list[tuple[str, str, Path]]:
    """Every image the trials ``uploaded`` (phase -> columns) name, once, in the order the
    phases showed them first: (id, where it comes from, its file)."""
    config = record.config
    files = st.files(record.id)
    paths: dict[str, tuple[str, Path]] = {}
    for category, set_id in config.sets.items():
        for image_id, path in st.get_set(set_id).paths().items():
            paths[image_id] = (f"{category} image of set {set_id}", Path(path))
    if files.has_phase_three_list():
        for entry in files.phase_three_list()["entries"]:
            found = files.phase_three_image(entry["stimulus"])
            if found is not None:
                what = f"phase-three {entry['kind']} fragment of {entry['source']}"
                paths.setdefault(entry["stimulus"], (what, Path(found)))
    order: list[tuple[str, str, Path]] = []
    seen: set[str] = set()
    for columns in uploaded.values():
        for image_id in dict.fromkeys(columns["stimulus"].astype(str)):
            if image_id not in seen and image_id in paths:
                seen.add(image_id)
                order.append((image_id, *paths[image_id]))
    return order


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def images_container(order: Sequence[tuple[str, str, Path]]) -> Any:
    """``Images`` of every presented image (RGB, as shown), named by id, in ``order``."""
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from pynwb.base import ImageReferences, Images
    from pynwb.image import RGBImage

    images = [
        RGBImage(name=image_id, data=H5DataIO(_pixels(path), compression="gzip"), description=what)
        for image_id, what, path in order
    ]
    return Images(
        name="presented_images",
        images=images,
        description="every image the session's trials name, once, as shown (RGB, 8 bit), "
        "named by its stimulus id; the trials tables' image_index points into "
        "order_of_images",
        order_of_images=ImageReferences(name="order_of_images", data=images),
    )


def saliency_images(files: Any, metas: list[dict[str, Any]]) -> Any:
    """The saliency figures (eq. 6 maps of each pair), named by their result key."""
    from pynwb.base import Images
    from pynwb.image import RGBImage

    images = []
    for meta in metas:
        path = files.saliency_file(meta["key"], "png")
        if path is None:
            continue
        images.append(
            RGBImage(
                name=meta["key"],
                data=_pixels(path),
                description=f"channel {meta['channel']}: {meta['x_out']} ~ {meta['x_in']}, "
                f"s = {meta.get('s')}",
            )
        )
    return Images(
        name="saliency_maps",
        images=images,
        description="the shared-feature saliency figures (parallel backpropagation, eq. 6), "
        "one per pair asked for; the saliency table gives each one's pair and verdicts",
    )


# ------------------------------------------------------------------ tables


def trials_table(
    columns: dict[str, np.ndarray],
    net_rate: np.ndarray,
    windows: Any,
    phase: str,
    index: dict[str, int],
) -> Any:
    """One row per trial: stimulus, its index in ``order_of_images``, channel, repeat, the net
    rate the analysis uses (spikes/s: the counts' rates in the session's windows, response
    minus baseline; or the uploaded rate) and the window counts where they were uploaded."""
    from hdmf.common import DynamicTable

    stimulus = columns["stimulus"].astype(str)
    out = DynamicTable(
        id=list(range(len(stimulus))),
        name=f"{phase}_trials",
        description=f"{phase}'s trials as uploaded (one row per presentation and channel); "
        f"windows relative to onset: baseline {list(windows.baseline)} s, response "
        f"{list(windows.response)} s",
    )
    out.add_column("stimulus", "the image's stimulus id", data=stimulus.tolist())
    out.add_column(
        "image_index",
        "its index in /stimulus/templates/presented_images/order_of_images",
        data=[index.get(s, -1) for s in stimulus],
    )
    out.add_column("channel", "the recording channel", data=columns["channel"].astype(str).tolist())
    if "repeat" in columns:
        out.add_column("repeat", "the presentation's repeat of its image", data=columns["repeat"])
    if "onset" in columns:
        out.add_column(
            "onset",
            f"the presentation's onset, s from the start of {phase}'s recording",
            data=columns["onset"],
        )
    out.add_column("net_rate", "net response in spikes/s, as analysed", data=net_rate)
    for name in ("baseline_count", "response_count"):
        if name in columns:
            out.add_column(name, f"spikes in the {name.split('_')[0]} window", data=columns[name])
    return out


def phase_two_list(st: Store, session_id: str) -> Any:
    """The phase-two list as the rig received it, and each image's reasons."""
    rows = list(csv.DictReader(io.StringIO(selection_csv(st, session_id))))
    sequence = st.files(session_id).selection()["sequence"]
    shown = {s: k for k, s in reversed(list(enumerate(sequence)))}
    for row in rows:
        row["order"] = int(row["order"])
        row["first_shown_at"] = shown.get(row["stimulus"], -1)
    return table(
        "phase_two_list",
        "the phase-two list: each image once, its category and why it is listed "
        "(channel:role, top/bottom/similar; stability for the repeated images); "
        "first_shown_at: its first place in the presentation sequence (0-based)",
        rows,
    )


def picks_table(selection: dict[str, Any]) -> Any:
    """Per channel and picked image: the role, rank, predicted response and similarity."""
    rows = [
        {"channel": c["channel"], "reference": c.get("reference") or "", **pick}
        for c in selection["channels"]
        for pick in c["picks"]
    ]
    return table(
        "picks",
        "the loop's decisions: per channel each picked image, why (role: top or bottom "
        "prediction among the other categories, similar: most similar control to the "
        "channel's reference image by eq. 2, level: a graded level with its target), its rank, "
        "the readout's predicted response (spikes/s) with its sd and interval, and the "
        "similarity",
        rows,
    )


def registration_table(document: dict[str, Any], sha: str) -> Any:
    """The predictions registered with the list: per selected image and channel the
    prediction, its sd and interval (spikes/s); the hash and settings in the description."""
    table_ = document["predictions"]
    rows = [
        {
            "stimulus": stimulus,
            "category": table_["categories"][i],
            "channel": channel,
            "predicted": table_["predicted"][i][j],
            "centre": (table_.get("centre") or table_["predicted"])[i][j],
            "sd": table_["sd"][i][j],
            "lower": table_["lower"][i][j],
            "upper": table_["upper"][i][j],
        }
        for i, stimulus in enumerate(table_["stimuli"])
        for j, channel in enumerate(table_["channels"])
    ]
    return table(
        "registered_predictions",
        f"the predictions registered when the phase-two list was stored, before phase two "
        f"(sha256 {sha} of the registered file, {document['registered_at']}; readouts sha256 "
        f"{document['readout_sha256']}): per selected image and channel the prediction, its sd "
        f"and its {table_['level']:.0%} interval for the true response about its centre "
        "(the prediction; where the category's intervals were calibrated on images held out "
        "of the fit, the calibrated interval's middle; spikes/s); calibration "
        f"{json.dumps(table_['ensemble'].get('calibration') or {}, sort_keys=True)}",
        rows,
    )


def scoring_table(scoring: dict[str, Any]) -> Any:
    """Per channel the registered predictions' scores (without the per-image points)."""
    rows = [{k: v for k, v in c.items() if k != "points"} for c in scoring["channels"]]
    return table(
        "scoring",
        f"the registered predictions (sha256 {scoring['registration']}) scored on phase two: "
        "per channel the picked images inside their interval widened by the recorded mean's "
        "standard error, the fraction inside the interval as registered, the binomial test "
        "against the nominal level, the calibration line of recorded on predicted, the graded "
        "levels' Spearman rho, FEVE on the picked images with its interval",
        rows,
    )


def readouts_table(arrays: dict[str, np.ndarray]) -> Any:
    """The fitted readouts: per channel the location, feature weights and bias (sec. 3)."""
    from hdmf.common import DynamicTable

    out = DynamicTable(
        id=list(range(len(arrays["channels"]))),
        name="readouts",
        description="the fitted readout per channel (sec. 3): location mu (x, y in [-1, 1] "
        "on the feature map), feature weights w, bias b, the best epoch, and the fit's r per "
        "split",
    )
    out.add_column("channel", "the channel", data=[str(c) for c in arrays["channels"]])
    out.add_column("mu", "the readout's location (x, y)", data=arrays["mu"])
    out.add_column("w", "the feature weights", data=arrays["w"])
    out.add_column("b", "the bias (spikes/s)", data=arrays["b"])
    out.add_column("best_epoch", "the epoch kept (best validation loss)", data=arrays["best_epoch"])
    for key in sorted(k for k in arrays if k.startswith(("r_", "p_"))):
        out.add_column(key, f"{key.replace('_', ' on the ', 1)} split", data=arrays[key])
    return out


def predictions_table(
    channels: list[str], by_name: dict[str, tuple[np.ndarray, np.ndarray]]
) -> Any:
    """What the analysis compared the recording with: each readout's prediction of each
    phase-two pick (by category) and of the held-out preferred images of phase one."""
    from hdmf.common import DynamicTable

    ids, groups, values = [], [], []
    for name, (image_ids, predicted) in by_name.items():
        ids += [str(i) for i in image_ids]
        groups += [name] * len(image_ids)
        values.append(np.asarray(predicted, dtype=np.float64))
    out = DynamicTable(
        id=list(range(len(ids))),
        name="predictions",
        description="the readouts' predicted responses (spikes/s) that the analysis compared "
        "with the recording: group is the picks' category (phase two) or test (phase one's "
        f"held-out preferred images); predicted's columns are the channels {channels}",
    )
    out.add_column("stimulus", "the image's stimulus id", data=ids)
    out.add_column("group", "the category of phase two's picks, or test", data=groups)
    out.add_column(
        "predicted",
        f"predicted responses, one column per channel: {', '.join(channels)}",
        data=np.concatenate(values) if values else np.empty((0, len(channels))),
    )
    return out


def saliency_table(metas: list[dict[str, Any]]) -> Any:
    rows = []
    for m in metas:
        sanity = m.get("sanity") or {}
        rows.append(
            {
                "key": m["key"],
                "channel": m["channel"],
                "x_out": m["x_out"],
                "x_in": m["x_in"],
                "s": m.get("s"),
                "sanity_passed": sanity.get("passed"),
                "sanity_verdict": sanity.get("model_verdict") or "",
                "fit_flag": m.get("fit_flag") or "",
            }
        )
    return table(
        "saliency",
        "each saliency pair asked for: its channel, the other-category image x_out and the "
        "preferred image x_in, the shared-feature score s (eq. 5), and the maps' sanity checks",
        rows,
    )


def categories_table(record: SessionRecord) -> Any:
    """The session's categories: each one's set, and whether it is of the preferred category
    (the preferred set itself, and its controls: tested against every other category)."""
    config = record.config
    rows = [{"category": config.preferred_category, "set": config.preferred_set,
             "preferred": True, "role": "preferred set (phase one, the fit)"}]  # fmt: skip
    rows += [
        {
            "category": c.category,
            "set": c.set,
            "preferred": c.preferred,
            "role": "candidates (phase two's picks)",
        }
        for c in config.candidate_sets
    ]
    return table(
        "categories",
        "the session's categories and sets; preferred: of the preferred category (the "
        "selectivity test compares these candidates with every other category's)",
        rows,
    )


def provenance_table(st: Store, record: SessionRecord) -> Any:
    """Key and value (text) of everything that made the session's numbers."""
    config = record.config
    files = st.files(record.id)
    rows = [
        ("stimloop_version", __version__),
        ("session_id", record.id),
        ("generation", str(record.generation)),
        ("backbone", config.backbone),
        ("seed", str(config.seed)),
        ("channels", json.dumps(config.channels)),
    ]
    settings = config.model_dump(mode="json", exclude={"channels", "candidate_sets", "notes"})
    rows += [(f"settings.{k}", json.dumps(v)) for k, v in flat(settings).items()]
    meta = files.readouts_meta()
    if meta is not None:
        rows.append(("weights_sha256", str(meta.get("weights_sha256"))))
    if record.registration is not None:
        rows.append(("registration_sha256", record.registration))
    if files.has_analysis():
        prov = files.analysis().get("provenance") or {}
        rows += [(f"analysis.{k}", json.dumps(v)) for k, v in sorted(flat(prov).items())]
    for category, set_id in config.sets.items():
        rows.append((f"set_{category}", f"{set_id} sha256:{set_hash(st, set_id)}"))
    for phase, upload in record.uploads.items():
        rows.append((f"upload_{phase}", f"sha256:{upload.sha256} trials:{upload.trials}"))
    for k, event in enumerate(record.history):
        rows += [(f"history.{k:03d}.{name}", json.dumps(v)) for name, v in flat(event).items()]
    return table(
        "provenance",
        "what made the session's numbers: stimloop's version, backbone, weights sha256, every "
        "setting and seed, the sets' content hashes, the uploads' hashes, and each event "
        "(jobs started and finished) with its time",
        [{"key": k, "value": v} for k, v in rows],
    )


def set_hash(st: Store, set_id: str) -> str:
    """A set's content hash: sha256 over its images' ids and sha256s, in id order."""
    h = hashlib.sha256()
    for entry in sorted(st.get_set(set_id).entries, key=lambda e: e.id):
        h.update(f"{entry.id}\x00{entry.sha256}\n".encode())
    return h.hexdigest()


def table(name: str, description: str, rows: Iterable[dict[str, Any]]) -> Any:
    """A ``DynamicTable`` of rows, nested dicts flattened (``flat``): numbers (None as NaN),
    booleans, text (None as ""), lists as JSON text. Columns in the first row's order."""
    from hdmf.common import DynamicTable

    rows = [flat(row) for row in rows]
    out = DynamicTable(name=name, description=description, id=list(range(len(rows))))
    names: list[str] = []
    for row in rows:
        names += [k for k in row if k not in names]
    for key in names:
        values = [row.get(key) for row in rows]
        out.add_column(key, key.replace("_", " "), data=_column(values))
    return out


def flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as one level, its keys joined with dots (DANDI's inspector refuses
    dictionaries inside table cells)."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, inner in value.items():
        out.update(flat(inner, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _column(values: list[Any]) -> list[Any]:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return [bool(v) for v in values]
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return [math.nan if v is None else float(v) for v in values]
    return [
        "" if v is None else v if isinstance(v, str) else json.dumps(v, sort_keys=True)
        for v in values
    ]


def nwb_bytes(st: Store, session_id: str, draft: bool = False) -> tuple[bytes, list[str]]:
    """The session's NWB file as bytes (``export_nwb`` into a temporary file)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{session_id}.nwb"
        warnings = export_nwb(st, session_id, path, draft)
        return path.read_bytes(), warnings
