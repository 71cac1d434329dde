"""Tokens never reach a log line: the access log writes each request's path with its query
string, and a client that puts its token there (``?token=...``) would leave it in the log.
The request is refused anyway (tokens travel only in the Authorization header); this filter
makes sure the log does not keep what it was sent."""

from __future__ import annotations

import logging
import re

# a query parameter that carries a secret, and any token of ours wherever it appears
SECRET_PARAMETER = re.compile(
    r"(?i)([?&;](?:access_|api_|auth_|bearer_)?(?:token|key|auth|password|secret)[^=&;]*=)"
    r"[^&;\s\"]*"
)
OUR_TOKEN = re.compile(r"stl_[A-Za-z0-9_\-]{8,}")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with secrets in query parameters and every stimloop token replaced."""
    return OUR_TOKEN.sub("stl_" + REDACTED, SECRET_PARAMETER.sub(r"\1" + REDACTED, text))


class RedactTokens(logging.Filter):
    """Rewrites a record's message and string arguments through ``redact``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def install(names: tuple[str, ...] = ("uvicorn.access", "uvicorn.error", "stimloop")) -> None:
    """Add the filter to the loggers that write requests (once each)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
