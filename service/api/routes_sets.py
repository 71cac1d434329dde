"""Stimulus sets: register a directory below the stimulus root, or upload a zip."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path, PurePosixPath

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from PIL import Image, UnidentifiedImageError
from stimloop.api.deps import READ, RIG, body_bytes, settings, store
from stimloop.api.errors import ApiError
from stimloop.api.schemas import ID, Category, StimulusSetCreate, StimulusSetInfo
from stimloop.settings import Settings
from stimloop.stimulus_sets import IMAGE_SUFFIXES, read_stimulus_set, write_atomic
from stimloop.store import Store, now

router = APIRouter(prefix="/v1/stimulus-sets", tags=["stimulus sets"])


def info(record: dict) -> StimulusSetInfo:
    return StimulusSetInfo(
        id=record["id"],
        category=record["category"],
        count=record["count"],
        source=record["source"],
        ids=[e["id"] for e in record["entries"]],
        sha256=[e["sha256"] for e in record["entries"]],
    )


def save_idempotent(st: Store, record: dict) -> JSONResponse:
    """201 for a new set, 200 for the same set again, 409 for different contents."""
    try:
        old = st.get_set(record["id"])
    except KeyError:
        st.put_set(record)
        return JSONResponse(info(record).model_dump(), status_code=201)
    same = old["category"] == record["category"] and [
        (e["id"], e["sha256"]) for e in old["entries"]
    ] == [(e["id"], e["sha256"]) for e in record["entries"]]
    if not same:
        raise ApiError(
            409,
            "Conflict",
            f"stimulus set {record['id']!r} exists with other images "
            "or another category; register the new images under a new id",
        )
    return JSONResponse(info(old).model_dump(), status_code=200)


@router.post(
    "",
    summary="Register a directory below the stimulus root",
    responses={201: {"model": StimulusSetInfo}},
    dependencies=[Depends(RIG)],
)
def register(
    req: StimulusSetCreate, cfg: Settings = Depends(settings), st: Store = Depends(store)
) -> JSONResponse:
    root = cfg.stimulus_root.resolve()
    folder = (root / req.directory).resolve()
    if not folder.is_relative_to(root):
        raise ApiError(
            403,
            "Forbidden",
            f"{req.directory!r} is outside the stimulus root; only folders below "
            "STIMLOOP_STIMULUS_ROOT can be registered",
        )
    if not folder.is_dir():
        raise ApiError(
            400,
            "No such directory",
            f"{req.directory!r} is not a directory below the stimulus root",
        )
    try:
        entries = read_stimulus_set(folder)
    except (FileNotFoundError, ValueError) as exc:
        raise ApiError(400, "Not a stimulus folder", str(exc)) from None
    record = {
        "id": req.id,
        "category": req.category,
        "source": "directory",
        "images_dir": str(folder),
        "count": len(entries),
        "created": now(),
        "entries": [{"id": e.id, "file": e.file, "sha256": e.sha256} for e in entries],
    }
    return save_idempotent(st, record)


@router.post(
    "/upload",
    summary="Register the images of an uploaded zip",
    responses={201: {"model": StimulusSetInfo}},
    dependencies=[Depends(RIG)],
    openapi_extra={"requestBody": {"content": {"application/zip": {}}}},
)
async def upload(
    request: Request,
    id: str = Query(pattern=ID),
    category: Category = Query(),
    cfg: Settings = Depends(settings),
    st: Store = Depends(store),
) -> JSONResponse:
    if request.headers.get("content-type", "").split(";")[0] not in (
        "application/zip",
        "application/octet-stream",
    ):
        raise ApiError(415, "Unsupported media type", "send the zip as application/zip")
    data = await body_bytes(request, cfg)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ApiError(400, "Not a zip file", "the body is not a readable zip archive") from None
    images = {}
    for member in archive.infolist():
        name = PurePosixPath(member.filename)
        if (
            member.is_dir()
            or name.suffix.lower() not in IMAGE_SUFFIXES
            or name.name.startswith(".")
        ):
            continue
        blob = archive.read(member)
        try:
            Image.open(io.BytesIO(blob)).verify()
        except (UnidentifiedImageError, OSError, SyntaxError):
            raise ApiError(
                400, "Bad image", f"{member.filename} in the zip is not a readable PNG/JPEG"
            ) from None
        if name.stem in images:
            raise ApiError(400, "Duplicate id", f"two images in the zip are named {name.stem!r}")
        images[name.stem] = (name.name, blob)
    if not images:
        raise ApiError(400, "No images", "the zip holds no PNG or JPEG files")
    folder = st.set_dir(id) / "images"
    entries = [
        {"id": k, "file": f, "sha256": hashlib.sha256(b).hexdigest()}
        for k, (f, b) in sorted(images.items())
    ]
    record = {
        "id": id,
        "category": category,
        "source": "upload",
        "images_dir": str(folder),
        "count": len(entries),
        "created": now(),
        "entries": entries,
    }
    try:
        st.get_set(id)
    except KeyError:
        for _, (file, blob) in images.items():
            write_atomic(folder / file, blob)
    return save_idempotent(st, record)


@router.get("", response_model=list[StimulusSetInfo], dependencies=[Depends(READ)])
def list_sets(st: Store = Depends(store)) -> list[StimulusSetInfo]:
    return [info(r) for r in st.list_sets()]


@router.get("/{set_id}", response_model=StimulusSetInfo, dependencies=[Depends(READ)])
def get_set(set_id: str, st: Store = Depends(store)) -> StimulusSetInfo:
    return info(st.get_set(set_id))


@router.get(
    "/{set_id}/images/{image_id}",
    summary="The image file",
    dependencies=[Depends(READ)],
    response_class=FileResponse,
)
def image(set_id: str, image_id: str, st: Store = Depends(store)) -> FileResponse:
    record = st.get_set(set_id)
    for entry in record["entries"]:
        if entry["id"] == image_id:
            return FileResponse(Path(record["images_dir"]) / entry["file"])
    raise ApiError(404, "Not found", f"set {set_id!r} has no image {image_id!r}")
