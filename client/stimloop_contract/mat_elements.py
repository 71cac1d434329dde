"""A MAT v5/v7 file's element tree, walked before any reader allocates for it (torch-free).

scipy's compiled reader trusts what a file declares: it allocates a cell array's declared
number of cells before reading them, and it recurses into nested cells and structs as deep as
the file goes, so a 240-byte file can ask for gigabytes and a 40 KiB one can crash the process.
This walk reads the same layout (the MAT-File Format document: a 128-byte header, then
``miMATRIX`` elements, each possibly inside one ``miCOMPRESSED`` element) and refuses, with the
limit named, before scipy sees the file:

* cells or structs nested deeper than a trial table can need (``MAX_DEPTH``);
* a cell array or struct declaring more elements than its bytes can hold, or more than a
  trial table can need (``MAX_ELEMENTS`` in one array, ``MAX_ELEMENTS_IN_FILE`` in all);
* classes a trial table never holds (sparse matrices, function handles, objects);
* more inflated bytes than the caller's limit (compressed elements are inflated as the walk
  reaches them, in bounded steps, and what the walk has passed is dropped).

The limits come from the scale of a trial table: a phase-one table of 475 bodies x 8 repeats
x 64 channels has 243,200 rows, and its two text columns are the only cell arrays it needs.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable

MI_INT8, MI_INT32, MI_UINT32, MI_MATRIX, MI_COMPRESSED = 1, 5, 6, 14, 15
CELL, STRUCT, OBJECT, CHAR, SPARSE, FUNCTION, OPAQUE = 1, 2, 3, 4, 5, 16, 17
NUMERIC = range(6, 16)  # double, single, int8 ... uint64
REFUSED = {
    OBJECT: "a MATLAB object",
    SPARSE: "a sparse matrix",
    FUNCTION: "a function handle",
    OPAQUE: "a MATLAB object (a table?)",
}

TABLE_ROWS = 475 * 8 * 64  # a phase-one table: bodies x repeats x channels
MAX_ELEMENTS = 2 * TABLE_ROWS  # cells (or struct elements x fields) in one array
MAX_ELEMENTS_IN_FILE = 2 * MAX_ELEMENTS  # in the whole file: two text columns, with room
MAX_DEPTH = 4  # a struct of cell arrays of text is 3 deep
MAX_DIMS = 32
MAX_FIELD_NAME = 64  # MATLAB's names have at most 63 characters

Refuse = Callable[[str], Exception]


class ElementBytes:
    """The bytes of one top-level element, by absolute offset. A compressed element is
    inflated as the walk asks for its bytes, in steps of at most 1 MiB; everything before the
    walk's position is dropped, so the walk holds a small window of the inflated data, and a
    bomb is refused where it crosses ``room`` bytes."""

    def __init__(self, data: bytes | memoryview, compressed: bool, room: int, refuse: Refuse):
        self.room, self.refuse = room, refuse
        self._inflater = zlib.decompressobj() if compressed else None
        self._pending = bytes(data) if compressed else b""
        self._buf: bytearray | memoryview = bytearray() if compressed else memoryview(data)
        self._base = 0  # absolute offset of _buf[0]
        self._mark: float = 0  # nothing before this offset is read again (inf: all read)
        self._finished = not compressed

    @property
    def produced(self) -> int:
        """Bytes made available so far (inflated so far, for a compressed element)."""
        return self._base + len(self._buf)

    def read(self, pos: int, n: int) -> bytes:
        """Bytes ``[pos, pos + n)``; nothing before ``pos`` is needed again."""
        self._mark = max(self._mark, pos)
        self._fill(pos + n)
        if pos + n > self.produced:
            raise self.refuse(f"ends inside an element at byte {pos} (the file is damaged)")
        k = pos - self._base
        return bytes(self._buf[k : k + n])

    def drain(self) -> int:
        """Inflate the rest (bounded by ``room``); the element's whole size."""
        self._mark = math.inf
        self._fill(math.inf)
        return self.produced

    def _fill(self, end: float) -> None:
        while self.produced < end and not self._finished:
            assert self._inflater is not None and isinstance(self._buf, bytearray)
            try:
                if self._pending:
                    want = int(min(max(end - self.produced, 2**16), 2**20))
                    chunk = self._inflater.decompress(self._pending, want)
                    self._pending = self._inflater.unconsumed_tail
                else:
                    chunk, self._finished = self._inflater.flush(), True
            except zlib.error as exc:
                raise self.refuse(f"a compressed variable is damaged ({exc})") from None
            self._buf += chunk
            drop = int(min(self._mark - self._base, len(self._buf)))
            if drop > 0:
                del self._buf[:drop]
                self._base += drop
            if self.produced > self.room:
                raise self.refuse(
                    f"its variables hold more than {self.room} bytes (a decompression bomb?)"
                )


