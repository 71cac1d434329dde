"""Trial-table readers: round trips and a malformed-file table."""

from __future__ import annotations

from datetime import UTC

import numpy as np
import pytest
from stimloop_contract.errors import TrialFileError
from stimloop_contract.trial_tables import read_trial_csv, read_trial_table


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


def test_spike_times_are_cut_into_half_open_windows_around_each_onset(tmp_path):
    """A.2's windows, [start, end) around each onset: spikes on a window's start count, on
    its end do not; the session's own windows are used when given."""
    onsets = np.array([10.0, 20.0])
    edges = np.array([-0.1, -0.075, 0.0, 0.025, 0.05, 0.1, 0.2499, 0.25])
    np.savez(
        tmp_path / "s.npz",
        spikes_ch1=np.sort(np.concatenate([onsets[0] + edges, onsets[1] + edges[:3]])),
        event_times=onsets,
        event_codes=np.array([0, 1]),
        code_ids=np.array(["a", "b"]),
    )
    from stimloop_rig.readers import read_trials

    cols = read_trials(tmp_path / "s.npz")
    # baseline [-0.075, 0.025): -0.075 and 0.0; response [0.05, 0.25): 0.05, 0.1, 0.2499
    assert cols["baseline_count"].tolist() == [2, 2] and cols["response_count"].tolist() == [3, 0]
    assert cols["onset"].tolist() == [10.0, 20.0]  # each trial keeps its presentation's onset
    custom = read_trials(tmp_path / "s.npz", baseline=(-0.2, 0.0), response=(0.0, 0.3))
    assert custom["baseline_count"].tolist() == [2, 2]
    assert custom["response_count"].tolist() == [6, 1]


def test_onsets_are_read_and_checked(tmp_path):
    """``onset``: seconds from the recording's start, in CSV (a decimal comma where the
    separator is a semicolon) and NPZ alike; negative or missing values are refused."""
    (tmp_path / "t.csv").write_text("stimulus;channel;onset;rate\na;c;12,25;1\nb;c;13,5;2\n")
    cols = read_trial_table(tmp_path / "t.csv")
    np.savez(tmp_path / "t.npz", **cols)
    for read in (cols, read_trial_table(tmp_path / "t.npz")):
        assert read["onset"].tolist() == [12.25, 13.5]
    for value, message in (("-1", "column 'onset' is negative"), ("", "column 'onset': ''")):
        (tmp_path / "bad.csv").write_text(f"stimulus,channel,onset,rate\na,c,{value},1\n")
        with pytest.raises(TrialFileError, match=message):
            read_trial_table(tmp_path / "bad.csv")


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
        ("a.csv", "stimulus,channel,rate\na,c,1,2\n", r"row 1 \(line 2\) has 4 fields"),
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


def test_spike_trains_written_by_the_rig_read_back_as_they_were(tmp_path):
    """``SpikeTrains.arrays`` (what the rig uploads of a recording), saved by numpy and read
    back by the reader of hand-written spike NPZ files: the same spikes, presentations and
    resolution, and the same trials."""
    from stimloop_contract.spike_times import SpikeTrains
    from stimloop_rig.readers import read_spike_trains

    rng = np.random.default_rng(4)
    stimuli = np.array(["body_0003", "body_0001", "body_0003", "body_0000", "body_0001"])
    trains = SpikeTrains(
        {"ch 1": np.sort(rng.uniform(0, 6, 50)), "b": np.zeros(0)},
        np.arange(1.0, 6.0),
        stimuli,
        1 / 30000,
    )
    np.savez(tmp_path / "s.npz", **trains.arrays())
    back = read_spike_trains(tmp_path / "s.npz")
    assert back.resolution == 1 / 30000 and list(back.stimuli) == list(stimuli)
    assert back.times.keys() == trains.times.keys()
    assert all(np.array_equal(back.times[c], trains.times[c]) for c in trains.times)
    np.testing.assert_array_equal(back.onsets, trains.onsets)
    for name, column in trains.columns().items():
        np.testing.assert_array_equal(back.columns()[name], column)
    np.savez(tmp_path / "n.npz", **SpikeTrains(trains.times, trains.onsets, stimuli).arrays())
    assert read_spike_trains(tmp_path / "n.npz").resolution is None


def test_spike_times_npz_round_trip(tmp_path):
    from stimloop_rig.readers import read_trials

    onsets = np.array([1.0, 2.0, 3.0])
    codes = np.array([0, 1, 0])
    spikes_a = np.array([0.96, 1.01, 1.06, 1.10, 1.30, 2.2, 3.05, 3.249, 3.25])
    np.savez(
        tmp_path / "s.npz",
        spikes_a=spikes_a,
        spikes_b=np.array([]),
        event_times=onsets,
        event_codes=codes,
        code_ids=np.array(["body_0000", "body_0001"]),
    )
    cols = read_trials(tmp_path / "s.npz")
    a = cols["channel"] == "a"
    assert list(cols["stimulus"][a]) == ["body_0000", "body_0001", "body_0000"]
    assert list(cols["repeat"][a]) == [0, 0, 1]
    # baseline [-0.075, 0.025): 0.96, 1.01 | none | none ; response [0.05, 0.25): 1.06, 1.10 |
    # 2.2 | 3.05, 3.249 (3.25 is outside)
    assert list(cols["baseline_count"][a]) == [2, 0, 0]
    assert list(cols["response_count"][a]) == [2, 1, 2]
    assert (cols["response_count"][~a] == 0).all()


