"""The worker's phase-three use cases: build the fragment list, analyse its trials.

Building reads the session's saliency results (eq. 6 display maps), cuts each pair's images
into fragments (``science.fragments``), stores them as PNGs with the session, predicts every
fragment with the channel's readout (their maps are cached like any stimulus, keyed by the
PNG's sha256), and writes the list, its presentation sequence and a zip for the stimulus
program. Analysing reads the phase-three trials and calls ``science.phase_three``.

Both run for the session's generation (a replaced phase one or two makes them stale: they
write nothing), and the analysis also for the phase-three trials it read (replaced trials
make it stale).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from typing import Any

import numpy as np
from PIL import Image
from stimloop_contract.configs import PhaseThreeConfig
from stimloop_contract.phase_three import PhaseThreeRequest

from stimloop.science.backbone import extract_features
from stimloop.science.fragments import FragmentConfig, make_fragments
from stimloop.science.images import encode_png
from stimloop.science.phase_three import (
    ListEntry,
    analyse_phase_three,
    build_list,
    list_from_dict,
)
from stimloop.science.responses import response_table
from stimloop.storage.image_checks import image_format
from stimloop.storage.session import Phase, PhaseThreeInfo
from stimloop.storage.session_states import StaleJobError, note
from stimloop.worker.context import Report, WorkerContext, provenance, quiet

log = logging.getLogger("stimloop.worker.phase_three")


def chosen_results(
    metas: list[dict[str, Any]], channels: list[str] | None, keys: list[str] | None
) -> list[dict[str, Any]]:
    """The saliency results to cut fragments from: those named by ``keys``; else per channel
    (``channels``, default all with a result) its default-pair result, else its first."""
    if keys is not None:
        by_key = {m["key"]: m for m in metas}
        return [by_key[k] for k in keys]
    out = []
    for channel in channels or sorted({m["channel"] for m in metas}):
        own = [m for m in metas if m["channel"] == channel]
        own.sort(key=lambda m: (not m.get("default_pair", False), m["key"]))
        out.append(own[0])
    return out


def build(
    res: WorkerContext,
    session_id: str,
    request: PhaseThreeRequest,
    key: str,
    report: Report = quiet,
    generation: int | None = None,
) -> dict[str, Any]:
    """The phase-three list for ``request`` (validated at the API: the
    fragment settings of ``PhaseThreeConfig``, and the channels or saliency results), stored with
    its images under ``phase3/``; returns a summary."""
    record, files = res.session_for_job(session_id, generation)
    config = record.config
    seed = config.seed
    settings = PhaseThreeConfig(
        tuple(request.q), tuple(request.kinds), request.feather, request.repeats
    )
    readout = files.readout()
    metas = chosen_results(files.saliency_results(), request.channels, request.saliency)
    paths = {c: res.set_paths(s) for c, s in config.sets.items()}
    fragments: list[ListEntry] = []
    pngs: dict[str, bytes] = {}
    intact: dict[str, ListEntry] = {}
    for n, meta in enumerate(metas):
        report("fragments", n / max(len(metas), 1), f"cutting {meta['channel']}'s pair")
        arrays = files.saliency_arrays(meta["key"])
        for category, source, display in (
            (meta["x_out_category"], meta["x_out"], arrays["display_out"]),
            (config.preferred_category, meta["x_in"], arrays["display_in"]),
        ):
            image = np.asarray(Image.open(paths[category][source]).convert("RGB"))
            entry = intact.setdefault(source, ListEntry(source, "intact", source, category, [], {}))
            if meta["channel"] not in entry.channels:
                entry.channels.append(meta["channel"])
            for q in settings.q:
                made = make_fragments(
                    image,
                    display,
                    source,
                    meta["channel"],
                    FragmentConfig(q, settings.feather),
                    settings.kinds,
                    seed,
                )
                for cut in made:
                    pngs[cut.id] = encode_png(cut.image)
                    fragments.append(
                        ListEntry(
                            cut.id,
                            cut.kind,
                            source,
                            category,
                            [meta["channel"]],
                            {},
                            cut.q,
                            cut.area,
                            cut.foreground_area,
                            cut.seed,
                            cut.stream,
                            meta["key"],
                            hashlib.sha256(pngs[cut.id]).hexdigest(),
                        )
                    )
    report("predicting", 0.5, f"maps of {len(fragments)} fragments")
    model = res.backbone(config.backbone)
    ids = [f.stimulus for f in fragments]

    def compute(positions: list[int]) -> np.ndarray:
        return extract_features(
            model,
            [pngs[ids[p]] for p in positions],
            batch_size=res.settings.batch_size,
            precision=res.settings.precision,
        )

    frag_maps = res.cache.fetch_or_compute(
        model.weights_sha256, ["fragment-" + (f.sha256 or "") for f in fragments], compute
    )
    predicted = readout.predict(frag_maps) if fragments else np.zeros((0, len(readout.channels)))
    for f, row in zip(fragments, predicted):
        f.predicted = {f.channels[0]: float(row[readout.channels.index(f.channels[0])])}
    for category, set_id in config.sets.items():
        own = [e for e in intact.values() if e.source_category == category]
        if own:
            _, maps = res.maps(config.backbone, set_id, [e.source for e in own])
            for e, row in zip(own, readout.predict(maps)):
                e.predicted = {c: float(row[readout.channels.index(c)]) for c in e.channels}
    stability = files.selection()["phase_two"]["stability_images"]
    plan = build_list([*fragments, *intact.values()], stability, settings, seed)
    report("writing", 0.9, "the list, the images and the zip")
    listed = plan.to_dict()
    images = {e.stimulus: pngs[e.stimulus] for e in fragments}
    for e in intact.values():
        images[e.source] = paths[e.source_category][e.source].read_bytes()
    preferred_paths = paths[config.preferred_category]
    for image in stability:
        images.setdefault(image, preferred_paths[image].read_bytes())
    archive = stimuli_zip(plan.stimuli, images, listed["entries"])
    prov = provenance(config, readout.weights_sha256)
    with res.fenced(session_id, record.generation) as rec:
        stored = {**listed, "key": key, "request": request.model_dump(mode="json"), **prov}
        if files.write_phase_three(stored, pngs, archive):
            rec.uploads.pop("phase3", None)  # the old list's trials went with it
        rec.phase3 = PhaseThreeInfo(key=key, images=len(plan.stimuli))
        note(rec, "phase3 list ready", images=len(plan.stimuli))
    report("done", 1.0, "phase-three list ready")
    return {"fragments": len(fragments), "images": len(plan.stimuli)}


def stimuli_zip(order: list[str], images: dict[str, bytes], entries: list[dict[str, Any]]) -> bytes:
    """The images of the list for the stimulus program, with ``manifest.json`` (id, file,
    sha256, kind, channels, source, q per image; stability bodies as kind "stability")."""
    described = {e["stimulus"]: e for e in entries}
    manifest, buffer = [], io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for stimulus in order:
            data = images[stimulus]  # fragments are PNG; sources keep their own format
            name = f"images/{stimulus}.{'jpg' if image_format(data) == 'JPEG' else 'png'}"
            zf.writestr(name, data)
            e = described.get(stimulus, {})
            manifest.append(
                {
                    "id": stimulus,
                    "file": name,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "kind": e.get("kind", "stability"),
                    "channels": e.get("channels", []),
                    "source": e.get("source", stimulus),
                    "q": e.get("q"),
                }
            )
        zf.writestr("manifest.json", json.dumps(manifest, indent=1))
    return buffer.getvalue()


def analyse(
    res: WorkerContext, session_id: str, report: Report = quiet, generation: int | None = None
) -> dict[str, Any]:
    """Analyse the stored phase-three trials against the list; written only if neither the
    session's generation nor the trials changed meanwhile."""
    record, files = res.session_for_job(session_id, generation)
    config = record.config
    sha = record.uploads["phase3"].sha256
    listed = files.phase_three_list()
    plan = list_from_dict(listed)

    def table(phase: Phase):
        return response_table(files.trials(phase, config.windows), channels=config.channels)

    report("analysing", 0.2, "retained responses and tests per channel")
    result = analyse_phase_three(
        table("phase3"),
        plan,
        table("phase1"),
        table("phase2") if files.has_trials("phase2") else None,
        alpha=config.analysis.alpha,
        min_stability=config.analysis.min_stability,
    )
    with res.fenced(session_id, record.generation) as rec:
        now_sha = rec.uploads["phase3"].sha256 if "phase3" in rec.uploads else None
        if now_sha != sha:
            raise StaleJobError(
                f"the phase-three trials of session {session_id} were replaced during the "
                "analysis: it writes nothing"
            )
        files.write_phase_three_analysis(
            {**result.to_dict(), "trials_sha256": sha, "provenance": listed["provenance"]}
        )
        rec.phase3 = (rec.phase3 or PhaseThreeInfo()).model_copy(update={"error": None})
        note(rec, "phase3 analysed")
    report("done", 1.0, "phase-three analysis ready")
    return result.summary
