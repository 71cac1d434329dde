"""``stimloop-rig``: the operator's commands between the recording phases (torch-free)."""

from __future__ import annotations

import csv
import functools
import io
import re
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from stimloop_contract.errors import JobWaitTimeoutError, StimloopError, TrialFileError
from stimloop_contract.result_tables import (
    analysis_rows,
    key_columns,
    phase_three_rows,
    sanity_by_channel,
)

from stimloop_rig.cli_words import in_cli_words
from stimloop_rig.settings_file import SettingsFileError, session_settings

if TYPE_CHECKING:  # imported where used: `stimloop-rig --help` loads none of them
    from stimloop_contract.phase_three import PhaseThreeList
    from stimloop_contract.selection import Selection
    from stimloop_contract.system import JobInfo

    from stimloop_rig.recording import RecordedTrials, RecordingSettings
    from stimloop_rig.rig_client import RigClient

app = typer.Typer(
    help="stimloop at the rig: create a session, upload phase one, get the "
    "phase-two list, upload phase two, fetch results, run phase three.",
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)  # errors on standard error: SESSION=$(...) captures no "error:"
URL = typer.Option("http://127.0.0.1:8000", envvar="STIMLOOP_URL", help="The stimloop server.")
TOKEN = typer.Option(None, envvar="STIMLOOP_TOKEN", help="Bearer token (rig or analyst role).")
BACKBONE = typer.Option(
    "resnet50_robust_l2_eps3",
    envvar="STIMLOOP_BACKBONE",
    help="The sessions' backbone (resnet50_random: the stand-in, for a trial run).",
)
TIMEOUT = typer.Option(
    None,
    "--timeout",
    envvar="STIMLOOP_WAIT_TIMEOUT",
    min=1,
    help="Stop waiting after this many seconds (the job goes on on the server). Default: wait "
    "as long as the job is alive; a job whose worker died is reported failed.",
)


DEBUG = {"on": False}  # --debug: tracebacks instead of one line


@app.callback()
def options(
    debug: bool = typer.Option(
        False, "--debug", envvar="STIMLOOP_DEBUG", help="Show tracebacks of errors."
    ),
) -> None:
    """stimloop at the rig. Every error is one line saying what went wrong and what to do,
    and a non-zero exit status (2); --debug shows the traceback too."""
    DEBUG["on"] = debug


def _client(url: str, token: str | None, retry_budget: float = 30.0) -> RigClient:
    from stimloop_rig.rig_client import RigClient  # here: --help need not load the client

    return RigClient(url, token, retry_budget=retry_budget)


def _fail(message: str) -> typer.Exit:
    """One line on the console, and the exit to raise; with --debug the error being handled
    is raised instead, traceback and all."""
    if DEBUG["on"] and sys.exc_info()[1] is not None:
        raise
    errors.print(f"[red]error:[/red] {escape(in_cli_words(message))}", soft_wrap=True)
    return typer.Exit(code=2)


SESSION_ID = re.compile(r"^[0-9a-f]{12}$")  # as the server names sessions


def one_line(command: Callable[..., None]) -> Callable[..., None]:
    """A command whose ``StimloopError`` or rig-file error ends as one line and exit 2; a
    session argument that cannot be a session id is refused before anything is sent."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        session = kwargs.get("session")
        if isinstance(session, str) and not SESSION_ID.match(session):
            raise _fail(
                f"{session!r} is not a session id: 12 characters 0-9 and a-f, as "
                "`stimloop-rig create-session` printed it (the live pages list them)"
            )
        for name in ("out", "json_out", "sequence"):  # outputs: checked before any wait
            target = kwargs.get(name)
            if isinstance(target, Path) and not target.parent.is_dir():
                raise _fail(
                    f"{target}: the folder {target.parent} does not exist; create it, or "
                    "write elsewhere"
                )
        try:
            command(*args, **kwargs)
        except (StimloopError, TrialFileError) as exc:
            raise _fail(str(getattr(exc, "detail", exc))) from None
        except OSError as exc:  # an output file the command could not write (--out ...)
            where = exc.filename or "a file"
            raise _fail(
                f"{where}: {exc.strerror or exc}; check that its folder exists and can be written"
            ) from None

    return run


def main() -> None:
    """``stimloop-rig``: the commands, with every ``StimloopError`` (and a rig file's
    ``TrialFileError``) printed as one line and exit status 2, unless ``--debug``."""
    try:
        app()
    except (StimloopError, TrialFileError) as exc:
        if DEBUG["on"]:
            raise
        said = in_cli_words(str(getattr(exc, "detail", exc)))
        errors.print(f"[red]error:[/red] {escape(said)}", soft_wrap=True)
        raise SystemExit(2) from None


def _wait(client: RigClient, job_id: str, label: str, timeout: float | None = None) -> JobInfo:
    """Follow a job with a progress bar until it ends (as long as its worker's heartbeat says
    it is alive), or until ``timeout`` seconds, which stops the waiting, not the job."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(label, total=1.0)

        def show(job: JobInfo) -> None:
            text = f"{label}: {job.stage or job.state} {job.message or ''}"
            bar.update(task, completed=job.progress, description=escape(text[:80]))

        try:
            return client.wait(job_id, progress=show, timeout=timeout)
        except JobWaitTimeoutError as exc:
            raise _fail(exc.detail) from None


