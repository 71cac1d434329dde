"""Open Ephys, Plexon, NeuroExplorer and Blackrock recordings to trials: against today's
spike-times NPZ of the same spikes (to the spike), threshold crossings against planted spikes,
and every refusal."""

from __future__ import annotations

import struct
import threading
import time

import numpy as np
import pytest
from stimloop_contract.errors import TrialFileError
from stimloop_rig.mua import MuaSettings, threshold_crossings
from stimloop_rig.neo_files import electrode
from stimloop_rig.openephys import read_openephys
from stimloop_rig.readers import read_spike_npz
from stimloop_rig.recording import RecordingSettings, check_sequence, read_recording

from tests.support.blackrock_files import write_nev
from tests.support.nex_files import EVENT, MARKER, NEURON, Variable, write_nex
from tests.support.openephys_files import RATE, planted_signal, write_recording
from tests.support.recordings import (
    STIMULI,
    codes_file,
    plexon_like,
    session_like,
    spike_npz,
)


def assert_same_trials(got, npz) -> None:
    """A recording's trials are, row for row, those of the spike-times NPZ of its spikes."""
    want = read_spike_npz(npz)
    order_rows = np.lexsort((got.columns["stimulus"], got.columns["channel"]))
    want_rows = np.lexsort((want["stimulus"], want["channel"]))
    for k in want:
        assert got.columns[k][order_rows].tolist() == want[k][want_rows].tolist(), k


def test_sorted_spikes_with_photodiode_onsets_count_as_the_spike_npz(tmp_path):
    planned, codes, order = session_like(tmp_path)
    got = read_recording(tmp_path, RecordingSettings(codes=codes, photodiode=8, settle=0))
    want = read_spike_npz(spike_npz(tmp_path / "same.npz", planned, order, list(planned.spikes)))
    for k in want:
        assert got.columns[k].tolist() == want[k].tolist(), k
    assert got.sequence == [STIMULI[k] for k in order]
    assert [row["trials"] for row in got.channels] == [12, 12, 12]
    assert all(row["repeats_min"] == row["repeats_max"] == 3 for row in got.channels)


def test_the_recordings_start_is_the_one_its_sync_messages_give(tmp_path):
    """GUI 0.6+'s sync_messages.txt: the computer's UTC time when the recording started, and
    each stream's sample then. The onsets' clock (sample numbers / rate) is at 0 that many
    samples earlier; with two streams the code stream's own line counts; an old GUI's layout,
    a missing file or one of junk give no start (the operator gives it), never an error."""
    from datetime import UTC, datetime, timedelta

    ms = 1_765_000_000_123  # 2025-12-06, 05:46:40.123 UTC
    planned, codes, _ = session_like(tmp_path / "a", software_ms=ms)
    got = read_recording(tmp_path / "a", RecordingSettings(codes=codes, photodiode=8, settle=0))
    started = datetime(2025, 12, 6, 5, 46, 40, 123000, tzinfo=UTC)
    assert got.started == started - timedelta(seconds=1000 / 30000)  # the first sample: 1000
    # the first photodiode pulse on the computer's clock, from the format's definition
    first = started + timedelta(seconds=(planned.onsets[0] - 1000) / 30000)
    assert abs(got.started + timedelta(seconds=float(got.spikes.onsets[0])) - first) < (
        timedelta(microseconds=1)
    )

    session_like(tmp_path / "two", software_ms=ms, second_stream=True)
    two = read_recording(
        tmp_path / "two",
        RecordingSettings(codes=codes, photodiode=8, settle=0, code_events="Rhythm Data"),
    )
    assert two.started == got.started  # not the DAQ's line (its sample 0)

    for name, text in (
        ("old", b"Software time: 153530@1000000Hz\r\nProcessor: Rhythm FPGA Id: 100 "
                b"subProcessor: 0 start time: 1000@30000Hz\r\n"),
        ("junk", b"x" * 2**20),
        ("no-rate", b"Software Time (milliseconds since midnight Jan 1st 1970 UTC): 1\r\n"),
    ):  # fmt: skip
        session_like(tmp_path / name)
        next((tmp_path / name).rglob("structure.oebin")).with_name("sync_messages.txt").write_bytes(
            text
        )
        found = read_recording(
            tmp_path / name, RecordingSettings(codes=codes, photodiode=8, settle=0)
        )
        assert found.started is None, name
    session_like(tmp_path / "link")  # a link to a good file elsewhere is not the recording's
    real = next((tmp_path / "a").rglob("sync_messages.txt"))
    next((tmp_path / "link").rglob("structure.oebin")).with_name("sync_messages.txt").symlink_to(
        real
    )
    linked = read_recording(
        tmp_path / "link", RecordingSettings(codes=codes, photodiode=8, settle=0)
    )
    assert linked.started is None
    assert read_recording(tmp_path / "a" / "Record Node 101", RecordingSettings(
        codes=codes, photodiode=8, settle=0)).started == got.started  # fmt: skip


