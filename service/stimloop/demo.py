"""``stimloop demo``: the whole loop on a laptop, driven over HTTP as the rig drives it.

Procedural stimuli, synthetic category-selective channels with known truth (A.1.1: body-
selective as in the paper, or face-selective with ``--category faces``), the embedded
service (a private Redis, one worker, the API on a free local port), and the contract's
``ServiceClient`` doing what the rig does: phase one, the phase-two list, a simulated phase
two of exactly the listed images, the analysis, saliency maps for the best channels' default
pairs (the best one's with their sanity checks), phase three (the fragments of those pairs,
shown to the same synthetic neurons, and their analysis), and the report.
The backbone is the seeded random stand-in and the neurons are synthetic: the numbers show the
machinery, not the science.
"""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from stimloop_contract.result_tables import analysis_rows, categories, phase_three_rows
from stimloop_contract.service_client import ServiceClient
from stimloop_contract.spike_times import SpikeTrains
from stimloop_contract.system import Accepted, JobInfo

from stimloop.api.auth import create_token
from stimloop.runtime.settings import Settings, absolute
from stimloop.science import synthetic as sy
from stimloop.science.backbone import (
    extract_features,
    fast_precision,
    image_to_tensor,
    load_backbone,
)
from stimloop.science.stimuli import (
    Stimulus,
    generate_bodies,
    generate_control_bodies,
    generate_faces,
    generate_objects,
)
from stimloop.serve import Workers, free_port, private_redis
from stimloop.storage.registry import default_registry_text, load_registry
from stimloop.storage.stimulus_sets import write_stimulus_set


@dataclass(frozen=True)
class DemoSet:
    """One stimulus set of the demo: its folder (and set id), category, and how many of what
    it holds: ``preferred`` (the preferred set), ``candidates`` (of the preferred category,
    like control bodies) or ``others``."""

    name: str
    category: str
    role: str  # preferred | candidates | others
    draw: Callable[[int, int], list[Stimulus]]


# The paper's sets, and a face patch's: faces preferred, other monkeys' faces as the controls,
# objects and bodies as the other categories (two selectivity tests per channel).
CATEGORIES: dict[str, tuple[DemoSet, ...]] = {
    "bodies": (
        DemoSet("bodies", "body", "preferred", generate_bodies),
        DemoSet("objects", "object", "others", generate_objects),
        DemoSet("controls", "control_body", "candidates", generate_control_bodies),
    ),
    "faces": (
        DemoSet("faces", "face", "preferred", generate_faces),
        DemoSet("objects", "object", "others", generate_objects),
        DemoSet(
            "control_faces",
            "control_face",
            "candidates",
            lambda n, seed: generate_faces(n, seed, "control_face"),
        ),
        DemoSet("bodies", "body", "others", generate_bodies),
    ),
}


@dataclass(frozen=True)
class DemoPlan:
    preferred: int  # images of the preferred set (bodies)
    others: int  # of each other category (objects)
    candidates: int  # of the preferred category's candidates (control bodies)
    channels: int
    fit: dict
    stability_images: int
    saliency_channels: int
    saliency_coverage: float
    sanity_features: int | None  # features per map in the sanity checks; None: the CPU default
    calibration: int  # images of each candidate set phase one shows to calibrate the intervals


# The paper's split, stability set and 16-channel probe (A.2); the fit is shortened to 1000
# epochs at lr 2.5e-4 (the paper: 2500 at 1e-4) so that the demo stays under 10 minutes on 2
# CPU cores.
# The quick demo's sanity checks map the 8 features that carry most of s (32 on a CPU
# otherwise): nine map pairs of 32 features are most of its time on a busy machine.
FULL = DemoPlan(
    475, 300, 120, 16, {"epochs": 1000, "lr": 2.5e-4, "split": [400, 50, 25]}, 75, 3, 0.5, None, 40
)
QUICK = DemoPlan(
    120, 60, 24, 6, {"epochs": 300, "lr": 1e-3, "split": [80, 20, 20]}, 20, 2, 0.3, 8, 10
)


# A.1.1 read as the ratio of the categories' second moments (dense weights): on the stand-in
# backbone the difference's leading eigenvector separates bodies from objects by spread more
# than by mean, and its channels are rarely body-selective in phase two.
DEMO_NEURONS = sy.SyntheticConfig(quotient="ratio")


