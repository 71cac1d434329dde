"""The live pages in a real browser: Playwright driving Debian's Chromium against a real
`stimloop serve`, a session taken from created through fitting (the progress moving without a
reload), selected, analysed (maps asked for from the page) to phase three, and a failed one
whose message is hostile; sign-in and sign-out, the cookie, roles, a forged cross-site form,
an unknown cookie, and the token never in a URL or the browser's storage. Screenshots of each
page go to test-artifacts/ (and three of them into docs/ for the README)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest
from playwright.sync_api import Error as PlaywrightError

from tests.support.paths import REPO
from tests.support.rig import (
    CHANNELS,
    Rig,
    record,
    rig_steps,
    served,
    stimulus_images,
    synthetic_cells,
)

pytestmark = pytest.mark.processes
ARTIFACTS = REPO / "test-artifacts"
HOSTILE = "<img src=x onerror=alert(1)>"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium in CI; .ci/run should have installed it")
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    return found


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium, never a downloaded browser."""
    return {**browser_type_launch_args, "executable_path": chromium(), "args": ["--no-sandbox"]}


def shot(page, name: str, width: int = 1300) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": width, "height": 900})
    page.screenshot(path=str(ARTIFACTS / f"ui-{name}.png"), full_page=True)


def readme_shot(page, selector: str, name: str) -> None:
    """The README's picture of one part of a page: the window scrolled to it, 1300 x 800."""
    page.set_viewport_size({"width": 1300, "height": 800})
    page.locator(selector).scroll_into_view_if_needed()
    page.evaluate(f"document.querySelector('{selector}').scrollIntoView()")
    (REPO / "docs").mkdir(exist_ok=True)
    page.screenshot(path=str(REPO / "docs" / name))


def sign_in(page, url: str, token: str) -> None:
    page.goto(f"{url}/ui/sessions")
    assert page.url.endswith("/ui/login")
    page.fill("#token", token)
    page.click("#signin")
    page.wait_for_url(re.compile(r".*/ui/sessions$"))