def test_without_full_words_the_codes_come_from_the_line_states(tmp_path):
    _planned, codes, order = session_like(tmp_path, words=False)
    got = read_recording(tmp_path, RecordingSettings(codes=codes, photodiode=8, settle=0))
    assert got.sequence == [STIMULI[k] for k in order]


def test_without_a_photodiode_the_code_is_the_onset(tmp_path):
    _planned, codes, _ = session_like(tmp_path)
    rec = read_openephys(tmp_path, settle=0)
    assert rec.continuous[0].first_sample == 1000
    with_pd = read_recording(tmp_path, RecordingSettings(codes=codes, photodiode=8, settle=0))
    # the photodiode's pulses are words of their own (128) unless its line is named
    with pytest.raises(TrialFileError, match="code 128 at"):
        read_recording(tmp_path, RecordingSettings(codes=codes, settle=0))
    _planned, codes_b, _ = session_like(tmp_path / "no_pd", photodiode_pulses=False)
    without = read_recording(tmp_path / "no_pd", RecordingSettings(codes=codes_b, settle=0))
    # 17 ms earlier: some baseline and response counts differ
    assert with_pd.columns["response_count"].tolist() != without.columns["response_count"].tolist()


def test_threshold_crossings_find_planted_spikes():
    """30 s, 4 channels at 30 kHz, 10 uV noise, 45 uV troughs at 20 Hz: at least 95% of the
    planted spikes found within 0.5 ms, under 5% of the crossings false."""
    signal, planted = planted_signal(30.0, 4, 20.0, 10.0, 45.0, seed=1)
    found = threshold_crossings(signal, RATE, np.full(4, 0.195), MuaSettings(chunk_s=4.0))
    for c in range(4):
        got, truth = found.samples[c], planted[c]
        nearest = np.abs(got[:, None] - truth[None, :]).min(axis=1)
        hits = np.abs(truth[:, None] - got[None, :]).min(axis=1) <= 15
        assert hits.mean() >= 0.95, (c, hits.mean())
        assert (nearest > 15).mean() < 0.05, (c, (nearest > 15).mean())
    assert np.allclose(found.threshold_uv, 4 * found.sigma_uv)
    assert (found.rates() > 15).all() and (found.rates() < 25).all()


def test_chunks_do_not_change_the_crossings():
    signal, _ = planted_signal(6.0, 2, 30.0, 10.0, 60.0, seed=2)
    one = threshold_crossings(signal, RATE, np.full(2, 0.195), MuaSettings(chunk_s=60.0))
    many = threshold_crossings(
        signal, RATE, np.full(2, 0.195), MuaSettings(chunk_s=0.7), sigma_uv=one.sigma_uv
    )
    for a, b in zip(one.samples, many.samples):
        assert a.tolist() == b.tolist()  # the same noise, chunks of 0.7 s: the same crossings


