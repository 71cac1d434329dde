"""Trial-table readers: round trips and a malformed-file table."""

from __future__ import annotations

import numpy as np
import pytest

from client.readers import TrialFileError, read_trial_table


def test_csv_and_npz_round_trip(tmp_path):
    (tmp_path / "t.csv").write_text(
        "stimulus,channel,repeat,rate\nbody_0000,ch1,0,12.5\nbody_0001,ch1,0,-3\n"
    )
    csv = read_trial_table(tmp_path / "t.csv")
    np.savez(tmp_path / "t.npz", **csv)
    npz = read_trial_table(tmp_path / "t.npz")
    for cols in (csv, npz):
        assert list(cols["stimulus"]) == ["body_0000", "body_0001"]
        np.testing.assert_allclose(cols["rate"], [12.5, -3.0])
        np.testing.assert_allclose(cols["repeat"], [0, 0])


def test_counts_columns(tmp_path):
    (tmp_path / "t.csv").write_text("stimulus,channel,baseline_count,response_count\na,c,1,9\n")
    cols = read_trial_table(tmp_path / "t.csv")
    assert cols["baseline_count"][0] == 1 and cols["response_count"][0] == 9


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "", "empty file or no header"),
        ("a.csv", "stimulus,rate\na,1\n", r"missing column\(s\) \['channel'\]"),
        ("a.csv", "stimulus,channel\na,c\n", "needs a 'rate' column"),
        ("a.csv", "stimulus,channel,rate\na,c,fast\n", "row 1, column 'rate': 'fast' is not"),
        ("a.csv", "stimulus,channel,rate\na,c,nan\n", "row 1, column 'rate' is NaN"),
        ("a.csv", "stimulus,channel,rate\na,c,1,2\n", "row 1 has the wrong number"),
        ("a.csv", "stimulus,channel,rate\n,c,1\n", "empty stimulus or channel"),
        ("a.csv", "stimulus,channel,baseline_count,response_count\na,c,1.5,2\n", "whole"),
        ("a.csv", "stimulus,channel,rate\n", "no trials"),
        ("a.npz", b"not a zip", "not a readable NPZ"),
        ("a.xlsx", b"", "unknown trial table format"),
    ],
)
def test_malformed_files_are_named_with_the_fault(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(TrialFileError, match=message):
        read_trial_table(path)


def test_npz_columns_must_be_one_dimensional(tmp_path):
    np.savez(
        tmp_path / "a.npz", stimulus=np.array(["a"]), channel=np.array(["c"]), rate=np.zeros((1, 2))
    )
    with pytest.raises(TrialFileError, match="1-D"):
        read_trial_table(tmp_path / "a.npz")
