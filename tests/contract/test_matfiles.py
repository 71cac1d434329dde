"""MAT-files as trial tables: written by scipy here (and by GNU Octave in tests/test_matlab.py),
read as the CSV of the same table is; XDream's layout; and the files that must be refused."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from stimloop_contract.errors import TrialFileError
from stimloop_contract.matfiles import is_mat, parse_trial_mat, read_trial_mat
from stimloop_contract.trial_tables import read_trial_csv
from stimloop_rig.readers import read_trials

from tests.support import mat_bombs
from tests.support.mat_files import cells, declared_huge, mat_bytes, nested, v73_file

TABLE = {
    "stimulus": ["body_0001", "body_0001", "body_0002", "body_0002"],
    "channel": ["ch01", "ch02", "ch01", "ch02"],
    "repeat": [0, 0, 0, 0],
    "rate": [12.5, 3.0, 7.25, 0.0],
}


def same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].tolist() == b[k].tolist(), k


def test_a_table_as_variables_or_as_one_struct_reads_as_its_csv(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text(
        "stimulus,channel,repeat,rate\n"
        + "\n".join(",".join(str(TABLE[k][i]) for k in TABLE) for i in range(4))
    )
    want = read_trial_csv(csv)
    columns = {**TABLE, "stimulus": cells(TABLE["stimulus"]), "channel": cells(TABLE["channel"])}
    (tmp_path / "t.mat").write_bytes(mat_bytes(columns))
    same(read_trials(tmp_path / "t.mat"), want)
    same(parse_trial_mat(mat_bytes({"trials": columns}, do_compression=True)), want)
    # char matrices (one id per row) read as the same text
    chars = {
        **columns,
        "stimulus": np.array(TABLE["stimulus"]),
        "channel": np.array(TABLE["channel"]),
    }
    same(parse_trial_mat(mat_bytes(chars)), want)


def test_an_onset_column_reads_as_its_csv(tmp_path):
    """The optional ``onset`` (s from the recording's start), as scipy's savemat writes it."""
    timed = {**TABLE, "onset": [3.0, 3.0, 3.61, 3.61]}
    csv = tmp_path / "t.csv"
    csv.write_text(
        ",".join(timed)
        + "\n"
        + "\n".join(",".join(str(timed[k][i]) for k in timed) for i in range(4))
    )
    columns = {**timed, "stimulus": cells(TABLE["stimulus"]), "channel": cells(TABLE["channel"])}
    got = parse_trial_mat(mat_bytes(columns))
    same(got, read_trial_csv(csv))
    assert got["onset"].tolist() == [3.0, 3.0, 3.61, 3.61]


def test_whole_number_ids_become_text():
    got = parse_trial_mat(mat_bytes({"stimulus": [3, 4], "channel": [1, 1], "rate": [1.0, 2.0]}))
    assert got["stimulus"].tolist() == ["3", "4"] and got["channel"].tolist() == ["1", "1"]


@pytest.mark.parametrize("orientation", ["channels x presentations", "presentations x channels"])
def test_xdreams_layout_becomes_one_trial_per_channel_and_presentation(orientation):
    shown = ["a", "b", "a"]  # image a twice: repeats 0 and 1
    evoked = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # 2 channels x 3 presentations
    data = evoked if orientation.startswith("channels") else evoked.T
    got = parse_trial_mat(mat_bytes({"stimulusID": cells(shown), "tEvokedResp": data}))
    assert got["stimulus"].tolist() == shown * 2
    assert got["channel"].tolist() == ["ch01"] * 3 + ["ch02"] * 3
    assert got["repeat"].tolist() == [0, 0, 1] * 2
    assert got["rate"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    named = parse_trial_mat(
        mat_bytes(
            {"stimulusID": cells(shown), "tEvokedResp": data, "channelNames": cells(["p1", "p2"])}
        )
    )
    assert named["channel"].tolist() == ["p1"] * 3 + ["p2"] * 3


def bomb() -> bytes:
    """A valid v5 file whose one compressed variable inflates to 8 MiB of zeros."""
    return mat_bytes({"stimulus": np.zeros(2**20)}, do_compression=True)


def truncated() -> bytes:
    data = mat_bytes({"stimulus": cells(["a"]), "channel": cells(["c"]), "rate": [1.0]})
    return data[:-20]


def damaged_stream() -> bytes:
    data = bytearray(mat_bytes({"rate": [1.0, 2.0]}, do_compression=True))
    data[140:150] = b"\xff" * 10
    return bytes(data)


ROWS = {
    "v7.3 (HDF5)": (v73_file, "'-v7'"),
    "decompression bomb": (bomb, "decompression bomb"),
    "truncated": (truncated, "file ends"),
    "a tag declaring 2 GiB": (declared_huge, "file ends"),
    "nested cells": (nested, "nested cells or structs"),
    "damaged compressed stream": (damaged_stream, "damaged"),
    "not a MAT-file": (lambda: b"PK\x03\x04 an npz", "not a MAT-file"),
    "no trial columns": (lambda: mat_bytes({"x": [1.0]}), "expected the columns"),
    "cells nested 20,000 deep (40 KiB)": (
        lambda: mat_bombs.nested_cells(20_000),
        "nested deeper than 4 levels",
    ),
    "structs nested 5 deep": (lambda: mat_bytes({"a": {"b": {"c": {"d": {"e": 1.0}}}}}), "deeper"),
    "a 1 x 2^27 cell array in 184 bytes": (
        lambda: mat_bombs.declared_cells(2**27),
        "134,217,728 elements; a trial table needs at most 486,400",
    ),
    "a cell array declaring more cells than it holds": (
        lambda: mat_bombs.declared_cells(400_000, held=2),
        "bytes hold at most",
    ),
    "4e6 empty cells (flat cell bomb)": (
        lambda: mat_bombs.flat_cells(4_000_000),
        "4,000,000 elements",
    ),
    "a sparse matrix": (
        lambda: mat_bytes({"rate": __import__("scipy.sparse").sparse.eye(3)}),
        "a sparse matrix",
    ),
    "XDream with the wrong length": (
        lambda: mat_bytes({"stimulusID": cells(["a", "b"]), "tEvokedResp": np.ones((3, 3))}),
        "one axis must be the 2 presentations",
    ),
}


@pytest.mark.parametrize("row", list(ROWS))
def test_hostile_mat_files_are_refused_with_what_is_wrong(row):
    make, words = ROWS[row]
    with pytest.raises(TrialFileError) as caught:
        parse_trial_mat(make(), "upload.mat", max_bytes=2**20)
    assert words in str(caught.value), str(caught.value)
    assert str(caught.value).startswith("upload.mat")


def test_mat_bombs_are_what_scipy_reads():
    """The hand-written bombs, at a harmless size, read in scipy as the layout they claim: so
    the walk refuses real MAT-files, not a private format."""
    from scipy.io import loadmat

    value = loadmat(io.BytesIO(mat_bombs.nested_cells(6)))["stimulus"]
    depth = 0
    while value.dtype == object:
        value, depth = value[0, 0], depth + 1
    assert depth == 6 and value.tolist() == [[1.0]]
    held = loadmat(io.BytesIO(mat_bombs.declared_cells(3, held=3)))["stimulus"]
    assert held.shape == (1, 3) and [c.item() for c in held.ravel()] == [0.0, 1.0, 2.0]
    flat = loadmat(io.BytesIO(mat_bombs.flat_cells(1000)))["stimulus"]
    assert flat.shape == (1, 1000) and all(c.size == 0 for c in flat.ravel())


def test_more_cells_in_all_than_two_text_columns_need_are_refused():
    data = mat_bombs.flat_cells(400_000, (b"stimulus", b"channel", b"x"))
    with pytest.raises(TrialFileError, match="972,800 elements in all"):
        parse_trial_mat(data, "upload.mat")


def test_a_table_of_the_papers_scale_is_walked_and_read():
    """A phase-one table of 475 bodies x 8 repeats x 4 channels, its text as cell arrays in a
    struct, compressed or not, passes the walk and reads whole."""
    n = 475 * 8 * 4
    table = {
        "stimulus": cells([f"body_{k % 475:04d}" for k in range(n)]),
        "channel": cells([f"ch{k % 4:02d}" for k in range(n)]),
        "repeat": np.arange(n) // (475 * 4),
        "rate": np.linspace(0, 50, n),
    }
    for compress in (False, True):
        got = parse_trial_mat(mat_bytes({"T": table}, do_compression=compress))
        assert len(got["stimulus"]) == n and got["channel"][17] == "ch01"


def test_the_header_tells_a_mat_file_from_an_npz():
    assert is_mat(mat_bytes({"rate": [1.0]})) and is_mat(v73_file())
    assert not is_mat(b"PK\x03\x04" + b"\0" * 600)
    assert zlib.decompress(zlib.compress(b"x")) == b"x"  # zlib present: compressed files read


def test_read_trial_mat_names_the_file(tmp_path):
    path = tmp_path / "phase1.mat"
    path.write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 10)
    with pytest.raises(TrialFileError, match=r"phase1\.mat"):
        read_trial_mat(path)