def test_refusals_name_the_recording_and_what_to_fix(tmp_path):
    _planned, codes, _ = session_like(tmp_path / "a")
    settings = RecordingSettings(codes=codes, photodiode=8, settle=0)
    few = tmp_path / "few.csv"
    few.write_text("code,stimulus\n1,body_0000\n")
    with pytest.raises(TrialFileError, match=r"code 2 at .* has no stimulus in the codes file"):
        read_recording(tmp_path / "a", RecordingSettings(codes=few, photodiode=8, settle=0))
    _planned, codes_c, _ = session_like(tmp_path / "c", photodiode_pulses=False)
    with pytest.raises(TrialFileError, match="no photodiode pulse on line 8 within 200 ms"):
        read_recording(tmp_path / "c", RecordingSettings(codes=codes_c, photodiode=8, settle=0))
    with pytest.raises(TrialFileError, match="needs --codes"):
        read_recording(tmp_path / "a", RecordingSettings(settle=0))
    # the events on another clock
    _, codes_b, _ = session_like(tmp_path / "b", event_rate=1000.0)
    with pytest.raises(TrialFileError, match="sampled at 1000 Hz but the signal at 30000 Hz"):
        read_recording(tmp_path / "b", RecordingSettings(codes=codes_b, settle=0))
    # several recordings below one folder, and none
    with pytest.raises(TrialFileError, match="holds 3 recordings"):
        read_recording(tmp_path, settings)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrialFileError, match=r"no structure\.oebin"):
        read_recording(tmp_path / "empty", settings)
    with pytest.raises(TrialFileError, match="row 2: code 'x'"):
        bad = tmp_path / "bad.csv"
        bad.write_text("code,stimulus\nx,body_0000\n")
        read_recording(tmp_path / "a", RecordingSettings(codes=bad, settle=0))


def test_a_recording_still_being_written_is_refused(tmp_path):
    planned, codes, _ = session_like(tmp_path)
    dat = next(planned.root.glob("continuous/*/continuous.dat"))
    stop = threading.Event()

    def grow() -> None:
        while not stop.is_set():
            with open(dat, "ab") as f:
                f.write(b"\0" * 6)
            time.sleep(0.05)

    writer = threading.Thread(target=grow)
    writer.start()
    try:
        with pytest.raises(TrialFileError, match="still being written"):
            read_recording(tmp_path, RecordingSettings(codes=codes, settle=0.3))
    finally:
        stop.set()
        writer.join()


def test_a_folder_outside_the_recording_is_refused(tmp_path):
    planned, codes, _ = session_like(tmp_path)
    oebin = planned.root / "structure.oebin"
    oebin.write_text(
        oebin.read_text().replace('"Acquisition_Board-100.Rhythm Data/"', '"../../x/"', 1)
    )
    with pytest.raises(TrialFileError, match="outside"):
        read_recording(tmp_path, RecordingSettings(codes=codes, settle=0))


def test_the_presentation_order_must_be_the_lists():
    check_sequence(["a", "b"], ["a", "b"], "rec")
    with pytest.raises(TrialFileError, match="presentation 2 showed 'c' where"):
        check_sequence(["a", "c"], ["a", "b"], "rec")
    with pytest.raises(TrialFileError, match="1 presentations recorded"):
        check_sequence(["a"], ["a", "b"], "rec")


# ------------------------------------------------------------------ Plexon, through neo


def test_a_plexon_file_counts_as_its_spike_npz(tmp_path):
    path, npz, codes, order = plexon_like(tmp_path)
    got = read_recording(path, RecordingSettings(codes=codes, photodiode="EVT08"))
    assert_same_trials(got, npz)
    assert got.sequence == [STIMULI[k] for k in order]
    assert [row["channel"] for row in got.channels] == ["sigA", "sigB", "sigC"]  # C is silent
    assert got.channels[2]["mean_net_rate"] == 0.0


