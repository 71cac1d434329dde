"""The backbone registry, ``models_store/backbones.toml``: names to ``BackboneSpec``s."""

from __future__ import annotations

import tomllib
from pathlib import Path

from service.science.backbone import (
    Backbone,
    BackboneError,
    BackboneSpec,
    detect_format,
    load_backbone,
    read_checkpoint,
)


def load_registry(path: Path) -> dict[str, BackboneSpec]:
    """Parse the registry; raise ``BackboneError`` naming the file and the bad entry."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BackboneError(f"backbone registry {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise BackboneError(f"backbone registry {path} is not valid TOML: {exc}") from exc
    entries = data.get("backbones", {})
    return {name: BackboneSpec.from_mapping(name, entry) for name, entry in entries.items()}


def spec_for(name_or_path: str, registry: dict[str, BackboneSpec]) -> tuple[BackboneSpec, Path]:
    """A registry name, or a path to a weights file (format detected from its contents).

    Returns the spec and the folder its ``weights`` file name is relative to.
    """
    if name_or_path in registry:
        return registry[name_or_path], Path()
    path = Path(name_or_path)
    if not path.is_file():
        known = ", ".join(sorted(registry)) or "none"
        raise BackboneError(
            f"{name_or_path!r} is neither a backbone in the registry (known: {known}) "
            "nor an existing weights file"
        )
    fmt = detect_format(read_checkpoint(path))
    return BackboneSpec(name=path.stem, format=fmt, weights=path.name), path.parent


def open_backbone(
    name_or_path: str, registry_path: Path, weights_dir: Path, device: str = "auto"
) -> Backbone:
    """Load a backbone by registry name or weights path."""
    registry = load_registry(registry_path)
    spec, folder = spec_for(name_or_path, registry)
    return load_backbone(spec, weights_dir if name_or_path in registry else folder, device)
