"""A session on the record: the NWB export of a session run through phase two, checked by
DANDI's own inspector (``nwbinspector`` with the dandi configuration: no critical issue, no
best-practice violation), read back with pynwb, and its analysis recomputed from the file
alone (the README's function, with scipy) equal to the session's stored analysis."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from tests.support.loop import CHANNELS, FIT, as_json, session_request, simulate
from tests.support.nwb_record import assert_recomputes, dandi_problems
from tests.support.service import is_problem

ANIMAL = {"subject_id": "M7", "species": "Macaca mulatta", "sex": "F", "age": "P6Y"}
# the recordings' starts, as a rig in Berlin writes them: phase one's before the session's
# creation on the server (the lab started recording first), phase two's 40 minutes later
STARTS = {
    "phase1": datetime(2026, 3, 2, 9, 0, 5, tzinfo=timezone(timedelta(hours=1))),
    "phase2": datetime(2026, 3, 2, 9, 40, 0, tzinfo=timezone(timedelta(hours=1))),
}


def onsets(cols, seed: int) -> np.ndarray:
    """Each row's presentation onset (s from its recording's start) as a rig shows them: the
    (stimulus, repeat) presentations in a shuffled order, 0.6 s apart with a jitter, the
    rows of every channel at their presentation's onset."""
    shown = sorted(set(zip(cols["stimulus"].tolist(), cols["repeat"].tolist())))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(shown))
    at = 3.0 + 0.6 * np.arange(len(shown)) + rng.uniform(0, 0.05, len(shown))
    when = {shown[k]: float(at[i]) for i, k in enumerate(order)}
    return np.array([when[p] for p in zip(cols["stimulus"].tolist(), cols["repeat"].tolist())])


def upload(service, sid, phase, cols, seed, timed, sent=None):
    """``sent``: where each timed phase's (onset, stimulus) rows go, as the rig sent them."""
    body = as_json(cols)
    params = {}
    if timed:
        body["onset"] = onsets(cols, seed).tolist()
        params["recording_start"] = STARTS[phase].isoformat()
        if sent is not None:
            sent[phase] = list(zip(body["onset"], body["stimulus"]))
    return service.client.put(
        f"/v1/sessions/{sid}/{phase}", json=body, params=params, headers=service.rig
    )


def run_session(
    service, loop, analysed: bool = True, timed: bool = False, sent=None, **about
) -> str:
    c = service.client
    r = c.post("/v1/sessions", json=session_request(**about), headers=service.rig)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    cols = simulate(loop, {"bodies": loop["maps"]["bodies"][0]}, seed=1)
    r = upload(service, sid, "phase1", cols, 1, timed, sent)
    assert r.status_code == 202, r.text
    if not analysed:
        return sid
    service.work()
    selection = c.get(f"/v1/sessions/{sid}/selection", headers=service.rig).json()
    shown = set(selection["sequence"])
    by_set = {s: [i for i in loop["maps"][s][0] if i in shown] for s in loop["maps"]}
    r = upload(service, sid, "phase2", simulate(loop, by_set, seed=2), 2, timed, sent)
    assert r.status_code == 202, r.text
    service.work()
    assert c.get(f"/v1/sessions/{sid}", headers=service.rig).json()["state"] == "analysed"
    return sid