class TreeWalk:
    """Walks the matrices of one file, counting their elements across the file."""

    def __init__(self, order: str, refuse: Refuse) -> None:
        self.order, self.refuse = order, refuse
        self.elements = 0

    def tag(self, src: ElementBytes, pos: int, end: int) -> tuple[int, int, int, int]:
        """A data element's (type, byte count, data offset, next element's offset); the
        small format packs up to 4 bytes of data into the tag."""
        first, second = struct.unpack(self.order + "II", src.read(pos, 8))
        if first >> 16:  # small data element
            kind, count = first & 0xFFFF, first >> 16
            if count > 4:
                raise self.refuse(f"a small data element declares {count} bytes at byte {pos}")
            data, following = pos + 4, pos + 8
        else:
            kind, count = first, second
            data, following = pos + 8, pos + 8 + count + (-count % 8)
        if data + count > end:
            raise self.refuse(
                f"an element at byte {pos} declares {count} bytes, but its matrix ends "
                f"{max(end - data, 0)} bytes later (the file is damaged)"
            )
        return kind, count, data, min(following, end)

    def matrix(self, src: ElementBytes, pos: int, end: int, depth: int, name: str) -> None:
        """The body ``[pos, end)`` of one ``miMATRIX`` element; ``depth`` 1 at the top."""
        if pos == end:
            return  # an empty matrix (an empty cell)
        kind, count, data, pos = self.tag(src, pos, end)
        if kind != MI_UINT32 or count < 8:
            raise self.refuse(f"a matrix without array flags at byte {data - 8}")
        cls = struct.unpack(self.order + "I", src.read(data, 4))[0] & 0xFF
        if cls == CHAR or cls in NUMERIC:
            src.read(end, 0)  # a leaf: its data is read as it is, never allocated by dims
            return
        where = f"{name!r}" if name else f"a value at byte {data}"
        if cls in REFUSED:
            raise self.refuse(
                f"{where} is {REFUSED[cls]}; a trial table holds numbers, text, cell arrays and "
                "structs: save its columns instead, e.g. T = table2struct(trials, "
                "'ToScalar', true); save(file, '-struct', 'T', '-v7')"
            )
        if cls not in (CELL, STRUCT):
            raise self.refuse(f"{where} has an unknown MATLAB class ({cls})")
        kind, count, data, pos = self.tag(src, pos, end)
        if kind != MI_INT32 or count % 4 or not 2 * 4 <= count <= MAX_DIMS * 4:
            raise self.refuse(f"{where}: its dimensions are damaged")
        dims = struct.unpack(f"{self.order}{count // 4}i", src.read(data, count))
        if min(dims) < 0:
            raise self.refuse(f"{where} declares negative dimensions {list(dims)}")
        n = math.prod(dims)
        kind, count, data, pos = self.tag(src, pos, end)  # the array's name
        if kind != MI_INT8:
            raise self.refuse(f"{where}: its name is damaged")
        fields = 1
        if cls == STRUCT:
            kind, count, data, pos = self.tag(src, pos, end)
            length = struct.unpack(self.order + "i", src.read(data, 4))[0] if count == 4 else -1
            if kind != MI_INT32 or not 0 < length <= MAX_FIELD_NAME:
                raise self.refuse(f"{where}: a struct whose field names are damaged")
            kind, count, data, pos = self.tag(src, pos, end)
            fields = count // length
        children = n * fields
        what = "cell array" if cls == CELL else "struct"
        if children and depth >= MAX_DEPTH:
            raise self.refuse(
                f"cells or structs nested deeper than {MAX_DEPTH} levels (at byte {data}); a "
                "trial table needs at most 3 (a struct of cell arrays of text)"
            )
        if children > MAX_ELEMENTS:
            raise self.refuse(
                f"{where} is a {what} of {children:,} elements; a trial table needs at most "
                f"{MAX_ELEMENTS:,} in one array (rows of a 475 x 8 x 64 table, twice)"
            )
        if children * 8 > end - pos:
            raise self.refuse(
                f"{where} declares a {what} of {children:,} elements, but its {end - pos} "
                f"bytes hold at most {(end - pos) // 8:,} (the file is damaged or forged)"
            )
        self.elements += children
        if self.elements > MAX_ELEMENTS_IN_FILE:
            raise self.refuse(
                f"its cell arrays and structs hold more than {MAX_ELEMENTS_IN_FILE:,} elements "
                "in all; a trial table needs at most two text columns of "
                f"{MAX_ELEMENTS:,} rows"
            )
        leaf = struct.Struct(self.order + "IIIII")  # a child's tag, its flags' tag, its flags
        for _ in range(children):
            head = src.read(pos, min(20, end - pos))
            if len(head) < 8:
                raise self.refuse(f"{where}: ends inside its {what} at byte {pos}")
            first, size = struct.unpack_from(self.order + "II", head)
            if first != MI_MATRIX or pos + 8 + size > end:
                raise self.refuse(
                    f"{where}: an element at byte {pos} is not a matrix within its {what}"
                )
            if size >= 16 and len(head) == 20:  # the common case, a text or number cell
                _, _, flags_kind, flags_count, flags = leaf.unpack(head)
                cls = flags & 0xFF
                if flags_kind == MI_UINT32 and flags_count == 8 and (cls == CHAR or cls in NUMERIC):
                    pos += 8 + size
                    src.read(pos, 0)
                    continue
            self.matrix(src, pos + 8, pos + 8 + size, depth + 1, "")
            pos += 8 + size


