"""The routes of the live pages: sign-in and sign-out, the sessions, a session (its live
progress as JSON for the page's script), asking for saliency maps and a refit, the images,
the downloads, health."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from stimloop_contract.result_tables import analysis_rows, phase_three_rows
from stimloop_contract.saliency import DefaultPairRequest

from stimloop.api.deps import Caller, RedisDep, SessionId, SettingsDep, StoreDep
from stimloop.api.errors import ApiError, status_of
from stimloop.api.health import health_report
from stimloop.api.media import BINARY, CSV
from stimloop.api.ui import views
from stimloop.api.ui.signin import COOKIE, cookie_options, same_origin, sign_in, sign_out, signed_in
from stimloop.sessions.errors import SessionError
from stimloop.sessions.exports import phase_three_csv, report_html, rows_csv, selection_csv
from stimloop.sessions.jobs import resubmit_fit
from stimloop.sessions.saliency import start_saliency
from stimloop.storage.session import NotFoundError
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
) -> Response:
    caller = signed_in(request, cfg, r)
    if caller is None:
        return _to_login()
    state = state if state in STATES else None
    rows = views.session_rows(st, state)
    return _page(request, "sessions.html", caller, rows=rows, states=STATES, chosen=state)


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
    view = views.session_view(st, cfg, r, session_id, on, off)
    return _page(request, "session.html", caller, s=view)


@router.get("/sessions/{session_id}/progress", dependencies=[Depends(signed_viewer)])
def session_progress(
    session_id: SessionId,
    cfg: SettingsDep,
    st: StoreDep,
    r: RedisDep,
) -> JSONResponse:
    return JSONResponse(views.progress(st, cfg, r, session_id))


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
    "analysis-csv": CSV,
    "phase3-csv": CSV,
    "analysis-json": "application/json",
    "models-npz": BINARY,
    "stimuli-zip": BINARY,
    "report-html": "text/html",
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
        elif name == "phase3-csv":
            body = phase_three_csv(files.phase_three_list())
        elif name == "analysis-csv":
            body = rows_csv(analysis_rows(files.analysis()))
        elif name == "analysis-json":
            body = json.dumps(files.analysis(), indent=1)
        elif name == "models-npz":
            body = files.readouts_npz.read_bytes()
        elif name == "stimuli-zip":
            body = files.phase_three_zip.read_bytes()
        else:
            body = report_html(st, session_id)
    except (ApiError, NotFoundError, OSError):  # a result that is not there yet
        return Response(status_code=404)
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