def test_an_analysed_session_exported_passes_dandi_and_recomputes(service, loop, tmp_path):
    pytest.importorskip("nwbinspector")
    from pynwb import NWBHDF5IO

    sent: dict[str, list] = {}
    sid = run_session(
        service, loop, timed=True, sent=sent, label="M7 day 3", subject=ANIMAL, notes="left IT"
    )
    r = service.client.get(f"/v1/sessions/{sid}/export.nwb", headers=service.analyst)
    assert r.status_code == 200, r.text
    assert "x-stimloop-warning" not in r.headers  # every phase placed on the timeline
    assert r.headers["content-disposition"] == f'attachment; filename="{sid}.nwb"'
    path = tmp_path / f"{sid}.nwb"
    path.write_bytes(r.content)

    assert dandi_problems(path) == []

    with NWBHDF5IO(str(path), "r") as io_:
        nwb = io_.read()
        assert nwb.subject.subject_id == "M7" and nwb.subject.species == "Macaca mulatta"
        assert nwb.session_description == "M7 day 3" and nwb.notes == "left IT"
        images = nwb.stimulus_template["presented_images"]
        tables = nwb.processing["stimloop"]
        phase2 = tables["phase2_trials"].to_dataframe()
        listed = tables["phase_two_list"].to_dataframe()
        # every image shown is in the file once, and each trial points at its own image
        assert set(phase2["stimulus"]) <= set(images.images)
        order = [im.name for im in images.order_of_images.data]
        assert all(order[k] == s for k, s in zip(phase2["image_index"], phase2["stimulus"]))
        assert set(listed["stimulus"]) == set(phase2["stimulus"])
        provenance = dict(zip(*(tables["provenance"][c].data[:] for c in ("key", "value"))))
        assert len(provenance["weights_sha256"]) == 64 and provenance["seed"] == "3"
        assert provenance["settings.fit.epochs"] == str(FIT["epochs"])
        picks = tables["picks"].to_dataframe()
        assert set(picks["role"]) <= {"top", "bottom", "similar"}
        assert (picks["lower"] < picks["predicted"]).all() and (
            picks["upper"] > picks["predicted"]
        ).all()
        # the registered copy and its scores, under the hash the session recorded
        sha = provenance["registration_sha256"]
        registered = tables["registered_predictions"]
        assert sha in registered.description
        chosen = set(picks["stimulus"])  # the list less its stability images
        assert len(registered.to_dataframe()) == len(chosen) * len(set(picks["channel"]))
        assert sha in tables["scoring"].description
        assert set(tables["scoring_points"].to_dataframe()["stimulus"]) <= set(listed["stimulus"])
        # the timeline: the session starts with phase one's recording; each phase's
        # presentations at its own onsets, shifted by its recording's start, and as an epoch
        assert nwb.session_start_time == STARTS["phase1"]
        epochs = nwb.epochs.to_dataframe()
        assert [list(t) for t in epochs["tags"]] == [["phase1"], ["phase2"]]
        for phase in ("phase1", "phase2"):
            trials = tables[f"{phase}_trials"].to_dataframe()
            series = nwb.stimulus[f"{phase}_presentations"]
            assert series.indexed_images.name == "presented_images"
            shift = (STARTS[phase] - STARTS["phase1"]).total_seconds()
            rows = list(zip(trials["onset"], trials["stimulus"]))
            assert sorted(rows) == sorted(sent[phase])  # each row as the rig sent it
            expected = sorted({(t + shift, s) for t, s in sent[phase]})
            shown = [order[k] for k in series.data[:]]
            assert list(zip(series.timestamps[:], shown)) == expected
            row = epochs[[t == [phase] for t in map(list, epochs["tags"])]].iloc[0]
            assert row["start_time"] <= expected[0][0] and row["stop_time"] > expected[-1][0]

    stored = service.client.get(f"/v1/sessions/{sid}/analysis", headers=service.rig).json()
    assert_recomputes(path, stored)


