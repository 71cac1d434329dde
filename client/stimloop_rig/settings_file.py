"""A session's settings for ``stimloop-rig create-session``: a JSON or TOML file (``--config``)
and the options people change most (``--split``, ``--epochs``, ``--lr``), checked here so that
a bad file is one clear line, not a traceback."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

MAX_BYTES = 64 * 1024
SECTIONS = ("fit", "inclusion", "selection", "analysis", "windows")
EXAMPLE = '{"fit": {"split": [80, 20, 20], "epochs": 2500}, "selection": {"stability_images": 20}}'


class SettingsFileError(ValueError):
    """A settings file or option that cannot be used; the message says how to write it."""


def read_settings_file(path: Path) -> dict[str, Any]:
    """The settings of a ``.json`` or ``.toml`` file (other names: JSON, then TOML)."""
    try:
        if Path(path).stat().st_size > MAX_BYTES:
            raise SettingsFileError(
                f"{path}: over {MAX_BYTES // 1024} KiB; a session's settings take a few lines, "
                f"e.g. {EXAMPLE}"
            )
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsFileError(f"{path}: cannot read it ({exc})") from None
    suffix = Path(path).suffix
    kinds: tuple[str, ...] = {".toml": ("TOML",), ".json": ("JSON",)}.get(suffix, ("JSON", "TOML"))
    errors = []
    for kind in kinds:
        try:
            data = json.loads(text) if kind == "JSON" else tomllib.loads(text)
            break
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            errors.append(f"not valid {kind}: {exc}")
        except RecursionError:
            errors.append(f"{kind} nested too deep (sections hold plain values and lists)")
    else:
        raise SettingsFileError(
            f"{path}: {'; '.join(errors)}. The file holds the session's settings by section, "
            f"e.g. {EXAMPLE}"
        )
    if not isinstance(data, dict):
        raise SettingsFileError(f"{path}: the settings must be an object, e.g. {EXAMPLE}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise SettingsFileError(
            f"{path}: unknown section(s) {unknown}; the sections are {', '.join(SECTIONS)}"
        )
    return data


def session_settings(
    config: Path | None,
    *,
    split: str | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    calibration: int | None = None,
) -> dict[str, Any]:
    """The settings a session is created with: the file's, then the options over its fit
    (and the selection's calibration images)."""
    settings = read_settings_file(config) if config else {}
    if calibration is not None:
        settings["selection"] = {**(settings.get("selection") or {}), "calibration": calibration}
    fit = dict(settings.get("fit") or {})
    if split is not None:
        try:
            sizes = [int(v) for v in split.split(",")]
        except ValueError:
            sizes = []
        if len(sizes) != 3:
            raise SettingsFileError(
                f"--split {split!r}: give three numbers, train,validation,test images of the "
                "preferred set, e.g. --split 80,20,20"
            )
        fit["split"] = sizes
    if epochs is not None:
        fit["epochs"] = epochs
    if lr is not None:
        fit["lr"] = lr
    return {**settings, **({"fit": fit} if fit else {})}
