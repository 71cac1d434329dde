"""``stimloop``: the server-side command line (stimuli, backbones, activations, demo)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from stimloop_contract.configs import ReadoutConfig

from stimloop.runtime.settings import Settings
from stimloop.runtime.threads import bound_threads

bound_threads()  # before any command loads numpy or torch; workers inherit it

app = typer.Typer(
    help="stimloop: closed-loop stimulus selection for body-selective neurons.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
stimuli_app = typer.Typer(
    help="Procedural stimulus sets for demos and tests.", no_args_is_help=True
)
backbone_app = typer.Typer(
    help="Backbones listed in models_store/backbones.toml.", no_args_is_help=True
)
activations_app = typer.Typer(help="Backbone activations of stimulus sets.", no_args_is_help=True)
app.add_typer(stimuli_app, name="stimuli")
app.add_typer(backbone_app, name="backbone")
app.add_typer(activations_app, name="activations")

PAPER_FIT = ReadoutConfig()  # the paper's defaults, written once in the contract's configs
console = Console()
log = logging.getLogger("stimloop")

RANDOM_BACKBONE_NOTE = (
    "[yellow]Backbone resnet50_random is a seeded random-init ResNet-50, a stand-in: "
    "its features are not the paper's. Put the lab's weights into models_store/weights/ "
    "and use resnet50_robust_l2_eps3 for real sessions.[/yellow]"
)


class RateColumn(ProgressColumn):
    """Items per second over the task so far."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        speed = task.completed / elapsed if elapsed else None
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="cyan")


@contextmanager
def progress_bar(description: str, total: int, unit: str = "images") -> Iterator[Callable]:
    """A rich progress bar; yields ``update(done, total)`` for the science's callbacks."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code=2)


# --------------------------------------------------------------------------- stimuli


@stimuli_app.command("generate")
def stimuli_generate(
    out: Path = typer.Option(
        ...,
        "--out",
        resolve_path=True,
        help="Folder for the sets: one subfolder per set, each with its PNGs and manifest.json.",
    ),
    bodies: int = typer.Option(475, "--bodies", help="Monkey-avatar bodies (at most 720)."),
    objects: int = typer.Option(100, "--objects", help="Non-body objects."),
    control_bodies: int = typer.Option(40, "--control-bodies", help="Bodies of other species."),
    faces: int = typer.Option(0, "--faces", help="Monkey-like faces (for a face patch)."),
    control_faces: int = typer.Option(
        0, "--control-faces", help="Faces of other individuals (a face patch's controls)."
    ),
    seed: int = typer.Option(0, "--seed", help="The same seed gives the same images."),
) -> None:
    """Write deterministic procedural stimulus sets (280 px, gray background), one folder per
    set named for what it holds (bodies/, objects/, controls/, faces/, control_faces/), each
    ready to register with its category."""
    from stimloop.science import stimuli
    from stimloop.storage.stimulus_sets import write_stimulus_set

    if not 0 <= bodies <= stimuli.N_POSES * stimuli.N_VIEWS:
        raise fail(f"--bodies must be between 0 and {stimuli.N_POSES * stimuli.N_VIEWS}")
    sets = [
        ("bodies", "body", bodies, stimuli.generate_bodies),
        ("objects", "object", objects, stimuli.generate_objects),
        ("controls", "control_body", control_bodies, stimuli.generate_control_bodies),
        ("faces", "face", faces, stimuli.generate_faces),
        (
            "control_faces",
            "control_face",
            control_faces,
            lambda n, s: stimuli.generate_faces(n, s, "control_face"),
        ),
    ]
    total = sum(n for _, _, n, _ in sets)
    written = []
    with progress_bar("drawing stimuli", total) as update:
        done = 0
        for folder, category, n, maker in sets:
            if n <= 0:
                continue
            about = {"generator": "procedural", "seed": seed, "category": category}
            write_stimulus_set(out / folder, maker(n, seed), about)
            written.append((folder, category, n))
            done += n
            update(done, total)
    for folder, category, n in written:
        console.print(f"{out / folder}: {n} images, category {category}")
    console.print(f"(seed {seed}; register each folder as a set of its category)")


@stimuli_app.command("silhouettes")
def stimuli_silhouettes(
    images: Path = typer.Option(..., resolve_path=True, help="Stimulus folder (e.g. the bodies)."),
    out: Path = typer.Option(
        ..., resolve_path=True, help="Folder for the silhouettes, same ids and file names."
    ),
) -> None:
    """Silhouettes of a stimulus folder: the foreground as a flat dark shape on the same gray
    background (the training augmentation of paper sec. 4)."""
    import hashlib

    import numpy as np

    from stimloop.science.backbone import ImageError, read_image
    from stimloop.science.images import encode_png, silhouette
    from stimloop.storage.atomic import write_atomic
    from stimloop.storage.stimulus_sets import StimulusEntry, read_stimulus_set

    entries = read_stimulus_set(images)
    written = []
    with progress_bar("silhouettes", len(entries)) as update:
        for i, entry in enumerate(entries):
            try:
                array = np.asarray(read_image(images / entry.file).convert("RGB"))
            except ImageError as exc:
                raise fail(str(exc)) from None
            data = encode_png(silhouette(array))
            file = f"{entry.id}.png"
            write_atomic(out / file, data)
            written.append(
                StimulusEntry(entry.id, file, "silhouette", hashlib.sha256(data).hexdigest())
            )
            update(i + 1, len(entries))
    import json
    from dataclasses import asdict

    manifest = {
        "generator": "silhouette",
        "source": str(images),
        "stimuli": [asdict(e) for e in written],
    }
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=1).encode())
    console.print(f"wrote {len(written)} silhouettes to {out}")


# --------------------------------------------------------------------------- backbones


@backbone_app.command("list")
def backbone_list() -> None:
    """The registry's backbones and whether their weights are in place."""
    from stimloop.storage.registry import ensure_registry, load_registry

    settings = Settings()
    ensure_registry(settings.registry_path)
    table = Table("name", "format", "weights", "present", "description")
    for spec in load_registry(settings.registry_path).values():
        present = spec.format == "random" or (settings.weights_dir / (spec.weights or "")).is_file()
        table.add_row(
            spec.name,
            spec.format,
            spec.weights or "-",
            "yes" if present else "no",
            spec.description,
        )
    console.print(table)


