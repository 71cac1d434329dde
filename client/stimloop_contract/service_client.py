"""``ServiceClient``: the stimloop service over HTTP, typed by the contract (torch-free).

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
from datetime import datetime
from typing import Any

import httpx
import numpy as np

from stimloop_contract.analysis import Analysis, Models
from stimloop_contract.errors import (
    JobFailedError,
    JobWaitTimeoutError,
    ProblemError,
    ServiceTimeoutError,
    ServiceUnreachableError,
    StimloopError,
)
from stimloop_contract.phase_three import PhaseThreeAnalysis, PhaseThreeList
from stimloop_contract.saliency import SaliencyResult, SanityChecks
from stimloop_contract.selection import Selection
from stimloop_contract.sessions import SessionConfig, SessionInfo
from stimloop_contract.sets import StimulusSetInfo
from stimloop_contract.spike_times import SpikeTrains
from stimloop_contract.system import Accepted, BackboneInfo, Health, JobInfo
from stimloop_contract.trials import BatchReceipt, LiveStatus

__all__ = ["JobFailedError", "JobInfo", "ServiceClient", "StimloopError"]
ProgressCallback = Callable[[JobInfo], None]


# seconds a server never reached gets before it is called unreachable: a refused connection is
# tried at 0, 0.5 and 1.5 s, a silent one for 3 s; so a command says so within 5 s on a busy box
CONNECT_BUDGET = 3.0


class ServiceClient:
    """A client bound to one server URL and token. Every failure raises a ``StimloopError``
    (``stimloop_contract.errors``): the server's refusals as ``ProblemError`` with its status and
    detail, an unreachable or silent server as ``ServiceUnreachableError`` or
    ``ServiceTimeoutError`` once the retries are spent. Retries stop after ``retry_budget``
    seconds (the backoff doubles from ``backoff``)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
        retry_budget: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # the server's address, not its API's: a URL copied with /v1 at its end works too
        self.url = url.rstrip("/").removesuffix("/v1")
        self.http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_BUDGET)),
            transport=transport,
        )
        self.timeout = timeout
        self.retries, self.backoff, self.retry_budget = retries, backoff, retry_budget
        self.reached = False  # has the server answered this client once?

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def request(
        self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send; raise ``ProblemError`` on 4xx and 5xx answers. Connection errors and 5xx are
        retried for idempotent requests (``idempotent``; default: GET, PUT, DELETE and
        requests with an ``Idempotency-Key``) within the retry budget; a POST that starts
        work is sent once."""
        if idempotent is None:
            keyed = "Idempotency-Key" in (kwargs.get("headers") or {})
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE") or keyed
        retries = self.retries if idempotent else 0
        delay, started = self.backoff, time.monotonic()
        for attempt in range(retries + 1):
            spent = time.monotonic() - started + delay
            last = attempt == retries or spent > self.retry_budget
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.ConnectTimeout:
                if last or not self.reached:  # nothing answers there: say so at once
                    raise ServiceUnreachableError(self.url, "no answer to connect") from None
            except httpx.TimeoutException:
                if last:
                    raise ServiceTimeoutError(self.url, self.timeout) from None
            except httpx.ConnectError as exc:
                # a server never reached is given CONNECT_BUDGET seconds, not the whole budget
                if last or (not self.reached and spent > CONNECT_BUDGET):
                    raise ServiceUnreachableError(self.url, _reason(exc)) from None
            except httpx.TransportError as exc:
                if last:
                    raise ServiceUnreachableError(self.url, _reason(exc)) from None
            else:
                self.reached = True
                if response.status_code < 500 or last:
                    break
            time.sleep(delay)
            delay *= 2
        if response.status_code >= 400:
            kind = response.headers.get("content-type", "").split(";")[0].strip()
            if kind not in ("application/problem+json", "application/json"):
                raise ProblemError(
                    response.status_code,
                    "not stimloop",
                    f"{self.url} answered {response.status_code} with {kind or 'a body'}, not "
                    "stimloop's API: is --url (STIMLOOP_URL) the stimloop server, e.g. "
                    "http://host:8000?",
                )
            try:
                body = response.json()
                title, detail = body.get("title", "error"), body.get("detail", response.text)
            except ValueError:
                title, detail = "error", response.text[:500]
            raise ProblemError(response.status_code, str(title), str(detail))
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # ------------------------------------------------------------------ resources

    def health(self) -> Health:
        return Health.model_validate(self.json("GET", "/v1/health"))

    def backbones(self) -> list[BackboneInfo]:
        return [BackboneInfo.model_validate(b) for b in self.json("GET", "/v1/backbones")]

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
                headers={"content-type": "application/octet-stream"},
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
        self,
        session_id: str,
        phase: int,
        columns: dict[str, np.ndarray],
        replace: bool = False,
        recording_start: datetime | None = None,
        spikes: SpikeTrains | None = None,
    ) -> Accepted:
        """Upload one phase's trial columns (as NPZ; phase 1, 2 or 3); safe to retry.
        ``recording_start``: when the recording started (timezone-aware), what the columns'
        ``onset`` counts from. With ``spikes`` (what the columns were counted from), the
        spike trains go instead: the server counts them in the session's windows (the same
        trials) and keeps them for the session's NWB file."""
        buffer = io.BytesIO()
        arrays: dict[str, Any] = (
            spikes.arrays() if spikes else {k: np.asarray(v) for k, v in columns.items()}
        )
        (np.savez_compressed if spikes else np.savez)(buffer, **arrays)
        path = f"/v1/sessions/{session_id}/phase{phase}" + ("/trials" if phase == 3 else "")
        params = {"replace": "true"} if replace else {}
        if recording_start is not None:
            params["recording_start"] = recording_start.isoformat()
        return Accepted(
            **self.json(
                "PUT",
                path,
                content=buffer.getvalue(),
                params=params or None,
                headers={"content-type": "application/octet-stream"},
            )
        )

    def send_batch(
        self, session_id: str, phase: int, number: int, columns: dict[str, np.ndarray]
    ) -> BatchReceipt:
        """Batch ``number`` (from 1) of a phase followed live, as JSON columns; safe to retry
        (the server holds each number once)."""
        body = {k: np.asarray(v).tolist() for k, v in columns.items()}
        path = f"/v1/sessions/{session_id}/phase{phase}/batches/{number}"
        return BatchReceipt(**self.json("PUT", path, json=body))

    def live(self, session_id: str, phase: int) -> LiveStatus:
        """What the server holds of a phase followed live."""
        return LiveStatus(**self.json("GET", f"/v1/sessions/{session_id}/phase{phase}/live"))

    def close_phase(
        self,
        session_id: str,
        phase: int,
        batches: int,
        recording_start: datetime | None = None,
    ) -> Accepted:
        """Close a phase followed live (its ``batches`` become its upload; its job starts);
        safe to retry (the same trials are one upload). ``recording_start``: as in
        ``upload_phase``."""
        path = f"/v1/sessions/{session_id}/phase{phase}/close"
        body: dict[str, Any] = {"batches": batches}
        if recording_start is not None:
            body["recording_start"] = recording_start.isoformat()
        return Accepted(**self.json("POST", path, idempotent=True, json=body))

    def phase_stimuli(
        self, session_id: str, phase: int, config: SessionConfig
    ) -> tuple[set[str], str]:
        """The stimuli a phase's trials may name, and where they come from (in words);
        ``config``: the session's, whose preferred set (and calibration images, if any) phase
        one shows."""
        if phase == 1:
            preferred = config.preferred_set
            preferred_ids = set(self.json("GET", f"/v1/stimulus-sets/{preferred}")["ids"])
            held = config.calibration_ids
            if held:  # the candidates phase one shows for calibration
                return preferred_ids | held, (
                    f"in the preferred set {preferred!r} or among the session's calibration images"
                )
            return preferred_ids, f"in the preferred set {preferred!r}"
        if phase == 2:
            listed = self.selection(session_id).phase_two
            ids = [e.stimulus for e in listed.entries] + listed.stability_images
            return set(ids), "on the phase-two list (`stimloop-rig phase-two-list`)"
        plan = self.phase_three_list(session_id)
        ids = [e.stimulus for e in plan.entries] + plan.stability_images
        return set(ids), "on the phase-three list (`stimloop-rig phase-three-list`)"

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
        ``JobFailedError`` when the server reports it failed or cancelled,
        ``JobWaitTimeoutError`` (a ``TimeoutError``) after ``timeout`` seconds (the job goes
        on on the server)."""
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
                raise JobWaitTimeoutError(job_id, info.state, timeout)
            time.sleep(poll)

    def selection(self, session_id: str) -> Selection:
        return Selection.model_validate(self.json("GET", f"/v1/sessions/{session_id}/selection"))

    def selection_csv(self, session_id: str) -> str:
        return self.request("GET", f"/v1/sessions/{session_id}/selection.csv").text

    def analysis(self, session_id: str) -> Analysis:
        return Analysis.model_validate(self.json("GET", f"/v1/sessions/{session_id}/analysis"))

    def models(self, session_id: str) -> Models:
        return Models.model_validate(self.json("GET", f"/v1/sessions/{session_id}/models"))

    def saliency_result(self, session_id: str, key: str) -> SaliencyResult:
        return SaliencyResult.model_validate(
            self.json("GET", f"/v1/sessions/{session_id}/saliency/{key}")
        )

    def saliency_results(self, session_id: str) -> list[SaliencyResult]:
        """Every saliency result of the session, with its sanity verdict where checked."""
        found = self.json("GET", f"/v1/sessions/{session_id}/saliency")
        return [SaliencyResult.model_validate(m) for m in found]

    def sanity(self, session_id: str, key: str, **options: Any) -> Accepted:
        """Ask for the sanity checks of saliency result ``key`` (``SanityRequest`` fields:
        metric, max_similarity, max_features)."""
        return Accepted(
            **self.json("POST", f"/v1/sessions/{session_id}/saliency/{key}/sanity", json=options)
        )

    def sanity_result(self, session_id: str, key: str) -> SanityChecks:
        return SanityChecks.model_validate(
            self.json("GET", f"/v1/sessions/{session_id}/saliency/{key}/sanity")
        )

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
        pair = {"x_out": x_out, "x_in": x_in} if x_out is not None or x_in is not None else {}
        request = {"channel": channel, **pair, **options}
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

    def phase_three_list(self, session_id: str) -> PhaseThreeList:
        return PhaseThreeList.model_validate(self.json("GET", f"/v1/sessions/{session_id}/phase3"))

    def phase_three_csv(self, session_id: str) -> str:
        return self.request("GET", f"/v1/sessions/{session_id}/phase3.csv").text

    def phase_three_stimuli(self, session_id: str) -> bytes:
        """The zip of the phase-three images with its ``manifest.json``."""
        return self.download(f"/v1/sessions/{session_id}/phase3/stimuli.zip")

    def phase_three_analysis(self, session_id: str) -> PhaseThreeAnalysis:
        return PhaseThreeAnalysis.model_validate(
            self.json("GET", f"/v1/sessions/{session_id}/phase3/analysis")
        )

    def download(self, path: str) -> bytes:
        return self.request("GET", path).content

    def report(self, session_id: str) -> str:
        return self.request("GET", f"/v1/sessions/{session_id}/report").text

    def export_nwb(self, session_id: str, draft: bool = False) -> tuple[bytes, str | None]:
        """The session as one NWB file, and the server's warning (a draft's missing fields)."""
        answer = self.request(
            "GET",
            f"/v1/sessions/{session_id}/export.nwb",
            params={"draft": "true"} if draft else None,
        )
        return answer.content, answer.headers.get("x-stimloop-warning")


def _reason(exc: httpx.TransportError) -> str:
    """The root cause of a transport error, in a few words."""
    cause: BaseException = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    said = str(cause) or type(cause).__name__
    if "SSL" in said or "TLS" in said:
        return "it does not speak HTTPS there: use http:// unless the lab put TLS in front"
    return said
