"""Bodies that would exhaust the API are refused before they grow it: a 2 GiB chunked body
without a token, a zip bomb and an NPZ bomb, against a real `stimloop serve` process. The API's
process tree (the upload processes included) grows by less than 50 MiB for each. MAT-files
built to crash or exhaust their reader are refused, each growing the tree by less than
256 MiB, and after each a valid upload to another session is stored within 5 s."""

from __future__ import annotations

import contextlib
import io
import subprocess
import time
import uuid
import zipfile
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from redis import Redis
from stimloop.science.stimuli import generate_bodies, generate_control_bodies, generate_objects
from stimloop.storage.stimulus_sets import write_stimulus_set

from tests.support import mat_bombs
from tests.support.processes import STIMLOOP, free_port, user_env
from tests.support.service import cleanup, redis_test_url

pytestmark = pytest.mark.processes
MIB = 2**20


def tree_rss(pid: int) -> int:
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from stimloop.api.auth import create_token
    from stimloop.runtime.settings import Settings

    tmp = tmp_path_factory.mktemp("walls")
    store = tmp / "models_store"
    prefix = f"stimloop-walls-{uuid.uuid4().hex[:8]}"
    settings = Settings(models_store=store, redis_url=redis_test_url(), key_prefix=prefix)
    rig = create_token(settings.tokens_path, "rig", "walls")
    port = free_port()
    env = {
        **user_env(),
        "STIMLOOP_MODELS_STORE": str(store),
        "STIMLOOP_REDIS_URL": redis_test_url(),
        "STIMLOOP_KEY_PREFIX": prefix,
        "STIMLOOP_STIMULUS_ROOT": str(tmp / "stimuli"),
    }
    proc = subprocess.Popen(
        [STIMLOOP, "serve", "--workers", "0", "--port", str(port)],
        env=env,
        stdout=open(tmp / "api.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    ROOTS[proc.pid] = tmp / "stimuli"
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{base}/v1/health", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    yield proc, base, {"Authorization": f"Bearer {rig}"}
    proc.terminate()
    proc.wait(timeout=30)
    cleanup(Redis.from_url(redis_test_url()), settings)


def api_root(proc: subprocess.Popen) -> Path:
    return ROOTS[proc.pid]


ROOTS: dict[int, Path] = {}


def make_session(base: str, rig: dict, root: Path) -> str:
    """A session over three small sets (written and registered by the first call)."""
    for name, items, category in (
        ("b", generate_bodies(8, seed=2), "body"),
        ("o", generate_objects(2, seed=2), "object"),
        ("c", generate_control_bodies(2, seed=2), "control_body"),
    ):
        if (root / name).exists():
            continue
        write_stimulus_set(root / name, items)
        r = httpx.post(
            f"{base}/v1/stimulus-sets",
            headers=rig,
            timeout=60,
            json={"id": name, "category": category, "directory": name},
        )
        assert r.status_code == 201, r.text
    r = httpx.post(
        f"{base}/v1/sessions",
        headers=rig,
        timeout=60,
        json={
            "backbone": "resnet50_random",
            "body_set": "b",
            "object_set": "o",
            "control_body_set": "c",
            "channels": ["x"],
            "fit": {"split": [2, 2, 3]},
        },
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def zeros(total: int, chunk: int = 4 * MIB):
    block = b"\x00" * chunk
    for _ in range(total // chunk):
        yield block


def test_a_2_gib_chunked_body_without_a_token_is_refused_unread(api):
    proc, base, _ = api
    before = tree_rss(proc.pid)
    started = time.monotonic()
    try:
        r = httpx.post(
            f"{base}/v1/sessions",
            content=zeros(2 * 1024 * MIB),
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        assert r.status_code == 401, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        pass  # the server answered and closed while the body was still being sent
    assert time.monotonic() - started < 30
    assert tree_rss(proc.pid) - before < 50 * MIB


def test_a_zip_bomb_and_an_npz_bomb_are_refused_without_growing_the_api(api):
    proc, base, rig = api
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for k in range(40):  # 1.25 GiB in all, each entry under the per-image size
            archive.writestr(f"bomb{k}.png", b"\x00" * (32 * MIB))
    bomb_zip = buffer.getvalue()
    assert len(bomb_zip) < 2 * MIB
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        stimulus=np.array(["a"]),
        channel=np.array(["b"]),
        rate=np.zeros(1),
        junk=np.zeros(128 * MIB),  # 1 GiB of float64, about 1 MiB compressed
    )
    bomb_npz = buffer.getvalue()
    session = make_session(base, rig, api_root(proc))
    warm = httpx.put(  # starts the upload process once (its imports are not the bomb's)
        f"{base}/v1/sessions/{session}/phase1",
        content=b"not an npz",
        headers={**rig, "Content-Type": "application/x-npz"},
        timeout=60,
    )
    assert warm.status_code == 422, warm.text
    before = tree_rss(proc.pid)
    r = httpx.post(
        f"{base}/v1/stimulus-sets/upload?id=bomb&category=object",
        content=bomb_zip,
        headers={**rig, "Content-Type": "application/zip"},
        timeout=60,
    )
    assert r.status_code == 413 and "fold" in r.json()["detail"], r.text
    r = httpx.put(
        f"{base}/v1/sessions/{session}/phase1",
        content=bomb_npz,
        headers={**rig, "Content-Type": "application/x-npz"},
        timeout=60,
    )
    assert r.status_code == 422 and "'junk'" in r.json()["detail"], r.text
    assert tree_rss(proc.pid) - before < 50 * MIB


MAT_BOMBS = {
    "cells nested 20,000 deep (40 KiB)": (lambda: mat_bombs.nested_cells(20_000), "nested"),
    "a 1 x 2^27 cell array (184 bytes)": (lambda: mat_bombs.declared_cells(2**27), "134,217,728"),
    "a 1 x 2^31-1 cell array": (lambda: mat_bombs.declared_cells(2**31 - 1), "2,147,483,647"),
    "4e6 empty cells (flat bomb)": (lambda: mat_bombs.flat_cells(4_000_000), "4,000,000"),
}


def test_mat_bombs_cost_one_request_and_the_next_upload_goes_through(api):
    """Each bomb: 422 naming the limit, the tree grows by less than 256 MiB, and a valid
    upload to another session is stored within 5 s, with no restart."""
    proc, base, rig = api
    victim = make_session(base, rig, api_root(proc))
    others = [make_session(base, rig, api_root(proc)) for _ in MAT_BOMBS]
    valid = {
        "stimulus": [f"body_{k:04d}" for k in range(8)],
        "channel": ["x"] * 8,
        "rate": [float(k) for k in range(8)],
    }
    growth = {}
    for (row, (make, words)), other in zip(MAT_BOMBS.items(), others):
        before = tree_rss(proc.pid)
        r = httpx.put(
            f"{base}/v1/sessions/{victim}/phase1",
            content=make(),
            headers={**rig, "Content-Type": "application/x-matlab-data"},
            timeout=60,
        )
        growth[row] = (tree_rss(proc.pid) - before) / MIB
        assert r.status_code == 422 and words in r.json()["detail"], (row, r.text)
        started = time.monotonic()
        r = httpx.put(f"{base}/v1/sessions/{other}/phase1", json=valid, headers=rig, timeout=30)
        assert r.status_code == 202, (row, r.text)
        assert time.monotonic() - started < 5, row
        assert growth[row] < 256, growth
    print("tree growth per MAT bomb (MiB):", growth)


def test_a_token_in_the_query_string_is_refused_and_kept_out_of_the_log(api):
    proc, base, rig = api
    token = rig["Authorization"].split()[1]
    r = httpx.get(f"{base}/v1/sessions?token={token}&access_token=hunter2", timeout=10)
    assert r.status_code == 401, r.text
    log_file = api_root(proc).parent / "api.log"
    for _ in range(50):  # the access log line is written after the answer
        if "/v1/sessions?" in log_file.read_text():
            break
        time.sleep(0.1)
    written = log_file.read_text()
    assert "/v1/sessions?token=[redacted]&access_token=[redacted]" in written, written[-2000:]
    assert token not in written and "hunter2" not in written
