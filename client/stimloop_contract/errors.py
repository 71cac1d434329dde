"""The one family of exceptions of the service client: catch ``StimloopError`` for all of them;
``TrialFileError`` for a trial file (a table, a recording) that cannot be used.

Each says in one line what went wrong and what to do; ``stimloop-rig`` prints that line and
exits non-zero (the traceback only with ``--debug``).
"""

from __future__ import annotations


class StimloopError(Exception):
    """Anything the client could not do. ``detail`` is the one line a person reads;
    ``status`` is the HTTP status when the server answered, else None."""

    status: int | None = None
    title: str = "error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ServiceUnreachableError(StimloopError):
    """No connection to the server (refused, unknown host, reset), after the retries."""

    def __init__(self, url: str, why: str) -> None:
        super().__init__(
            f"cannot reach the stimloop server at {url} ({why}); is it running, and is the "
            "address right (--url or STIMLOOP_URL)?"
        )
        self.url = url


class ServiceTimeoutError(StimloopError):
    """The server took longer than the client's timeout to answer."""

    def __init__(self, url: str, seconds: float) -> None:
        super().__init__(
            f"the stimloop server at {url} did not answer within {seconds:g} s; it may be "
            "overloaded: try again, or raise the client's timeout"
        )


class ProblemError(StimloopError):
    """The server refused the request: its problem+json (status, title, detail)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title = status, title

    def __str__(self) -> str:
        return f"{self.status} {self.title}: {self.detail}"


class JobFailedError(ProblemError):
    """The server reports the job failed or cancelled; ``detail`` says why."""


class TrialFileError(ValueError):
    """A trial file cannot be used; the message says where and why."""


class JobWaitTimeoutError(StimloopError, TimeoutError):
    """Waiting for a job ran past the caller's timeout; the job goes on on the server."""

    def __init__(self, job_id: str, state: str, seconds: float) -> None:
        super().__init__(
            f"job {job_id} is still {state} after {seconds:.0f} s; it goes on on the server: "
            f"`stimloop-rig job {job_id}` shows it, `--wait` follows it"
        )
        self.job_id = job_id
