"""What a worker holds for as long as it lives, and what its use cases share.

``WorkerContext`` keeps the settings, the store, the activation cache, the loaded backbones and
the warmed candidate maps; the use cases (``precompute``, ``fit_select``, ``analysis``,
``saliency``, ``phase_three``) are functions of it and their typed inputs. They move data
between the store, the cache and ``stimloop.science``; the science is called, never
re-implemented, here.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from stimloop import __version__
from stimloop.runtime.settings import Settings
from stimloop.science.backbone import Backbone, extract_features, load_backbone
from stimloop.science.candidate_cells import cell_major
from stimloop.science.images import encode_png, silhouette
from stimloop.science.selection import Candidates
from stimloop.storage import session_states
from stimloop.storage.cache import ActivationCache
from stimloop.storage.registry import load_registry
from stimloop.storage.session import SessionConfig, SessionFiles, SessionRecord
from stimloop.storage.store import Store

log = logging.getLogger("stimloop.worker")
Report = Callable[[str, float, str], None]  # (stage, progress 0..1, message)
StopCheck = Callable[[], bool]


def quiet(stage: str, progress: float, message: str) -> None:
    log.debug("%s %.2f %s", stage, progress, message)


class WorkerContext:
    """A worker's long-lived state: settings, store, cache, the loaded backbones (on the GPU
    when there is one) and the warmed candidate maps, so the between-phase turnaround pays
    neither the model load nor the Redis read."""

    def __init__(self, settings: Settings, cache: ActivationCache) -> None:
        self.settings = settings
        self.store = Store(settings.models_store)
        self.cache = cache
        self.backbones: dict[str, Backbone] = {}
        self.warm: dict[tuple[str, str], Candidates] = {}
        self.silhouette_sha: dict[tuple[str, str], str] = {}  # (set, image) -> cache key
        # the running job's heartbeat check (``Heartbeat.check``), set by the worker per job
        self.lease: Callable[..., None] | None = None
        # runs the jobs waiting in more urgent lanes, here and now (``StimloopWorker``): a
        # long job calls it between its steps (its progress reports) so a fit waits seconds
        self.give_way: Callable[[], None] | None = None

    def check_lease(self, confirm: bool = False) -> None:
        """``JobLostError`` when the running job's heartbeat has lapsed (see ``heartbeat``)."""
        if self.lease is not None:
            self.lease(confirm=confirm)

    @contextmanager
    def fenced(self, session_id: str, generation: int | None) -> Iterator[SessionRecord]:
        """``Store.fenced`` for the running job: nothing is written unless the job was started
        for the session's current generation and its heartbeat never lapsed."""
        with self.store.fenced(session_id, generation) as record:
            self.check_lease(confirm=True)
            yield record

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

    def session_for_job(
        self, session_id: str, generation: int | None
    ) -> tuple[SessionRecord, SessionFiles]:
        """The session's record and folder, the record checked to be of the generation the job
        was started for (``StaleJobError`` otherwise; ``None`` accepts any): how every use case
        opens."""
        record = self.store.get_session(session_id)
        session_states.check_generation(record, generation)
        return record, self.store.files(session_id)

    def set_paths(self, set_id: str) -> dict[str, Path]:
        """A registered set's image files by id."""
        return self.store.get_set(set_id).paths()

    def maps(
        self,
        backbone: str,
        set_id: str,
        ids: list[str] | None = None,
        report: Report = quiet,
        stage: str = "activations",
    ) -> tuple[list[str], np.ndarray]:
        """Cached maps ``[N, 2048, 7, 7]`` of a set's images (all, or ``ids``), computing misses;
        progress is reported under ``stage``."""
        record = self.store.get_set(set_id)
        entries = {e.id: e for e in record.entries}
        ids = ids if ids is not None else record.ids
        paths = record.paths()
        model = self.backbone(backbone)

        def compute(positions: list[int]) -> np.ndarray:
            files = [paths[ids[i]] for i in positions]
            return extract_features(
                model, files, batch_size=self.settings.batch_size, precision=self.settings.precision
            )

        shas = [entries[i].sha256 for i in ids]
        maps = self.cache.fetch_or_compute(
            model.weights_sha256,
            shas,
            compute,
            lambda done, total: report(
                stage, done / max(total, 1), f"{done}/{total} maps of {set_id}"
            ),
        )
        return ids, maps

    def silhouette_png(self, set_id: str, image_id: str) -> bytes:
        """PNG bytes of one image's silhouette (sec. 4's augmentation)."""
        path = self.store.get_set(set_id).paths()[image_id]
        return encode_png(silhouette(np.asarray(Image.open(path).convert("RGB"))))

    def silhouette_maps(
        self, backbone: str, set_id: str, ids: list[str], report: Report = quiet
    ) -> np.ndarray:
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

        return self.cache.fetch_or_compute(
            model.weights_sha256,
            shas,
            compute,
            lambda done, total: report(
                "silhouettes", done / max(total, 1), f"{done}/{total} silhouette maps of {set_id}"
            ),
        )

    def candidates(
        self, backbone: str, set_id: str, category: str, report: Report = quiet
    ) -> Candidates:
        """A candidate set's cell-major maps, kept in memory (on the GPU when there is one)."""
        key = (self.backbone(backbone).weights_sha256, set_id)
        if key not in self.warm:
            ids, maps = self.maps(backbone, set_id, report=report, stage="warming")
            device = self.backbone(backbone).device
            self.warm[key] = Candidates(category, ids, cell_major(maps).to(device))
        return self.warm[key]


def provenance(config: SessionConfig, weights_sha256: str) -> dict[str, Any]:
    """What every stored result carries: version, seed, backbone, weights' and torch's."""
    return {
        "provenance": {
            "stimloop_version": __version__,
            "seed": config.seed,
            "backbone": config.backbone,
            "weights_sha256": weights_sha256,
            "torch_version": torch.__version__,
        }
    }
