"""Reading an uploaded zip of stimulus images without trusting it.

Before anything is decompressed, every entry is checked: its name (no ``..``, no absolute
path, no backslash, at most 255 bytes a part), its kind (no symbolic links), its declared size
and compression ratio, and the archive's declared total. Members are then read in chunks with
a hard cap at their declared size, so a header that lies cannot expand past it. Each refusal
names the entry and the limit.
"""

from __future__ import annotations

import stat
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from stimloop.api.errors import ApiError


@dataclass(frozen=True)
class ZipLimits:
    max_member_bytes: int  # one image, uncompressed
    max_total_bytes: int  # all images, uncompressed
    max_ratio: float = 100.0  # uncompressed / compressed, per member ...
    ratio_floor: int = 2**20  # ... once it expands past this (images compress little)
    max_members: int = 20_000
    max_name_bytes: int = 255


def refuse(entry: str, why: str) -> ApiError:
    return ApiError(400, "Refused zip entry", f"zip entry {entry[:300]!r}: {why}")


def checked_members(archive: zipfile.ZipFile, limits: ZipLimits) -> list[zipfile.ZipInfo]:
    """The entries to read (files; directories and dot-files skipped), all checked."""
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise ApiError(
            400,
            "Too many zip entries",
            f"the zip has {len(infos)} entries; at most {limits.max_members} are read",
        )
    members, total = [], 0
    for info in infos:
        name = info.filename
        if "\\" in name or "\x00" in name:
            raise refuse(name, "backslashes and NUL bytes are not allowed in names")
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts:
            raise refuse(name, "absolute paths and '..' are not allowed")
        if any(len(part.encode()) > limits.max_name_bytes for part in path.parts):
            raise refuse(name, f"a name part is longer than {limits.max_name_bytes} bytes")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise refuse(name, "symbolic links are not allowed")
        if info.is_dir() or path.name.startswith("."):
            continue
        if info.file_size > limits.max_member_bytes:
            raise ApiError(
                413,
                "Zip entry too large",
                f"zip entry {name!r} declares {info.file_size} "
                f"bytes; one image may have at most {limits.max_member_bytes}",
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.ratio_floor and ratio > limits.max_ratio:
            raise ApiError(
                413,
                "Zip entry too compressed",
                f"zip entry {name!r} expands "
                f"{info.file_size / info.compress_size:.0f}-fold; at most "
                f"{limits.max_ratio:.0f}-fold is accepted (a decompression bomb?)",
            )
        total += info.file_size
        if total > limits.max_total_bytes:
            raise ApiError(
                413,
                "Zip too large",
                f"the zip's entries declare over "
                f"{limits.max_total_bytes} bytes in all (STIMLOOP_MAX_UPLOAD_BYTES x 4)",
            )
        members.append(info)
    return members


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The member's bytes, never more than it declared (a lying header is refused)."""
    chunks, size = [], 0
    with archive.open(info) as f:
        while chunk := f.read(1 << 20):
            size += len(chunk)
            if size > info.file_size:
                raise refuse(info.filename, "expands beyond its declared size")
            chunks.append(chunk)
    return b"".join(chunks)