# the demo's session names an animal only so that its NWB export passes DANDI's checks
DEMO_SUBJECT = {"subject_id": "synthetic", "species": "Macaca mulatta", "sex": "U", "age": "P5Y"}


def run_demo(
    out: Path,
    quick: bool = False,
    seed: int = 0,
    console: Console | None = None,
    category: str = "bodies",
) -> Path:
    """Run the loop for channels preferring ``category`` (a key of ``CATEGORIES``); returns
    the path of the report."""
    console = console or Console()
    plan = QUICK if quick else FULL
    sets = CATEGORIES[category]
    preferred = next(d for d in sets if d.role == "preferred")
    console.print(
        "[bold]stimloop demo[/bold]: [yellow]the backbone is resnet50_random, a seeded "
        "random-init stand-in (not the paper's robust ResNet-50); the neurons are "
        f"synthetic (A.1.1, {preferred.category}-selective) and the stimuli "
        "procedural.[/yellow]"
    )
    out = absolute(out)  # the private Redis and the worker run in other directories
    if out.exists():
        shutil.rmtree(out)
    root, store = out / "stimuli", out / "models_store"
    store.mkdir(parents=True)
    (store / "backbones.toml").write_text(default_registry_text())
    count = {"preferred": plan.preferred, "others": plan.others, "candidates": plan.candidates}
    stimuli = {d.name: d.draw(count[d.role], seed) for d in sets}
    for name, items in stimuli.items():
        write_stimulus_set(root / name, items)
    console.print(
        "stimuli: " + ", ".join(f"{len(stimuli[d.name])} {d.name}" for d in sets) + f" in {root}"
    )

    # The rig's side of the simulation: synthetic channels read out the same backbone.
    spec = load_registry(store / "backbones.toml")["resnet50_random"]
    backbone = load_backbone(spec, Path(), "cpu")
    maps = {}
    with _bar(console) as bar:
        for name, items in stimuli.items():
            task = bar.add_task(f"simulated neurons see {name}", total=len(items))
            maps[name] = extract_features(
                backbone,
                [image_to_tensor(Image.fromarray(s.image)) for s in items],
                precision=fast_precision("cpu"),
                progress=partial(_advance, bar, task),
            )
    channels = [f"ch{i + 1:02d}" for i in range(plan.channels)]
    # A.1.1: the preferred category is the preferred set's and its candidates' (the avatar's
    # and the control bodies), the others are objects (and bodies, for faces); signed so that
    # the preferred images drive each neuron up, as in the recorded patches.
    neurons = sy.make_neurons(
        np.concatenate([maps[d.name] for d in sets if d.role != "others"]),
        np.concatenate([maps[d.name] for d in sets if d.role == "others"]),
        channels,
        seed=seed + 1,
        config=DEMO_NEURONS,
    )
    ids = {name: [s.id for s in items] for name, items in stimuli.items()}

    def record(shown: dict[str, list[str]], sim_seed: int) -> dict[str, np.ndarray]:
        rates, order = [], []
        for name, wanted in shown.items():
            rows = [ids[name].index(i) for i in wanted]
            rates.append(sy.true_responses(neurons, maps[name][rows]))
            order += wanted
        _, cols = sy.simulate_counts(np.concatenate(rates), order, channels, seed=sim_seed)
        return cols

    settings = Settings(
        models_store=store, stimulus_root=root, device="cpu", port=free_port(), host="127.0.0.1"
    )
    rig = create_token(settings.tokens_path, "rig", "demo rig")
    analyst = create_token(settings.tokens_path, "analyst", "demo analyst")
    with (
        private_redis(store / "redis") as url,
        _EmbeddedService(settings.model_copy(update={"redis_url": url}), console) as base,
    ):
        client = ServiceClient(base, rig)
        reader = ServiceClient(base, analyst)
        for d in sets:
            client.register_set(d.name, d.category, d.name)
            _wait(
                client,
                client.precompute("resnet50_random", d.name),
                f"service caches {d.name}",
                console,
            )
        session = client.create_session(
            backbone="resnet50_random",
            preferred_set=preferred.name,
            candidate_sets=[{"set": d.name} for d in sets if d.role != "preferred"],
            channels=channels,
            fit=plan.fit,
            seed=seed,
            selection={
                "stability_images": plan.stability_images,
                "calibration": plan.calibration,
            },
            label=f"demo: {len(channels)} synthetic channels",
            # placeholders, so that the NWB export passes DANDI's checks: no animal was recorded
            subject=DEMO_SUBJECT,
            notes="synthetic channels, procedural stimuli, a random-init stand-in backbone; "
            "the subject fields are placeholders (no animal was recorded)",
        )
        token_file = out / "analyst_token.txt"
        token_file.write_text(analyst + "\n")
        token_file.chmod(0o600)
        live = f"{base}/ui/sessions/{session.id}"
        console.print(
            f"follow it live: {live} (sign in with the analyst token in {token_file}; the "
            "page lives while the demo runs)"
        )
        _wait(client, session.jobs["warm"], "worker warms the candidates", console)
        # phase one shows the bodies and, held out of the fit, the calibration images the
        # session drew from each candidate set (the intervals are calibrated on them)
        phase_one = {preferred.name: ids[preferred.name]}
        phase_one |= {
            d.name: session.config.calibration[d.category]
            for d in sets
            if d.category in session.config.calibration
        }
        held = len(session.config.calibration_ids)
        console.print(
            f"session {session.id}; phase one: {plan.preferred} {preferred.name} and {held} "
            f"calibration images x 8 repeats, {len(channels)} channels; fit: "
            f"{plan.fit['epochs']} epochs at lr {plan.fit['lr']:g} (the paper: 2500 at 1e-4)"
        )
        clock = _RigClock()
        accepted = _upload_recording(client, session.id, 1, record(phase_one, seed), seed, clock)
        started = time.monotonic()
        _wait(client, accepted.job, "fit and select", console)
        console.print(f"phase-two list ready {time.monotonic() - started:.1f} s after the upload")
        selection = client.selection(session.id).model_dump(mode="json")
        (out / "phase_two_list.csv").write_text(client.selection_csv(session.id))
        entries = selection["phase_two"]["entries"]
        shown = {
            d.name: [e["stimulus"] for e in entries if e["category"] == d.category]
            for d in sets
            if d.role != "preferred"
        }
        shown[preferred.name] = selection["phase_two"]["stability_images"]
        accepted = _upload_recording(
            client, session.id, 2, record(shown, seed + 100), seed + 1, clock
        )
        _wait(client, accepted.job, "analysis", console)
        analysis = reader.analysis(session.id).model_dump(mode="json")
        best = sorted(
            (c for c in analysis["channels"] if c["generalisation"].get("object")),
            key=lambda c: -(c["generalisation"]["object"]["r"] or -2),
        )
        for c in best[: plan.saliency_channels]:
            job = reader.saliency(session.id, c["channel"], coverage=plan.saliency_coverage)
            if job.job is not None:
                _wait(reader, job.job, f"saliency {c['channel']}", console)
        results = reader.saliency_results(session.id)
        if best and results:
            # the best channel's maps also get their sanity checks (a minute or two on a CPU)
            first = next(m for m in results if m.channel == best[0]["channel"])
            job = reader.sanity(session.id, first.key, max_features=plan.sanity_features)
            if job.job is not None:
                _wait(reader, job.job, f"sanity checks {first.channel}", console)
            verdict = reader.saliency_result(session.id, first.key).sanity
            if verdict is not None:
                kind = verdict.model_verdict.split(":")[0]  # split or failed
                model = "passed" if verdict.model_passed else f"FAILED, {kind or 'failed'}"
                console.print(
                    f"sanity checks of {first.channel}'s maps ({verdict.metric} similarity "
                    f"after randomising, passes below {verdict.max_similarity:g}): model "
                    f"{verdict.model_similarity:.2f} ({model}), data "
                    f"{verdict.data_similarity or float('nan'):.2f} "
                    f"({'passed' if verdict.data_passed else 'FAILED'})"
                )
        phase_three = _phase_three(
            client, session.id, backbone, neurons, channels, out, seed, clock, console
        )
        report = out / "report.html"
        report.write_text(reader.report(session.id))
        record_file = out / "session.nwb"
        body, warning = reader.export_nwb(session.id)
        record_file.write_bytes(body)
        if warning:
            console.print(f"[yellow]the NWB export says: {warning}[/yellow]")
        _summary(console, analysis, selection)
        if phase_three is not None:
            _phase_three_summary(console, phase_three)
    console.print(f"phase-two list: {out / 'phase_two_list.csv'}")
    console.print(f"the session as NWB: {record_file} (README: A session on the record)")
    console.print(f"[bold]report: {report}[/bold]")
    console.print(
        f"live pages: {live} while a service runs on this store, e.g. `STIMLOOP_MODELS_STORE="
        f"{store} STIMLOOP_STIMULUS_ROOT={root} stimloop serve --port {base.rsplit(':', 1)[1]}`"
        f"; sign in with the token in {token_file}"
    )
    console.print("[yellow]Reminder: random stand-in backbone and synthetic neurons.[/yellow]")
    return report