@app.command()
@one_line
def health(
    url: str = URL,
    token: str | None = TOKEN,
    backbone: str = BACKBONE,
    as_json: bool = typer.Option(False, "--json", help="The server's whole answer as JSON."),
) -> None:
    """Can a session with the default settings run now? Then the server's workers, devices,
    backbones and problems (gives up within seconds)."""
    answer = _client(url, token, retry_budget=2.0).health()
    if as_json:
        console.print_json(answer.model_dump_json())
        return
    chosen = next((b for b in answer.backbones if b.name == backbone), None)
    if chosen is None:
        verdict = f"[red]no:[/red] the backbone {backbone} is not registered on the server"
    elif not chosen.ready:
        verdict = f"[red]no:[/red] {backbone} cannot run: {escape(chosen.problem or '?')}"
    elif not answer.redis or answer.workers == 0:
        verdict = "[red]no:[/red] " + ("Redis is down" if not answer.redis else "no worker runs")
    else:
        verdict = f"[green]yes:[/green] a session with {backbone} can run now"
    console.print(verdict)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_header=False)
    table.add_row("server", f"{answer.status} (stimloop {answer.version}, {answer.device})")
    table.add_row("workers", ", ".join(w.device for w in answer.worker_devices) or "none")
    for b in answer.backbones:
        table.add_row(f"backbone {b.name}", "ready" if b.ready else escape(b.problem or "-"))
    for problem in answer.problems:
        table.add_row("problem", escape(problem))
    console.print(table)


