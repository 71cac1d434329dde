"""The hostile-input table: every row is a request that must be refused with a 4xx
problem+json naming the problem, leaving the stored state (files and Redis keys) as it was.

Rows: no token before the body, sizes on the stream, zip entries (paths, links, long names,
bombs, fake images), images by content and pixel count, stimulus folders (links, manifest
paths, hashes, missing keys), odd ids, NPZ bodies (huge headers, non-arrays, bombs), duplicate
trials, and racing registrations.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import threading
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from stimloop.science.stimuli import generate_objects
from stimloop.storage.stimulus_sets import write_stimulus_set

from tests.support import mat_bombs
from tests.support.service import is_problem, new_session


def snapshot(service) -> tuple:
    """Every stored file with its hash, and every Redis key of this deployment."""
    root = service.settings.models_store
    files = sorted(
        (str(p.relative_to(root)), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in root.rglob("*")
        if p.is_file() and p.name != ".lock"
    )
    keys = sorted(service.redis.scan_iter(f"{service.settings.key_prefix}:*"))
    return files, keys


@pytest.fixture(scope="module")
def hsession(service):
    return new_session(service, "h", 5, 8, channels=["ch1", "ch2"], fit={"split": [2, 2, 3]})


def png(width: int = 8, height: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (no real pixels behind it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 1).save(buffer, format="GIF")
    return buffer.getvalue()


def zip_of(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16  # a symbolic link
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def upload_zip(service, data: bytes, set_id: str = "z"):
    return service.client.post(
        f"/v1/stimulus-sets/upload?id={set_id}&category=object",
        headers={**service.rig, "Content-Type": "application/zip"},
        content=data,
    )


ZIP_ROWS = {
    "dot-dot path": ({"../evil.png": png()}, None, 400, "'..'"),
    "absolute path": ({"/etc/evil.png": png()}, None, 400, "absolute"),
    "symbolic link": ({"a.png": png()}, "link.png", 400, "symbolic link"),
    "name over 255 bytes": ({"x" * 300 + ".png": png()}, None, 400, "longer than 255"),
    "gif named png": ({"a.png": gif()}, None, 400, "not a PNG or JPEG"),
    "postscript named png": ({"a.png": b"%!PS-Adobe-3.0\n"}, None, 400, "not a PNG or JPEG"),
    "too many pixels": ({"a.png": png(5000, 5000)}, None, 400, "STIMLOOP_MAX_IMAGE_PIXELS"),
    "bomb header": (
        {"a.png": png_header_only(20000, 20000)},
        None,
        400,
        "STIMLOOP_MAX_IMAGE_PIXELS",
    ),
    "decompression bomb": ({"a.png": b"\x00" * (64 * 2**20)}, None, 413, "fold"),
}


@pytest.mark.parametrize("row", list(ZIP_ROWS))
def test_hostile_zip_uploads_are_refused_and_change_nothing(service, hsession, row):
    members, link, status, words = ZIP_ROWS[row]
    before = snapshot(service)
    r = upload_zip(service, zip_of(members, link))
    assert words in is_problem(r, status)["detail"], row
    assert snapshot(service) == before


def test_image_ids_are_bounded_so_that_every_name_made_from_one_fits(service, hsession):
    """Ids are 1-128 safe characters: the longest id with the longest channel, kind and q
    still makes a fragment file name within the file system's 255 bytes."""
    from stimloop.science.fragments import fragment_id

    r = upload_zip(service, zip_of({"y" * 128 + ".png": png()}), "long-names")
    assert r.status_code == 201, r.text
    longest = fragment_id("y" * 128, "c" * 64, "complement", 0.123456) + ".png"
    assert len(longest.encode()) <= 255, len(longest.encode())
    for name in ("y" * 129, "with space", "-dash-first", "ümlaut"):
        r = upload_zip(service, zip_of({f"{name}.png": png()}), "bad-names")
        assert "1-128 letters" in is_problem(r, 400)["detail"], name


def stimulus_folder(service, name: str, manifest: dict | None = None) -> Path:
    folder = service.settings.stimulus_root / name
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(png())
    if manifest is not None:
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def register(service, directory: str, set_id: str = "d"):
    return service.client.post(
        "/v1/stimulus-sets",
        headers=service.rig,
        json={"id": set_id, "category": "object", "directory": directory},
    )


