"""Stimulus sets: register a directory below the stimulus root, or upload a zip."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from stimloop_contract.ids import CATEGORY, ID, STIMULUS_ID
from stimloop_contract.sets import StimulusSetCreate, StimulusSetInfo

from stimloop.api.archives import ZipLimits, checked_members, read_member
from stimloop.api.deps import READ, RIG, SettingsDep, StoreDep, body_bytes
from stimloop.api.errors import ApiError, problem_responses
from stimloop.api.media import BINARY, ZIP_TYPES, answer, body
from stimloop.runtime.settings import Settings
from stimloop.storage.atomic import write_atomic
from stimloop.storage.image_checks import ImageRefusedError, check_image
from stimloop.storage.set_record import SetRecord
from stimloop.storage.stimulus_sets import (
    ID_RULE,
    IMAGE_ID,
    IMAGE_SUFFIXES,
    StimulusEntry,
    category_mismatch,
    read_stimulus_set,
)
from stimloop.storage.store import Store

router = APIRouter(
    prefix="/v1/stimulus-sets", tags=["stimulus sets"], responses=problem_responses()
)


def info(record: SetRecord) -> StimulusSetInfo:
    return StimulusSetInfo(
        id=record.id,
        category=record.category,
        count=record.count,
        source=record.source,
        ids=record.ids,
        sha256=[e.sha256 for e in record.entries],
    )


def save_idempotent(
    st: Store, record: SetRecord, write_images: Callable[[], None] | None = None
) -> JSONResponse:
    """201 for a new set, 200 for the same set again, 409 for different contents; under the
    sets lock, so of racing registrations of one id exactly one is created. ``write_images``
    (uploads) runs only for a new set, inside the lock, before its record is written."""
    with st.sets_locked():
        try:
            old = st.get_set(record.id)
        except KeyError:
            if write_images is not None:
                write_images()
            st.put_set(record)
            return JSONResponse(info(record).model_dump(), status_code=201)
    if not old.same_images(record):
        raise ApiError(
            409,
            "Conflict",
            f"stimulus set {record.id!r} exists with other images "
            "or another category; register the new images under a new id",
        )
    return JSONResponse(info(old).model_dump(), status_code=200)


@router.post(
    "",
    status_code=201,
    response_model=StimulusSetInfo,
    summary="Register a directory below the stimulus root",
    responses={200: {"model": StimulusSetInfo, "description": "The same images again"}},
    dependencies=[Depends(RIG)],
)
def register_stimulus_set(req: StimulusSetCreate, cfg: SettingsDep, st: StoreDep) -> JSONResponse:
    """Every image is resolved (links followed) and must lie in the set's own folder below
    the stimulus root; each is checked by content and size, a manifest's sha256 verified."""
    root = cfg.stimulus_root.resolve()
    if any(len(part.encode()) > 255 for part in req.directory.split("/")):
        raise ApiError(
            404,
            "No such directory",
            f"{req.directory[:200]!r}: a folder name is longer than 255 bytes, so no such "
            "folder can exist below the stimulus root",
        )
    try:
        folder = (root / req.directory).resolve()
    except (OSError, ValueError):
        raise ApiError(
            404, "No such directory", f"{req.directory[:200]!r} is not a usable path"
        ) from None
    if not folder.is_relative_to(root) or folder == root:
        raise ApiError(
            403,
            "Forbidden",
            f"{req.directory[:200]!r} is not a folder below the stimulus root; only folders "
            "below STIMLOOP_STIMULUS_ROOT can be registered",
        )
    if not folder.is_dir():
        raise ApiError(
            404,
            "No such directory",
            f"{req.directory[:200]!r} is not a directory below the stimulus root",
        )
    try:
        entries = read_stimulus_set(folder, verify=True, max_pixels=cfg.max_image_pixels)
    except (FileNotFoundError, ValueError) as exc:
        raise ApiError(422, "Not a stimulus folder", str(exc)) from None
    mismatch = category_mismatch(entries, req.category)
    if mismatch:
        raise ApiError(409, "Wrong category", mismatch)
    record = SetRecord.new(
        req.id, req.category, "directory", folder, ((e.id, e.file, e.sha256) for e in entries)
    )
    return save_idempotent(st, record)


