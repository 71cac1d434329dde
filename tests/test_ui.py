"""The live pages in a real browser: Playwright driving Debian's Chromium against a real
`stimloop serve` with both cores busy, a session run from the page alone (created with the
form, each phase uploaded, through fitting with the progress moving without a reload, the
list read and downloaded, maps asked for and a second request cancelled, phase three built
and uploaded); a session whose preparation fails and one whose fit failed with a hostile
message; sign-in and sign-out, the cookie, roles, a forged cross-site form, an unknown cookie,
an unknown session, and the token never in a URL or the browser's storage. Screenshots of
each page go to test-artifacts/ (and six of them into docs/ for the README)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError

from tests.support.paths import REPO
from tests.support.processes import cores_busy
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


@contextlib.contextmanager
def worker_paused(url: str) -> Iterator[None]:
    """The served workers (and any process a job runs in) stopped for the block, a few
    seconds, well inside the heartbeat's window: what they run stays where it is."""
    import httpx
    import psutil

    processes = []
    for worker in httpx.get(f"{url}/v1/health", timeout=10).json()["worker_devices"]:
        process = psutil.Process(worker["pid"])
        processes += [process, *process.children(recursive=True)]
    for process in processes:
        process.suspend()
    try:
        yield
    finally:
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.resume()


def create_on_page(page, url: str, label: str, object_set: str = "objects") -> str:
    """Fill the list page's New session form as an operator does; the new session's id."""
    page.goto(f"{url}/ui/sessions")
    page.fill("#create-label", label)
    page.fill("#create-subject", "M1")
    page.fill("#create-species", "Macaca mulatta")
    page.select_option("#create-sex", "M")
    page.fill("#create-age", "P7Y")
    page.fill("#create-notes", "left hemisphere\nreward 0.2 ml")
    page.select_option("#create-body_set", "bodies")
    page.select_option("#create-object_set", object_set)
    page.select_option("#create-control_body_set", "controls")
    page.select_option("#create-backbone", "resnet50_random")
    page.fill("#create-channels", ", ".join(CHANNELS))
    page.fill("#create-split", "40,10,10")
    page.fill(
        "#create-settings",
        json.dumps(
            {
                "fit": {"epochs": 300, "lr": 0.001},
                "selection": {"stability_images": 10, "repeats": 2},
            }
        ),
    )
    page.click("#create-session")
    page.wait_for_url(re.compile(r".*/ui/sessions/[0-9a-f]{12}$"))
    return page.url.rsplit("/", 1)[1]


def upload_on_page(page, phase: str, path, picture: str | None = None) -> None:
    """Choose ``path`` in the phase's upload form and send it; the server's answer shows for
    3 s (``picture``: the README's picture of it then), then the page reloads itself."""
    form = f"#upload-{phase}"
    page.set_input_files(f"{form} input[type=file]", str(path))
    with page.expect_navigation(timeout=60000):
        page.click(f"{form} button")
        result = f"{form} .upload-result"
        wait_until(lambda: path.name + ":" in page.inner_text(result), 60, page)
        assert "queued" in page.inner_text(result), page.inner_text(result)
        assert "bad" not in page.get_attribute(result, "class")
        if picture:
            readme_shot(page, "#upload", picture)
    page.wait_for_load_state()


