"""Stimulus images are checked at the door: PNG or JPEG by content, pixel count, decoded once.

A file named ``.png`` that is a GIF, a PostScript program or a 20000 x 20000 decompression
bomb is refused when the set is registered or uploaded, naming the file and the limit, not
found later by a worker.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}


class ImageRefusedError(ValueError):
    """An image that is not a PNG/JPEG, too large, or not decodable; the message says which."""


def image_format(data: bytes) -> str | None:
    """ "PNG" or "JPEG" by the first bytes, else None."""
    return next((fmt for sig, fmt in SIGNATURES.items() if data.startswith(sig)), None)


def check_image(name: str, data: bytes, max_pixels: int) -> tuple[int, int]:
    """Verify ``data`` is a decodable PNG or JPEG of at most ``max_pixels``; its (w, h).

    The format comes from the first bytes (not the file name) and the size from the header,
    before any pixel is decoded; then the image is decoded once, with Pillow's own bomb check
    set to the same limit.
    """
    kind = image_format(data)
    if kind is None:
        raise ImageRefusedError(f"{name} is not a PNG or JPEG file (by its content)")
    previous = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = max_pixels
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.format != kind:
                    raise ImageRefusedError(f"{name} is not a PNG or JPEG file")
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageRefusedError(
                        f"{name} has {width} x {height} pixels; the limit is {max_pixels} "
                        "pixels (STIMLOOP_MAX_IMAGE_PIXELS)"
                    )
                img.load()
    except ImageRefusedError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRefusedError(
            f"{name} is larger than the limit of {max_pixels} pixels (STIMLOOP_MAX_IMAGE_PIXELS)"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageRefusedError(f"{name} cannot be decoded as {kind}: {exc}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return width, height