def test_an_export_without_the_animal_is_refused_or_a_draft(service, loop, tmp_path):
    pytest.importorskip("pynwb")
    sid = run_session(service, loop, analysed=False, subject={"subject_id": "M8"})
    r = service.client.get(f"/v1/sessions/{sid}/export.nwb", headers=service.rig)
    detail = is_problem(r, 409)["detail"]
    assert "species, sex, age" in detail and "--draft" in detail
    draft = service.client.get(
        f"/v1/sessions/{sid}/export.nwb", params={"draft": "true"}, headers=service.rig
    )
    assert draft.status_code == 200 and draft.content[:8] == b"\x89HDF\r\n\x1a\n"
    assert draft.headers["x-stimloop-warning"].startswith("a draft: the animal's species")
    # nothing recorded yet; a session that does not exist; a draft flag that is not a flag
    r = service.client.post(
        "/v1/sessions",
        json={"backbone": "resnet50_random", "body_set": "bodies", "object_set": "objects",
              "control_body_set": "controls", "channels": ["ch1"], "fit": FIT,
              "subject": ANIMAL},
        headers=service.rig,
    )  # fmt: skip
    empty = r.json()["id"]
    r = service.client.get(f"/v1/sessions/{empty}/export.nwb", headers=service.rig)
    assert "export once phase one is in" in is_problem(r, 409)["detail"]
    r = service.client.get("/v1/sessions/0123456789ab/export.nwb", headers=service.rig)
    is_problem(r, 404)
    r = service.client.get(
        f"/v1/sessions/{sid}/export.nwb", params={"draft": "maybe"}, headers=service.rig
    )
    is_problem(r, 422)


def test_the_server_command_writes_the_file_or_says_what_is_missing(service, loop, tmp_path):
    pytest.importorskip("pynwb")
    from stimloop.cli import app
    from typer.testing import CliRunner

    sid = run_session(service, loop, analysed=False, subject={"subject_id": "M9", "sex": "M"})
    env = {"STIMLOOP_MODELS_STORE": str(service.settings.models_store), "COLUMNS": "200"}
    out = tmp_path / "records" / "m9.nwb"
    refused = CliRunner().invoke(app, ["export", "nwb", sid, "--out", str(out)], env=env)
    assert refused.exit_code == 2 and "species, age" in refused.output and not out.exists()
    wrong = CliRunner().invoke(app, ["export", "nwb", "not-a-session"], env=env)
    assert wrong.exit_code == 2 and "is not a session id" in wrong.output
    drafted = CliRunner().invoke(app, ["export", "nwb", sid, "--out", str(out), "--draft"], env=env)
    assert drafted.exit_code == 0, drafted.output
    assert "warning: a draft: the animal's species, age are missing" in drafted.output
    assert out.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"


def test_a_recording_start_is_part_of_the_upload(service, loop):
    """The same trials with the same start are the same upload; with another start, other
    data (409 unless replace); a start without its UTC offset and negative onsets: 422."""
    sid = run_session(service, loop, analysed=False, timed=True)
    cols = simulate(loop, {"bodies": loop["maps"]["bodies"][0]}, seed=1)
    again = upload(service, sid, "phase1", cols, 1, timed=True)
    assert again.status_code == 202 and again.json()["status"] == "already received", again.text
    body = {**as_json(cols), "onset": onsets(cols, 1).tolist()}
    later = (STARTS["phase1"] + timedelta(minutes=5)).isoformat()
    url = f"/v1/sessions/{sid}/phase1"
    moved = service.client.put(
        url, json=body, params={"recording_start": later}, headers=service.rig
    )
    assert "replace=true" in is_problem(moved, 409)["detail"]
    naive = service.client.put(
        url, json=body, params={"recording_start": "2026-03-02T09:00:05"}, headers=service.rig
    )
    assert "timezone" in is_problem(naive, 422)["detail"]
    negative = service.client.put(
        url, json={**body, "onset": [-1.0] * len(body["onset"])}, headers=service.rig
    )
    assert "onset" in is_problem(negative, 422)["detail"]
    record = service.client.get(f"/v1/sessions/{sid}", headers=service.rig).json()
    assert record["uploads"]["phase1"]["recording_start"] == "2026-03-02T09:00:05+01:00"


