"""``RigClient``: the stimloop service from the rig and the analysis machines (torch-free).

One method per operation, typed results, timeouts, and retries with exponential backoff on
connection errors and 5xx answers, for idempotent requests only: reads, uploads (the server
recognises the same trials by their content and stores them once), set registrations, and a
session's creation, which carries an ``Idempotency-Key`` so a retried create returns the first
session. Other POSTs (start a job) are sent once.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from stimloop.api.schemas import Accepted, JobInfo, SessionInfo, StimulusSetInfo

from stimloop_rig.readers import read_trials

ProgressCallback = Callable[[JobInfo], None]


class StimloopError(Exception):
    """The service refused a request; ``status`` and ``detail`` come from its problem+json."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail = status, title, detail


class JobFailedError(StimloopError):
    """A job ended failed or cancelled."""


class RigClient:
    """A client bound to one server URL and token."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )
        self.retries, self.backoff = retries, backoff

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RigClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def request(
        self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send; raise ``StimloopError`` on 4xx and 5xx. Connection errors and 5xx are retried
        for idempotent requests (``idempotent``; default: GET, PUT, DELETE and requests with
        an ``Idempotency-Key``), a POST that starts work is sent once."""
        if idempotent is None:
            keyed = "Idempotency-Key" in (kwargs.get("headers") or {})
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE") or keyed
        retries = self.retries if idempotent else 0
        delay = self.backoff
        for attempt in range(retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt == retries:
                    raise
            else:
                if response.status_code < 500 or attempt == retries:
                    break
            time.sleep(delay)
            delay *= 2
        if response.status_code >= 400:
            try:
                body = response.json()
                raise StimloopError(
                    response.status_code,
                    body.get("title", "error"),
                    body.get("detail", response.text),
                )
            except ValueError:
                raise StimloopError(response.status_code, "error", response.text) from None
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # ------------------------------------------------------------------ resources

    def health(self) -> dict[str, Any]:
        return self.json("GET", "/v1/health")

    def backbones(self) -> list[dict[str, Any]]:
        return self.json("GET", "/v1/backbones")

    def register_set(self, set_id: str, category: str, directory: str) -> StimulusSetInfo:
        body = {"id": set_id, "category": category, "directory": directory}
        # the same set again is answered 200 with the stored set: safe to retry
        return StimulusSetInfo(**self.json("POST", "/v1/stimulus-sets", json=body, idempotent=True))

    def upload_set(self, set_id: str, category: str, zip_bytes: bytes) -> StimulusSetInfo:
        return StimulusSetInfo(
            **self.json(
                "POST",
                "/v1/stimulus-sets/upload",
                idempotent=True,  # the same zip again is answered 200
                params={"id": set_id, "category": category},
                content=zip_bytes,
                headers={"content-type": "application/zip"},
            )
        )

    def stimulus_sets(self) -> list[StimulusSetInfo]:
        return [StimulusSetInfo(**s) for s in self.json("GET", "/v1/stimulus-sets")]

    def precompute(self, backbone: str, set_id: str) -> JobInfo:
        body = {"backbone": backbone, "stimulus_set": set_id}
        return Accepted(**self.json("POST", "/v1/activations", json=body)).job  # type: ignore

    def create_session(self, **config: Any) -> SessionInfo:
        """Create a session; retried with one idempotency key, so it is created once."""
        key = {"Idempotency-Key": uuid.uuid4().hex}
        return SessionInfo(**self.json("POST", "/v1/sessions", json=config, headers=key))

    def session(self, session_id: str) -> SessionInfo:
        return SessionInfo(**self.json("GET", f"/v1/sessions/{session_id}"))

    def upload_phase(
        self, session_id: str, phase: int, columns: dict[str, np.ndarray], replace: bool = False
    ) -> Accepted:
        """Upload one phase's trial columns (as NPZ; phase 1, 2 or 3); safe to retry."""
        buffer = io.BytesIO()
        arrays: dict[str, Any] = {k: np.asarray(v) for k, v in columns.items()}
        np.savez(buffer, **arrays)
        path = f"/v1/sessions/{session_id}/phase{phase}" + ("/trials" if phase == 3 else "")
        return Accepted(
            **self.json(
                "PUT",
                path,
                content=buffer.getvalue(),
                params={"replace": "true"} if replace else None,
                headers={"content-type": "application/x-npz"},
            )
        )

    def upload_file(
        self, session_id: str, phase: int, path: Path, replace: bool = False
    ) -> tuple[dict[str, np.ndarray], Accepted]:
        """Read a rig file (trial table, spike times, NWB) and upload it. Spike times are cut
        with the session's own baseline and response windows, read from the session."""
        windows = self.session(session_id).config.windows
        columns = read_trials(path, baseline=windows.baseline, response=windows.response)
        return columns, self.upload_phase(session_id, phase, columns, replace=replace)

    def refit(self, session_id: str) -> Accepted:
        return Accepted(**self.json("POST", f"/v1/sessions/{session_id}/fit"))

    def job(self, job_id: str) -> JobInfo:
        return JobInfo(**self.json("GET", f"/v1/jobs/{job_id}"))

    def cancel(self, job_id: str) -> JobInfo:
        return JobInfo(**self.json("DELETE", f"/v1/jobs/{job_id}"))

    def wait(
        self,
        job_id: str,
        progress: ProgressCallback | None = None,
        poll: float = 0.5,
        timeout: float | None = None,
    ) -> JobInfo:
        """Poll a job until it ends, calling ``progress(job)`` each time. Waits as long as the
        job is alive (the server judges that by its worker's heartbeat, not by progress);
        ``JobFailedError`` when the server reports it failed or cancelled, ``TimeoutError``
        after ``timeout`` seconds (the job goes on on the server)."""
        start = time.monotonic()
        while True:
            info = self.job(job_id)
            if progress is not None:
                progress(info)
            if info.state == "finished":
                return info
            if info.state in ("failed", "canceled", "stopped"):
                raise JobFailedError(409, f"job {info.state}", info.error or info.state)
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError(f"job {job_id} still {info.state} after {timeout} s")
            time.sleep(poll)

    def selection(self, session_id: str) -> dict[str, Any]:
        return self.json("GET", f"/v1/sessions/{session_id}/selection")

    def selection_csv(self, session_id: str) -> str:
        return self.request(
            "GET", f"/v1/sessions/{session_id}/selection", params={"format": "csv"}
        ).text

    def analysis(self, session_id: str) -> dict[str, Any]:
        return self.json("GET", f"/v1/sessions/{session_id}/analysis")

    def models(self, session_id: str) -> dict[str, Any]:
        return self.json("GET", f"/v1/sessions/{session_id}/models")

    def saliency(
        self,
        session_id: str,
        channel: str,
        x_out: str | None = None,
        x_in: str | None = None,
        **options: Any,
    ) -> Accepted:
        """Ask for a channel's saliency maps: ``x_out`` an image of another category (an
        object), ``x_in`` one of the preferred set (a body), or neither: sec. 5.2's pair."""
        request = {"channel": channel, "x_out": x_out, "x_in": x_in, **options}
        return Accepted(**self.json("POST", f"/v1/sessions/{session_id}/saliency", json=request))

    def phase_three(self, session_id: str, replace: bool = False, **request: Any) -> Accepted:
        """Build the phase-three list (``PhaseThreeRequest`` fields: channels, saliency, q,
        kinds, feather, repeats). Safe to retry: the same request returns the same list."""
        return Accepted(
            **self.json(
                "POST",
                f"/v1/sessions/{session_id}/phase3",
                json=request,
                params={"replace": "true"} if replace else None,
                idempotent=True,
            )
        )

    def phase_three_list(self, session_id: str) -> dict[str, Any]:
        return self.json("GET", f"/v1/sessions/{session_id}/phase3")

    def phase_three_csv(self, session_id: str) -> str:
        return self.request(
            "GET", f"/v1/sessions/{session_id}/phase3", params={"format": "csv"}
        ).text

    def phase_three_stimuli(self, session_id: str) -> bytes:
        """The zip of the phase-three images with its ``manifest.json``."""
        return self.download(f"/v1/sessions/{session_id}/phase3/stimuli.zip")

    def phase_three_analysis(self, session_id: str) -> dict[str, Any]:
        return self.json("GET", f"/v1/sessions/{session_id}/phase3/analysis")

    def download(self, path: str) -> bytes:
        return self.request("GET", path).content

    def report(self, session_id: str) -> str:
        return self.request("GET", f"/v1/sessions/{session_id}/report").text