def zip_images(data: bytes, cfg: Settings) -> dict[str, tuple[str, bytes]]:
    """The checked images of an uploaded zip: id (file stem) -> (file name, bytes)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ApiError(400, "Not a zip file", "the body is not a readable zip archive") from None
    limits = ZipLimits(
        max_member_bytes=min(cfg.max_upload_bytes, 64 * 2**20),
        max_total_bytes=4 * cfg.max_upload_bytes,
    )
    images: dict[str, tuple[str, bytes]] = {}
    for member in checked_members(archive, limits):
        name = PurePosixPath(member.filename)
        if name.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if not IMAGE_ID.match(name.stem):
            raise ApiError(
                400,
                "Bad image id",
                f"zip entry {member.filename[:200]!r}: {ID_RULE}",
            )
        if name.stem in images:
            raise ApiError(400, "Duplicate id", f"two images in the zip are named {name.stem!r}")
        blob = read_member(archive, member)
        try:
            check_image(member.filename, blob, cfg.max_image_pixels)
        except ImageRefusedError as exc:
            raise ApiError(400, "Bad image", f"in the zip: {exc}") from None
        images[name.stem] = (name.name, blob)
    if not images:
        raise ApiError(400, "No images", "the zip holds no PNG or JPEG files")
    return images


@router.post(
    "/upload",
    status_code=201,
    response_model=StimulusSetInfo,
    summary="Register the images of an uploaded zip",
    responses={200: {"model": StimulusSetInfo, "description": "The same images again"}},
    dependencies=[Depends(RIG)],
    openapi_extra=body(
        BINARY,
        "A zip of PNG or JPEG images (application/octet-stream; application/zip is accepted "
        "too): each name becomes an id (its stem, 1-128 letters, digits, '_', '.', '+', '-'). "
        "Entries with '..', absolute paths, links, repeated ids, other formats, too many "
        "pixels, or sizes and ratios beyond the limits are refused (400, 413).",
    ),
)
async def upload_stimulus_set(
    request: Request,
    cfg: SettingsDep,
    st: StoreDep,
    id: str = Query(pattern=ID),
    category: str = Query(
        pattern=CATEGORY,
        description="What the images are: body, object, control_body in the paper; any other "
        "as 1-32 lowercase letters, digits and '_'",
    ),
) -> JSONResponse:
    if request.headers.get("content-type", "").split(";")[0] not in ZIP_TYPES:
        raise ApiError(415, "Unsupported media type", "send the zip as application/octet-stream")
    data = await body_bytes(request, cfg)
    return await run_in_threadpool(register_zip, data, id, category, cfg, st)


def register_zip(data: bytes, set_id: str, category: str, cfg: Settings, st: Store):
    images = zip_images(data, cfg)
    named = [StimulusEntry(id=k, file=f, category=None, sha256="") for k, (f, _) in images.items()]
    mismatch = category_mismatch(named, category)
    if mismatch:
        raise ApiError(409, "Wrong category", mismatch)
    folder = st.set_dir(set_id) / "images"
    record = SetRecord.new(
        set_id,
        category,
        "upload",
        folder,
        ((k, f, hashlib.sha256(b).hexdigest()) for k, (f, b) in sorted(images.items())),
    )

    def write_images() -> None:
        for file, blob in images.values():
            write_atomic(folder / file, blob)

    return save_idempotent(st, record, write_images)


@router.get(
    "",
    response_model=list[StimulusSetInfo],
    dependencies=[Depends(READ)],
    summary="Every registered stimulus set",
)
def list_stimulus_sets(st: StoreDep) -> list[StimulusSetInfo]:
    return [info(r) for r in st.list_sets()]


SetId = PathParam(pattern=ID, description="A stimulus set's id")


@router.get(
    "/{set_id}",
    response_model=StimulusSetInfo,
    dependencies=[Depends(READ)],
    summary="A stimulus set: its category, ids and sha256s",
)
def get_stimulus_set(st: StoreDep, set_id: str = SetId) -> StimulusSetInfo:
    return info(st.get_set(set_id))


@router.get(
    "/{set_id}/images/{image_id}",
    summary="An image of a set, as stored (PNG or JPEG bytes)",
    dependencies=[Depends(READ)],
    response_class=Response,
    responses=answer(BINARY, "The image file, PNG or JPEG by its content"),
)
def get_stimulus_image(
    st: StoreDep,
    set_id: str = SetId,
    image_id: str = PathParam(pattern=STIMULUS_ID, description="The image's id in its set"),
) -> Response:
    record = st.get_set(set_id)
    folder = Path(record.images_dir).resolve()
    entry = record.entry(image_id)
    if entry is None:
        raise ApiError(404, "Not found", f"set {set_id!r} has no image {image_id!r}")
    path = (folder / entry.file).resolve()
    if not path.is_relative_to(folder) or not path.is_file():  # also for old records
        raise ApiError(404, "Not found", f"image {image_id!r} is not in its set's folder")
    return FileResponse(path, media_type=BINARY)
