"""The server speaks the API's language (routes, query strings); the operator types commands.
``in_cli_words`` turns the server's advice into the ``stimloop-rig`` command or option that
does the same, so a refusal at the rig says what to type."""

from __future__ import annotations

import re

# (the API's words, the CLI's): most specific first
_PHRASES: tuple[tuple[str, str], ...] = (
    (r"PUT \.\.\./phase1\?replace=true", "`stimloop-rig phase1 SESSION FILE --replace`"),
    (r"PUT \.\.\./phase2\?replace=true", "`stimloop-rig phase2 SESSION FILE --replace`"),
    (r"PUT \.\.\./phase2 again", "`stimloop-rig phase2 SESSION FILE` again"),
    (r"PUT \.\.\./phase1 again", "`stimloop-rig phase1 SESSION FILE` again"),
    (r"add \?replace=true", "add --replace"),
    (r"\?replace=true", "--replace"),
    (r"POST \.\.\./fit", "`stimloop-rig refit SESSION`"),
    (r"POST \.\.\./phase3", "`stimloop-rig phase-three-list SESSION`"),
    (
        r"POST \.\.\./saliency with \{\"channel\": \"([^\"]+)\"\}",
        r"`stimloop-rig saliency SESSION --channel \1`",
    ),
    (r"POST \.\.\./saliency for each channel", "`stimloop-rig saliency` for each channel"),
    (r"POST \.\.\./saliency", "`stimloop-rig saliency`"),
    (r" \(the rig's `stimloop-rig saliency`\)", ""),
    (r"upload phase two", "`stimloop-rig phase2 SESSION FILE`"),
    (r"upload phase one", "`stimloop-rig phase1 SESSION FILE`"),
    (r"name x_out and x_in", "give --x-out and --x-in"),
    (
        r"send 'Authorization: Bearer <token>'",
        "give the token with --token or STIMLOOP_TOKEN",
    ),
)


def in_cli_words(detail: str) -> str:
    """``detail`` with the API's routes and query strings replaced by the commands."""
    for pattern, replacement in _PHRASES:
        detail = re.sub(pattern, replacement, detail)
    return detail