def test_hostile_stimulus_folders_are_refused_and_change_nothing(service, hsession, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png())
    link = stimulus_folder(service, "f-link")
    os.symlink(secret, link / "b.png")
    stimulus_folder(service, "f-dotdot", {"stimuli": [{"id": "x", "file": "../../secret.png"}]})
    stimulus_folder(
        service, "f-sha", {"stimuli": [{"id": "a", "file": "a.png", "sha256": "0" * 64}]}
    )
    stimulus_folder(service, "f-keys", {"stimuli": [{"name": "a"}]})
    stimulus_folder(service, "f-json").joinpath("manifest.json").write_text("{nope")
    gif_folder = stimulus_folder(service, "f-gif")
    (gif_folder / "c.png").write_bytes(gif())
    rows = {
        "symlink out of the folder": ("f-link", 422, "resolves outside"),
        "manifest path with ..": ("f-dotdot", 422, "resolves outside"),
        "manifest sha256 wrong": ("f-sha", 422, "does not match"),
        "manifest missing keys": ("f-keys", 422, "needs string 'id' and 'file'"),
        "manifest not JSON": ("f-json", 422, "not valid JSON"),
        "gif named png": ("f-gif", 422, "not a PNG or JPEG"),
        "the root itself": (".", 403, "below the stimulus root"),
        "outside the root": ("../..", 403, "below the stimulus root"),
        "NUL byte": ("f-link\x00x", 422, "directory"),
        "part over 255 bytes": ("x" * 300, 404, "longer than 255"),
    }
    for row, (directory, status, words) in rows.items():
        before = snapshot(service)
        assert words in is_problem(register(service, directory), status)["detail"], row
        assert snapshot(service) == before, row


def test_an_analyst_can_never_read_outside_a_set(service, hsession):
    r = service.client.get(
        "/v1/stimulus-sets/hb/images/..%2F..%2Fetc%2Fpasswd", headers=service.analyst
    )
    assert r.status_code == 404


