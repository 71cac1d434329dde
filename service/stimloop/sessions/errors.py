"""What a session cannot do, said so that a person can act on it.

Each error carries a short ``title`` and a ``detail`` that says what was wrong and what to do.
The API answers each class with its own status (``api.errors``); here nothing knows of HTTP.
They cross process boundaries (an upload is read in a separate process), so they pickle.
"""

from __future__ import annotations


class SessionError(Exception):
    """Something asked of a session that it cannot do; ``detail`` says what to do instead."""

    title = "Refused"

    def __init__(self, detail: str, title: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.title = title or type(self).title

    def __reduce__(self):  # raised in the upload process, re-raised in the API's
        return (type(self), (self.detail, self.title))


class StateConflictError(SessionError):
    """The session's state (or what it already holds) does not allow this now."""

    title = "Conflict"


class ForbiddenError(SessionError):
    """The caller's role may not do this (an analyst cancelling the rig's fit)."""

    title = "Forbidden"


class UnknownItemError(SessionError):
    """A channel, image or backbone the request names is not the session's or not known."""

    title = "Not found"


class InvalidInputError(SessionError):
    """The trials or settings sent cannot be used (a caller's mistake in the content)."""

    title = "Invalid trials"


class UnsupportedMediaError(SessionError):
    """The body is of a kind the service does not read."""

    title = "Unsupported media type"