def test_the_live_pages(tmp_path, neurons, browser):
    """One session run from the page alone with both cores busy: created with the form, each
    phase's file uploaded, the list read and downloaded, maps asked for (and a second request
    cancelled), phase three built and uploaded; beside it a session whose preparation fails
    and one whose fit failed with a hostile message."""
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
        rig.run(rig_steps()["0"])  # the lab's setup: the sets registered and cached
        images = stimulus_images(server_dir)
        cells, everything = synthetic_cells(sy, maps, images)
        # a set of objects none of whose maps is cached, one of its files then lost on the
        # server: a session over it fails in its preparation
        from PIL import ImageOps

        (server_dir / "stimuli" / "broken").mkdir()
        for image_id, image in images["objects"].items():
            mirrored = ImageOps.mirror(image.convert("RGB"))
            mirrored.save(server_dir / "stimuli" / "broken" / f"{image_id}.png")
        rig.run("stimloop-rig sets register broken --category object")
        from stimloop.storage.session_states import transition
        from stimloop.storage.store import Store

        store = Store(server_dir / "models_store")
        broken = store.get_set("broken")
        (Path(broken.images_dir) / broken.entries[0].file).unlink()

        from stimloop_rig.rig_client import RigClient

        failed = (
            RigClient(url, token)
            .create_session(
                backbone="resnet50_random",
                body_set="bodies",
                object_set="objects",
                control_body_set="controls",
                channels=["ch01"],
                fit={"split": [40, 10, 10]},
            )
            .id
        )
        with store.locked(failed) as rec:  # a failure whose message holds a hostile string
            for to in ("phase1_received", "fitting"):
                transition(rec, to, "test")
            rec.error = f"the fit failed on {HOSTILE}"
            transition(rec, "failed", "test")

        context = browser.new_context(timezone_id="Europe/Berlin")  # the rig's clock, in winter
        # both cores are busy by design, and a page's load event waits for every image on it
        # (the list's and the maps'): a navigation may take longer than Playwright's 30 s
        # default there, as an operator's browser on such a box waits longer too
        context.set_default_navigation_timeout(120_000)
        page = context.new_page()
        seen_urls: list[str] = []
        problems: list[str] = []
        page.on("request", lambda request: seen_urls.append(request.url))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("dialog", lambda d: problems.append(f"dialog: {d.message}") or d.dismiss())

        with cores_busy():
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

            # created from the form, with its label and animal
            session = create_on_page(page, url, "M1 day 12, array A")
            assert page.inner_text("ol.states li.current") == "created"
            assert page.inner_text("#label") == "M1 day 12, array A"
            assert "Macaca mulatta" in page.inner_text("#about")
            assert "reward 0.2 ml" in page.inner_text("#notes")
            doomed = create_on_page(page, url, "M1 the broken set", object_set="broken")

            # a failed preparation: one line saying what to do, the list says failed
            wait_until(lambda: page.query_selector("#job-failure") is not None, 300, page)
            page.wait_for_load_state()
            line = page.inner_text("#job-failure")
            assert line.startswith("preparing the session (the candidates' features) failed")
            assert "What to do: fix the named image or set" in line and "stimloop." not in line
            assert page.inner_text("#state") == "failed"
            assert not page.query_selector("#job-progress")
            readme_shot(page, "#live", "ui-failed.png")
            page.goto(f"{url}/ui/sessions")
            rows = page.inner_text("#sessions")
            assert session in rows and failed in rows and doomed in rows
            assert "failed (preparation)" in rows and "M1 day 12, array A" in rows
            page.select_option("#state-filter", "failed")
            page.click("text=Filter")
            rows = page.inner_text("#sessions")
            assert failed in rows and doomed in rows and session not in rows
            page.goto(f"{url}/ui/sessions?q=array+A")
            assert session in page.inner_text("#sessions")
            assert doomed not in page.inner_text("#sessions")
            shot(page, "sessions")

            # phase one from the page; the fit's progress moves while the page stays
            bodies = list(images["bodies"])
            record(folder, sy, maps, bodies, [everything[b] for b in bodies], cells, "phase1.csv")
            page.goto(f"{url}/ui/sessions/{session}")
            page.fill("#upload-phase1 input[name=recording_start]", "2026-12-06T14:03:05")
            upload_on_page(page, "phase1", folder / "phase1.csv", "ui-upload.png")
            uploaded = store.get_session(session).uploads["phase1"]  # with the browser's offset
            assert uploaded.recording_start.isoformat() == "2026-12-06T14:03:05+01:00"
            wait_until(lambda: page.inner_text("#state") == "fitting", 300, page)
            page.wait_for_load_state()
            page.evaluate("window.stillHere = true")  # from here, the state stays "fitting"
            first = page.inner_text("#job-percent")
            wait_until(lambda: page.inner_text("#job-percent") != first, 60, page)
            assert page.evaluate("window.stillHere === true")  # moved without a reload
            assert "fit" in page.inner_text("#job-stage")
            assert "started" in page.inner_text("#jobs-rows")
            shot(page, "fitting")
            readme_shot(page, "#live", "ui-fitting.png")

            # selected: the page reloads itself when the state changes
            wait_until(lambda: page.query_selector("#phase-two-list") is not None, 600, page)
            page.wait_for_load_state()
            assert page.inner_text("#state") == "selected"
            assert images_loaded(page, "#phase-two-list") >= 3
            assert "minutes" in page.inner_text("#list-length")
            assert len(page.query_selector_all("#inclusion tbody tr")) == len(CHANNELS)
            shot(page, "selected")
            readme_shot(page, "#phase-two-list", "ui-phase-two.png")
            page.fill("input[name=on]", "0.5")
            page.click("text=Recompute")
            assert "0.5 s on" in page.inner_text("#list-length")

            # the sequence downloaded as the stimulus program reads it; phase two recorded
            # in that order and uploaded from the page
            sequence = page.request.get(f"{url}/ui/sessions/{session}/files/sequence-csv")
            assert sequence.status == 200
            order = [row.split(",")[1] for row in sequence.text().splitlines()[1:]]
            assert page.request.get(f"{url}/ui/sessions/{session}/files/selection-mat").ok
            shown = sorted(set(order))
            record(folder, sy, maps, shown, [everything[s] for s in shown], cells, "phase2.csv")
            upload_on_page(page, "phase2", folder / "phase2.csv")
            wait_until(lambda: page.query_selector("#analysis") is not None, 600, page)
            page.wait_for_load_state()
            assert page.inner_text("ol.states li.current") == "analysed"
            assert len(page.query_selector_all("#analysis tbody tr")) == len(CHANNELS)
            assert "Stable: test/retest r > 0.6" in page.inner_text("#analysis")

            # an analyst asks for maps from the page, asks again for another channel and
            # cancels that one while it waits (a rig action is refused to it)
            page.click("text=Sign out")
            page.wait_for_url(re.compile(r".*/ui/login$"))
            assert not [c for c in context.cookies() if c["name"] == "stimloop_ui"]
            sign_in(page, url, analyst)
            assert HOSTILE in page.inner_text("header")  # its name, as text
            page.goto(f"{url}/ui/sessions/{session}")
            assert not page.query_selector("#upload")  # the analyst uploads nothing
            page.fill("#saliency-coverage", "0.05")
            page.click("#ask-saliency")
            page.wait_for_url(re.compile(rf".*/ui/sessions/{session}.*"))
            page.select_option("#saliency-channel", CHANNELS[1])
            page.click("#ask-saliency")
            page.wait_for_url(re.compile(rf".*/ui/sessions/{session}.*"))

            def running_and_waiting() -> bool:
                jobs = page.inner_text("#jobs-rows")
                return "started" in jobs and "queued" in jobs

            wait_until(running_and_waiting, 120, page)
            with worker_paused(url):  # the first maps cannot end (and reload the page) now
                progress = page.request.get(f"{url}/ui/sessions/{session}/progress").json()
                states = [j["state"] for j in progress["jobs"] if j["kind"] == "saliency"]
                assert states == ["queued", "started"], states
                page.wait_for_timeout(1500)  # the table as the page's next poll shows it
                readme_shot(page, "#jobs", "ui-jobs.png")
                page.click("#jobs-rows tr.job-queued button.cancel")
                page.wait_for_url(re.compile(rf".*/ui/sessions/{session}#jobs$"))
                wait_until(lambda: "canceled" in page.inner_text("#jobs-rows"), 30, page)

            def maps_shown() -> bool:
                return page.query_selector("#saliency figure.pair img") is not None

            wait_until(maps_shown, 600, page)  # the page reloads itself when the job ends
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
            # an unknown session: a page with a way back
            assert problems == [], problems
            page.goto(f"{url}/ui/sessions/0123456789ab")
            assert "0123456789ab" in page.inner_text("#missing")
            assert problems == [
                "Failed to load resource: the server responded with a status of 404 (Not Found)"
            ]
            problems.clear()  # the missing page's own status
            page.click("#back")
            page.wait_for_url(re.compile(r".*/ui/sessions$"))

            # phase three from the page: the list built, its images downloaded, its trials
            page.click("text=Sign out")
            page.wait_for_url(re.compile(r".*/ui/login$"))
            sign_in(page, url, token)
            page.goto(f"{url}/ui/sessions/{session}")
            page.click("#ask-phase3")
            page.wait_for_url(re.compile(rf".*/ui/sessions/{session}#jobs$"))
            wait_until(lambda: page.query_selector("#upload-phase3") is not None, 300, page)
            page.wait_for_load_state()
            import io
            import zipfile

            from PIL import Image

            archive = page.request.get(f"{url}/ui/sessions/{session}/files/stimuli-zip")
            assert archive.status == 200
            (folder / "p3.zip").write_bytes(archive.body())
            zipped = zipfile.ZipFile(folder / "p3.zip")
            manifest = json.loads(zipped.read("manifest.json"))
            fragments = [Image.open(io.BytesIO(zipped.read(m["file"]))) for m in manifest]
            ids = [m["id"] for m in manifest]
            record(folder, sy, maps, ids, fragments, cells, "phase3.csv")
            upload_on_page(page, "phase3", folder / "phase3.csv")
            wait_until(lambda: page.query_selector("#retained") is not None, 300, page)
            page.wait_for_load_state()
            assert images_loaded(page, "#phase-three") >= 3
            assert "retained salient" in page.inner_text("#phase-three")
            links = page.eval_on_selector_all("#downloads a", "els => els.map(e => e.href)")
            assert len(links) >= 9
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
