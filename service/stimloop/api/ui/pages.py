"""The routes of the live pages: sign-in and sign-out, the sessions, a session (its live
progress as JSON for the page's script), asking for saliency maps and a refit, the images,
the downloads, health."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from stimloop_contract.phase_three import PhaseThreeRequest
from stimloop_contract.result_tables import analysis_rows, phase_three_rows
from stimloop_contract.saliency import DefaultPairRequest
from stimloop_contract.sessions import PaperSessionCreate

from stimloop.api.deps import Caller, RedisDep, SessionId, SettingsDep, StoreDep, body_bytes
from stimloop.api.errors import ApiError, status_of
from stimloop.api.health import health_report
from stimloop.api.jobs import JOB_ID, fetch_job
from stimloop.api.media import BINARY, CSV
from stimloop.api.ui import views
from stimloop.api.ui.signin import COOKIE, cookie_options, same_origin, sign_in, sign_out, signed_in
from stimloop.api.uploads import RecordingStart
from stimloop.sessions.creation import create
from stimloop.sessions.errors import SessionError
from stimloop.sessions.exports import (
    phase_three_csv,
    phase_three_sequence_csv,
    report_html,
    rows_csv,
    selection_csv,
    selection_mat,
    sequence_csv,
)
from stimloop.sessions.jobs import receive_phase, resubmit_fit
from stimloop.sessions.nwb_export import nwb_bytes
from stimloop.sessions.phase_three_list import start_phase_three
from stimloop.sessions.saliency import start_saliency
from stimloop.sessions.session_jobs import cancel
from stimloop.storage.registration import RegistrationError
from stimloop.storage.registry import load_registry
from stimloop.storage.session import SESSION_ID, NotFoundError, Phase
from stimloop.storage.session_states import STATES

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def _page(request: Request, name: str, caller: Caller | None, status: int = 200, **context):
    return templates.TemplateResponse(
        request, name, {"caller": caller, **context}, status_code=status
    )


def viewer(request: Request, cfg: SettingsDep, r: RedisDep) -> Caller | None:
    """The signed-in caller of a request (``signin.signed_in``), or None."""
    return signed_in(request, cfg, r)


def signed_viewer(caller: Caller | None = Depends(viewer)) -> Caller:
    """For the images, files and the progress poll: 401 (problem+json) unless signed in."""
    if caller is None:
        raise ApiError(401, "Unauthorized", "sign in at /ui/login")
    return caller


def _to_login() -> RedirectResponse:
    return RedirectResponse("/ui/login", status_code=303)


def _refused(request: Request, caller: Caller | None, status: int, why: str) -> HTMLResponse:
    return _page(request, "refused.html", caller, status=status, why=why)


def missing_page(request: Request, status: int, why: str) -> Response:
    """A missing page or session, as a page with a way back (``api.errors.install``)."""
    app = request.app.state
    caller = signed_in(request, app.settings, app.redis)
    return _page(request, "missing.html", caller, status=status, why=why)


def _validation_words(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(x) for x in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()[:8]
    )


def _checked_form(request: Request, caller: Caller | None) -> Caller | HTMLResponse:
    """The caller of a form that changes something, or the page saying why it is refused:
    not signed in, or not from these pages."""
    if caller is None:
        return _refused(request, None, 401, "Sign in first.")
    if not same_origin(request):
        return _refused(request, caller, 403, "This form did not come from stimloop's pages.")
    return caller


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
def home() -> RedirectResponse:
    return RedirectResponse("/ui/sessions", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return _page(request, "login.html", None)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    cfg: SettingsDep,
    r: RedisDep,
    token: str = Form("", max_length=256),
) -> Response:
    if not same_origin(request):
        return _refused(request, None, 403, "This form did not come from stimloop's pages.")
    cookie = sign_in(cfg, r, token)
    if cookie is None:
        return _page(request, "login.html", None, status=401, failed=True)
    answer = RedirectResponse("/ui/sessions", status_code=303)
    answer.set_cookie(COOKIE, cookie, **cookie_options(request))
    return answer


@router.post("/logout", response_class=HTMLResponse)
def logout(request: Request, cfg: SettingsDep, r: RedisDep) -> Response:
    if not same_origin(request):
        return _refused(request, None, 403, "This form did not come from stimloop's pages.")
    sign_out(request, cfg, r)
    answer = RedirectResponse("/ui/login", status_code=303)
    answer.delete_cookie(COOKIE, path="/ui")
    return answer


@router.get("/sessions", response_class=HTMLResponse)
def sessions(
    request: Request,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
    state: str | None = Query(None, max_length=32),
    subject: str | None = Query(None, max_length=64),
    q: str | None = Query(None, max_length=120, description="Text in label, animal or notes"),
    since: str | None = Query(None, max_length=10, pattern=r"^(\d{4}-\d{2}-\d{2})?$"),
    until: str | None = Query(None, max_length=10, pattern=r"^(\d{4}-\d{2}-\d{2})?$"),
    sort: str = Query("created", max_length=16),
) -> Response:
    caller = signed_in(request, cfg, r)
    if caller is None:
        return _to_login()
    chosen = {
        "state": state if state in STATES else None,
        "subject": subject or None,
        "q": q or None,
        "since": since or None,
        "until": until or None,
        "sort": sort if sort in views.SORTS else "created",
    }
    rows = views.session_rows(
        st,
        cfg,
        r,
        state=chosen["state"],
        subject=chosen["subject"],
        text=chosen["q"],
        since=chosen["since"],
        until=chosen["until"],
        sort=chosen["sort"] or "created",
    )
    form = (
        views.create_form(st, load_registry(cfg.registry_path), cfg.weights_dir)
        if caller.role == "rig"
        else None
    )
    return _page(
        request,
        "sessions.html",
        caller,
        rows=rows,
        states=STATES,
        chosen=chosen,
        subjects=views.subjects(st),
        sorts=views.SORTS,
        form=form,
        form_key=uuid.uuid4().hex,
    )


@router.post("/sessions", response_class=HTMLResponse)
def create_from_page(
    request: Request,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
    backbone: str = Form(..., max_length=64),
    body_set: str = Form(..., max_length=64),
    object_set: str = Form(..., max_length=64),
    control_body_set: str = Form(..., max_length=64),
    channels: str = Form(..., max_length=70000),
    label: str = Form("", max_length=200),
    subject_id: str = Form("", max_length=64),
    species: str = Form("", max_length=80),
    sex: str = Form("", max_length=1),
    age: str = Form("", max_length=32),
    notes: str = Form("", max_length=8000),
    seed: str = Form("0", max_length=12),
    split: str = Form("", max_length=40),
    settings: str = Form("", max_length=20000),
    form_key: str = Form("", max_length=64, pattern=r"^[0-9a-f]*$"),
) -> Response:
    """Create a session from the list page's form (a rig token): the paper's three sets,
    channels, the animal and label, and the settings as JSON (``stimloop-rig --config``'s
    sections); the same checks as ``POST /v1/sessions``. The form's key makes a second press
    of the button the same session."""
    caller = _checked_form(request, signed_in(request, cfg, r))
    if not isinstance(caller, Caller):
        return caller
    if caller.role != "rig":
        return _refused(request, caller, 403, "Only a rig token creates a session.")
    try:
        extra = json.loads(settings) if settings.strip() else {}
    except (json.JSONDecodeError, RecursionError) as exc:  # nested past the parser, too
        return _refused(
            request,
            caller,
            422,
            f"settings: not JSON ({exc}); e.g. "
            '{"fit": {"epochs": 800}, "selection": {"repeats": 2}}',
        )
    if not isinstance(extra, dict) or set(extra) - views.SETTING_SECTIONS:
        return _refused(
            request,
            caller,
            422,
            "settings: a JSON object of the sections "
            f"{', '.join(sorted(views.SETTING_SECTIONS))}, as stimloop-rig --config",
        )
    asked = views.create_request(
        backbone=backbone,
        sets=(body_set, object_set, control_body_set),
        channels=channels,
        label=label,
        subject=(subject_id, species, sex, age),
        notes=notes,
        seed=seed,
        split=split,
        extra=extra,
    )
    try:
        req = PaperSessionCreate.model_validate(asked)
    except ValidationError as exc:
        return _refused(request, caller, 422, _validation_words(exc))
    try:
        record = create(req, cfg, st, r, caller.id, f"page-{form_key}" if form_key else None)
    except (SessionError, NotFoundError) as exc:
        status = status_of(exc) if isinstance(exc, SessionError) else 404
        return _refused(request, caller, status, getattr(exc, "detail", str(exc)))
    return RedirectResponse(f"/ui/sessions/{record.id}", status_code=303)


@router.get("/sessions/{session_id}", response_class=HTMLResponse)
def session_page(
    request: Request,
    session_id: SessionId,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
    on: float = Query(0.2, gt=0, le=60, description="Seconds each image is shown"),
    off: float = Query(0.25, ge=0, le=60, description="Seconds between images"),
) -> Response:
    caller = signed_in(request, cfg, r)
    if caller is None:
        return _to_login()
    view = views.session_view(st, cfg, r, session_id, on, off, caller.role, caller.id)
    return _page(request, "session.html", caller, s=view)


@router.get("/sessions/{session_id}/progress")
def session_progress(
    session_id: SessionId,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
    caller: Caller = Depends(signed_viewer),
) -> JSONResponse:
    return JSONResponse(views.progress(st, cfg, r, session_id, caller.role, caller.id))


UPLOAD_TYPES = {  # what the page's script sends a chosen file as, by its name's ending
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".txt": "text/csv",
    ".json": "application/json",
    ".npz": "application/octet-stream",
    ".mat": "application/x-matlab-data",
}


@router.post("/sessions/{session_id}/upload/{phase}")
async def upload_from_page(
    request: Request,
    session_id: SessionId,
    phase: Phase,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
    name: str = Query(..., min_length=1, max_length=255),
    replace: bool = Query(False),
    recording_start: RecordingStart = None,
) -> Response:
    """A phase's trial file chosen on the session page, sent by its script as the request's
    body (its progress shown while it goes), with the recording's start where the form has
    one (the browser adds its UTC offset): the one upload path of ``/v1``, the same checks
    and the same refusals, naming the file. Answers JSON: the job, or problem+json."""
    caller = signed_in(request, cfg, r)
    if caller is None:
        raise ApiError(401, "Unauthorized", "sign in at /ui/login")
    if not same_origin(request):
        raise ApiError(403, "Forbidden", "This upload did not come from stimloop's pages.")
    if caller.role != "rig":
        raise ApiError(403, "Forbidden", "Only a rig token uploads trials.")
    ending = Path(name).suffix.lower()
    if ending not in UPLOAD_TYPES:
        raise ApiError(
            415,
            "Unsupported media type",
            f"{name}: the page takes trial tables and spike-times NPZ files "
            f"({', '.join(UPLOAD_TYPES)}); a recording (an Open Ephys folder, .plx, .nex, "
            ".nev, .nwb) goes through stimloop-rig, which reads it at the rig",
        )
    data = await body_bytes(request, cfg)
    accepted = await receive_phase(
        phase,
        session_id,
        UPLOAD_TYPES[ending],
        data,
        replace,
        request.app.state.uploads,
        cfg,
        st,
        r,
        name=Path(name).name,
        recording_start=recording_start,
    )
    return JSONResponse(accepted.model_dump(mode="json"), status_code=202)


@router.post("/jobs/{job_id}/cancel", response_class=HTMLResponse)
def cancel_from_page(
    request: Request,
    cfg: SettingsDep,
    r: RedisDep,
    job_id: str = PathParam(pattern=JOB_ID.pattern),
    session: str = Form(..., pattern=SESSION_ID.pattern),
) -> Response:
    """The Cancel button of a job on its session's page: a rig token cancels any job, an
    analyst the maps and checks it asked for (``session_jobs.cancel``)."""
    caller = _checked_form(request, signed_in(request, cfg, r))
    if not isinstance(caller, Caller):
        return caller
    try:
        cancel(fetch_job(job_id, r, cfg), caller.role, caller.id, cfg, r)
    except SessionError as exc:
        return _refused(request, caller, status_of(exc), exc.detail)
    except ApiError as exc:
        return _refused(request, caller, exc.status, exc.detail)
    return RedirectResponse(f"/ui/sessions/{session}#jobs", status_code=303)


@router.post("/sessions/{session_id}/saliency", response_class=HTMLResponse)
def ask_saliency(
    request: Request,
    session_id: SessionId,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
    channel: str = Form(..., max_length=64),
    coverage: str = Form("", max_length=16),
) -> Response:
    caller = _checked_form(request, signed_in(request, cfg, r))
    if not isinstance(caller, Caller):
        return caller
    asked: dict[str, object] = {"channel": channel}
    if coverage.strip():
        asked["coverage"] = coverage.strip()
    try:
        req = DefaultPairRequest.model_validate(asked)
    except ValidationError as exc:
        why = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in exc.errors())
        return _refused(request, caller, 422, why)
    try:
        start_saliency(req, session_id, cfg, st, r, caller.id)
    except SessionError as exc:
        return _refused(request, caller, status_of(exc), exc.detail)
    return RedirectResponse(f"/ui/sessions/{session_id}#saliency", status_code=303)


@router.post("/sessions/{session_id}/phase3", response_class=HTMLResponse)
def ask_phase_three(
    request: Request,
    session_id: SessionId,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
    q: str = Form("", max_length=80),
    repeats: str = Form("", max_length=4),
    replace: bool = Form(False),
) -> Response:
    """Build the phase-three list from the page: every channel with maps, the fractions of
    foreground ``q`` (comma-separated; default the paper's proposal) and ``repeats``; the same
    checks as ``POST /v1/sessions/{id}/phase3``."""
    caller = _checked_form(request, signed_in(request, cfg, r))
    if not isinstance(caller, Caller):
        return caller
    asked: dict[str, object] = {}
    if q.strip():
        asked["q"] = [part.strip() for part in q.split(",") if part.strip()]
    if repeats.strip():
        asked["repeats"] = repeats.strip()
    try:
        req = PhaseThreeRequest.model_validate(asked)
    except ValidationError as exc:
        return _refused(request, caller, 422, _validation_words(exc))
    try:
        start_phase_three(req, session_id, cfg, st, r, caller.id, replace)
    except SessionError as exc:
        return _refused(request, caller, status_of(exc), exc.detail)
    return RedirectResponse(f"/ui/sessions/{session_id}#jobs", status_code=303)


@router.post("/sessions/{session_id}/refit", response_class=HTMLResponse)
def refit(
    request: Request,
    session_id: SessionId,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
) -> Response:
    caller = _checked_form(request, signed_in(request, cfg, r))
    if not isinstance(caller, Caller):
        return caller
    if caller.role != "rig":
        return _refused(request, caller, 403, "Only a rig token refits a session.")
    try:
        resubmit_fit(st, session_id, cfg, r)
    except SessionError as exc:
        return _refused(request, caller, status_of(exc), exc.detail)
    return RedirectResponse(f"/ui/sessions/{session_id}", status_code=303)


@router.get("/sessions/{session_id}/saliency/{key}.png", dependencies=[Depends(signed_viewer)])
def saliency_png(
    key: str,
    session_id: SessionId,
    st: StoreDep,
) -> Response:
    path = st.files(session_id).saliency_file(key, "png")
    if path is None:
        return Response(status_code=404)
    return FileResponse(path, media_type="image/png")


@router.get("/images/{set_id}/{image_id}", dependencies=[Depends(signed_viewer)])
def set_image(
    set_id: str,
    image_id: str,
    st: StoreDep,
) -> Response:
    """A registered set's image by id: looked up in the set's record, never used as a path."""
    try:
        record = st.get_set(set_id)
    except (NotFoundError, ApiError, ValueError):
        return Response(status_code=404)
    entry = record.entry(image_id)
    if entry is None:
        return Response(status_code=404)
    return FileResponse(Path(record.images_dir) / entry.file)


@router.get(
    "/sessions/{session_id}/phase3/images/{stimulus}", dependencies=[Depends(signed_viewer)]
)
def phase_three_image(
    stimulus: str,
    session_id: SessionId,
    st: StoreDep,
) -> Response:
    files = st.files(session_id)
    listed = files.has_phase_three_list() and any(
        e["stimulus"] == stimulus for e in files.phase_three_list()["entries"]
    )
    path = files.phase_three_image(stimulus) if listed else None
    if path is None or not path.is_file():
        return Response(status_code=404)
    return FileResponse(path, media_type="image/png")


DOWNLOADS = {  # what a download link names -> its media type
    "selection-csv": CSV,
    "sequence-csv": CSV,
    "selection-mat": "application/x-matlab-data",
    "analysis-csv": CSV,
    "phase3-csv": CSV,
    "phase3sequence-csv": CSV,
    "analysis-json": "application/json",
    "registration-json": "application/json",
    "models-npz": BINARY,
    "stimuli-zip": BINARY,
    "report-html": "text/html",
    "session-nwb": BINARY,
    "draft-nwb": BINARY,
}


@router.get("/sessions/{session_id}/files/{name}", dependencies=[Depends(signed_viewer)])
def download(
    name: str,
    session_id: SessionId,
    st: StoreDep,
) -> Response:
    """A session's results as files, for the signed-in browser (``/v1`` wants a bearer token)."""
    if name not in DOWNLOADS:
        return Response(status_code=404)
    files = st.files(session_id)
    stem, ext = name.rsplit("-", 1)
    attachment = {"content-disposition": f'attachment; filename="{session_id}-{stem}.{ext}"'}
    try:
        if name == "selection-csv":
            body: bytes | str = selection_csv(st, session_id)
        elif name == "sequence-csv":
            body = sequence_csv(st, session_id)
        elif name == "selection-mat":
            body = selection_mat(st, session_id)
        elif name == "phase3-csv":
            body = phase_three_csv(files.phase_three_list())
        elif name == "phase3sequence-csv":
            body = phase_three_sequence_csv(files.phase_three_list())
        elif name == "analysis-csv":
            body = rows_csv(analysis_rows(files.analysis()))
        elif name == "analysis-json":
            body = json.dumps(files.analysis(), indent=1)
        elif name == "registration-json":  # the registered bytes: their sha256 is the hash
            files.registration(st.get_session(session_id).registration)
            body = files.registration_path.read_bytes()
        elif name == "models-npz":
            body = files.readouts_npz.read_bytes()
        elif name == "stimuli-zip":
            body = files.phase_three_zip.read_bytes()
        elif name in ("session-nwb", "draft-nwb"):
            body, _ = nwb_bytes(st, session_id, draft=name == "draft-nwb")
        else:
            body = report_html(st, session_id)
    except (ApiError, NotFoundError, OSError, SessionError):  # a result not there (yet)
        return Response(status_code=404)
    except RegistrationError as exc:  # changed after registration: said, not served
        return Response(str(exc), status_code=409, media_type="text/plain")
    return Response(body, media_type=DOWNLOADS[name], headers=attachment)


@router.get("/sessions/{session_id}/phase3/retained.png", dependencies=[Depends(signed_viewer)])
def retained_png(
    session_id: SessionId,
    st: StoreDep,
) -> Response:
    """Phase three's retained responses per channel and fragment kind (the report's figure)."""
    from stimloop.reports.figures import png, retained_figure  # matplotlib: on demand

    files = st.files(session_id)
    if not files.has_phase_three_analysis():
        return Response(status_code=404)
    rows = phase_three_rows(files.phase_three_analysis())
    if not rows:
        return Response(status_code=404)
    return Response(png(retained_figure(rows)), media_type="image/png")


@router.get("/health", response_class=HTMLResponse)
def health_page(request: Request, cfg: SettingsDep, r: RedisDep) -> Response:
    caller = signed_in(request, cfg, r)
    if caller is None:
        return _to_login()
    return _page(request, "health.html", caller, h=health_report(cfg, r))