def test_plexon_refusals_name_the_event_channels(tmp_path):
    path, _, codes, _ = plexon_like(tmp_path)
    with pytest.raises(TrialFileError, match="no event channel 'EVT09' for the photodiode"):
        read_recording(path, RecordingSettings(codes=codes, photodiode="EVT09"))
    with pytest.raises(TrialFileError, match=r"--code-events \(its event channels: 'EVT08'"):
        read_recording(path, RecordingSettings(codes=codes, code_events="Codes"))
    with pytest.raises(TrialFileError, match="3 spike channels"):
        read_recording(path, RecordingSettings(codes=codes, channels=("a", "b")))
    (tmp_path / "q").mkdir()
    quiet, _, codes_q, _ = plexon_like(tmp_path / "q", pulses=False)
    with pytest.raises(TrialFileError, match="no photodiode pulse on 'EVT08' within 200 ms"):
        read_recording(quiet, RecordingSettings(codes=codes_q, photodiode="EVT08"))
    odd = tmp_path / "trials.xyz"
    odd.write_bytes(b"nothing")
    with pytest.raises(TrialFileError, match=r"no reader for '\.xyz' files"):
        read_recording(odd, RecordingSettings(codes=codes))


NEX_RATE = 40000.0


def nex_like(tmp_path, strobed: str = "Strobed"):
    """A .nex file as Offline Sorter writes it: units sig001a and sig001b (one electrode:
    multi-unit), sig002U, a silent sig003a; 12 codes as five-digit markers on ``strobed``, a
    photodiode event EVT08 10 ms after each; and today's spike NPZ of the same spikes."""
    rng = np.random.default_rng(5)
    order = [k % 4 for k in range(12)]
    code_ticks = 40000 + np.arange(12) * 60000
    pulse_ticks = code_ticks + 400
    units = {
        "sig001a": np.sort(rng.integers(0, 800000, 700)),
        "sig001b": np.sort(rng.integers(0, 800000, 300)),
        "sig002U": np.sort(rng.integers(0, 800000, 500)),
        "sig003a": np.zeros(0, np.int64),
    }
    variables = [Variable(NEURON, n, t) for n, t in units.items()]
    variables += [
        Variable(EVENT, "EVT08", pulse_ticks),
        Variable(MARKER, strobed, code_ticks, markers=tuple(f"{k + 1:05d}" for k in order)),
    ]
    path = tmp_path / "sorted.nex"
    write_nex(path, NEX_RATE, variables, end=800000)
    merged = {
        "sig001": np.sort(np.concatenate([units["sig001a"], units["sig001b"]])),
        "sig002": units["sig002U"],
        "sig003": units["sig003a"],
    }
    npz = tmp_path / "same.npz"
    np.savez(
        npz,
        event_times=pulse_ticks / NEX_RATE,
        event_codes=np.array(order),
        code_ids=np.array(STIMULI),
        **{f"spikes_{n}": t / NEX_RATE for n, t in merged.items()},
    )
    codes = codes_file(tmp_path)
    return path, npz, codes, order


def test_a_nex_file_counts_as_its_spike_npz_with_units_merged_per_electrode(tmp_path):
    path, npz, codes, order = nex_like(tmp_path)
    got = read_recording(path, RecordingSettings(codes=codes, photodiode="EVT08"))
    assert_same_trials(got, npz)
    assert got.sequence == [STIMULI[k] for k in order]
    assert [row["channel"] for row in got.channels] == ["sig001", "sig002", "sig003"]
    assert got.channels[0]["spikes"] == "sorted (NeuroExplorer)"
    assert got.channels[2]["mean_net_rate"] == 0.0  # a unit without spikes keeps its channel


def test_nex_refusals_name_the_file_and_its_event_channels(tmp_path):
    path, _, codes, _ = nex_like(tmp_path, strobed="DIO words")
    with pytest.raises(TrialFileError, match=r"\(NeuroExplorer\): name the event channel") as e:
        read_recording(path, RecordingSettings(codes=codes, photodiode="EVT08"))
    assert "'DIO words'" in str(e.value) and str(path) in str(e.value)
    got = read_recording(
        path, RecordingSettings(codes=codes, photodiode="EVT08", code_events="DIO words")
    )
    assert len(got.sequence) == 12
    with pytest.raises(TrialFileError, match="the events of 'EVT08' are not numeric codes"):
        read_recording(path, RecordingSettings(codes=codes, code_events="EVT08"))