def wait_until(condition, seconds: float, page) -> None:
    """Poll ``condition`` (the page's CSP forbids the evaluated strings of wait_for_function).

    A live page reloads itself when its session's state changes; a poll that meets the reload
    (Playwright: "Execution context was destroyed ... navigation") counts as "not yet"."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if condition():
                return
        except PlaywrightError as error:
            if "navigation" not in str(error):
                raise
        assert time.monotonic() < deadline, page.url
        page.wait_for_timeout(250)


def images_loaded(page, selector: str) -> int:
    """How many images under ``selector`` there are; each must have loaded (natural width)."""
    sizes = page.eval_on_selector_all(f"{selector} img", "els => els.map(e => e.naturalWidth)")
    assert sizes and all(w > 0 for w in sizes), sizes
    return len(sizes)


def test_the_live_pages(tmp_path, neurons, browser):
    sy, maps = neurons
    folder = tmp_path / "rig"
    folder.mkdir()
    with served(tmp_path) as (url, token, server_dir, env):
        analyst = (
            subprocess.run(
                ["stimloop", "token", "create", "--role", "analyst", "--name", HOSTILE],
                cwd=server_dir,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        env = {**env, "STIMLOOP_URL": url, "STIMLOOP_TOKEN": token}
        env["STIMLOOP_BACKBONE"] = "resnet50_random"
        rig = Rig(folder, env)
        rig.run(rig_steps()["0"])
        images = stimulus_images(server_dir)
        cells, everything = synthetic_cells(sy, maps, images)
        from stimloop_rig.rig_client import RigClient

        client = RigClient(url, token)
        session = client.create_session(
            backbone="resnet50_random",
            body_set="bodies",
            object_set="objects",
            control_body_set="controls",
            channels=CHANNELS,
            fit={"split": [40, 10, 10], "epochs": 800, "lr": 0.001},
            selection={"stability_images": 10, "repeats": 2},
        ).id
        failed = client.create_session(
            backbone="resnet50_random",
            body_set="bodies",
            object_set="objects",
            control_body_set="controls",
            channels=["ch01"],
            fit={"split": [40, 10, 10]},
        ).id
        from stimloop.storage.session_states import transition
        from stimloop.storage.store import Store

        store = Store(server_dir / "models_store")
        with store.locked(failed) as rec:  # a failure whose message holds a hostile string
            for to in ("phase1_received", "fitting"):
                transition(rec, to, "test")
            rec.error = f"the fit failed on {HOSTILE}"
            transition(rec, "failed", "test")

        context = browser.new_context()
        page = context.new_page()
        seen_urls: list[str] = []
        problems: list[str] = []
        page.on("request", lambda request: seen_urls.append(request.url))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("dialog", lambda d: problems.append(f"dialog: {d.message}") or d.dismiss())

        # sign-in: a wrong token first, then the rig's
        page.goto(f"{url}/ui/login")
        page.fill("#token", "stl_not_a_token")
        page.click("#signin")
        page.wait_for_selector("#login-failed, #refused", timeout=10000)
        assert page.is_visible("#login-failed"), page.content()
        assert problems == [
            "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
        ]
        problems.clear()  # the refused sign-in's own answer
        sign_in(page, url, token)
        cookie = next(c for c in context.cookies() if c["name"] == "stimloop_ui")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
        rows = page.inner_text("#sessions")
        assert session in rows and failed in rows
        page.select_option("#state-filter", "failed")
        page.click("text=Filter")
        assert failed in page.inner_text("#sessions") and session not in page.inner_text(
            "#sessions"
        )
        shot(page, "sessions")

        # created
        page.goto(f"{url}/ui/sessions/{session}")
        assert page.inner_text("ol.states li.current") == "created"
        shot(page, "created")

        # fitting: the progress moves while the page stays
        bodies = list(images["bodies"])
        record(folder, sy, maps, bodies, [everything[b] for b in bodies], cells, "phase1.csv")
        rig.run(f"stimloop-rig phase1 {session} phase1.csv --no-wait")
        page.goto(f"{url}/ui/sessions/{session}")
        # a page shown before the fit reloads once
        wait_until(lambda: page.inner_text("#state") == "fitting", 120, page)
        page.wait_for_load_state()
        page.evaluate("window.stillHere = true")  # from here, the state stays "fitting"
        first = page.inner_text("#job-percent")
        wait_until(lambda: page.inner_text("#job-percent") != first, 15, page)
        assert page.evaluate("window.stillHere === true")  # moved without a reload
        assert "fit" in page.inner_text("#job-stage")
        shot(page, "fitting")
        readme_shot(page, "#live", "ui-fitting.png")

        # selected: the page reloads itself when the state changes
        wait_until(lambda: page.query_selector("#phase-two-list") is not None, 300, page)
        page.wait_for_load_state()
        assert page.inner_text("#state") == "selected"
        assert page.is_visible("#phase-two-list")
        assert images_loaded(page, "#phase-two-list") >= 3
        assert "minutes" in page.inner_text("#list-length")
        assert len(page.query_selector_all("#inclusion tbody tr")) == len(CHANNELS)
        shot(page, "selected")
        readme_shot(page, "#phase-two-list", "ui-phase-two.png")
        page.fill("input[name=on]", "0.5")
        page.click("text=Recompute")
        assert "0.5 s on" in page.inner_text("#list-length")

        # analysed
        listed = [row.split(",")[1] for row in client.selection_csv(session).splitlines()[1:]]
        shown = sorted(set(listed))
        record(folder, sy, maps, shown, [everything[s] for s in shown], cells, "phase2.csv")
        rig.run(f"stimloop-rig phase2 {session} phase2.csv")
        page.goto(f"{url}/ui/sessions/{session}")
        assert page.inner_text("ol.states li.current") == "analysed"
        assert len(page.query_selector_all("#analysis tbody tr")) == len(CHANNELS)
        assert "Stable: test/retest r > 0.6" in page.inner_text("#analysis")

        # an analyst asks for maps from the page (a rig action is refused to it)
        page.click("text=Sign out")
        page.wait_for_url(re.compile(r".*/ui/login$"))
        assert not [c for c in context.cookies() if c["name"] == "stimloop_ui"]
        sign_in(page, url, analyst)
        assert HOSTILE in page.inner_text("header")  # its name, as text
        page.goto(f"{url}/ui/sessions/{session}")
        page.fill("#saliency-coverage", "0.05")
        page.click("#ask-saliency")
        page.wait_for_url(re.compile(rf".*/ui/sessions/{session}.*"))

        def maps_shown() -> bool:
            if page.query_selector("#saliency figure.pair img"):
                return True
            page.wait_for_timeout(2000)
            page.reload()
            return False

        wait_until(maps_shown, 300, page)
        page.wait_for_load_state()
        assert images_loaded(page, "#saliency") >= 1
        shot(page, "analysed")
        shot(page, "analysed-900", width=900)
        readme_shot(page, "#analysis", "ui-analysed.png")
        page.goto(f"{url}/ui/sessions/{failed}")
        assert not page.query_selector("#refit")  # the analyst is not offered a refit
        refused = page.request.post(
            f"{url}/ui/sessions/{failed}/refit", headers={"Origin": url}, max_redirects=0
        )
        assert refused.status == 403 and "Only a rig token" in refused.text()
        assert HOSTILE in page.inner_text("#error")  # the hostile message shows as text
        assert not page.query_selector("#error img")
        shot(page, "failed")

        # a forged cross-site form, and the same form without the cookie
        forged = page.request.post(
            f"{url}/ui/sessions/{session}/saliency",
            form={"channel": "ch01"},
            headers={"Origin": "http://evil.example"},
            max_redirects=0,
        )
        assert forged.status == 403 and "did not come from" in forged.text()
        stranger = browser.new_context()
        anonymous = stranger.request.post(
            f"{url}/ui/sessions/{session}/saliency",
            form={"channel": "ch01"},
            headers={"Origin": url},
            max_redirects=0,
        )
        assert anonymous.status == 401
        # an unknown (or expired) cookie is sent to sign in
        stranger.add_cookies([{"name": "stimloop_ui", "value": "forged", "url": f"{url}/ui"}])
        lost = stranger.new_page()
        lost.goto(f"{url}/ui/sessions/{session}")
        assert lost.url.endswith("/ui/login")
        stranger.close()

        # phase three, as the rig runs it
        rig.run(
            f"stimloop-rig phase-three-list {session} --out p3.csv --stimuli p3.zip "
            "--sequence p3.txt"
        )
        import io
        import json
        import zipfile

        from PIL import Image

        archive = zipfile.ZipFile(folder / "p3.zip")
        manifest = json.loads(archive.read("manifest.json"))
        fragments = [Image.open(io.BytesIO(archive.read(m["file"]))) for m in manifest]
        record(folder, sy, maps, [m["id"] for m in manifest], fragments, cells, "phase3.csv")
        rig.run(f"stimloop-rig phase3 {session} phase3.csv")
        page.goto(f"{url}/ui/sessions/{session}")
        assert images_loaded(page, "#phase-three") >= 3
        assert "retained salient" in page.inner_text("#phase-three")
        links = page.eval_on_selector_all("#downloads a", "els => els.map(e => e.href)")
        assert len(links) >= 5
        for link in links:
            answer = page.request.get(link)
            assert answer.status == 200 and len(answer.body()) > 0, link
        shot(page, "phase-three")
        page.goto(f"{url}/ui/health")
        assert page.inner_text("#workers") == "1"
        shot(page, "health")

        # the token never left the sign-in form: no URL, no storage, no script can read it
        for secret in (token, analyst):
            assert not [u for u in seen_urls if secret in u]
        storage = page.evaluate(
            "JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage), "
            "document.cookie])"
        )
        assert token not in storage and analyst not in storage and "stimloop_ui" not in storage
        assert problems == [], problems
        context.close()