def walk_mat(data: bytes, limit: int, refuse: Refuse) -> None:
    """Walk every top-level element of a v5/v7 MAT-file's bytes (header included); refuse
    (``refuse(reason)`` is raised) whatever the module docstring lists, or more than
    ``limit`` bytes of variables."""
    if len(data) < 128:
        raise refuse(f"too short for a MAT-file ({len(data)} bytes)")
    order = {b"IM": "<", b"MI": ">"}.get(bytes(data[126:128]))
    if order is None:
        raise refuse("not a MAT-file (no byte-order mark in its header)")
    walk = TreeWalk(order, refuse)
    view = memoryview(data)
    total, pos = 0, 128
    while pos < len(data):
        if pos + 8 > len(data):
            raise refuse(f"ends inside an element's tag at byte {pos}")
        kind, size = struct.unpack(order + "II", view[pos : pos + 8])
        body = pos + 8
        if kind not in (MI_MATRIX, MI_COMPRESSED):
            raise refuse(f"top-level element of type {kind} at byte {pos}")
        if body + size > len(data):
            raise refuse(
                f"an element declares {size} bytes at byte {pos}, but the file ends "
                f"{len(data) - body} bytes later"
            )
        if kind == MI_COMPRESSED:
            src = ElementBytes(view[body : body + size], True, limit - total, refuse)
            inner, length = struct.unpack(order + "II", src.read(0, 8))
            if inner != MI_MATRIX:
                raise refuse(f"a compressed element at byte {pos} holds no matrix")
            walk.matrix(src, 8, 8 + length, 1, _name(src, order))
            total += src.drain()
        else:
            src = ElementBytes(view[body : body + size], False, limit - total, refuse)
            walk.matrix(src, 0, size, 1, _name(src, order, 0))
            total += size
        if total > limit:
            raise refuse(f"its variables hold more than {limit} bytes (a decompression bomb?)")
        pos = body + size + (-(body + size) % 8 if kind == MI_MATRIX else 0)


def _name(src: ElementBytes, order: str, start: int = 8) -> str:
    """A top-level matrix's variable name, for messages ('' where it cannot be read)."""
    try:
        head = src.read(start, min(src.produced - start, 128) if src.produced > start else 0)
        if len(head) < 32:
            return ""
        first, second = struct.unpack_from(order + "II", head, 16)  # the dimensions' tag
        if first >> 16:
            return ""
        pos = 24 + second + (-second % 8)
        first, second = struct.unpack_from(order + "II", head, pos)
        if first >> 16:
            return head[pos + 4 : pos + 4 + (first >> 16)].decode("ascii", "replace")
        return head[pos + 8 : pos + 8 + min(second, 63)].decode("ascii", "replace")
    except (struct.error, ValueError):
        return ""
