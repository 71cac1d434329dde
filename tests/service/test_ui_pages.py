"""The live pages' hostile-input rows, in-process (the browser run is tests/test_ui.py): a
wrong token, a form from elsewhere, an unknown cookie, an analyst's rig action, hostile text,
odd image and download names; and the headers every page carries."""

from __future__ import annotations

from stimloop.api.auth import create_token
from stimloop.api.ui.signin import COOKIE

from tests.support.service import new_session
from tests.support.ui import ORIGIN, as_, signed

HOSTILE = "<img src=x onerror=alert(1)>"


def test_the_pages_ask_to_sign_in_and_carry_their_security_headers(service):
    r = as_(service, None).get("/ui/sessions", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    page = as_(service, None).get("/ui/login")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<script src="/ui/static/app.js"' in page.text and "<script>" not in page.text
    assert as_(service, None).get("/ui/static/app.js").status_code == 200
    assert (
        as_(service, None).get("/v1/health").headers.get("content-security-policy") is None
    )  # /ui only


def test_hostile_ui_requests_are_refused(service):
    sid = new_session(service, "uih", 3, 12, channels=["ch01"], fit={"split": [6, 3, 3]})
    rig = signed(service, service.rig)
    analyst = signed(service, service.analyst)
    rows = {
        "unknown token": (
            lambda: as_(service, None).post(
                "/ui/login", data={"token": "stl_nope"}, headers=ORIGIN
            ),
            401,
            "not known",
        ),
        "sign-in form from elsewhere": (
            lambda: as_(service, None).post(
                "/ui/login",
                data={"token": service.rig["Authorization"].split()[1]},
                headers={"Origin": "http://evil.example"},
            ),
            403,
            "did not come from",
        ),
        "forged cross-site saliency form": (
            lambda: as_(service, analyst).post(
                f"/ui/sessions/{sid}/saliency",
                data={"channel": "ch01"},
                headers={"Origin": "http://evil.example"},
            ),
            403,
            "did not come from",
        ),
        "a form without any origin": (
            lambda: as_(service, rig).post(
                f"/ui/sessions/{sid}/saliency", data={"channel": "ch01"}
            ),
            403,
            "did not come from",
        ),
        "an analyst refits": (
            lambda: as_(service, analyst).post(f"/ui/sessions/{sid}/refit", headers=ORIGIN),
            403,
            "Only a rig token",
        ),
        "saliency before a fit": (
            lambda: as_(service, rig).post(
                f"/ui/sessions/{sid}/saliency",
                data={"channel": "ch01"},
                headers=ORIGIN,
            ),
            409,
            "no fitted models",
        ),
        "a coverage out of range": (
            lambda: as_(service, rig).post(
                f"/ui/sessions/{sid}/saliency",
                data={"channel": "ch01", "coverage": "7"},
                headers=ORIGIN,
            ),
            422,
            "coverage",
        ),
        "no cookie on a form": (
            lambda: as_(service, None).post(f"/ui/sessions/{sid}/refit", headers=ORIGIN),
            401,
            "Sign in",
        ),
    }
    for row, (send, status, words) in rows.items():
        r = send()
        assert r.status_code == status and words in r.text, (row, r.status_code, r.text[-500:])
    for path in (
        "/ui/images/..%2F..%2Fetc/passwd",
        "/ui/images/uihb/..%2F..%2Fsession.json",
        f"/ui/sessions/{sid}/files/session.json",
        f"/ui/sessions/{sid}/files/selection-csv",  # not selected yet
        f"/ui/sessions/{sid}/phase3/images/..%2Fsession.json",
        f"/ui/sessions/{sid}/saliency/..%2F..%2Fsession.png",
    ):
        r = as_(service, rig).get(path)
        assert r.status_code == 404, (path, r.status_code)
    # an unknown cookie is a stranger; a signed-out cookie is too
    r = as_(service, {COOKIE: "forged"}).get("/ui/sessions", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    out = as_(service, rig).post("/ui/logout", headers=ORIGIN, follow_redirects=False)
    assert out.status_code == 303 and f'{COOKIE}=""' in out.headers["set-cookie"]
    r = as_(service, rig).get("/ui/sessions", follow_redirects=False)
    assert r.status_code == 303
    progress = as_(service, rig).get(f"/ui/sessions/{sid}/progress")
    assert progress.status_code == 401


def test_hostile_text_is_shown_as_text(service):
    token = create_token(service.settings.tokens_path, "analyst", HOSTILE)
    cookie = signed(service, {"Authorization": f"Bearer {token}"})
    page = as_(service, cookie).get("/ui/sessions")
    assert HOSTILE not in page.text and "&lt;img src=x onerror=alert(1)&gt;" in page.text
    sid = new_session(service, "uix", 4, 12, channels=["ch01"], fit={"split": [6, 3, 3]})
    from stimloop.storage.session_states import transition
    from stimloop.storage.store import Store

    with Store(service.settings.models_store).locked(sid) as rec:
        for to in ("phase1_received", "fitting"):
            transition(rec, to, "test")
        rec.error = f"failed on {HOSTILE}"
        transition(rec, "failed", "test")
    page = as_(service, cookie).get(f"/ui/sessions/{sid}")
    assert page.status_code == 200 and HOSTILE not in page.text
    assert "failed on &lt;img src=x onerror=alert(1)&gt;" in page.text
    live = as_(service, cookie).get(f"/ui/sessions/{sid}/progress").json()
    assert live["state"] == "failed" and live["words"] == "failed"
