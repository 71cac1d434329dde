"""The backbone registry, ``models_store/backbones.toml``: names to ``BackboneSpec``s."""

from __future__ import annotations

import logging
import os
import tempfile
import tomllib
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from stimloop.science.backbone_spec import BackboneError, BackboneSpec, file_sha256

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


_CHECKED: dict[tuple[str, int, float], str] = {}  # (path, size, mtime) -> sha256


def weights_problem(spec: BackboneSpec, weights_dir: Path) -> str | None:
    """Why the backbone's weights cannot be used (missing, or not the sha256 the registry
    names), in words that say what to do; None when they can (or it needs no file). The
    file's hash is remembered while the file is unchanged."""
    if spec.format == "random":
        return None
    path = Path(weights_dir) / str(spec.weights)
    if not path.is_file():
        return (
            f"the weights of backbone {spec.name!r} are missing: copy the lab's file to {path} "
            "(nothing is downloaded; see the README's 'Backbones and weights'), or use "
            "resnet50_random, the stand-in, for a test"
        )
    if spec.sha256:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime)
        if key not in _CHECKED:
            _CHECKED[key] = file_sha256(path)
        if _CHECKED[key] != spec.sha256.lower():
            return (
                f"the weights file {path} of backbone {spec.name!r} has sha256 "
                f"{_CHECKED[key][:16]}..., not the registry's {spec.sha256[:16]}...: replace it "
                "with the right file, or correct backbones.toml"
            )
    return None
