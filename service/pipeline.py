"""The work the jobs do: precompute activations, warm a session, fit and select, analyse,
saliency. It moves data between the store, the cache and ``service.science``; the science is
called, never re-implemented, here.

A ``Context`` lives as long as its worker: it holds the loaded backbones (on the GPU when there
is one) and the warmed candidate maps, so the between-phase turnaround pays neither the model
load nor the Redis read.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from stimloop import __version__, session_states
from stimloop.activations import Activations
from stimloop.cache import ActivationCache
from stimloop.figures import PairPanel, pair_figure
from stimloop.fitting import (
    FitResult,
    channel_rows,
    fit_recording,
    load_readout,
    save_readout,
    trials_from_columns,
)
from stimloop.registry import load_registry
from stimloop.science import saliency as sal
from stimloop.science.analysis import AnalysisConfig, analyse
from stimloop.science.backbone import Backbone, extract_features, load_backbone, load_input
from stimloop.science.readout import FittedReadout, ReadoutConfig
from stimloop.science.responses import (
    InclusionConfig,
    Windows,
    response_table,
)
from stimloop.science.selection import (
    Candidates,
    SelectionConfig,
    cell_major,
    presentation_sequence,
    ranked,
    select,
    selection_from_dict,
)
from stimloop.science.stimuli import encode_png, silhouette
from stimloop.settings import Settings
from stimloop.stimulus_sets import write_atomic
from stimloop.store import Store, read_json, read_npz, write_json, write_npz

log = logging.getLogger("stimloop.pipeline")
Report = Callable[[str, float, str], None]  # (stage, progress 0..1, message)
StopCheck = Callable[[], bool]


def quiet(stage: str, progress: float, message: str) -> None:
    log.debug("%s %.2f %s", stage, progress, message)


def windows_of(config: dict[str, Any]) -> Windows:
    return Windows.from_dict(config.get("windows"))


class Context:
    """A worker's long-lived state: settings, store, cache, backbones, warm candidates."""

    def __init__(self, settings: Settings, cache: ActivationCache) -> None:
        self.settings = settings
        self.store = Store(settings.models_store)
        self.cache = cache
        self.backbones: dict[str, Backbone] = {}
        self.warm: dict[tuple[str, str], Candidates] = {}
        self.silhouette_sha: dict[tuple[str, str], str] = {}  # (set, image) -> cache key

    # ------------------------------------------------------------------ inputs

    def backbone(self, name: str) -> Backbone:
        if name not in self.backbones:
            spec = load_registry(self.settings.registry_path)[name]
            self.backbones[name] = load_backbone(
                spec, self.settings.weights_dir, self.settings.device
            )
            log.info(
                "loaded backbone %s (%s) on %s",
                name,
                self.backbones[name].weights_sha256[:12],
                self.backbones[name].device,
            )
        return self.backbones[name]

    def image_paths(self, record: dict[str, Any]) -> dict[str, Path]:
        base = Path(record["images_dir"])
        return {e["id"]: base / e["file"] for e in record["entries"]}

    def maps(
        self, backbone: str, set_id: str, ids: list[str] | None = None, report: Report = quiet
    ) -> tuple[list[str], np.ndarray]:
        """Cached maps ``[N, 2048, 7, 7]`` of a set's images (all, or ``ids``), computing misses."""
        record = self.store.get_set(set_id)
        entries = {e["id"]: e for e in record["entries"]}
        ids = ids if ids is not None else [e["id"] for e in record["entries"]]
        paths = self.image_paths(record)
        model = self.backbone(backbone)

        def compute(positions: list[int]) -> np.ndarray:
            files = [paths[ids[i]] for i in positions]
            return extract_features(
                model, files, batch_size=self.settings.batch_size, precision=self.settings.precision
            )

        shas = [entries[i]["sha256"] for i in ids]
        maps = self.cache.fetch_or_compute(
            model.weights_sha256,
            shas,
            compute,
            lambda done, total: report(
                "activations", done / max(total, 1), f"{done}/{total} maps of {set_id}"
            ),
        )
        return ids, maps

    def silhouette_png(self, set_id: str, image_id: str) -> bytes:
        """PNG bytes of one image's silhouette (sec. 4's augmentation)."""
        path = self.image_paths(self.store.get_set(set_id))[image_id]
        return encode_png(silhouette(np.asarray(Image.open(path).convert("RGB"))))

    def silhouette_maps(self, backbone: str, set_id: str, ids: list[str]) -> np.ndarray:
        """Maps of the silhouettes of ``ids``, cached like images. The silhouettes' hashes are
        remembered (a registered set never changes), so after warming the turnaround neither
        decodes the bodies nor draws their silhouettes again."""
        pngs: dict[str, bytes] = {}
        for i in ids:
            if (set_id, i) not in self.silhouette_sha:
                pngs[i] = self.silhouette_png(set_id, i)
                digest = hashlib.sha256(pngs[i]).hexdigest()
                self.silhouette_sha[(set_id, i)] = "silhouette-" + digest
        model = self.backbone(backbone)
        shas = [self.silhouette_sha[(set_id, i)] for i in ids]

        def compute(positions: list[int]) -> np.ndarray:
            images = [pngs.get(ids[p]) or self.silhouette_png(set_id, ids[p]) for p in positions]
            return extract_features(
                model,
                images,
                batch_size=self.settings.batch_size,
                precision=self.settings.precision,
            )

        return self.cache.fetch_or_compute(model.weights_sha256, shas, compute)

    def candidates(self, backbone: str, set_id: str, category: str) -> Candidates:
        """A candidate set's cell-major maps, kept in memory (on the GPU when there is one)."""
        key = (self.backbone(backbone).weights_sha256, set_id)
        if key not in self.warm:
            ids, maps = self.maps(backbone, set_id)
            device = self.backbone(backbone).device
            self.warm[key] = Candidates(category, ids, cell_major(maps).to(device))
        return self.warm[key]

    # ------------------------------------------------------------------ jobs

    def precompute(self, backbone: str, set_id: str, report: Report = quiet) -> dict[str, Any]:
        ids, _ = self.maps(backbone, set_id, report=report)
        return {
            "stimulus_set": set_id,
            "backbone": backbone,
            "images": len(ids),
            "weights_sha256": self.backbone(backbone).weights_sha256,
        }

    def warm_session(self, session_id: str, report: Report = quiet) -> dict[str, Any]:
        config = self.store.get_session(session_id)["config"]
        for key, category in (("object_set", "object"), ("control_body_set", "control_body")):
            report("warming", 0.0, f"loading {config[key]}")
            self.candidates(config["backbone"], config[key], category)
        ids, _ = self.maps(config["backbone"], config["body_set"], report=report)
        if config["fit"].get("silhouettes", True):
            report("warming", 0.9, "silhouette maps of the bodies")
            self.silhouette_maps(config["backbone"], config["body_set"], ids)
        return {"warm": True}

    def fit_and_select(
        self,
        session_id: str,
        report: Report = quiet,
        should_stop: StopCheck | None = None,
        generation: int | None = None,
    ) -> dict[str, Any]:
        """Fit, predict and select for the session's ``generation`` (None: the current one);
        everything is written under the fence, so a stale run writes nothing."""
        store = self.store
        with store.fenced(session_id, generation) as rec:
            store.transition(rec, "fitting", "fit started")
            config = rec["config"]
            generation = session_states.generation(rec)
        columns = read_npz(store.path(session_id, "phase1.npz"))
        trials = trials_from_columns(columns, windows_of(config))
        report("activations", 0.0, "reading body maps")
        body_ids, body_maps = self.maps(config["backbone"], config["body_set"], report=report)
        shown = set(trials.stimulus)
        body_ids_shown = [i for i in body_ids if i in shown]
        keep = [i for i, b in enumerate(body_ids) if b in shown]
        body_maps = body_maps[keep]
        backbone = self.backbone(config["backbone"])
        act = Activations(
            body_ids_shown, body_maps, [""] * len(keep), config["backbone"], backbone.weights_sha256
        )
        readout_cfg = ReadoutConfig.from_dict(config["fit"])
        sil = None
        if readout_cfg.silhouettes:
            report("silhouettes", 0.0, "silhouette maps of the training bodies")
            sil_maps = self.silhouette_maps(config["backbone"], config["body_set"], body_ids_shown)
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
        selection = self.select_for(session_id, config, result, body_ids_shown, body_maps)
        prov = self.provenance(config, backbone.weights_sha256)
        with store.fenced(session_id, generation) as rec:
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
        self,
        session_id: str,
        config: dict[str, Any],
        result: FitResult,
        body_ids: list[str],
        body_maps: np.ndarray,
    ) -> dict[str, Any]:
        cands = [
            self.candidates(config["backbone"], config["object_set"], "object"),
            self.candidates(config["backbone"], config["control_body_set"], "control_body"),
        ]
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

    def analyse(
        self, session_id: str, report: Report = quiet, generation: int | None = None
    ) -> dict[str, Any]:
        store = self.store
        record = store.get_session(session_id)
        session_states.check_generation(record, generation)
        config, generation = record["config"], session_states.generation(record)
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
                _, obj_maps = self.maps(config["backbone"], config["object_set"], objects)
                obj_pred = readout.predict(obj_maps)
            test_ids = readout.split_ids["test"]
            _, test_maps = self.maps(config["backbone"], config["body_set"], test_ids)
            test_pred = readout.predict(test_maps)
        result = analyse(
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
        weights = (
            readout.weights_sha256 if readout else self.backbone(config["backbone"]).weights_sha256
        )
        with store.fenced(session_id, generation) as rec:
            write_json(
                store.path(session_id, "analysis.json"),
                {**result.to_dict(), **self.provenance(config, weights)},
            )
            store.transition(rec, "analysed", "analysis ready")
        report("done", 1.0, "analysis ready")
        return result.summary

    def saliency(
        self,
        session_id: str,
        request: dict[str, Any],
        key: str,
        report: Report = quiet,
        generation: int | None = None,
    ) -> dict[str, Any]:
        store = self.store
        record = store.get_session(session_id)
        session_states.check_generation(record, generation)
        config, generation = record["config"], session_states.generation(record)
        readout = load_readout(store.session_dir(session_id))
        channel = request["channel"]
        j = readout.channels.index(channel)
        obj, body = request.get("object"), request.get("body")
        if obj is None or body is None:
            obj, body = self.default_pair(session_id, config, readout, channel)
        backbone = self.backbone(config["backbone"])
        objects = self.image_paths(store.get_set(config["object_set"]))
        bodies = self.image_paths(store.get_set(config["body_set"]))
        x_out, x_in = load_input(objects[obj]), load_input(bodies[body])
        cfg = sal.SaliencyConfig(
            method=request.get("method", "gradient"),
            coverage=request.get("coverage"),
            sigma=request.get("sigma", 4.0),
            seed=config["seed"],
        )
        result = sal.parallel_backprop(
            backbone.model,
            x_out,
            x_in,
            readout.mu[j],
            readout.w[j],
            cfg,
            progress=lambda done, total: report(
                "saliency", done / max(total, 1), f"{done}/{total} feature gradients"
            ),
        )
        folder = store.path(session_id, "saliency")
        meta = {
            "key": key,
            "channel": channel,
            "object": obj,
            "body": body,
            "default_pair": request.get("object") is None,
            **result.metadata(),
            **self.provenance(config, readout.weights_sha256),
        }
        panel = PairPanel(
            channel,
            obj,
            body,
            x_out.permute(1, 2, 0).numpy(),
            x_in.permute(1, 2, 0).numpy(),
            result.display_out,
            result.display_in,
            result.s,
            result.norm_out,
            result.norm_in,
        )
        figure = pair_figure(panel)
        with store.fenced(session_id, generation):  # maps of a replaced upload never land
            write_npz(
                folder / f"{key}.npz",
                {
                    "map_out": result.map_out,
                    "map_in": result.map_in,
                    "display_out": result.display_out,
                    "display_in": result.display_in,
                    "beta": result.beta,
                    "features": result.features,
                },
            )
            write_atomic(folder / f"{key}.png", figure)
            write_json(folder / f"{key}.json", meta)
        return meta

    def default_pair(
        self, session_id: str, config: dict[str, Any], readout, channel: str
    ) -> tuple[str, str]:
        """Sec. 5.2: the top-5 recorded objects (phase two) and top-15 bodies (phase one)."""
        windows = windows_of(config)
        p1 = response_table(
            trials_from_columns(read_npz(self.store.path(session_id, "phase1.npz")), windows)
        )
        c1 = p1.channel_index(channel)
        order = ranked(np.nan_to_num(p1.mean[c1], nan=-np.inf), p1.stimuli, descending=True)
        top_bodies = [p1.stimuli[i] for i in order[:15]]
        object_set = set(e["id"] for e in self.store.get_set(config["object_set"])["entries"])
        p2_path = self.store.path(session_id, "phase2.npz")
        if not p2_path.is_file():
            raise ValueError(
                "the default pair needs phase two's recorded objects; upload phase two "
                "or name the object and the body"
            )
        p2 = response_table(trials_from_columns(read_npz(p2_path), windows))
        c2 = p2.channel_index(channel)
        objs = [i for i, s in enumerate(p2.stimuli) if s in object_set]
        if not objs:
            raise ValueError("phase two recorded no objects; name the object and the body")
        means = np.nan_to_num(p2.mean[c2, objs], nan=-np.inf)
        order = ranked(means, [p2.stimuli[i] for i in objs], descending=True)
        top_objects = [p2.stimuli[objs[i]] for i in order[:5]]
        j = readout.channels.index(channel)
        _, obj_maps = self.maps(config["backbone"], config["object_set"], top_objects)
        _, body_maps = self.maps(config["backbone"], config["body_set"], top_bodies)
        one = readout.select([channel])
        a_obj = one.features(obj_maps)[:, 0].numpy()
        a_body = one.features(body_maps)[:, 0].numpy()
        obj, body, _ = sal.default_pair(a_obj, a_body, readout.w[j], top_objects, top_bodies)
        return obj, body

    @staticmethod
    def provenance(config: dict[str, Any], weights_sha256: str) -> dict[str, Any]:
        return {
            "provenance": {
                "stimloop_version": __version__,
                "seed": config["seed"],
                "backbone": config["backbone"],
                "weights_sha256": weights_sha256,
                "torch_version": torch.__version__,
            }
        }


def encode_npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def config_dicts() -> dict[str, Any]:
    """The science configs' defaults, as the API documents them."""
    return {
        "fit": asdict(ReadoutConfig()),
        "inclusion": asdict(InclusionConfig()),
        "selection": asdict(SelectionConfig()),
        "analysis": asdict(AnalysisConfig()),
    }
