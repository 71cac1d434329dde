"""Calibration images: drawn at session creation, shown in phase one beside the bodies, kept
apart from the fit's trials, never picked, and the categories' intervals calibrated on them."""

from __future__ import annotations

import numpy as np

from tests.support.loop import SELECTION, as_json, session_request, simulate
from tests.support.service import is_problem


def create(service, calibration: int, seed: int = 3):
    request = session_request(selection={**SELECTION, "calibration": calibration}, seed=seed)
    return service.client.post("/v1/sessions", json=request, headers=service.rig)


def test_a_set_too_small_for_its_calibration_images_is_refused(service, loop):
    r = create(service, 8)  # the control bodies hold 8: none would be left to pick
    assert is_problem(r, 409)
    detail = r.json()["detail"]
    assert "'controls' holds 8 images, less the 8 shown in phase one for calibration" in detail
    assert "calibration" in detail.split("lower the counts")[1]


def test_calibration_images_are_shown_in_phase_one_and_calibrate_the_intervals(
    service, loop, tmp_path
):
    from stimloop.sessions.creation import draw_calibration
    from stimloop_rig.rig_client import RigClient

    c = service.client
    r = create(service, 5)
    assert r.status_code == 201, r.text
    sid, config = r.json()["id"], r.json()["config"]
    held = config["calibration"]
    objects, controls = loop["maps"]["objects"][0], loop["maps"]["controls"][0]
    # the session's seed draws them, one stream per candidate set in the session's order
    assert held == {
        "object": draw_calibration(objects, 5, 3, 0),
        "control_body": draw_calibration(controls, 5, 3, 1),
    }
    assert set(held["object"]) <= set(objects) and len(set(held["object"])) == 5
    assert held["object"] == sorted(held["object"])
    again = create(service, 5).json()["config"]["calibration"]
    assert again == held and create(service, 5, seed=4).json()["config"]["calibration"] != held
    service.work()  # warm the candidates of the new sessions
    from tests.support.ui import as_, signed

    page = as_(service, signed(service, service.analyst)).get(f"/ui/sessions/{sid}").text
    assert "Phase one also shows 5 object and 5 control_body images for calibration" in page
    assert held["object"][0] in page

    bodies = loop["maps"]["bodies"][0]
    other = next(o for o in objects if o not in held["object"])
    stray = simulate(loop, {"bodies": bodies, "objects": [other]}, seed=1)
    r = c.put(f"/v1/sessions/{sid}/phase1", json=as_json(stray), headers=service.rig)
    assert is_problem(r, 422)
    assert "not in the preferred set 'bodies' or among the session's calibration" in r.text
    assert other in r.text

    only = simulate(loop, {"objects": held["object"]}, seed=1)
    r = c.put(f"/v1/sessions/{sid}/phase1", json=as_json(only), headers=service.rig)
    assert "every trial names a calibration image" in is_problem(r, 422)["detail"]
    assert "phase1" not in c.get(f"/v1/sessions/{sid}", headers=service.rig).json()["uploads"]

    shown = {"bodies": bodies, "objects": held["object"], "controls": held["control_body"]}
    cols = simulate(loop, shown, seed=1)
    # through the rig client, whose own check of the file knows the calibration images
    table = tmp_path / "phase1.csv"
    header = ["stimulus", "channel", "baseline_count", "response_count"]
    rows = zip(*(cols[k].tolist() for k in header), strict=True)
    table.write_text("\n".join([",".join(header), *(",".join(map(str, r)) for r in rows)]))
    token = service.rig["Authorization"].split()[1]
    rig = RigClient("http://testserver", token, transport=c._transport)
    rig.upload_file(sid, 1, table)
    service.work()
    info = c.get(f"/v1/sessions/{sid}", headers=service.rig).json()["uploads"]["phase1"]
    assert info["trials"] == len(cols["stimulus"])  # the upload as sent, calibration and all
    files = loop["store"].files(sid)
    # every reader of phase one's trials sees the bodies; the calibration images are apart
    assert set(files.trial_columns("phase1")["stimulus"]) == set(bodies)
    calibration = set(held["object"]) | set(held["control_body"])
    assert set(files.calibration_columns("phase1")["stimulus"]) == calibration
    assert len(files.recorded_columns("phase1")["stimulus"]) == len(cols["stimulus"])

    selection = c.get(f"/v1/sessions/{sid}/selection", headers=service.rig).json()
    picked = {p["stimulus"] for ch in selection["channels"] for p in ch["picks"]}
    assert picked and not picked & calibration  # shown already: never a prediction
    predictions = selection["predictions"]
    included = predictions["channels"]
    for category in ("object", "control_body"):
        meta = predictions["ensemble"]["calibration"][category]
        assert meta["images"] == [5] * len(included) and all(meta["calibrated"])
        assert "spans both" in meta["rule"]
    centre = np.array(predictions["centre"], float)
    lower, upper = np.array(predictions["lower"], float), np.array(predictions["upper"], float)
    np.testing.assert_allclose(centre, (lower + upper) / 2)
    assert not np.allclose(centre, np.array(predictions["predicted"]))  # moved by the images
    for ch in selection["channels"]:
        for p in ch["picks"]:
            assert p["lower"] <= p["centre"] <= p["upper"]
    registered = c.get(f"/v1/sessions/{sid}/registration", headers=service.rig).json()
    assert (
        registered["predictions"]["ensemble"]["calibration"]
        == (predictions["ensemble"]["calibration"])
    )


def test_calibration_images_not_shown_leave_the_intervals_uncalibrated(service, loop):
    c = service.client
    sid = create(service, 5, seed=7).json()["id"]
    service.work()
    cols = simulate(loop, {"bodies": loop["maps"]["bodies"][0]}, seed=1)
    r = c.put(f"/v1/sessions/{sid}/phase1", json=as_json(cols), headers=service.rig)
    assert r.status_code == 202, r.text
    service.work()
    selection = c.get(f"/v1/sessions/{sid}/selection", headers=service.rig).json()
    assert selection["predictions"]["ensemble"]["calibration"] == {}
    assert selection["predictions"]["centre"] is None