@dataclass
class _RigClock:
    """The simulated recordings' wall clock: each one ends as it is uploaded, unless it would
    then overlap the one before (a fit shorter than the phase after it); then it starts a
    second after that one ended."""

    ended: datetime | None = None

    def start(self, duration: float) -> datetime:
        start = datetime.now(UTC) - timedelta(seconds=duration)
        if self.ended is not None and start <= self.ended:
            start = self.ended + timedelta(seconds=1)
        self.ended = start + timedelta(seconds=duration)
        return start


def _upload_recording(
    client: ServiceClient,
    session_id: str,
    phase: int,
    cols: dict[str, np.ndarray],
    seed: int,
    clock: _RigClock,
) -> Accepted:
    """A simulated phase uploaded as the rig uploads a recording: spike trains on a 30 kHz
    clock that give its counts (``synthetic.spike_trains``), their onsets, and the recording's
    start (``clock``), so that the session's NWB file has its presentations, epochs and
    units."""
    times, onsets, stimuli = sy.spike_trains(cols, seed)
    spikes = SpikeTrains(times, onsets, stimuli, 1 / 30000)
    started = clock.start(float(onsets[-1]) + 1.0)
    return client.upload_phase(session_id, phase, cols, recording_start=started, spikes=spikes)


def _phase_three(
    client: ServiceClient,
    session_id: str,
    backbone,
    neurons: list,
    channels: list[str],
    out: Path,
    seed: int,
    clock: _RigClock,
    console: Console | None = None,
) -> dict | None:
    """Phase three as the rig runs it: the list and its images from the service, the
    synthetic neurons' responses to exactly those images, the upload, the analysis."""
    console = console or Console()
    accepted = client.phase_three(session_id)
    if accepted.job is not None:
        _wait(client, accepted.job, "phase-three list", console)
    (out / "phase_three_list.csv").write_text(client.phase_three_csv(session_id))
    archive = zipfile.ZipFile(io.BytesIO(client.phase_three_stimuli(session_id)))
    manifest = json.loads(archive.read("manifest.json"))
    console.print(
        f"phase three: {sum(m['kind'] in ('salient', 'complement', 'random') for m in manifest)} "
        f"fragments, {sum(m['kind'] == 'intact' for m in manifest)} intact sources and "
        f"{sum(m['kind'] == 'stability' for m in manifest)} stability images "
        f"({out / 'phase_three_list.csv'})"
    )
    seen = extract_features(
        backbone,
        [image_to_tensor(Image.open(io.BytesIO(archive.read(m["file"])))) for m in manifest],
        precision=fast_precision("cpu"),
    )
    rates = sy.true_responses(neurons, seen)
    _, cols = sy.simulate_counts(rates, [m["id"] for m in manifest], channels, seed=seed + 200)
    accepted = _upload_recording(client, session_id, 3, cols, seed + 2, clock)
    _wait(client, accepted.job, "phase-three analysis", console)
    return client.phase_three_analysis(session_id).model_dump(mode="json")


