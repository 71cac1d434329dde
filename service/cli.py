"""``stimloop``: the server-side command line (stimuli, backbones, activations, demo)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
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

from service.settings import Settings

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
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


# --------------------------------------------------------------------------- stimuli


@stimuli_app.command("generate")
def stimuli_generate(
    out: Path = typer.Option(..., "--out", help="Folder to write the PNGs and manifest.json into."),
    bodies: int = typer.Option(475, "--bodies", help="Monkey-avatar bodies (at most 720)."),
    objects: int = typer.Option(100, "--objects", help="Non-body objects."),
    control_bodies: int = typer.Option(40, "--control-bodies", help="Bodies of other species."),
    seed: int = typer.Option(0, "--seed", help="The same seed gives the same images."),
) -> None:
    """Write a deterministic procedural stimulus set (280 px, gray background) and its manifest."""
    from service.science import stimuli
    from service.stimulus_sets import write_stimulus_set

    if not 0 <= bodies <= stimuli.N_POSES * stimuli.N_VIEWS:
        raise fail(f"--bodies must be between 0 and {stimuli.N_POSES * stimuli.N_VIEWS}")
    total = bodies + objects + control_bodies
    with progress_bar("drawing stimuli", total) as update:
        generated = []
        for maker, n in (
            (stimuli.generate_bodies, bodies),
            (stimuli.generate_objects, objects),
            (stimuli.generate_control_bodies, control_bodies),
        ):
            generated += maker(n, seed)
            update(len(generated), total)
        entries = write_stimulus_set(out, generated, {"generator": "procedural", "seed": seed})
    console.print(f"wrote {len(entries)} images and manifest.json to {out} (seed {seed})")


# --------------------------------------------------------------------------- backbones


@backbone_app.command("list")
def backbone_list() -> None:
    """The registry's backbones and whether their weights are in place."""
    from service.registry import load_registry

    settings = Settings()
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

    from service.registry import open_backbone
    from service.science.backbone import BackboneError, forward_features

    settings = Settings()
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
    from service.activations import Activations
    from service.registry import open_backbone
    from service.science.backbone import extract_features
    from service.stimulus_sets import read_stimulus_set

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
    images: Path = typer.Option(..., help="Stimulus folder (with or without manifest.json)."),
    out: Path = typer.Option(..., help="NPZ file to write."),
    batch_size: int = typer.Option(32, min=1),
    precision: str = typer.Option("fp32", help="fp32 (paper), bf16 or fp16 autocast."),
    device: str = typer.Option("auto"),
) -> None:
    """Extract layer4.1 features [N, 2048, 7, 7] (float16) of a stimulus folder into an NPZ."""
    from service.activations import save_activations
    from service.science.backbone import BackboneError, ImageError

    settings = Settings(batch_size=batch_size, precision=precision, device=device)
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


# --------------------------------------------------------------------------- demo


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_output"), help="Folder for the demo's files."),
    quick: bool = typer.Option(False, help="A smaller set, for a first look."),
    seed: int = typer.Option(0),
) -> None:
    """Generate a small procedural stimulus set and extract its activations."""
    from service.activations import save_activations

    console.print(
        "[bold]stimloop demo[/bold]: procedural stimuli (not the lab's images), "
        "the random stand-in backbone."
    )
    counts = (12, 6, 6) if quick else (48, 24, 16)
    stimuli_dir = out / "stimuli"
    stimuli_generate(
        out=stimuli_dir, bodies=counts[0], objects=counts[1], control_bodies=counts[2], seed=seed
    )
    settings = Settings()
    _, act = extract_folder("resnet50_random", stimuli_dir, settings)
    save_activations(out / "activations.npz", act)
    console.print(f"activations: {out / 'activations.npz'} {list(act.features.shape)}")
    console.print(RANDOM_BACKBONE_NOTE)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