def test_uploaded_spike_times_are_units_on_the_timeline(service, loop, tmp_path):
    """Phase one sent as spike times (``SpikeTrains.arrays``, as the rig sends a recording):
    the file's Units hold each channel's spikes shifted onto the file's timeline, with its
    electrode; counting them at the file's presentations in a plain loop gives the file's
    trial counts; a phase uploaded again without spike times, or without its recording's
    start, has none in Units (the latter with a warning)."""
    pytest.importorskip("nwbinspector")
    from pynwb import NWBHDF5IO
    from stimloop.storage.store import Store
    from stimloop_contract.configs import Windows
    from stimloop_contract.spike_times import SpikeTrains

    r = service.client.post(
        "/v1/sessions", json=session_request(subject=ANIMAL), headers=service.rig
    )
    sid = r.json()["id"]
    created = datetime.fromisoformat(r.json()["created"])
    started = created + timedelta(seconds=90)  # the file starts at the session's creation
    bodies = loop["maps"]["bodies"][0]
    rng = np.random.default_rng(11)
    stimuli = np.array([b for _ in range(4) for b in rng.permutation(bodies)])
    shown_at = 2.0 + 0.7 * np.arange(len(stimuli)) + rng.uniform(0, 0.05, len(stimuli))
    end = shown_at[-1] + 2.0
    samples = {c: rng.integers(0, int(end * 30000), 40 * (k + 1)) for k, c in enumerate(CHANNELS)}
    planted = {c: np.sort(n) / 30000 for c, n in samples.items()}  # a 30 kHz clock's
    planted["silent"] = np.zeros(0)
    arrays = SpikeTrains(planted, shown_at, stimuli, 1 / 30000).arrays()

    def put(params: dict, **body) -> object:
        kind = {"content-type": "application/x-npz"} if "content" in body else {}
        return service.client.put(
            f"/v1/sessions/{sid}/phase1", params=params, headers={**service.rig, **kind}, **body
        )

    def exported() -> tuple[object, object]:
        r = service.client.get(f"/v1/sessions/{sid}/export.nwb", headers=service.analyst)
        assert r.status_code == 200, r.text
        path = tmp_path / f"{sid}-{len(list(tmp_path.iterdir()))}.nwb"
        path.write_bytes(r.content)
        return r, path

    r = put({"recording_start": started.isoformat()}, content=npz_bytes(arrays))
    assert r.status_code == 202, r.text
    r, path = exported()
    assert "x-stimloop-warning" not in r.headers, r.headers.get("x-stimloop-warning")
    assert dandi_problems(path) == []
    shift = (started - created).total_seconds()
    baseline, response = Windows().baseline, Windows().response
    with NWBHDF5IO(str(path), "r") as io_:
        nwb = io_.read()
        assert nwb.session_start_time == created
        units = nwb.units.to_dataframe()
        assert list(units["channel"]) == CHANNELS and nwb.units.resolution == 1 / 30000
        electrodes = nwb.electrodes.to_dataframe()
        for _, unit in units.iterrows():
            channel = unit["channel"]
            np.testing.assert_allclose(unit["spike_times"], planted[channel] + shift)
            assert list(unit["electrodes"]["channel"]) == [channel]
            assert unit["obs_intervals"][0][0] == shift
        assert sorted(electrodes["channel"]) == sorted(CHANNELS)
        np.testing.assert_allclose(
            nwb.stimulus["phase1_presentations"].timestamps[:], shown_at + shift
        )
        trials = nwb.processing["stimloop"]["phase1_trials"].to_dataframe()
        spikes = dict(zip(units["channel"], units["spike_times"]))
        for _, row in trials.iterrows():  # the windows counted again, one trial at a time
            at = row["onset"] + shift
            train = spikes[row["channel"]]
            got = [sum(at + a <= t < at + b for t in train) for a, b in (baseline, response)]
            assert got == [row["baseline_count"], row["response_count"]]

    # spike trains that do not give the stored counts (a replacement cut off between its two
    # files) stay out of Units, saying so
    files = Store(service.settings.models_store).files(sid)
    moved = {c: t + 0.01 for c, t in planted.items()}
    files.write_trials(
        "phase1", files.trial_columns("phase1"), SpikeTrains(moved, shown_at, stimuli)
    )
    r, path = exported()
    assert "do not give its stored trials' counts" in r.headers["x-stimloop-warning"]
    with NWBHDF5IO(str(path), "r") as io_:
        assert io_.read().units is None

    columns = SpikeTrains(planted, shown_at, stimuli).columns()
    columns["response_count"] = columns["response_count"] + 1  # other trials, as a table
    r = put({"replace": "true"}, json=as_json(columns))
    assert r.status_code == 202, r.text
    r, path = exported()
    with NWBHDF5IO(str(path), "r") as io_:
        assert io_.read().units is None  # the old spike times went with the old trials
    r = put({"replace": "true"}, content=npz_bytes(arrays))  # no recording start
    assert r.status_code == 202, r.text
    r, path = exported()
    assert "spike times are not in Units" in r.headers["x-stimloop-warning"]
    with NWBHDF5IO(str(path), "r") as io_:
        assert io_.read().units is None