def _phase_three_summary(console: Console, analysis: dict) -> None:
    """Per channel: retained response of each fragment kind, recorded (predicted), and the
    test of salient against complement and random."""
    table = Table(
        "channel",
        "salient",
        "complement",
        "random",
        "vs complement",
        "vs random",
        caption="retained response R(fragment) / R(intact), recorded (readout's expectation); "
        "tests two-sided, * p < 0.05; details in the report",
    )

    def kept(row: dict, kind: str) -> str:
        rec, pred = row.get(f"retained_{kind}"), row.get(f"predicted_{kind}")
        if rec is None and pred is None:
            return "-"
        return ("-" if rec is None else f"{rec:.2f}") + ("" if pred is None else f" ({pred:.2f})")

    def test(row: dict, other: str) -> str:
        p = row.get(f"vs_{other}_p")
        if p is None:
            return "-"
        name = "W" if row[f"vs_{other}_test"].startswith("wilcoxon") else "MW"
        return f"{name} p {p:.2g}" + ("*" if p < 0.05 else "")

    for row in phase_three_rows(analysis):
        table.add_row(
            row["channel"],
            kept(row, "salient"),
            kept(row, "complement"),
            kept(row, "random"),
            test(row, "complement"),
            test(row, "random"),
        )
    console.print(table)


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    )