def npz_bytes(arrays: dict[str, np.ndarray], compressed: bool = True) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def npz_with_header(rows: int) -> bytes:
    """An NPZ whose 'rate' column header declares ``rows`` float64 rows."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (rows,)
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, header)
    member.write(b"\x00" * 64)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("stimulus.npy", _npy(np.array(["body_0000"])))
        archive.writestr("channel.npy", _npy(np.array(["ch1"])))
        archive.writestr("rate.npy", member.getvalue())
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def put_trials(service, session: str, content: bytes, kind: str):
    return service.client.put(
        f"/v1/sessions/{session}/phase1",
        headers={**service.rig, "Content-Type": kind},
        content=content,
    )


def test_hostile_trial_uploads_are_refused_and_change_nothing(service, hsession):
    s = ["body_0000", "body_0001"]
    stim, chan = np.array(s), np.array(["ch1", "ch1"])
    with_text = io.BytesIO()
    with zipfile.ZipFile(with_text, "w") as archive:
        archive.writestr("stimulus.npy", _npy(stim))
        archive.writestr("notes.txt", b"hello")
    rows = {
        "10^12 rows declared": (npz_with_header(10**12), "application/x-npz", 422, "'rate'"),
        "non-array member": (with_text.getvalue(), "application/x-npz", 422, "'notes.txt'"),
        "object column": (
            npz_bytes(
                {"stimulus": stim, "channel": chan, "rate": np.array([1, 2], dtype=object)},
                compressed=False,
            ).replace(b"allow_pickle", b"allow_pickle"),
            "application/x-npz",
            422,
            "dtype",
        ),
        "npz bomb": (
            npz_bytes(
                {
                    "stimulus": stim,
                    "channel": chan,
                    "rate": np.zeros(2),
                    "junk": np.zeros(64 * 2**20),
                }
            ),
            "application/x-npz",
            422,
            "'junk'",
        ),
        "same trial twice": (
            json.dumps(
                {
                    "stimulus": s + s,
                    "channel": ["ch1"] * 4,
                    "repeat": [0, 1, 0, 1],
                    "rate": [1.0, 2.0, 1.0, 2.5],
                }
            ).encode(),
            "application/json",
            422,
            "rows 1 and 3 are the same trial",
        ),
        "plain names in messages": (
            json.dumps({"stimulus": s, "channel": ["ch99", "ch1"], "rate": [1.0, 2.0]}).encode(),
            "application/json",
            422,
            "['ch99']",
        ),
        "no token, malformed JSON": (b"{nope", "application/json", 401, "Bearer"),
    }
    for row, (content, kind, status, words) in rows.items():
        before = snapshot(service)
        headers = {"Content-Type": kind}
        if status != 401:
            headers |= service.rig
        r = service.client.put(f"/v1/sessions/{hsession}/phase1", headers=headers, content=content)
        detail = is_problem(r, status)["detail"]
        assert words in detail and "np.str_" not in detail, (row, detail)
        assert snapshot(service) == before, row


def test_sizes_are_checked_on_the_stream_and_before_the_token_nothing_is_read(service):
    before = snapshot(service)
    big = b'{"id": "x", "category": "body", "directory": "' + b"a" * (3 * 2**20) + b'"}'

    def chunks():
        for k in range(0, len(big), 65536):
            yield big[k : k + 65536]

    r = service.client.post("/v1/stimulus-sets", headers=service.rig, content=chunks())
    assert "STIMLOOP_MAX_JSON_BYTES" in is_problem(r, 413)["detail"]
    r = service.client.post(
        "/v1/stimulus-sets",
        headers={**service.rig, "Content-Type": "application/json"},
        content=big,
    )
    assert "STIMLOOP_MAX_JSON_BYTES" in is_problem(r, 413)["detail"]
    r = service.client.post(
        "/v1/sessions", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    is_problem(r, 401)
    is_problem(service.client.get("/v1/jobs/a.b", headers=service.rig), 422)  # not an id
    assert snapshot(service) == before


def test_racing_registrations_of_one_id_create_it_once(service, hsession):
    root = service.settings.stimulus_root
    write_stimulus_set(root / "race-a", generate_objects(2, seed=8))
    write_stimulus_set(root / "race-b", generate_objects(3, seed=9))
    results = []
    barrier = threading.Barrier(4)

    def go(directory: str) -> None:
        barrier.wait()
        results.append(register(service, directory, "race").status_code)

    threads = [threading.Thread(target=go, args=(d,)) for d in ("race-a", "race-b") * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(201) == 1, results
    assert sorted(results) in ([200, 201, 409, 409], [201, 409, 409, 409], [200, 201, 409, 409])


def test_hostile_phase_three_requests_are_refused_and_change_nothing(service, hsession):
    """Phase three before its time, odd values, odd ids, wrong roles: 4xx, nothing stored."""
    url = f"/v1/sessions/{hsession}/phase3"
    trials = json.dumps({"stimulus": ["body_0000"], "channel": ["ch1"], "rate": [1.0]}).encode()
    rows = {
        "no readouts yet": ("POST", url, {}, service.analyst, 409, "no fitted models"),
        "q of 0": ("POST", url, {"q": [0.0]}, service.rig, 422, "greater than 0"),
        "q of 1": ("POST", url, {"q": [1.0]}, service.rig, 422, "less than 1"),
        "q twice": ("POST", url, {"q": [0.25, 0.25]}, service.rig, 422, "repeat"),
        "11 q values": (
            "POST",
            url,
            {"q": [0.05 * k for k in range(1, 12)]},
            service.rig,
            422,
            "at most 10",
        ),
        "2000 channels": (
            "POST",
            url,
            {"channels": ["c"] * 2000},
            service.rig,
            422,
            "at most 1024",
        ),
        "unknown kind": ("POST", url, {"kinds": ["../x"]}, service.rig, 422, "salient"),
        "path as session": ("POST", "/v1/sessions/..%2f..%2fetc/phase3", {}, service.rig, 404, ""),
        "no list yet": ("PUT", f"{url}/trials", trials, service.rig, 409, "no phase-three list"),
        "analyst uploads": ("PUT", f"{url}/trials", trials, service.analyst, 403, "rig"),
        "no token": ("PUT", f"{url}/trials", trials, {}, 401, "Bearer"),
        "list before it is built": ("GET", url, None, service.rig, 404, "no phase-three list"),
        "zip before it is built": (
            "GET",
            f"{url}/stimuli.zip",
            None,
            service.rig,
            404,
            "no phase-three list",
        ),
    }
    for row, (method, path, body, headers, status, words) in rows.items():
        before = snapshot(service)
        if method == "PUT":
            r = service.client.put(
                path, headers={**headers, "Content-Type": "application/json"}, content=body
            )
        elif method == "POST":
            r = service.client.post(path, headers=headers, json=body)
        else:
            r = service.client.get(path, headers=headers)
        assert words in is_problem(r, status)["detail"], (row, r.text)
        assert snapshot(service) == before, row


def test_hostile_sanity_requests_are_refused_and_change_nothing(service, hsession):
    """Sanity checks of maps that do not exist, odd keys and values, no token: 4xx, nothing
    stored or queued."""
    base = f"/v1/sessions/{hsession}/saliency"
    key = "0123456789abcdef"
    rows = {
        "no such result": ("POST", f"{base}/{key}/sanity", {}, 404, "ask for the maps first"),
        "key as a path": ("POST", f"{base}/..%2f..%2fsession/sanity", {}, 404, ""),
        "short key": ("POST", f"{base}/abc/sanity", {}, 422, "pattern"),
        "threshold above 1": (
            "POST",
            f"{base}/{key}/sanity",
            {"max_similarity": 1.5},
            422,
            "less than or equal to 1",
        ),
        "unknown metric": ("POST", f"{base}/{key}/sanity", {"metric": "eyeball"}, 422, "spearman"),
        "no features": ("POST", f"{base}/{key}/sanity", {"max_features": 0}, 422, "greater"),
        "unknown field": ("POST", f"{base}/{key}/sanity", {"steps": 3}, 422, "steps"),
        "checks not run": ("GET", f"{base}/{key}/sanity", None, 404, "POST"),
        "strip not drawn": ("GET", f"{base}/{key}/sanity.png", None, 404, "POST"),
        "unknown session": ("GET", "/v1/sessions/000000000000/saliency", None, 404, ""),
    }
    for row, (method, path, body, status, words) in rows.items():
        before = snapshot(service)
        if method == "POST":
            r = service.client.post(path, headers=service.analyst, json=body)
        else:
            r = service.client.get(path, headers=service.analyst)
        assert words in is_problem(r, status)["detail"], (row, r.text)
        assert snapshot(service) == before, row
    r = service.client.post(f"{base}/{key}/sanity", json={})
    assert r.status_code == 401


def test_hostile_mat_file_uploads_are_refused_and_change_nothing(service, hsession):
    """MAT-file bodies (a MATLAB rig's upload): v7.3, a bomb past the upload's limit, nested
    cells, a tag declaring more than the file, an unknown channel; each under its own media
    type or as octet-stream (recognised by its header)."""
    from tests.support import mat_files as mf

    good = mf.mat_bytes(
        {"stimulus": mf.cells(["body_0000"]), "channel": mf.cells(["ch99"]), "rate": [1.0]}
    )
    big_zeros = mf.mat_bytes({"stimulus": np.zeros(40 * 2**20)}, do_compression=True)
    rows = {
        "v7.3 (HDF5)": (mf.v73_file(), "'-v7'"),
        "inflates past the limit": (big_zeros, "decompression bomb"),
        "nested cells": (mf.nested(), "nested cells"),
        "a tag declaring 2 GiB": (mf.declared_huge(), "file ends"),
        "cells nested 20,000 deep": (mat_bombs.nested_cells(20_000), "nested deeper than 4"),
        "a 1 x 2^27 cell array": (mat_bombs.declared_cells(2**27), "134,217,728 elements"),
        "4e6 empty cells": (mat_bombs.flat_cells(4_000_000), "4,000,000 elements"),
        "unknown channel": (good, "ch99"),
    }
    for row, (content, words) in rows.items():
        for kind in ("application/x-matlab-data", "application/octet-stream"):
            before = snapshot(service)
            r = service.client.put(
                f"/v1/sessions/{hsession}/phase1",
                headers={**service.rig, "Content-Type": kind},
                content=content,
            )
            assert words in is_problem(r, 422)["detail"], (row, kind, r.text)
            assert snapshot(service) == before, (row, kind)