def test_plexon_unit_letters_name_the_electrode():
    assert [electrode(n) for n in ["sig001a", "sig001U", "SPK12b", "elec7", "lfp", "a1b2c"]] == [
        "sig001",
        "sig001",
        "SPK12",
        "elec7",
        "lfp",
        "a1b2",
    ]


NEV_RATE = 30000


def blackrock_like(tmp_path):
    """A .nev file: electrode 1 (label elec1) with sorted units 1 and 2 and noise (unit 255,
    left out), electrode 2 unclassified (unit 0), a silent electrode 3; 12 codes on the
    digital port, each cleared to 0 after 100 ms; and today's spike NPZ of the same spikes
    with the codes as onsets (a .nev has no photodiode channel)."""
    rng = np.random.default_rng(8)
    order = [k % 4 for k in range(12)]
    code_ticks = 30000 + np.arange(12) * 45000
    units = {
        1: np.sort(rng.integers(0, 600000, 800)),
        2: np.sort(rng.integers(0, 600000, 300)),
        255: np.sort(rng.integers(0, 600000, 200)),
    }
    unclassified = np.sort(rng.integers(0, 600000, 500))
    path = tmp_path / "datafile001.nev"
    words = [w for k in order for w in (k + 1, 0)]
    ticks = np.sort(np.concatenate([code_ticks, code_ticks + 3000]))
    electrodes = {"elec1": (1, units), "elec2": (2, {0: unclassified}), "elec3": (3, {})}
    write_nev(path, NEV_RATE, electrodes, words, ticks)
    npz = tmp_path / "same.npz"
    np.savez(
        npz,
        event_times=code_ticks / NEV_RATE,
        event_codes=np.array(order),
        code_ids=np.array(STIMULI),
        spikes_elec1=np.sort(np.concatenate([units[1], units[2]])) / NEV_RATE,
        spikes_elec2=unclassified / NEV_RATE,
        spikes_elec3=np.zeros(0),
    )
    codes = codes_file(tmp_path)
    return path, npz, codes, order


def test_a_blackrock_file_counts_as_its_spike_npz(tmp_path):
    path, npz, codes, order = blackrock_like(tmp_path)
    got = read_recording(path, RecordingSettings(codes=codes))  # the digital port's codes
    assert_same_trials(got, npz)
    assert got.sequence == [STIMULI[k] for k in order]  # the port's return to 0 is no code
    assert [row["channel"] for row in got.channels] == ["elec1", "elec2", "elec3"]
    assert got.channels[0]["spikes"] == "sorted (Blackrock)"
    assert got.channels[2]["trials"] == 12 and got.channels[2]["mean_net_rate"] == 0.0


def test_blackrock_refusals_name_the_format_and_what_to_fix(tmp_path):
    path, _, codes, _ = blackrock_like(tmp_path)
    with pytest.raises(TrialFileError, match=r"\(Blackrock\): name the event channel") as e:
        read_recording(path, RecordingSettings(codes=codes, code_events="Strobed"))
    assert "'digital_input_port'" in str(e.value) and "'serial_input_port'" in str(e.value)
    broken = tmp_path / "broken.nev"
    broken.write_bytes(b"NEURALEV" + b"\x02\x03" + b"\0" * 20)
    with pytest.raises(TrialFileError, match=r"broken\.nev: the Blackrock reader could not"):
        read_recording(broken, RecordingSettings(codes=codes))
    zero = tmp_path / "zero.csv"
    zero.write_text("code,stimulus\n0,body_0000\n")
    with pytest.raises(TrialFileError, match="0 is the event port at rest"):
        read_recording(path, RecordingSettings(codes=zero))


def test_damaged_acquisition_files_are_refused_as_trial_file_errors(tmp_path):
    """Truncated files and headers that declare more than the file holds: a clear refusal
    naming the file, never another exception."""
    (tmp_path / "nex").mkdir()
    nex, _, codes, _ = nex_like(tmp_path / "nex")
    nev, *_ = blackrock_like(tmp_path)
    plx, *_ = plexon_like(tmp_path)
    damaged = {
        "cut.nex": nex.read_bytes()[:700],  # variable headers cut short
        "cut.nev": nev.read_bytes()[:400],  # extended headers cut short
        "cut.plx": plx.read_bytes()[:9000],  # channel headers cut short
        "many.nev": nev.read_bytes()[:332] + struct.pack("<I", 2**31) + nev.read_bytes()[336:],
        "many.nex": nex.read_bytes()[:280] + struct.pack("<i", 2**30) + nex.read_bytes()[284:],
    }
    for name, data in damaged.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(TrialFileError, match=str(path).replace(".", r"\.")):
            read_recording(path, RecordingSettings(codes=codes))