ONE_SPIKE = {  # a well-formed spike-times NPZ of one spike and one presentation
    "spikes_a": np.zeros(1),
    "event_times": np.zeros(1),
    "event_codes": np.array([0]),
    "code_ids": np.array(["x"]),
}


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {
                "spikes_a": np.zeros(1),
                "event_times": np.zeros(1),
                "event_codes": np.array([3]),
                "code_ids": np.array(["x"]),
            },
            "event codes \\[3\\]",
        ),
        (
            {
                "spikes_a": np.zeros(1),
                "event_times": np.zeros(2),
                "event_codes": np.array([0]),
                "code_ids": np.array(["x"]),
            },
            "2 onsets but 1",
        ),
        (
            {"event_times": np.zeros(1), "event_codes": np.array([0]), "code_ids": np.array(["x"])},
            "no spikes_",
        ),
        *(
            ({**ONE_SPIKE, "resolution": np.array(value)}, message)
            for value, message in (
                ([0.0], "'resolution' is 0.0 s"),
                ([np.nan], "'resolution' is nan s"),
                ([2.0], "under 1"),
                ([1e-5, 2e-5], "one number of seconds"),
                (["30kHz"], "one number of seconds"),
            )
        ),
        (
            {
                "spikes_a": np.array([np.nan]),
                "event_times": np.zeros(1),
                "event_codes": np.array([0]),
                "code_ids": np.array(["x"]),
            },
            "NaN",
        ),
    ],
)
def test_malformed_spike_files(tmp_path, arrays, message):
    from stimloop_rig.readers import read_spike_npz

    np.savez(tmp_path / "s.npz", **arrays)
    with pytest.raises(TrialFileError, match=message):
        read_spike_npz(tmp_path / "s.npz")


def test_nwb_round_trip(tmp_path):
    from datetime import datetime

    pynwb = pytest.importorskip("pynwb")
    from pynwb.misc import Units
    from stimloop_rig.readers import read_nwb_spikes, read_trials

    def written(name: str, resolution: float | None = None):
        nwb = pynwb.NWBFile(
            session_description="test",
            identifier="x",
            session_start_time=datetime(2026, 1, 1, tzinfo=UTC),
        )
        if resolution is not None:  # as a lab's conversion sets it
            nwb.units = Units(name="units", description="units", resolution=resolution)
        nwb.add_trial_column(name="stimulus", description="stimulus id")
        for start, stim in ((1.0, "body_0000"), (2.0, "object_0003")):
            nwb.add_trial(start_time=start, stop_time=start + 0.2, stimulus=stim)
        nwb.add_unit_column(name="channel", description="channel")
        nwb.add_unit(spike_times=[1.06, 1.1, 2.0, 2.3], channel="ch01")
        with pynwb.NWBHDF5IO(str(tmp_path / name), "w") as io_:
            io_.write(nwb)
        return tmp_path / name

    cols = read_trials(written("r.nwb"))
    assert list(cols["stimulus"]) == ["body_0000", "object_0003"]
    assert list(cols["channel"]) == ["ch01", "ch01"]
    assert list(cols["response_count"]) == [2, 0] and list(cols["baseline_count"]) == [0, 1]
    assert read_nwb_spikes(tmp_path / "r.nwb").resolution is None  # pynwb's unset value
    assert read_nwb_spikes(written("s.nwb", 1 / 30000)).resolution == 1 / 30000
    (tmp_path / "bad.nwb").write_bytes(b"not hdf5")
    with pytest.raises(TrialFileError, match="not a readable NWB"):
        read_trials(tmp_path / "bad.nwb")


@pytest.mark.parametrize(
    "content",
    [
        "\ufeffstimulus,channel,rate\nbody_0001,ch01,12.5\n",  # Excel's "CSV UTF-8"
        "Stimulus;Channel;Rate\nbody_0001;ch01;12,5\n",  # semicolons and a decimal comma
        "STIMULUS\tCHANNEL\tRATE\nbody_0001\tch01\t12.5\n",  # tab-separated
    ],
)
def test_csv_tables_as_spreadsheets_write_them_read_alike(tmp_path, content):
    path = tmp_path / "phase1.csv"
    path.write_text(content, encoding="utf-8")
    got = read_trial_csv(path)
    assert got["stimulus"].tolist() == ["body_0001"] and got["channel"].tolist() == ["ch01"]
    assert got["rate"].tolist() == [12.5]


@pytest.mark.parametrize(
    ("start", "message"),
    [("2026-12-06T14:03:00", "has no UTC offset"), ("at two", "is not an ISO 8601 time")],
)
def test_a_recording_start_without_its_offset_is_refused_before_anything_is_read(
    tmp_path, start, message
):
    """``stimloop-rig phaseN --recording-start``: a time the NWB timeline could misplace by
    hours is refused before the file is read or the server asked."""
    from stimloop_rig import cli
    from typer.testing import CliRunner

    said = CliRunner().invoke(
        cli.app,
        ["phase1", "0123456789ab", str(tmp_path / "absent.csv"), "--recording-start", start],
        env={"COLUMNS": "200"},
    )
    assert said.exit_code == 2, said.output
    assert message in " ".join(said.output.split())
