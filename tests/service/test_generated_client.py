"""The OpenAPI document as other labs use it: a Python client generated from the live
document by a common generator (openapi-python-client), without a warning, then used: a
missing session's 404 read as a typed Problem, a session created, a phase-one upload sent, a
selection read as typed entries."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.loop import CHANNELS, as_json, simulate

GENERATOR = Path(sys.executable).with_name("openapi-python-client")


@pytest.fixture(scope="module")
def generated(service, tmp_path_factory):
    """The client package generated from ``GET /openapi.json``, importable."""
    folder = tmp_path_factory.mktemp("generated")
    document = folder / "openapi.json"
    document.write_text(json.dumps(service.client.get("/openapi.json").json()))
    (folder / "config.yaml").write_text("post_hooks: []\n")
    result = subprocess.run(
        [str(GENERATOR), "generate", "--path", str(document), "--config", "config.yaml"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    assert "warning" not in said.lower(), said  # every operation and response generated
    sys.path.insert(0, str(folder / "stimloop-client"))
    try:
        yield importlib.import_module("stimloop_client")
    finally:
        sys.path.remove(str(folder / "stimloop-client"))


def test_a_generated_client_reads_problems_and_typed_answers(service, loop, generated):
    from stimloop_client import AuthenticatedClient
    from stimloop_client.api.sessions import (
        create_session,
        get_selection,
        get_session,
        upload_phase_one,
    )
    from stimloop_client.models import (
        Accepted,
        PaperSessionCreate,
        Problem,
        Selection,
        SessionInfo,
        TrialUpload,
    )

    token = service.rig["Authorization"].split()[1]
    client = AuthenticatedClient(
        base_url="http://testserver",
        token=token,
        httpx_args={"transport": service.client._transport},
    )
    missing = get_session.sync_detailed("0123456789ab", client=client)
    assert missing.status_code == 404
    assert isinstance(missing.parsed, Problem) and "does not exist" in missing.parsed.detail

    made = create_session.sync(
        client=client,
        body=PaperSessionCreate.from_dict(
            {
                "backbone": "resnet50_random",
                "body_set": "bodies",
                "object_set": "objects",
                "control_body_set": "controls",
                "channels": CHANNELS,
                "fit": {"epochs": 10, "lr": 1e-3, "split": [24, 8, 8]},
                "selection": {"stability_images": 10, "repeats": 2},
            }
        ),
    )
    assert isinstance(made, SessionInfo), made
    service.work()  # warms the candidates
    trials = as_json(simulate(loop, {"bodies": loop["maps"]["bodies"][0]}, seed=6))
    sent = upload_phase_one.sync(made.id, client=client, body=TrialUpload.from_dict(trials))
    assert isinstance(sent, Accepted) and sent.status == "queued", sent
    service.work()
    selection = get_selection.sync(made.id, client=client)
    assert isinstance(selection, Selection), selection
    entries = selection.phase_two.entries
    assert entries and all(isinstance(e.stimulus, str) for e in entries)
    assert {e.category for e in entries} <= {"object", "control_body"}
    assert len(selection.phase_two.stability_images) == 10
