"""Shared fixtures: the seeded random backbone (built once) and a tiny procedural set."""

from __future__ import annotations

from pathlib import Path

import pytest
from stimloop.runtime.threads import bound_threads

from tests.support.paths import REGISTRY

bound_threads()  # before any test loads numpy: BLAS and torch threads within this process's cores

# The tiers (README, "Tests"): a test is marked by the fixtures it stands on, so no test can
# join the unit tier (``make test-unit``: neither Redis nor the backbone) by forgetting a mark.
NEEDS = {
    "backbone": {"random_backbone", "synthetic_dataset", "neurons", "resnet", "checkpoints"},
    "redis": {"service", "redis_url"},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for mark, fixtures in NEEDS.items():
            if used & fixtures:
                item.add_marker(mark)


@pytest.fixture(scope="session")
def random_spec():
    from stimloop.storage.registry import load_registry

    return load_registry(REGISTRY)["resnet50_random"]


@pytest.fixture(scope="session")
def random_backbone(random_spec, tmp_path_factory):
    """The labelled stand-in backbone on the CPU (about a second to build)."""
    from stimloop.science.backbone import load_backbone

    return load_backbone(random_spec, tmp_path_factory.mktemp("weights"), device="cpu")


@pytest.fixture(scope="session")
def tiny_stimuli():
    """4 bodies, 3 objects, 2 control bodies for seed 0."""
    from stimloop.science import stimuli as st

    return st.generate_bodies(4, 0) + st.generate_objects(3, 0) + st.generate_control_bodies(2, 0)


@pytest.fixture(scope="session")
def synthetic_dataset(random_backbone):
    """Procedural bodies (with silhouettes) and objects through the random backbone at 224 px,
    and 16 synthetic body-preferring channels recorded with Poisson noise (A.1.1).

    Shared by the readout, selection and saliency tests (about 30 s to build, bf16 forward).
    """
    from PIL import Image
    from stimloop.science import synthetic as sy
    from stimloop.science.backbone import extract_features, fast_precision, image_to_tensor
    from stimloop.science.images import silhouette
    from stimloop.science.responses import response_table
    from stimloop.science.stimuli import generate_bodies, generate_objects

    bodies, objects = generate_bodies(240, seed=0), generate_objects(120, seed=0)

    def features(images):
        tensors = [image_to_tensor(Image.fromarray(i)) for i in images]
        return extract_features(
            random_backbone, tensors, batch_size=32, precision=fast_precision("cpu")
        )

    body_maps = features([b.image for b in bodies])
    object_maps = features([o.image for o in objects])
    silhouette_maps = features([silhouette(b.image) for b in bodies])
    channels = [f"ch{i:02d}" for i in range(16)]
    neurons = sy.make_neurons(
        body_maps, object_maps, channels, seed=1, config=sy.SyntheticConfig(sparsity=0.02)
    )
    body_ids = [b.id for b in bodies]
    truth_bodies = sy.true_responses(neurons, body_maps)
    trials, columns = sy.simulate_counts(truth_bodies, body_ids, channels, seed=1)
    return {
        "bodies": bodies,
        "objects": objects,
        "body_ids": body_ids,
        "object_ids": [o.id for o in objects],
        "body_maps": body_maps,
        "object_maps": object_maps,
        "silhouette_maps": silhouette_maps,
        "channels": channels,
        "neurons": neurons,
        "truth_bodies": truth_bodies,
        "truth_objects": sy.true_responses(neurons, object_maps),
        "trials": trials,
        "columns": columns,
        "table": response_table(trials, stimuli=body_ids, channels=channels),
        "weights_sha256": random_backbone.weights_sha256,
    }


@pytest.fixture(scope="module")
def neurons():
    """The synthetic channels' tools and the stand-in backbone's maps of PIL images (for the
    tests that drive a real server as a rig does)."""
    from stimloop.science import synthetic as sy
    from stimloop.science.backbone import extract_features, image_to_tensor, load_backbone
    from stimloop.storage.registry import default_registry_path, load_registry

    spec = load_registry(default_registry_path())["resnet50_random"]
    model = load_backbone(spec, Path(), "cpu")

    def maps(images: list) -> object:  # PIL images -> [N, 2048, 7, 7] maps
        return extract_features(model, [image_to_tensor(i.convert("RGB")) for i in images])

    return sy, maps
