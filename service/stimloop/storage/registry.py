"""The backbone registry, ``models_store/backbones.toml``: names to ``BackboneSpec``s."""

from __future__ import annotations

import logging
import os
import tempfile
import tomllib
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from stimloop.science.backbone_spec import BackboneError, BackboneSpec

if TYPE_CHECKING:  # loading weights needs torch; reading the registry does not (the API)
    from stimloop.science.backbone import Backbone

log = logging.getLogger("stimloop.storage.registry")


def default_registry_path() -> Path:
    """The registry shipped with the package (``stimloop/defaults/backbones.toml``)."""
    return Path(str(resources.files("stimloop").joinpath("defaults", "backbones.toml")))


def default_registry_text() -> str:
    return default_registry_path().read_text()


def ensure_registry(path: Path) -> bool:
    """Give a models store without a registry the packaged default; True if it was copied in.

    Written atomically (a temporary file renamed into place), so racing processes each see
    either no file or a whole one; an existing registry is never touched.
    """
    path = Path(path)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".backbones.", suffix=".toml")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(default_registry_text())
        if path.exists():  # another process was first
            return False
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("no backbone registry in %s: copied in the packaged default", path.parent)
    return True


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
    from stimloop.science.backbone import detect_format, read_checkpoint

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
    from stimloop.science.backbone import load_backbone

    registry = load_registry(registry_path)
    spec, folder = spec_for(name_or_path, registry)
    return load_backbone(spec, weights_dir if name_or_path in registry else folder, device)
