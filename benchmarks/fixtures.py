"""Inputs the benchmarks share: random readouts and maps of the real shapes (no data needed)."""

from __future__ import annotations

import numpy as np
from stimloop.science.readout import FittedReadout
from stimloop_contract.configs import ReadoutConfig


def random_readout(channels: int, rng: np.random.Generator) -> FittedReadout:
    """``channels`` readouts at random locations with small dense weights ``[C, 2048]``."""
    names = [f"ch{i:02d}" for i in range(channels)]
    return FittedReadout(
        names,
        rng.uniform(-0.6, 0.6, (channels, 2)),
        rng.normal(size=(channels, 2048)) * 0.01,
        rng.normal(size=channels),
        np.zeros(channels, int),
        {},
        {},
        {},
        {},
        ReadoutConfig(),
        0,
        "benchmark",
    )


def random_maps(n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, 2048, 7, 7]`` float16 maps, gamma-distributed like rectified features."""
    return rng.gamma(2, 1, (n, 2048, 7, 7)).astype(np.float16)


def paper_session(store, channels: list[str], fit: dict, selection: dict) -> str:
    """A session over the paper's three sets, registered in ``store`` as bodies, objects and
    controls (their categories body, object, control_body); returns its id."""
    from stimloop.storage.session import CandidateSet, SessionConfig

    config = SessionConfig.model_validate(
        {
            "backbone": "resnet50_random",
            "preferred_set": "bodies",
            "preferred_category": "body",
            "candidate_sets": [
                CandidateSet(set="objects", category="object", preferred=False),
                CandidateSet(set="controls", category="control_body", preferred=True),
            ],
            "channels": channels,
            "fit": fit,
            "selection": selection,
        }
    )
    record, _ = store.create_session(config, {})
    return record.id


def store_phase_one(store, session_id: str, trials: dict[str, np.ndarray]) -> None:
    """Phase one's trials stored as the upload stores them (after its decoding)."""
    from stimloop.sessions.uploads import digest, store_upload
    from stimloop.storage.session import UploadInfo

    info = UploadInfo(sha256=digest(trials), trials=len(trials["stimulus"]))
    store_upload(store, session_id, "phase1", trials, info, replace=False)
