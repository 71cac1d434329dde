"""An Open Ephys recording uploaded with `stimloop-rig phase1 SESSION FOLDER --codes ...`:
the same stored trials as the same spikes and onsets uploaded as today's spike-times NPZ, the
per-channel summary printed first, and the refusals leaving nothing uploaded."""

from __future__ import annotations

import numpy as np
from stimloop.sessions.uploads import digest
from stimloop_rig.readers import read_spike_npz

from tests.support.recordings import session_like, spike_npz
from tests.support.service import new_session

CHANNELS = ["ch01", "ch02", "ch03"]


def rig_cli(service, monkeypatch):
    from stimloop_rig import cli
    from stimloop_rig.rig_client import RigClient
    from typer.testing import CliRunner

    token = service.rig["Authorization"].split()[1]
    client = RigClient("http://testserver", token, transport=service.client._transport)
    monkeypatch.setattr(cli, "_client", lambda url, tok: client)
    return cli, CliRunner()


def test_an_open_ephys_folder_uploads_as_its_spike_npz(service, monkeypatch, tmp_path):
    """...and its spikes reach the session's NWB file: each channel's sorted spikes (the
    fixture's sample numbers at 30 kHz) as a unit on the file's timeline, with its electrode
    and the recording's resolution."""
    animal = {"subject_id": "M7", "species": "Macaca mulatta", "sex": "F", "age": "P6Y"}
    sid = new_session(
        service,
        "oe",
        7,
        16,
        channels=CHANNELS,
        fit={"split": [10, 3, 3], "epochs": 5},
        subject=animal,
    )
    planned, codes, order = session_like(tmp_path / "rec", software_ms=1_765_000_000_000)
    cli, runner = rig_cli(service, monkeypatch)
    folder = tmp_path / "rec" / "Record Node 101"
    args = [
        *("phase1", sid, str(folder), "--codes", str(codes), "--photodiode", "8"),
        *("--channels", ",".join(CHANNELS), "--no-wait"),
    ]
    said = runner.invoke(cli.app, args)
    assert said.exit_code == 0, said.output
    assert "12 stimulus presentations" in said.output and "sorted" in said.output
    assert "phase 1: 36 trials uploaded" in said.output
    # the recording's own start (sync_messages.txt), less its first sample's 1000/30000 s
    own = "2025-12-06T05:46:39.966667+00:00"
    assert f"recording start: {own} (UTC, the recording's own)" in said.output
    stored = service.client.get(f"/v1/sessions/{sid}", headers=service.rig).json()
    npz = spike_npz(tmp_path / "same.npz", planned, order, CHANNELS)
    assert stored["uploads"]["phase1"]["sha256"] == digest(read_spike_npz(npz))
    assert stored["uploads"]["phase1"]["recording_start"] == own.replace("+00:00", "Z")
    # the operator's start wins over the file's, and says both
    given = [*args, "--recording-start", "2026-03-02T09:00:05+01:00", "--replace"]
    said = runner.invoke(cli.app, given)
    assert said.exit_code == 0, said.output
    assert f"the recording's own says {own}" in " ".join(said.output.split())

    from pynwb import NWBHDF5IO

    r = service.client.get(f"/v1/sessions/{sid}/export.nwb", headers=service.analyst)
    assert r.status_code == 200 and "x-stimloop-warning" not in r.headers, r.text
    (tmp_path / "s.nwb").write_bytes(r.content)
    with NWBHDF5IO(str(tmp_path / "s.nwb"), "r") as io_:
        nwb = io_.read()
        units = nwb.units.to_dataframe()
        assert list(units["channel"]) == CHANNELS and nwb.units.resolution == 1 / 30000
        for channel, samples in zip(CHANNELS, planned.spikes.values()):
            unit = units[units["channel"] == channel].iloc[0]
            np.testing.assert_allclose(unit["spike_times"], samples / 30000)  # starts at 0
            assert list(unit["electrodes"]["channel"]) == [channel]


def test_a_refused_recording_uploads_nothing(service, monkeypatch, tmp_path):
    sid = new_session(
        service, "oer", 8, 16, channels=CHANNELS, fit={"split": [10, 3, 3], "epochs": 5}
    )
    session_like(tmp_path / "rec")
    session_like(tmp_path / "no_pd", photodiode_pulses=False)
    session_like(tmp_path / "clocks", event_rate=1000.0)
    few = tmp_path / "few.csv"
    few.write_text("code,stimulus\n1,body_0000\n")
    codes = str(tmp_path / "rec" / "codes.csv")
    names = ["--channels", ",".join(CHANNELS)]
    cli, runner = rig_cli(service, monkeypatch)
    for folder, args, words in (
        ("rec", ["--codes", str(few), "--photodiode", "8"], "has no stimulus in the codes file"),
        ("rec", ["--photodiode", "8"], "needs --codes"),
        ("rec", ["--codes", codes, "--photodiode", "8"], "channel"),  # CH1.. not the session's
        ("no_pd", ["--codes", codes, "--photodiode", "8", *names], "no photodiode pulse"),
        ("clocks", ["--codes", codes, *names], "sampled at 1000 Hz"),
        ("rec", ["--codes", codes, "--photodiode", "8", "--channels", "ch01"], "1 channel names"),
        (".", ["--codes", codes], "holds 3 recordings"),
    ):
        path = str(tmp_path / folder)
        said = runner.invoke(cli.app, ["phase1", sid, path, *args, "--no-wait"])
        assert said.exit_code != 0 and words in " ".join(said.output.split()), (args, said.output)
    stored = service.client.get(f"/v1/sessions/{sid}", headers=service.rig).json()
    assert stored["uploads"] == {} and stored["state"] == "created"


def test_a_plexon_file_uploads_as_its_spike_npz(service, monkeypatch, tmp_path):
    from tests.support.recordings import plexon_like

    sid = new_session(
        service, "plx", 9, 16, channels=CHANNELS, fit={"split": [10, 3, 3], "epochs": 5}
    )
    path, npz, codes, _ = plexon_like(tmp_path)
    cli, runner = rig_cli(service, monkeypatch)
    said = runner.invoke(
        cli.app,
        [
            *("phase1", sid, str(path), "--codes", str(codes), "--photodiode", "EVT08"),
            *("--channels", ",".join(CHANNELS), "--no-wait"),
        ],
    )
    assert said.exit_code == 0, said.output
    assert "sorted (Plexon)" in said.output and "phase 1: 36 trials uploaded" in said.output
    stored = service.client.get(f"/v1/sessions/{sid}", headers=service.rig).json()
    want = read_spike_npz(npz)
    names = dict(zip(["sigA", "sigB", "sigC"], CHANNELS))
    want["channel"] = np.array([names[c] for c in want["channel"]])
    assert stored["uploads"]["phase1"]["sha256"] == digest(want)
    from stimloop.storage.store import Store

    # the spikes kept for the NWB file: the file's own, at the file's clock (neo: 40 kHz)
    kept, resolution = Store(service.settings.models_store).files(sid).spike_times("phase1")
    assert resolution == 1 / 40000 and kept.keys() == set(CHANNELS)
    with np.load(npz) as same:
        for name, channel in names.items():
            np.testing.assert_allclose(kept[channel], same[f"spikes_{name}"])