@backbone_app.command("check")
def backbone_check(
    name: str = typer.Argument(..., help="A backbone name from backbones.toml, or a weights file."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    images: int = typer.Option(8, help="Random images to time the forward on."),
) -> None:
    """Load a backbone and print its format, sha256, parameter count, output shape and speed."""
    import torch

    from stimloop.science.backbone import BackboneError, forward_features
    from stimloop.storage.registry import ensure_registry, open_backbone

    settings = Settings()
    ensure_registry(settings.registry_path)
    try:
        backbone = open_backbone(name, settings.registry_path, settings.weights_dir, device)
    except BackboneError as exc:
        raise fail(str(exc)) from None
    size = backbone.spec.input_size
    batch = torch.rand(images, 3, size, size, generator=torch.Generator().manual_seed(0))
    forward_features(backbone.model, batch[:1])  # warm-up
    start = time.perf_counter()
    out = forward_features(backbone.model, batch)
    seconds = (time.perf_counter() - start) / images
    table = Table(show_header=False)
    table.add_column("key", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in [
        ("name", backbone.spec.name),
        ("format", backbone.spec.format),
        ("weights sha256", backbone.weights_sha256),
        ("parameters", f"{backbone.parameter_count:,} (trunk up to {backbone.spec.layer})"),
        ("layer", backbone.spec.layer),
        ("output shape", str(list(out.shape[1:]))),
        ("device", str(backbone.device)),
        ("seconds per image", f"{seconds:.4f} (batch of {images}, fp32)"),
    ]:
        table.add_row(key, value)
    console.print(table)
    if backbone.spec.format == "random":
        console.print(RANDOM_BACKBONE_NOTE)


# --------------------------------------------------------------------------- activations


def extract_folder(backbone_name: str, images: Path, settings: Settings, label: str = "extracting"):
    """Features of every image in a stimulus folder, with a progress bar."""
    from stimloop.science.backbone import extract_features
    from stimloop.storage.activations import Activations
    from stimloop.storage.registry import ensure_registry, open_backbone
    from stimloop.storage.stimulus_sets import read_stimulus_set

    ensure_registry(settings.registry_path)
    backbone = open_backbone(
        backbone_name, settings.registry_path, settings.weights_dir, settings.device
    )
    entries = read_stimulus_set(images)
    paths = [images / e.file for e in entries]
    with progress_bar(label, len(paths)) as update:
        features = extract_features(
            backbone,
            paths,
            batch_size=settings.batch_size,
            precision=settings.precision,
            progress=update,
        )
    return backbone, Activations(
        ids=[e.id for e in entries],
        features=features,
        image_sha256=[e.sha256 for e in entries],
        backbone=backbone.spec.name,
        weights_sha256=backbone.weights_sha256,
        precision=settings.precision,
    )


@activations_app.command("extract")
def activations_extract(
    backbone: str = typer.Option("resnet50_random", help="Backbone name or weights file."),
    images: Path = typer.Option(
        ..., resolve_path=True, help="Stimulus folder (with or without manifest.json)."
    ),
    out: Path = typer.Option(..., resolve_path=True, help="NPZ file to write."),
    batch_size: int = typer.Option(32, min=1),
    precision: str = typer.Option("fp32", help="fp32 (paper), bf16 or fp16 autocast."),
    device: str = typer.Option("auto"),
) -> None:
    """Extract layer4.1 features [N, 2048, 7, 7] (float16) of a stimulus folder into an NPZ."""
    from stimloop.science.backbone import BackboneError, ImageError
    from stimloop.storage.activations import save_activations

    settings = Settings.model_validate(
        {"batch_size": batch_size, "precision": precision, "device": device}
    )
    try:
        model, act = extract_folder(backbone, images, settings)
    except (BackboneError, ImageError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    save_activations(out, act)
    console.print(
        f"wrote {out}: {len(act.ids)} x {list(act.features.shape[1:])} float16, backbone "
        f"{act.backbone} (weights sha256 {act.weights_sha256[:12]}...)"
    )
    if model.spec.format == "random":
        console.print(RANDOM_BACKBONE_NOTE)


# --------------------------------------------------------------------------- fit


@app.command()
def fit(
    activations: Path = typer.Option(
        ..., resolve_path=True, help="NPZ of the bodies' activations."
    ),
    trials: Path = typer.Option(
        ..., resolve_path=True, help="Trial table (.csv or .npz) of phase one."
    ),
    out: Path = typer.Option(
        ..., resolve_path=True, help="Folder for readouts.npz/json and channels.csv."
    ),
    silhouette_activations: Path | None = typer.Option(
        None,
        resolve_path=True,
        help="NPZ of the bodies' silhouettes (same ids); without it, no augmentation.",
    ),
    epochs: int = typer.Option(PAPER_FIT.epochs, min=1, help="The paper's by default."),
    lr: float = typer.Option(PAPER_FIT.lr, help="Adam learning rate (the paper's by default)."),
    split: str = typer.Option(
        ",".join(map(str, PAPER_FIT.split)),
        help="Train,validation,test images of the preferred set (the paper's by default).",
    ),
    seed: int = typer.Option(0, help="Seed for the split, the split-half tests and the fit."),
    device: str = typer.Option("auto"),
) -> None:
    """Fit one readout per included channel: activations + a trial table in, models out."""
    import json

    from stimloop_contract.errors import TrialFileError
    from stimloop_contract.trial_tables import read_trial_table

    from stimloop.science.backbone import resolve_device
    from stimloop.science.responses import trials_from_columns
    from stimloop.storage.activations import load_activations
    from stimloop.storage.atomic import write_atomic
    from stimloop.storage.session import save_readout
    from stimloop.worker.fitting import channel_rows, fit_recording, rows_to_csv

    try:
        sizes = tuple(int(v) for v in split.split(","))
        config = ReadoutConfig(lr=lr, epochs=epochs, split=sizes)  # type: ignore[arg-type]
        table = trials_from_columns(read_trial_table(trials))
    except (ValueError, TrialFileError) as exc:
        raise fail(str(exc)) from None
    act = load_activations(activations)
    sil = load_activations(silhouette_activations) if silhouette_activations else None
    with progress_bar("fitting", epochs, unit="epochs") as update:
        last = {"loss": float("nan")}

        def report(epoch: int, total: int, best: float) -> None:
            last["loss"] = best
            update(epoch, total)

        try:
            result = fit_recording(
                act,
                table,
                silhouettes=sil,
                readout=config,
                seed=seed,
                device=str(resolve_device(device)),
                progress=report,
            )
        except (KeyError, ValueError) as exc:
            raise fail(str(exc).strip("'\"")) from None
    rows = channel_rows(result)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "channels.csv", rows_to_csv(rows).encode())
    if result.readout is not None:
        save_readout(out, result.readout)
    summary = {
        "seed": seed,
        "backbone": act.backbone,
        "weights_sha256": act.weights_sha256,
        "included": result.included,
        "channels": len(rows),
    }
    write_atomic(out / "fit.json", json.dumps(summary, indent=1).encode())
    table_view = Table("channel", "included", "test r", "test p", "val r", "best epoch", "reason")

    def fmt(row: dict, key: str) -> str:
        return f"{row[key]:.3g}" if key in row else "-"

    for row in rows:
        table_view.add_row(
            str(row["channel"]),
            "yes" if row["included"] else "no",
            fmt(row, "r_test"),
            fmt(row, "p_test"),
            fmt(row, "r_val"),
            str(row.get("best_epoch", "-")),
            str(row["reason"]),
        )
    console.print(table_view)
    console.print(f"best validation loss (standardised, mean over channels): {last['loss']:.4g}")
    console.print(
        f"wrote {out}/channels.csv, readouts.npz, readouts.json (seed {seed}, "
        f"weights sha256 {act.weights_sha256[:12]}...)"
    )


# --------------------------------------------------------------------------- demo


@app.command()
def demo(
    out: Path = typer.Option(
        Path("demo_output"), resolve_path=True, help="Folder for the demo's files (replaced)."
    ),
    quick: bool = typer.Option(False, help="A smaller set and a shorter fit (about 2 minutes)."),
    seed: int = typer.Option(0),
    category: str = typer.Option(
        "bodies",
        help="What the synthetic channels prefer: bodies (the paper's sets) or faces (faces, "
        "other monkeys' faces as controls, objects and bodies as other categories).",
    ),
) -> None:
    """The whole loop over HTTP: procedural stimuli, synthetic channels, the embedded service,
    the rig client; writes the phase-two list and the report."""
    from stimloop.demo import CATEGORIES, run_demo

    if category not in CATEGORIES:
        raise fail(f"--category must be one of {', '.join(CATEGORIES)}, not {category!r}")
    logging.basicConfig(level=logging.WARNING)
    run_demo(out, quick=quick, seed=seed, console=console, category=category)


# --------------------------------------------------------------------------- service

token_app = typer.Typer(help="API tokens (bearer, with a role).", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    role: str = typer.Option(
        ..., help="rig (create and write sessions) or analyst (read, saliency)."
    ),
    name: str = typer.Option("", help="Who or what the token is for."),
) -> None:
    """Create a token; it is printed once, only its hash is stored."""
    from stimloop.api.auth import create_token

    settings = Settings()
    try:
        token = create_token(settings.tokens_path, role, name or role)
    except ValueError as exc:
        raise fail(str(exc)) from None
    console.print(f"{role} token (shown once, stored as a hash in {settings.tokens_path}):")
    print(token)


@app.command("serve")
def serve_command(
    workers: int = typer.Option(1, min=0, help="Worker processes to start beside the API."),
    host: str = typer.Option(None, help="Bind address (default STIMLOOP_HOST or 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default STIMLOOP_PORT or 8000)."),
) -> None:
    """The API, N workers, and a private Redis when STIMLOOP_REDIS_URL is unset."""
    from stimloop.serve import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    try:
        serve(settings.model_copy(update=updates), workers=workers)
    except RuntimeError as exc:  # no Redis binary, a locked Redis folder, Redis would not start
        raise fail(str(exc)) from None


@app.command("worker")
def worker_command(
    redis_url: str = typer.Option(
        None, help="Redis to take jobs from (default STIMLOOP_REDIS_URL)."
    ),
    burst: bool = typer.Option(False, help="Stop when the queue is empty."),
    name: str = typer.Option(None, help="Worker name (default: generated)."),
) -> None:
    """One worker: loads backbones once, keeps them on its GPU, runs jobs in-process."""
    from stimloop.serve import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    if redis_url:
        settings = settings.model_copy(update={"redis_url": redis_url})
    if not settings.redis_url:
        raise fail("a worker needs Redis: pass --redis-url or set STIMLOOP_REDIS_URL")
    run_worker(settings, burst=burst, name=name)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    app()


# --------------------------------------------------------------------------- the record

export_app = typer.Typer(help="A session for the archive.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("nwb")
def export_nwb_command(
    session: str = typer.Argument(..., help="The session's id (12 characters 0-9, a-f)."),
    out: Path | None = typer.Option(
        None, help="The NWB file to write (default: SESSION.nwb here)."
    ),
    draft: bool = typer.Option(
        False, help="Export even when the animal's species, sex or age are missing."
    ),
) -> None:
    """The session as one NWB file: the animal, every image shown, each phase's trials, the
    loop's decisions, the analysis, the maps and the provenance (README: "A session on the
    record")."""
    from stimloop.sessions.errors import SessionError
    from stimloop.sessions.nwb_export import export_nwb
    from stimloop.storage.session import SESSION_ID, NotFoundError
    from stimloop.storage.store import Store

    if not SESSION_ID.fullmatch(session):
        raise fail(f"{session!r} is not a session id: 12 characters 0-9 and a-f")
    settings = Settings()
    target = (out or Path(f"{session}.nwb")).resolve()
    try:
        with console.status(f"writing {target}"):
            warnings = export_nwb(Store(settings.models_store), session, target, draft)
    except (SessionError, NotFoundError) as exc:
        raise fail(getattr(exc, "detail", str(exc))) from None
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"{target} written ({target.stat().st_size / 2**20:.1f} MiB)")
