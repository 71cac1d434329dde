"""Bearer tokens with roles. Only each token's sha256 is stored (``tokens.json``).

``rig``: registers stimulus sets, precomputes activations, creates sessions and uploads their
phases, and reads them. ``analyst``: reads everything and asks for saliency maps.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

from stimloop.storage.atomic import write_atomic
from stimloop.storage.session_states import now

ROLES = ("rig", "analyst")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def read_tokens(path: Path) -> list[dict[str, Any]]:
    if not Path(path).is_file():
        return []
    return json.loads(Path(path).read_text()).get("tokens", [])


def create_token(path: Path, role: str, name: str) -> str:
    """A new token for ``role``; printed once by the CLI, stored only as a hash."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    token = f"stl_{secrets.token_urlsafe(32)}"
    tokens = read_tokens(path)
    tokens.append({"sha256": digest(token), "role": role, "name": name, "created": now()})
    write_atomic(Path(path), json.dumps({"tokens": tokens}, indent=1).encode())
    return token


def role_of(path: Path, token: str) -> dict[str, Any] | None:
    wanted = digest(token)
    for entry in read_tokens(path):
        if secrets.compare_digest(entry["sha256"], wanted):
            return entry
    return None