@app.command()
@one_line
def job(
    job_id: str,
    wait: bool = typer.Option(False, help="Follow it until it ends."),
    timeout: float | None = TIMEOUT,
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """A job's state, stage and progress (or its error)."""
    client = _client(url, token)
    info = _wait(client, job_id, f"job {job_id}", timeout) if wait else client.job(job_id)
    console.print(
        f"job {info.id} ({info.kind}): {info.state}, {info.stage or '-'} "
        f"{info.progress:.0%} {escape(info.message or '')}"
    )
    if info.error:
        raise _fail(info.error)


sets_app = typer.Typer(
    help="Stimulus sets: register a folder below the server's stimulus root (or upload a "
    "zip), list them, cache their maps before a session.",
    no_args_is_help=True,
)
app.add_typer(sets_app, name="sets")


@sets_app.command("register")
@one_line
def sets_register(
    set_id: str = typer.Argument(..., help="The set's id, e.g. bodies."),
    category: str = typer.Option(
        ..., help="What the images are: body, object, control_body; face, ... for other labs."
    ),
    directory: str | None = typer.Option(
        None, help="Its folder below the server's stimulus root (default: the set's id)."
    ),
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Register a folder of PNG/JPEG images below the server's stimulus root as a set."""
    info = _client(url, token).register_set(set_id, category, directory or set_id)
    console.print(f"set {info.id}: {info.count} {info.category} images")


@sets_app.command("upload")
@one_line
def sets_upload(
    set_id: str = typer.Argument(..., help="The set's id, e.g. bodies."),
    archive: Path = typer.Argument(..., help="A zip of PNG/JPEG images."),
    category: str = typer.Option(..., help="What the images are: body, object, ..."),
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Register the images of a zip as a set (for a server that cannot see the rig's disk)."""
    try:
        info = _client(url, token).upload_set(set_id, category, archive.read_bytes())
    except OSError as exc:
        raise _fail(f"{archive}: cannot read it ({exc})") from None
    console.print(f"set {info.id}: {info.count} {info.category} images")


@sets_app.command("list")
@one_line
def sets_list(url: str = URL, token: str | None = TOKEN) -> None:
    """The registered sets: id, category, number of images."""
    found = _client(url, token).stimulus_sets()
    table = Table("set", "category", "images", "source")
    for info in found:
        table.add_row(info.id, info.category, str(info.count), info.source)
    console.print(table)


@sets_app.command("precompute")
@one_line
def sets_precompute(
    set_ids: list[str] = typer.Argument(..., help="One or more set ids."),
    backbone: str = BACKBONE,
    timeout: float | None = TIMEOUT,
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Cache the sets' maps for a backbone (a job each, followed), so that a session's
    turnaround reads them instead of computing them."""
    client = _client(url, token)
    for set_id in set_ids:
        job_info = client.precompute(backbone, set_id)
        _wait(client, job_info.id, f"maps of {set_id}", timeout)
        console.print(f"maps of {set_id} cached for {backbone}")


@app.command()
@one_line
def refit(
    session: str,
    wait: bool = typer.Option(True, help="Follow the fit until the list is ready."),
    timeout: float | None = TIMEOUT,
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Run fit-and-select again after a failed or cancelled fit."""
    client = _client(url, token)
    accepted = client.refit(session)
    if wait and accepted.job is not None:
        _wait(client, accepted.job.id, "fit and select", timeout)
    console.print(f"fit of session {session}: {accepted.status}")


@app.command("create-session")
@one_line
def create_session(
    channels: str = typer.Option(..., help="Comma-separated channel names, e.g. ch01,ch02"),
    preferred_set: str | None = typer.Option(
        None, help="The set the channels prefer (the readouts are trained on it)."
    ),
    candidate_sets: str | None = typer.Option(
        None,
        help="Comma-separated candidate sets, each of one category (e.g. objects,controls).",
    ),
    body_set: str | None = typer.Option(None, help="The paper's form: the body set."),
    object_set: str | None = typer.Option(None, help="The paper's form: the object set."),
    control_body_set: str | None = typer.Option(
        None, help="The paper's form: the control-body set."
    ),
    backbone: str = BACKBONE,
    seed: int = typer.Option(0),
    split: str | None = typer.Option(
        None,
        help="Train,validation,test images of the preferred set for the fit, e.g. 80,20,20 "
        "(the paper's 400,50,25 needs 475).",
    ),
    epochs: int | None = typer.Option(None, min=1, help="Fit epochs (the paper's 2500)."),
    lr: float | None = typer.Option(None, help="Fit learning rate (the paper's 1e-4)."),
    calibration: int | None = typer.Option(
        None,
        min=0,
        help="Images of each candidate set phase one shows beside the preferred set, held out "
        "of the fit, to calibrate the intervals (not in the paper; 0: none).",
    ),
    config: Path | None = typer.Option(
        None,
        help="A JSON or TOML file of the session's settings: fit, inclusion, selection, "
        "analysis, windows (see the README); --split, --epochs and --lr override its fit.",
    ),
    label: str | None = typer.Option(
        None, help="A name to tell the session apart, e.g. 'M1 day 12, array A'."
    ),
    subject: str | None = typer.Option(None, help="The animal's id, e.g. M1."),
    species: str | None = typer.Option(None, help="The animal's species, e.g. 'Macaca mulatta'."),
    sex: str | None = typer.Option(None, help="The animal's sex: M, F, U (unknown) or O (other)."),
    age: str | None = typer.Option(None, help="The animal's age, ISO 8601: P7Y for seven years."),
    notes: str | None = typer.Option(None, help="Notes on the session."),
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Create a session; prints its id (the server starts loading the candidates). Name the
    sets as --preferred-set and --candidate-sets, or as the paper's three sets; the animal
    as --subject (with --species, --sex and --age for the archive's NWB export)."""
    try:
        extra = session_settings(config, split=split, epochs=epochs, lr=lr, calibration=calibration)
    except SettingsFileError as exc:
        raise _fail(str(exc)) from None
    if preferred_set or candidate_sets:
        sets: dict = {
            "preferred_set": preferred_set,
            "candidate_sets": [
                {"set": c.strip()} for c in (candidate_sets or "").split(",") if c.strip()
            ],
        }
    else:
        sets = {
            "body_set": body_set,
            "object_set": object_set,
            "control_body_set": control_body_set,
        }
    about: dict = {"label": label, "notes": notes}
    if subject or species or sex or age:
        animal = {"subject_id": subject, "species": species, "sex": sex, "age": age}
        about["subject"] = {k: v for k, v in animal.items() if v is not None}
    session = _client(url, token).create_session(
        backbone=backbone,
        channels=[c.strip() for c in channels.split(",") if c.strip()],  # "ch01, ch02" too
        seed=seed,
        **sets,
        **extra,
        **{k: v for k, v in about.items() if v is not None},
    )
    err = Console(stderr=True)
    err.print(
        f"session [bold]{session.id}[/bold] created ({len(session.config.channels)} channels)"
    )
    for category, ids in session.config.calibration.items():
        err.print(
            f"phase one also shows {len(ids)} {category} images for calibration (held out of "
            f"the fit): {', '.join(ids)}"
        )
    print(session.id)  # alone on standard output: SESSION=$(stimloop-rig create-session ...)


def _upload(
    phase: int,
    session: str,
    file: Path,
    replace: bool,
    wait: bool,
    timeout: float | None,
    url: str,
    token: str | None,
    recording: RecordingSettings,
    any_order: bool,
    started: datetime | None = None,
) -> None:
    client = _client(url, token)
    from stimloop_rig.recording import is_recording

    if is_recording(file):
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("threshold crossings", total=None)
            found = client.recorded_trials(
                session,
                phase,
                file,
                recording,
                any_order,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        _print_recording(found)
        columns = found.columns
        if started is None and found.started is not None:
            started = found.started
            console.print(f"recording start: {started.isoformat()} (UTC, the recording's own)")
        elif started is not None and found.started is not None:
            console.print(
                f"recording start: {started.isoformat()} as given; the recording's own says "
                f"{found.started.isoformat()}"
            )
        accepted = client.upload_phase(session, phase, columns, replace, started, found.spikes)
    else:
        columns, accepted = client.upload_file(session, phase, file, replace, started)
    console.print(f"phase {phase}: {len(columns['stimulus'])} trials uploaded ({accepted.status})")
    if wait and accepted.job is not None:
        label = {1: "fit and select", 2: "analysis", 3: "phase-three analysis"}[phase]
        _wait(client, accepted.job.id, label, timeout)
        console.print(f"[green]{label} done[/green]")


def _print_recording(found: RecordedTrials) -> None:
    """Per channel what the recording gave, before anything is uploaded."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=found.source)
    for name in ("channel", "trials", "repeats", "net rate (spikes/s)", "spikes", "threshold"):
        table.add_column(name)
    for row in found.channels:
        threshold = row["threshold_uv"]
        table.add_row(
            str(row["channel"]),
            str(row["trials"]),
            f"{row['repeats_min']}-{row['repeats_max']}",
            f"{row['mean_net_rate']:.1f}",
            str(row["spikes"]) + ("" if row["rate_hz"] is None else f" ({row['rate_hz']:.0f}/s)"),
            "-" if threshold is None else f"{threshold:.1f} uV",
        )
    console.print(table)
    console.print(f"{len(found.sequence)} stimulus presentations")


def _upload_command(phase: int, doc: str) -> None:
    """``stimloop-rig phase<N> SESSION FILE``: one phase's upload, then its job awaited."""

    def command(
        session: str,
        file: Path,
        replace: bool = typer.Option(False),
        wait: bool = typer.Option(True),
        codes: Path | None = typer.Option(
            None, help="A recording's code-to-stimulus table (CSV: code,stimulus)."
        ),
        photodiode: str | None = typer.Option(
            None,
            help="The photodiode: Open Ephys TTL line (1-based) or the file's event channel "
            "(Plexon, ...); onsets from its pulses.",
        ),
        code_events: str | None = typer.Option(
            None,
            help="The event channel of the codes in a file read with neo (default: the strobed "
            "one; Blackrock: digital_input_port); in an Open Ephys recording of several "
            "streams, the stream whose TTL lines carry the codes (its stream name).",
        ),
        spikes: str = typer.Option(
            "auto", help="auto, sorted or mua (threshold crossings of the raw signal)."
        ),
        threshold: float = typer.Option(4.0, help="MUA threshold, multiples of the noise."),
        band: str = typer.Option("500,5000", help="MUA band-pass, Hz."),
        channels: str | None = typer.Option(
            None, help="The session's names of the recording's channels, in order."
        ),
        any_order: bool = typer.Option(
            False, help="Accept a recording whose order is not the list's sequence."
        ),
        recording_start: str | None = typer.Option(
            None,
            help="When the recording started, ISO 8601 with its UTC offset "
            "(2026-12-06T14:03:00+01:00): its onsets count from it, and the session's NWB "
            "file places the phase on its timeline by it. An Open Ephys recording says it "
            "itself (sync_messages.txt); this overrides it.",
        ),
        timeout: float | None = TIMEOUT,
        url: str = URL,
        token: str | None = TOKEN,
    ) -> None:
        low, high = ([*_floats(band), 0.0, 0.0])[:2]
        from stimloop_rig.mua import MuaSettings
        from stimloop_rig.recording import RecordingSettings

        settings = RecordingSettings(
            codes=codes,
            photodiode=photodiode,
            code_events=code_events,
            spikes=spikes,  # type: ignore[arg-type]
            channels=tuple(c.strip() for c in channels.split(",")) if channels else (),
            mua=MuaSettings(band=(low, high), threshold=threshold),
        )
        started = _start_time(recording_start)
        _upload(
            phase, session, file, replace, wait, timeout, url, token, settings, any_order, started
        )

    command.__doc__ = doc
    app.command(f"phase{phase}")(one_line(command))


_upload_command(
    1,
    "Upload phase one (CSV/NPZ/MAT trial table, spike-times NPZ, NWB, or the rig's recording "
    "with --codes: an Open Ephys folder, a Plexon .plx or another file neo reads) and wait "
    "for the list.",
)
_upload_command(2, "Upload phase two and wait for the analysis.")
_upload_command(3, "Upload phase three (the fragments' trials) and wait for its analysis.")


def _start_time(text: str | None) -> datetime | None:
    """``--recording-start``'s time; an ISO 8601 time with its UTC offset, or a clear refusal."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 time; write it as 2026-12-06T14:03:00+01:00"
        ) from None
    if value.tzinfo is None:
        raise typer.BadParameter(
            f"{text!r} has no UTC offset; add the rig's (e.g. +01:00, or Z for UTC)"
        )
    return value


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"give comma-separated numbers, not {text!r}") from None


def _write_list_files(
    data: Selection | PhaseThreeList, json_out: Path | None, sequence: Path | None
) -> None:
    """A list's full JSON and its presentation sequence (one id a line), where asked for."""
    if json_out:
        json_out.write_text(data.model_dump_json(indent=1))
    if sequence:
        sequence.write_text("\n".join(data.sequence) + "\n")


@app.command()
@one_line
def follow(
    session: str,
    phase: int = typer.Option(1, min=1, max=3, help="The phase being recorded: 1, 2 or 3."),
    openephys: str = typer.Option(
        ...,
        help="The Open Ephys GUI's Event Broadcaster: HOST[:PORT] (port 5557 by default; its "
        "format set to JSON).",
    ),
    codes: Path = typer.Option(..., help="The code-to-stimulus table (CSV: code,stimulus)."),
    photodiode: int | None = typer.Option(
        None, min=1, max=64, help="The photodiode's TTL line (1-based); onsets from its pulses."
    ),
    code_events: str | None = typer.Option(
        None, help="The TTL stream with the codes, when the GUI has several (its stream name)."
    ),
    trials: int | None = typer.Option(
        None,
        min=1,
        help="Close the phase once this many presentations are in (phases two and three: "
        "their list's sequence, by default).",
    ),
    until: float | None = typer.Option(
        None, min=1, help="Close the phase after this many seconds at the latest."
    ),
    lag: float = typer.Option(
        0.5, min=0, max=10, help="Seconds to wait for late events after a trial's windows."
    ),
    notes: bool = typer.Option(
        True, help="Write the phase's start and end into the recording (the GUI's HTTP API)."
    ),
    wait: bool = typer.Option(True, help="Wait for the phase's job once it is closed."),
    recording_start: str | None = typer.Option(
        None,
        help="When the recording started, ISO 8601 with its UTC offset "
        "(2026-12-06T14:03:00+01:00): sent when the phase is closed, so that the session's "
        "NWB file places it on its timeline.",
    ),
    timeout: float | None = TIMEOUT,
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Follow a phase while the Open Ephys GUI records it: trials built from its Event
    Broadcaster as they happen, sent in batches, and the phase closed (its job started at
    once) when the expected presentations are in, after --until, or on Enter or Ctrl-C."""
    from stimloop_rig.broadcast import endpoint
    from stimloop_rig.follow import FollowSettings
    from stimloop_rig.follow import follow as run

    try:
        host, port = endpoint(openephys)
    except ValueError as exc:
        raise _fail(f"--openephys {exc}") from None
    if not codes.is_file():
        raise _fail(f"{codes}: no such file; give the codes table (CSV: code,stimulus)")
    started = _start_time(recording_start)
    client = _client(url, token)
    settings = FollowSettings(
        host=host,
        port=port,
        codes=codes,
        photodiode=photodiode,
        code_events=code_events,
        lag=lag,
        trials=trials,
        until=until,
        notes=notes,
        recording_start=started,
    )
    follower = client.follower(session, phase, settings)
    try:
        expected = follower.settings.trials
        console.print(
            f"following phase {phase} from {host}:{port}"
            + (f" until {expected} presentations are in" if expected else "")
            + "; Enter or Ctrl-C closes it"
        )
        if follower.noted is False:
            console.print("the GUI's HTTP API did not answer: no notes in the recording")
        with Live(console=console, auto_refresh=False) as screen:
            why, accepted = run(
                follower,
                stop=_enter_pressed,
                show=lambda f: screen.update(_follow_table(f), refresh=True),
            )
    finally:
        follower.close()
    console.print(f"phase {phase} closed: {why}; {accepted.status}")
    for gap in follower.live.gaps:
        console.print(
            f"[yellow]gap:[/yellow] {gap.start:.3f}-{gap.end:.3f} s: {escape(gap.reason)}"
        )
    for missing in follower.live.missing:
        console.print(
            f"[yellow]missing:[/yellow] presentation {missing.number} ({escape(missing.stimulus)}"
            f", {missing.time:.3f} s): {escape(missing.reason)}"
        )
    if follower.live.gaps or follower.live.missing:
        console.print(
            "the recording holds every trial: once it is closed, upload its folder with "
            f"`stimloop-rig phase{phase} {session} FOLDER --codes ... --replace` to use them all"
        )
    if wait and accepted.job is not None:
        label = {1: "fit and select", 2: "analysis", 3: "phase-three analysis"}[phase]
        _wait(client, accepted.job.id, label, timeout)
        console.print(f"[green]{label} done[/green]")


def _enter_pressed() -> bool:
    """Has the operator pressed Enter (a terminal's standard input only)?"""
    if not sys.stdin.isatty():
        return False
    import select

    ready, _, _ = select.select([sys.stdin], [], [], 0)
    if ready:
        sys.stdin.readline()
        return True
    return False


def _follow_table(follower: Any) -> Table:
    """Per channel the trials sent, the stimuli they cover and the running net rate."""
    live = follower.live
    title = (
        f"{live.decided} presentations, {follower.acknowledged} batches sent, "
        f"{len(live.missing)} missing; {follower.elapsed():.0f} s; server {follower.server}"
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=escape(title))
    for name in ("channel", "trials", "repeats", "net rate (spikes/s)"):
        table.add_column(name)
    for row in follower.channels():
        rate = row.get("mean_net_rate")
        table.add_row(
            str(row["channel"]),
            str(row["trials"]),
            f"{row['repeats_min']}-{row['repeats_max']}",
            "-" if rate is None or rate != rate else f"{rate:.1f}",
        )
    return table


@app.command("phase-three-list")
@one_line
def phase_three_list(
    session: str,
    out: Path = typer.Option(..., help="CSV for the stimulus program."),
    stimuli: Path | None = typer.Option(None, help="Also the images: a zip with a manifest."),
    json_out: Path | None = typer.Option(None, "--json", help="Also the full JSON."),
    sequence: Path | None = typer.Option(None, help="The presentation sequence, one id a line."),
    channels: str | None = typer.Option(None, help="Comma-separated; default: all with maps."),
    q: str = typer.Option("0.25", help="Kept fractions of the foreground, e.g. 0.1,0.25."),
    kinds: str = typer.Option("salient,complement,random"),
    repeats: int = typer.Option(8),
    feather: float = typer.Option(2.0, help="Edge softening, Gaussian sigma in pixels."),
    replace: bool = typer.Option(False, help="Replace a list built for other settings."),
    timeout: float | None = TIMEOUT,
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Build (or fetch) the phase-three list of fragments for the stimulus program."""
    client = _client(url, token)
    request = {
        "q": _floats(q),
        "kinds": [k.strip() for k in kinds.split(",") if k.strip()],
        "repeats": repeats,
        "feather": feather,
    }
    if channels:
        request["channels"] = [c.strip() for c in channels.split(",") if c.strip()]
    accepted = client.phase_three(session, replace=replace, **request)
    if accepted.job is not None:
        _wait(client, accepted.job.id, "phase-three list", timeout)
    out.write_text(client.phase_three_csv(session))
    data = client.phase_three_list(session)
    if stimuli:
        stimuli.write_bytes(client.phase_three_stimuli(session))
    _write_list_files(data, json_out, sequence)
    fragments = sum(e.kind != "intact" for e in data.entries)
    console.print(
        f"wrote {out}: {fragments} fragments, "
        f"{sum(e.kind == 'intact' for e in data.entries)} intact sources, "
        f"{len(data.stability_images)} stability images"
        + (f"; images in {stimuli}" if stimuli else "")
    )


@app.command("phase-two-list")
@one_line
def phase_two_list(
    session: str,
    out: Path = typer.Option(..., help="CSV for the stimulus program."),
    json_out: Path | None = typer.Option(None, "--json", help="Also the full JSON."),
    sequence: Path | None = typer.Option(None, help="The presentation sequence, one id a line."),
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Write the phase-two list (and its presentation sequence) for the stimulus program."""
    client = _client(url, token)
    out.write_text(client.selection_csv(session))
    data = client.selection(session)
    _write_list_files(data, json_out, sequence)
    n = len(data.phase_two.entries)
    console.print(
        f"wrote {out}: {n} selected images + "
        f"{len(data.phase_two.stability_images)} stability images"
    )
    if data.registration:  # what phase two will be scored against, frozen before it
        level = data.predictions.level if data.predictions else 0.0
        console.print(
            f"predictions registered with {level:.0%} intervals: sha256 {data.registration}"
        )
    flagged = [
        (str(c["channel"]), str(c["fit_flag"]))
        for c in client.models(session).channels
        if c.get("fit_flag")
    ]
    for channel, why in flagged:  # their picks stand in the list's fit_flagged column
        console.print(f"[red]flagged:[/red] {channel}: {escape(why)}")


@app.command()
@one_line
def analysis(
    session: str,
    out: Path | None = typer.Option(None, help="CSV of every column."),
    phase: int = typer.Option(2, min=2, max=3, help="2: after phase two; 3: phase three."),
    wide: bool = typer.Option(False, help="Every column on screen, not only the key ones."),
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """The per-channel statistics, each with its p-value: the key columns on screen, every
    column with --wide or in --out's CSV."""
    client = _client(url, token)
    data = client.analysis(session) if phase == 2 else client.phase_three_analysis(session)
    dumped = data.model_dump(mode="json")
    if phase == 2:
        checked = [m.model_dump(mode="json") for m in client.saliency_results(session)]
        rows = analysis_rows(dumped, sanity=sanity_by_channel(checked))
    else:
        rows = phase_three_rows(dumped)
    shown = list(rows[0]) if rows and wide else key_columns(rows)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in shown:  # long names wrap rather than lose their ends
        table.add_column(name.replace("_", " "), overflow="fold")
    digits = ".3g" if wide else ".2g"
    for row in rows:
        table.add_row(
            *(
                "-" if v is None else f"{v:{digits}}" if isinstance(v, float) else str(v)
                for v in (row.get(k) for k in shown)
            )
        )
    console.print(table)
    scoring = dumped.get("scoring") if phase == 2 else None
    if scoring:
        pooled = scoring["summary"]
        console.print(
            f"registered predictions (sha256 {scoring['registration']}): {pooled['inside']} "
            f"of {pooled['images_scored']} recorded means inside their "
            f"{scoring['level']:.0%} interval (binomial p {pooled['coverage_p']:.3g})"
        )
    if rows and not wide and len(shown) < len(rows[0]):
        console.print(
            f"{len(rows[0]) - len(shown)} more columns (noise ceilings, U, medians, ...): "
            "--wide, or --out FILE.csv"
        )
    if out and rows:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        out.write_text(buffer.getvalue())


@app.command()
@one_line
def saliency(
    session: str,
    channel: str = typer.Option(...),
    out: Path = typer.Option(...),
    x_out: str | None = typer.Option(
        None, help="An image of another category (an object); with --x-in."
    ),
    x_in: str | None = typer.Option(None, help="An image of the preferred set (a body)."),
    coverage: float | None = typer.Option(None, help="Fraction of s (0, 1]."),
    sanity: bool = typer.Option(
        False,
        help="Also run the sanity checks of the maps (model and data randomisation); "
        "their cascade strip goes beside --out as NAME.sanity.png.",
    ),
    timeout: float | None = TIMEOUT,
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Saliency maps for a channel as PNG: sec. 5.2's default pair unless --x-out and --x-in
    are named."""
    client = _client(url, token)
    options: dict[str, object] = {"coverage": coverage}
    if sanity:
        options["sanity"] = True
    accepted = client.saliency(session, channel, x_out, x_in, **options)
    if accepted.job is not None:
        _wait(client, accepted.job.id, f"saliency {channel}", timeout)
    out.write_bytes(client.download(accepted.links["png"]))
    meta = client.json("GET", accepted.links["metadata"])
    console.print(
        f"wrote {out}: {meta['x_out']} ~ {meta['x_in']}, s = {meta['s']:.3f}, "
        f"|I| = {meta['norm_out']:.3f} / {meta['norm_in']:.3f}"
    )
    if sanity:
        _print_sanity(client, session, meta["key"], out.with_suffix(".sanity.png"))


@app.command("sanity")
@one_line
def sanity_checks(
    session: str,
    key: str = typer.Argument(..., help="The saliency result's key (in its metadata)."),
    out: Path = typer.Option(..., help="The cascade strip, PNG."),
    max_similarity: float = typer.Option(0.5, help="A check passes below this similarity."),
    metric: str = typer.Option(
        "spearman_abs_and_signed",
        help="spearman_abs_and_signed (both ranks: the default), spearman, spearman_abs, ssim "
        "or hog.",
    ),
    max_features: int | None = typer.Option(None, help="Features per map (CPU default 32)."),
    timeout: float | None = TIMEOUT,
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """The sanity checks of a saliency result's maps (Adebayo et al. 2018): do they change
    when the model is randomised from the top, and when the readout is refit on permuted
    labels?"""
    client = _client(url, token)
    options: dict[str, object] = {"max_similarity": max_similarity, "metric": metric}
    if max_features is not None:
        options["max_features"] = max_features
    accepted = client.sanity(session, key, **options)
    if accepted.job is not None:
        _wait(client, accepted.job.id, f"sanity {key}", timeout)
    _print_sanity(client, session, key, out)


def _print_sanity(client: RigClient, session: str, key: str, out: Path) -> None:
    checks = client.sanity_result(session, key)
    out.write_bytes(client.download(f"/v1/sessions/{session}/saliency/{key}/sanity.png"))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    shown = ("spearman_abs", "spearman", "ssim", "hog")
    table.add_column("step")
    for name in shown:
        table.add_column(f"{name} out/in")
    steps = [*checks.model_steps, *([checks.data_step] if checks.data_step else [])]
    for step in steps:
        table.add_row(
            step.name,
            *(f"{getattr(step.out, n):.2f}/{getattr(step.in_, n):.2f}" for n in shown),
        )
    console.print(table)

    def word(ok: bool | None) -> str:
        return "not run" if ok is None else "passed" if ok else "FAILED"

    console.print(
        f"wrote {out}; {checks.metric} similarity to the original maps (passes below "
        f"{checks.max_similarity:g}): model randomisation {word(checks.model_passed)} "
        f"({checks.model_similarity:.2f}; {checks.model_verdict or '-'}), data randomisation "
        f"{word(checks.data_passed)}"
        + (f" ({checks.data_similarity:.2f})" if checks.data_similarity is not None else "")
    )
    if checks.emprt:
        console.print(
            f"eMPRT (complexity rise to the fully randomised model): out "
            f"{checks.emprt['out']:+.2f}, in {checks.emprt['in']:+.2f}"
        )


@app.command()
@one_line
def report(
    session: str, out: Path = typer.Option(...), url: str = URL, token: str | None = TOKEN
) -> None:
    """The session report, one HTML page."""
    out.write_text(_client(url, token).report(session))
    console.print(f"wrote {out}")


@app.command("export-nwb")
@one_line
def export_nwb(
    session: str,
    out: Path = typer.Option(..., help="The NWB file to write."),
    draft: bool = typer.Option(
        False, help="Export even when the animal's species, sex or age are missing."
    ),
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """The session as one NWB file, for the lab's archive and DANDI (README: "A session on
    the record")."""
    body, warning = _client(url, token).export_nwb(session, draft)
    out.write_bytes(body)
    if warning:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"wrote {out} ({len(body) / 2**20:.1f} MiB)")