def test_the_open_ephys_fixture_is_what_the_vendors_tools_and_neo_read(tmp_path):
    """The written folder (a Record Node with a Spike Detector, full words absent or not)
    passes the schema open-ephys-python-tools ships, and that package and neo read back the
    planted signal, TTL lines and spikes: the fixture is the GUI's layout, not the reader's."""
    import json
    from importlib.resources import files

    import jsonschema
    from neo.rawio import OpenEphysBinaryRawIO
    from open_ephys.analysis import Session

    planned, _codes, _ = session_like(tmp_path, words=False)
    schema = json.loads(
        files("open_ephys.analysis.formats").joinpath("oebin_schema.json").read_text()
    )
    jsonschema.validate(json.loads((planned.root / "structure.oebin").read_text()), schema)

    recording = Session(str(tmp_path)).recordnodes[0].recordings[0]
    assert recording.continuous[0].samples.shape == (600000, 3)
    assert recording.continuous[0].sample_numbers[0] == 1000
    events = recording.events
    rises = events[(events.line == 8) & (events.state == 1)]
    assert rises.sample_number.tolist() == planned.onsets.tolist()
    assert sorted(s.metadata.name for s in recording.spikes) == [
        "Electrode 1",
        "Electrode 2",
        "Electrode 3",
    ]
    by_name = {s.metadata.name: np.asarray(s.sample_numbers) for s in recording.spikes}
    for k, times in enumerate(planned.spikes.values()):
        assert by_name[f"Electrode {k + 1}"].tolist() == times.tolist()

    reader = OpenEphysBinaryRawIO(dirname=str(tmp_path))
    reader.parse_header()
    assert reader.get_signal_size(0, 0, 0) == 600000
    ttl = [
        k
        for k in range(reader.event_channels_count())
        if "TTL" in str(reader.header["event_channels"][k]["name"])
    ]
    assert ttl, reader.header["event_channels"]
    stamps, _durations, _labels = reader.get_event_timestamps(0, 0, ttl[0])
    ttl_folder = next(planned.root.glob("events/*/TTL"))
    states = np.load(ttl_folder / "states.npy")
    rising = np.load(ttl_folder / "sample_numbers.npy")[states > 0]
    assert np.allclose(reader.rescale_event_timestamp(stamps, "float64", ttl[0]), rising / RATE)


def test_a_spike_detector_recording_gives_the_planted_trials(tmp_path):
    """Spikes as the GUI's Spike Detector writes them (``folder``, ``source_channels[].name``)
    give, per channel, the trials and counts of the planted spikes."""
    planned, codes, _ = session_like(tmp_path)
    got = read_recording(tmp_path, RecordingSettings(codes=codes, photodiode=8, settle=0))
    assert [row["channel"] for row in got.channels] == ["CH1", "CH2", "CH3"]
    onsets = planned.onsets / RATE
    for name, times in planned.spikes.items():
        seconds = times / RATE
        rows = got.columns["channel"] == name
        want = [int(np.sum((seconds >= t + 0.05) & (seconds < t + 0.25))) for t in onsets]
        assert sorted(got.columns["response_count"][rows].tolist()) == sorted(want), name
        # each trial at its planted presentation's onset (the photodiode's pulse)
        assert np.allclose(np.sort(got.columns["onset"][rows]), np.sort(onsets)), name