def _advance(bar: Progress, task: TaskID, done: int, total: int) -> None:
    bar.update(task, completed=done)


def _wait(client: ServiceClient, job: JobInfo | str | None, label: str, console: Console) -> None:
    """Follow a job (its info or id) with a progress bar; None: nothing to wait for."""
    if job is None:  # the result was there already
        return
    job_id = job if isinstance(job, str) else job.id
    with _bar(console) as bar:
        task = bar.add_task(label, total=1.0)

        def show(job) -> None:
            bar.update(
                task,
                completed=job.progress,
                description=f"{label}: {job.stage or job.state} {job.message or ''}"[:90],
            )

        client.wait(job_id, progress=show, poll=0.3)
        bar.update(task, completed=1.0)


class _EmbeddedService:
    """The embedded service as ``stimloop serve`` runs it: its worker pool (``serve.Workers``:
    restarted if one dies, stopped together) and the API in a thread."""

    def __init__(self, settings: Settings, console: Console) -> None:
        self.settings, self.console = settings, console

    def __enter__(self) -> str:
        import uvicorn

        from stimloop.api.app import create_app

        log = self.settings.models_store / "worker.log"
        self.workers = Workers(self.settings, str(self.settings.redis_url), 1, log=log)
        config = uvicorn.Config(
            create_app(self.settings),
            host="127.0.0.1",
            port=self.settings.port,
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        base = f"http://127.0.0.1:{self.settings.port}"
        client = ServiceClient(base, retries=0)
        for _ in range(200):
            try:
                if client.health().workers >= 1:
                    break
            except Exception:
                pass
            time.sleep(0.1)
        self.console.print(f"embedded service at {base} (worker log: {log})")
        return base

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.workers.stop()


def _summary(console: Console, analysis: dict, selection: dict) -> None:
    """Per channel: included, r on held-out preferred images and on objects (* where p <
    0.05), stability r (its p-value and every other statistic are in the report), the
    Mann-Whitney p against each other category, and the chosen objects (their numbers)."""
    names = categories(analysis)
    pref, others = names["preferred"], names["others"]
    side = "+".join(names["preferred_candidates"]) or pref
    picks = {c["channel"]: c for c in selection["channels"]}
    caption = (
        f"r {pref} / r object: predicted vs recorded on held-out {pref} / phase-two objects, "
        f"* p < 0.05; stab.: phase one vs two; MW p: {side} vs each other category "
        "(two-sided), S: selective (significant, preferred above, against every category); "
        "t/b/s: top / bottom / most similar object; noise ceilings, normalised r and all "
        "p-values are in the report"
    )
    table = Table(
        "channel",
        "incl.",
        f"r {pref}",
        "r object",
        "stab.",
        *(f"MW p {o}" for o in others),
        "objects t/b/s",
        caption=caption,
    )

    def num(value: float | None, p: float | None = None) -> str:
        if value is None:
            return "-"
        return f"{value:.2f}" + ("*" if p is not None and p < 0.05 else "")

    for row in analysis_rows(analysis):
        sel = picks[row["channel"]]
        chosen = {p["role"]: p["stimulus"] for p in sel["picks"] if p["category"] == "object"}
        objects = "/".join(
            chosen.get(r, "-").removeprefix("object_") for r in ("top", "bottom", "similar")
        )
        tests = [num(row.get(f"mw_p_{o}")) for o in others]
        tests[-1] += " S" if row["selective"] else ""
        table.add_row(
            row["channel"],
            "yes" if sel["included"] else "no",
            num(row[f"r_{pref}"], row[f"p_{pref}"]),
            num(row.get("r_object"), row.get("p_object")),
            num(row["stability_r"]),
            *tests,
            objects,
        )
    console.print(table)
    scoring = analysis.get("scoring")
    if scoring:
        pooled = scoring["summary"]
        console.print(
            f"predictions registered before phase two (sha256 {scoring['registration'][:16]}..."
            f"): {pooled['inside']} of {pooled['images_scored']} recorded means inside their "
            f"{scoring['level']:.0%} interval (binomial p {pooled['coverage_p']:.2g} against "
            "the nominal level; calibration per channel in the report)"
        )
