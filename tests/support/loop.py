"""A whole loop on the in-process service: three synthetic neurons and a silent channel,
fitted and listed once per test module (the ``loop`` fixture)."""

from __future__ import annotations

import numpy as np
import pytest
from stimloop.science import synthetic as sy
from stimloop.science.stimuli import generate_bodies, generate_control_bodies, generate_objects
from stimloop.storage.stimulus_sets import write_stimulus_set

NEURONS = ["ch1", "ch2", "ch3"]
CHANNELS = [*NEURONS, "silent"]  # "silent" never fires: excluded, with its reason
FIT = {"epochs": 20, "lr": 1e-3, "split": [24, 8, 8]}
SELECTION = {"stability_images": 10, "repeats": 2}


@pytest.fixture(scope="module")
def loop(service):
    """Register sets, precompute, create a session: what the lab does before recording."""
    root = service.settings.stimulus_root
    write_stimulus_set(root / "bodies", generate_bodies(40, seed=2))
    write_stimulus_set(root / "objects", generate_objects(12, seed=2))
    write_stimulus_set(root / "controls", generate_control_bodies(8, seed=2))
    c = service.client
    for set_id, category, folder in (
        ("bodies", "body", "bodies"),
        ("objects", "object", "objects"),
        ("controls", "control_body", "controls"),
    ):
        r = c.post(
            "/v1/stimulus-sets",
            json={"id": set_id, "category": category, "directory": folder},
            headers=service.rig,
        )
        assert r.status_code == 201, r.text
        r = c.post(
            "/v1/activations",
            json={"backbone": "resnet50_random", "stimulus_set": set_id},
            headers=service.rig,
        )
        assert r.status_code == 202, r.text
    service.work()
    r = c.post("/v1/sessions", json=session_request(), headers=service.rig)
    assert r.status_code == 201, r.text
    session = r.json()["id"]
    service.work()  # warms the candidates
    from stimloop.storage.cache import ActivationCache
    from stimloop.storage.store import Store

    store = Store(service.settings.models_store)
    cache = ActivationCache(service.redis, service.settings.key_prefix)
    weights = (
        __import__("stimloop.worker.jobs", fromlist=["resources"])
        .resources()
        .backbone("resnet50_random")
        .weights_sha256
    )

    def maps(set_id):
        record = store.get_set(set_id)
        found = cache.get_many(weights, [e.sha256 for e in record.entries])
        assert all(m is not None for m in found), "precompute left a map uncached"
        return record.ids, np.stack(found)

    data = {k: maps(k) for k in ("bodies", "objects", "controls")}
    neurons = sy.make_neurons(
        data["bodies"][1],
        data["objects"][1],
        NEURONS,
        seed=5,
        config=sy.SyntheticConfig(sparsity=0.02),
    )
    return {"session": session, "maps": data, "neurons": neurons, "store": store}


def session_request(**extra) -> dict:
    """The loop's session over its three sets (``extra``: more fields, e.g. the animal)."""
    return {
        "backbone": "resnet50_random",
        "body_set": "bodies",
        "object_set": "objects",
        "control_body_set": "controls",
        "channels": CHANNELS,
        "fit": FIT,
        "selection": SELECTION,
        "seed": 3,
        **extra,
    }


def simulate(loop, ids_by_set, seed):
    rates, stimuli = [], []
    for set_id, ids in ids_by_set.items():
        all_ids, maps = loop["maps"][set_id]
        rows = [all_ids.index(i) for i in ids]
        rates.append(sy.true_responses(loop["neurons"], maps[rows]))
        stimuli += ids
    _, cols = sy.simulate_counts(
        np.concatenate(rates), stimuli, NEURONS, seed=seed, config=sy.SyntheticConfig(repeats=4)
    )
    # the silent channel: no spikes in either window on any trial
    n = len(stimuli) * 4
    silent = {
        "stimulus": np.repeat(np.array(stimuli), 4),
        "channel": np.full(n, "silent"),
        "repeat": np.tile(np.arange(4), len(stimuli)),
        "baseline_count": np.zeros(n, int),
        "response_count": np.zeros(n, int),
    }
    return {k: np.concatenate([v, silent[k]]) for k, v in cols.items()}


def as_json(cols):
    return {
        "stimulus": cols["stimulus"].tolist(),
        "channel": cols["channel"].tolist(),
        "baseline_count": cols["baseline_count"].tolist(),
        "response_count": cols["response_count"].tolist(),
    }
