"""The live pages in-process: a signed-in cookie and the test client holding exactly it."""

from __future__ import annotations

from stimloop.api.ui.signin import COOKIE

ORIGIN = {"Origin": "http://testserver"}


def signed(service, token_header: dict) -> dict:
    """The cookie of a sign-in with a bearer header's token."""
    token = token_header["Authorization"].split()[1]
    r = service.client.post(
        "/ui/login", data={"token": token}, headers=ORIGIN, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/ui/sessions", r.text
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    value = r.cookies[COOKIE]
    service.client.cookies.clear()  # each request below names its own cookie, or none
    return {COOKIE: value}


def as_(service, cookie: dict | None):
    """The test client with exactly ``cookie`` in its jar (none when None)."""
    service.client.cookies.clear()
    for k, v in (cookie or {}).items():
        service.client.cookies.set(k, v, path="/ui")
    return service.client