def npz_bytes(arrays: dict) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def test_presentations_a_constant_step_apart_are_a_start_and_a_rate():
    """nwbinspector's regular-timestamps practice: onsets on a fixed schedule (the demo's, a
    rig's metronome) are written as starting_time and rate; a jittered schedule keeps its
    timestamps, each one as given."""
    pytest.importorskip("pynwb")
    from pynwb.base import Images
    from pynwb.image import RGBImage
    from stimloop.sessions.nwb_export import presentation_series

    templates = Images(
        name="presented_images", images=[RGBImage(name="a", data=np.zeros((2, 2, 3), np.uint8))]
    )
    at = 1.0 + 0.6 * np.arange(6)
    shown = np.array(["a"] * 6)
    regular = presentation_series("phase1", at, shown, {"a": 0}, templates)
    assert regular.timestamps is None and regular.starting_time == 1.0
    np.testing.assert_allclose(regular.starting_time + np.arange(6) / regular.rate, at)
    jittered = at + np.array([0, 0.01, 0, 0.02, 0, 0])
    kept = presentation_series("phase1", jittered, shown, {"a": 0}, templates)
    np.testing.assert_array_equal(kept.timestamps, jittered)


def test_spike_times_that_cannot_be_placed_are_left_out_saying_why():
    """A phase's spikes go into Units only on the timeline and consistent with its trials:
    spikes before the recording's start, or a recording overlapping an earlier phase's (one
    recording uploaded twice?), are left out with a note; the others are shifted by their
    recording's offset and spanned to their last spike."""
    from types import SimpleNamespace

    from stimloop.sessions.nwb_export import placed_spike_times
    from stimloop_contract.configs import Windows
    from stimloop_contract.spike_times import SpikeTrains

    def phase(spikes: np.ndarray) -> tuple[dict, dict]:
        trains = {"a": spikes}
        return trains, SpikeTrains(trains, np.array([1.0, 2.0]), np.array(["x", "y"])).columns()

    stored = {"phase1": phase(np.array([0.5, 1.1, 9.0])), "phase2": phase(np.array([1.1, 2.1]))}
    stored["phase3"] = phase(np.array([-0.2, 1.1]))
    files = SimpleNamespace(
        has_spike_times=lambda p: True, spike_times=lambda p: (stored[p][0], 1 / 30000)
    )
    record = SimpleNamespace(config=SimpleNamespace(windows=Windows()))
    uploaded = {p: cols for p, (_, cols) in stored.items()}
    placed, resolutions, notes = placed_spike_times(
        files, record, uploaded, {"phase1": 10.0, "phase2": 15.0, "phase3": 100.0}
    )
    assert list(placed) == ["phase1"] and resolutions == [1 / 30000]
    np.testing.assert_allclose(placed["phase1"][0]["a"], [10.5, 11.1, 19.0])
    assert placed["phase1"][1] == (10.0, 19.0)  # to the last spike, past the last window
    assert any("phase2's recording overlaps phase1's" in n for n in notes)
    assert any("phase3 has spikes 0.200 s before its recording's start" in n for n in notes)
