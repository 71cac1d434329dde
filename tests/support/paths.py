"""Where things are: the repository, the packaged backbone registry, this Python's commands."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # this Python's commands: stimloop, stimloop-rig
REGISTRY = REPO / "service" / "stimloop" / "defaults" / "backbones.toml"  # the packaged default
