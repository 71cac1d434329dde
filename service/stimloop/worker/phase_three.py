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
import shutil
import zipfile
from typing import Any

import numpy as np
from PIL import Image

from stimloop.api.schemas import PhaseThreeRequest
from stimloop.science.backbone import extract_features
from stimloop.science.fragments import FragmentConfig, make_fragments
from stimloop.science.phase_three import (
    ListEntry,
    analyse_phase_three,
    build_list,
    list_from_dict,
)
from stimloop.science.responses import response_table
from stimloop.science.stimuli import encode_png
from stimloop.storage.atomic import write_atomic
from stimloop.storage.image_checks import image_format
from stimloop.storage.session_states import StaleJobError
from stimloop.storage.store import now, read_json, read_npz, write_json
from stimloop.worker.fitting import load_readout, trials_from_columns
from stimloop.worker.resources import Report, Resources, provenance, quiet, windows_of

log = logging.getLogger("stimloop.worker.phase_three")


def saliency_results(res: Resources, session_id: str) -> list[dict[str, Any]]:
    """The session's stored saliency metadata, by key."""
    folder = res.store.path(session_id, "saliency")
    if not folder.is_dir():
        return []
    return [read_json(p) for p in sorted(folder.glob("*.json"))]


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
    res: Resources,
    session_id: str,
    request: dict[str, Any],
    key: str,
    report: Report = quiet,
    generation: int | None = None,
) -> dict[str, Any]:
    """The phase-three list for ``request`` (the API's ``PhaseThreeRequest``), stored with
    its images under ``phase3/``; returns a summary."""
    store = res.store
    record, generation = res.session_for_job(session_id, generation)
    config = record["config"]
    seed = int(config["seed"])
    asked = PhaseThreeRequest.model_validate(request)
    settings = asked.config()
    readout = load_readout(store.session_dir(session_id))
    metas = chosen_results(saliency_results(res, session_id), asked.channels, asked.saliency)
    sets = {"object": config["object_set"], "body": config["body_set"]}
    paths = {c: res.image_paths(store.get_set(s)) for c, s in sets.items()}
    fragments, pngs, intact = [], {}, {}
    for n, meta in enumerate(metas):
        report("fragments", n / max(len(metas), 1), f"cutting {meta['channel']}'s pair")
        arrays = read_npz(store.path(session_id, f"saliency/{meta['key']}.npz"))
        for category, source, display in (
            ("object", meta["object"], arrays["display_out"]),
            ("body", meta["body"], arrays["display_in"]),
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
                for f in made:
                    pngs[f.id] = encode_png(f.image)
                    fragments.append(
                        ListEntry(
                            f.id,
                            f.kind,
                            source,
                            category,
                            [meta["channel"]],
                            {},
                            f.q,
                            f.area,
                            f.foreground_area,
                            f.seed,
                            f.stream,
                            meta["key"],
                            hashlib.sha256(pngs[f.id]).hexdigest(),
                        )
                    )
    report("predicting", 0.5, f"maps of {len(fragments)} fragments")
    model = res.backbone(config["backbone"])
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
    for category, set_id in sets.items():
        own = [e for e in intact.values() if e.source_category == category]
        if own:
            _, maps = res.maps(config["backbone"], set_id, [e.source for e in own])
            for e, row in zip(own, readout.predict(maps)):
                e.predicted = {c: float(row[readout.channels.index(c)]) for c in e.channels}
    selection = read_json(store.path(session_id, "selection.json"))
    stability = selection["phase_two"]["stability_bodies"]
    plan = build_list([*fragments, *intact.values()], stability, settings, seed)
    report("writing", 0.9, "the list, the images and the zip")
    listed = plan.to_dict()
    images = {e.stimulus: pngs[e.stimulus] for e in fragments}
    for e in intact.values():
        images[e.source] = paths[e.source_category][e.source].read_bytes()
    body_paths = paths["body"]
    for body in stability:
        images.setdefault(body, body_paths[body].read_bytes())
    archive = stimuli_zip(plan.stimuli, images, listed["entries"])
    prov = provenance(config, readout.weights_sha256)
    with res.fenced(session_id, generation) as rec:
        folder = store.path(session_id, "phase3")
        if folder.is_dir():  # a new list: the old one's images, trials and analysis are void
            shutil.rmtree(folder)
            store.path(session_id, "phase3.npz").unlink(missing_ok=True)
            rec["uploads"].pop("phase3", None)
        for fid, png in pngs.items():
            write_atomic(folder / "images" / f"{fid}.png", png)
        write_atomic(folder / "stimuli.zip", archive)
        write_json(folder / "list.json", {**listed, "key": key, "request": request, **prov})
        rec["phase3"] = {"key": key, "images": len(plan.stimuli)}
        rec["history"].append(
            {
                "time": now(),
                "event": "phase3 list ready",
                "state": rec["state"],
                "generation": generation,
                "images": len(plan.stimuli),
            }
        )
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
    res: Resources, session_id: str, report: Report = quiet, generation: int | None = None
) -> dict[str, Any]:
    """Analyse the stored phase-three trials against the list; written only if neither the
    session's generation nor the trials changed meanwhile."""
    store = res.store
    record, generation = res.session_for_job(session_id, generation)
    config = record["config"]
    sha = record["uploads"]["phase3"]["sha256"]
    windows = windows_of(config)
    channels = config["channels"]
    listed = read_json(store.path(session_id, "phase3/list.json"))
    plan = list_from_dict(listed)

    def table(name: str):
        return response_table(
            trials_from_columns(read_npz(store.path(session_id, name)), windows),
            channels=channels,
        )

    report("analysing", 0.2, "retained responses and tests per channel")
    p2 = table("phase2.npz") if store.path(session_id, "phase2.npz").is_file() else None
    analysis_cfg = config.get("analysis", {})
    result = analyse_phase_three(
        table("phase3.npz"),
        plan,
        table("phase1.npz"),
        p2,
        alpha=float(analysis_cfg.get("alpha", 0.05)),
        min_stability=float(analysis_cfg.get("min_stability", 0.60)),
    )
    with res.fenced(session_id, generation) as rec:
        now_sha = (rec["uploads"].get("phase3") or {}).get("sha256")
        if now_sha != sha:
            raise StaleJobError(
                f"the phase-three trials of session {session_id} were replaced during the "
                "analysis: it writes nothing"
            )
        write_json(
            store.path(session_id, "phase3/analysis.json"),
            {**result.to_dict(), "trials_sha256": sha, "provenance": listed["provenance"]},
        )
        rec["phase3"] = {**(rec.get("phase3") or {}), "error": None}
        rec["history"].append(
            {
                "time": now(),
                "event": "phase3 analysed",
                "state": rec["state"],
                "generation": generation,
            }
        )
    report("done", 1.0, "phase-three analysis ready")
    return result.summary