def test_damaged_open_ephys_folders_are_one_line_naming_the_fix(tmp_path):
    """A structure.oebin entry without its folder, TTL states of line 0 without full words,
    a file symlinked into a stream folder, and a recording still open (sample numbers behind
    the data): each a TrialFileError saying what to do."""
    import json

    def fresh(name: str, **options):
        planned, codes, _ = session_like(tmp_path / name, **options)
        return planned, RecordingSettings(codes=codes, photodiode=8, settle=0)

    planned, settings = fresh("no-folder")
    oebin = planned.root / "structure.oebin"
    structure = json.loads(oebin.read_text())
    del structure["spikes"][0]["folder"]
    oebin.write_text(json.dumps(structure))
    with pytest.raises(TrialFileError, match="a spikes entry without 'folder'"):
        read_recording(planned.root, settings)

    planned, settings = fresh("line-0", words=False)
    states = next(planned.root.glob("events/*/TTL/states.npy"))
    values = np.load(states)
    values[3] = 0
    np.save(states, values)
    with pytest.raises(TrialFileError, match="holds 0 at event 3; TTL lines are numbered 1 to 64"):
        read_recording(planned.root, settings)

    planned, settings = fresh("linked")
    outside = tmp_path / "elsewhere.npy"
    target = next(planned.root.glob("spikes/*/*/sample_numbers.npy"))
    outside.write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(outside)
    with pytest.raises(TrialFileError, match=r"sample_numbers\.npy is a symbolic link"):
        read_recording(planned.root, settings)

    planned, settings = fresh("open")
    numbers = next(planned.root.glob("continuous/*/sample_numbers.npy"))
    np.save(numbers, np.load(numbers)[:570000])
    with pytest.raises(TrialFileError, match="the recording is still open: stop it in the GUI"):
        read_recording(planned.root, settings)


def test_code_words_wider_than_8_lines_and_two_streams(tmp_path):
    """Codes on lines 1-10 (up to 1000), the photodiode on line 12, and a second stream (a
    NI-DAQ board with TTL pulses of its own): the folder passes the vendor's schema and
    reader, two streams are refused until --code-events names one, and the named stream's
    trials are those of the single-stream recording."""
    import json
    from importlib.resources import files

    import jsonschema
    from open_ephys.analysis import Session

    codes_big = [1000, 517, 1000, 517, 3, 3]
    ids = {1000: "body_0000", 517: "body_0001", 3: "body_0002"}
    code_samples = 30000 + np.arange(6) * 45000
    signal = np.zeros((330000, 1), np.int16)
    spikes = {"CH1": np.arange(1000, 320000, 997)}

    def write(folder, **options):
        return write_recording(
            folder, signal, code_samples, codes_big, code_samples + 400, photodiode=12,
            spikes=spikes, code_lines=10, **options,
        )  # fmt: skip

    one, two = write(tmp_path / "one"), write(tmp_path / "two", second_stream=True)
    codes = tmp_path / "codes.csv"
    codes.write_text("code,stimulus\n" + "".join(f"{c},{s}\n" for c, s in ids.items()))
    schema = json.loads(
        files("open_ephys.analysis.formats").joinpath("oebin_schema.json").read_text()
    )
    jsonschema.validate(json.loads((two.root / "structure.oebin").read_text()), schema)
    vendor = Session(str(tmp_path / "two")).recordnodes[0].recordings[0]
    assert len(vendor.continuous) == 2 and set(vendor.events.stream_name) == {
        "Rhythm Data",
        "PXIe-6341",
    }

    settings = RecordingSettings(codes=codes, photodiode=12, settle=0)
    single = read_recording(one.root, settings)
    assert single.sequence == [ids[c] for c in codes_big]
    with pytest.raises(TrialFileError, match=r"2 streams .*--code-events 'Rhythm Data'"):
        read_recording(two.root, settings)
    named = read_recording(
        two.root, RecordingSettings(codes=codes, photodiode=12, settle=0, code_events="Rhythm Data")
    )
    for k in single.columns:
        assert named.columns[k].tolist() == single.columns[k].tolist(), k
    with pytest.raises(TrialFileError, match="no TTL stream 'Rhythm'"):
        read_recording(
            two.root, RecordingSettings(codes=codes, photodiode=12, settle=0, code_events="Rhythm")
        )
