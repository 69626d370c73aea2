"""One image file as the model will see it: decoded in full, then the model's own limits (pixel_problem), which the
build stage applies to every input image and the serve command to every image in a request.

Every image is decoded in full (a PNG whose chunks and CRCs are sound can still hold corrupt compressed data, so
`verify()`, which walks the chunks and CRCs and catches a cut-off file, runs as well), JPEG at 1/8 scale
(`draft`), which still reads its whole entropy-coded stream. Then what ms-swift's image processing would silently
whiten, turn, or refuse mid-training.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import NamedTuple

from PIL import Image, UnidentifiedImageError

FORMATS = "JPEG, PNG, WEBP, BMP, GIF or TIFF"
MAX_RATIO = 200   # the Qwen-VL image processors' smart_resize raises above this aspect ratio
# transformers' image processors take an axis of length 1 or 3 for the channel axis (infer_channel_dimension_format)
MIN_SIDE = 4
# Pillow's 16- and 32-bit modes (16-bit PNG/TIFF from microscope cameras): ms-swift's convert("RGB") clips every
# value over 255, so a 16-bit frame becomes solid white
WIDE_MODES = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}


class ImageInfo(NamedTuple):
    digest: bytes   # of the file's bytes: finds the same image under two names
    width: int
    height: int


EXIF_ORIENTATION = 0x0112   # 1: as stored; 2-8: viewers flip and/or rotate it


def pixel_problem(mode: str, w: int, h: int, model_type: str, orientation: int = 1) -> str | None:
    """What the model cannot use faithfully in an image of this mode, size and EXIF orientation, or None."""
    if not w or not h:
        return f"has zero size ({w}x{h} px)"
    if orientation not in (None, 1):
        return (f"has EXIF orientation {orientation}: viewers show it rotated or flipped, but ms-swift reads the pixels "
                "as stored, so the model would see it otherwise than you do; save it with the rotation applied, e.g. "
                "ImageOps.exif_transpose(Image.open(f)).save(f)")
    if mode in WIDE_MODES:
        return (f"is {WIDE_MODES[mode]}-bit (Pillow mode {mode}): ms-swift would clip it to 8 bits and train on solid "
                "white; convert it to 8-bit first, scaling its range to 0-255 (README: Your own data)")
    if min(w, h) < MIN_SIDE:
        return (f"is {w}x{h} px, too small to be read as an image (a side of 1 or 3 px passes for a colour axis); "
                f"expected at least {MIN_SIDE} px on each side")
    if max(w, h) / min(w, h) > MAX_RATIO:
        return (f"has an aspect ratio of {max(w, h) / min(w, h):.1f} ({w}x{h} px); the {model_type} image processor "
                f"refuses more than {MAX_RATIO}")
    return None


def decode(data: bytes) -> tuple[str, str, tuple[int, int], int]:
    """(format, mode, size, EXIF orientation) of an image, its pixels decoded in full (a truncated PNG opens and only
    fails on reading them): raises what Pillow raises."""
    with Image.open(io.BytesIO(data)) as im:
        fmt, mode, (w, h) = im.format, im.mode, im.size
        if fmt == "PNG":
            im.verify()
    with Image.open(io.BytesIO(data)) as im:
        if fmt == "JPEG":
            im.draft(im.mode, (max(1, w // 8), max(1, h // 8)))
        im.load()
        return fmt, mode, (w, h), im.getexif().get(EXIF_ORIENTATION, 1)


def inspect_image(path: Path, model_type: str) -> ImageInfo | str:
    """Digest and size of an image file, or what is wrong with it (empty, not an image, truncated, beyond the
    model's limits)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if not data:
        return "is empty (0 bytes)"
    try:
        with warnings.catch_warnings():
            # Pillow warns of images over 89 MP: the build's own warning names the pixel budget (large_image_warning)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            fmt, mode, (w, h), orientation = decode(data)
    except UnidentifiedImageError:
        return f"is not an image in a supported format; expected {FORMATS}"
    except Image.DecompressionBombError as e:
        return f"is too large to decode safely ({e})"
    except Exception as e:  # noqa: BLE001 - each decoder fails its own way; reported, never skipped
        return f"is truncated or corrupt ({type(e).__name__}: {e})"
    if problem := pixel_problem(mode, w, h, model_type, orientation):
        return problem
    return ImageInfo(hashlib.blake2b(data, digest_size=16).digest(), w, h)
