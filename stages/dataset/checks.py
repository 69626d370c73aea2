"""Checks of the build stage: every image path and file, every row's messages, unique ids; and the warning
about images over the pixel budget (the split's warnings are in stages/dataset/split.py).

Images are checked one at a time and only a digest and a size are kept, so memory does not grow with them.
Every image is decoded in full (a PNG whose chunks and CRCs are sound can still hold corrupt compressed data, so
`verify()`, which walks the chunks and CRCs and catches a cut-off file, runs as well), JPEG at 1/8 scale
(`draft`), which still reads its whole entropy-coded stream. Then the model's own limits:
what ms-swift's image processing would silently whiten, or refuse mid-training (pixel_problem).
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
from pathlib import Path
from typing import NamedTuple

from PIL import Image, UnidentifiedImageError

from stages.dataset.records import Place, Record

FORMATS = "JPEG, PNG, WEBP, BMP, GIF or TIFF"
PATCH_PX = {"qwen3_vl": 16 * 2, "qwen2_5_vl": 14 * 2, "qwen2_vl": 14 * 2}   # vision patch x spatial merge
ROLES = ("system", "user", "assistant", "tool", "tool_call", "tool_response")
MAX_RATIO = 200   # the Qwen-VL image processors' smart_resize raises above this aspect ratio
# transformers' image processors take an axis of length 1 or 3 for the channel axis (infer_channel_dimension_format)
MIN_SIDE = 4
# Pillow's 16- and 32-bit modes (16-bit PNG/TIFF from microscope cameras): ms-swift's convert("RGB") clips every
# value over 255, so a 16-bit frame becomes solid white
WIDE_MODES = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}


class DataError(ValueError):
    """The input data has problems; the message lists every one of them."""


class ImageInfo(NamedTuple):
    digest: bytes   # of the file's bytes: finds the same image under two names
    width: int
    height: int


@functools.cache
def real_dir(folder: Path) -> Path:
    """The data folder with its links resolved: once per build, not once per image."""
    return folder.resolve()


def resolve_image(value, place: Place) -> tuple[Path, str] | str:
    """(absolute path, path relative to the repo root) of an image path as written in the input, or what is
    wrong with it. Relative paths are relative to data.raw_dir; absolute ones must lie inside it too."""
    if not isinstance(value, str) or not value.strip():
        return f"image path {value!r} is not a path; expected a path relative to the data folder"
    if "://" in value:
        return f"image {value!r} is a URL; expected a file in the data folder (download it first)"
    full = Path(os.path.normpath(place.raw_dir / value.replace("\\", "/")))
    if not full.is_relative_to(place.raw_dir):
        return f"image path {value!r} escapes the data folder {place.rel(place.raw_dir)}; expected a path inside it"
    if not full.is_file():
        return f"image not found: {place.rel(full)}"
    if not (real := full.resolve()).is_relative_to(real_dir(place.raw_dir)):   # a symbolic link on the way
        return (f"image {place.rel(full)} is a link to {real}, outside the data folder {place.rel(place.raw_dir)}; "
                "expected a file inside it (copy it in)")
    return full, place.rel(full)


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
        with Image.open(io.BytesIO(data)) as im:
            fmt, mode, (w, h) = im.format, im.mode, im.size
            if fmt == "PNG":
                im.verify()
        with Image.open(io.BytesIO(data)) as im:
            if fmt == "JPEG":
                im.draft(im.mode, (max(1, w // 8), max(1, h // 8)))
            im.load()
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    except UnidentifiedImageError:
        return f"is not an image in a supported format; expected {FORMATS}"
    except Image.DecompressionBombError as e:
        return f"is too large to decode safely ({e})"
    except Exception as e:  # noqa: BLE001 - each decoder fails its own way; reported, never skipped
        return f"is truncated or corrupt ({type(e).__name__}: {e})"
    if problem := pixel_problem(mode, w, h, model_type, orientation):
        return problem
    return ImageInfo(hashlib.blake2b(data, digest_size=16).digest(), w, h)


def check_messages(row: dict) -> list[str]:
    """Problems of an ms-swift row's messages: shape, roles, a final non-empty assistant answer, and one
    <image> tag per image."""
    msgs = row.get("messages")
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
        return ["'messages' must be a non-empty list of {\"role\": ..., \"content\": ...}"]
    problems = [f"messages[{i}]: role {m.get('role')!r}; expected one of {', '.join(ROLES)}"
                for i, m in enumerate(msgs) if m.get("role") not in ROLES]
    problems += [f"messages[{i}]: content must be text" for i, m in enumerate(msgs)
                 if not isinstance(m.get("content"), str)]
    last = msgs[-1]
    if last.get("role") != "assistant" or not isinstance(last.get("content"), str) or not last["content"].strip():
        problems.append("empty answer: expected a non-empty assistant message last")
    tags = sum(m["content"].count("<image>") for m in msgs if isinstance(m.get("content"), str))
    if tags != len(row["images"]):
        problems.append(f"{tags} <image> tag(s) in the messages but {len(row['images'])} image(s); "
                        "expected one <image> tag per image")
    return problems


class Checker:
    """Checks records one at a time, keeping only what later checks need: ids, image digests and sizes."""

    def __init__(self, place: Place, model: dict):
        self.place, self.budget, self.model_type = place, pixel_budget(model), model["model_type"]
        self.problems: list[str] = []
        self.ids: dict[str, str] = {}                           # id -> where it was first seen
        self.images: dict[str, ImageInfo | str] = {}            # repo-relative path -> info: inspected once
        self.n_large, self.largest = 0, (0, "", 0, 0)          # images over the budget; (px, path, w, h)

    def check(self, rec: Record) -> tuple[dict, tuple[bytes, ...]]:
        """The row with its image paths relative to the repo root, and the images' digests."""
        where, row = rec
        self.problems += [f"{where}: {p}" for p in check_messages(row)]
        if (first := self.ids.setdefault(row["id"], where)) != where:
            self.problems.append(f"{where}: duplicate id {row['id']!r} (first at {first}); expected unique ids")
        paths, digests = [], []
        for value in row["images"]:
            resolved = resolve_image(value, self.place)
            if isinstance(resolved, str):
                self.problems.append(f"{where}: {resolved}")
                continue
            full, rel = resolved
            if rel not in self.images:
                self.images[rel] = info = inspect_image(full, self.model_type)
                if isinstance(info, ImageInfo) and (px := info.width * info.height) > self.budget:
                    self.n_large += 1
                    self.largest = max(self.largest, (px, rel, info.width, info.height))
            info = self.images[rel]
            if isinstance(info, str):   # (the filename format's rows are named by their image already)
                self.problems.append(f"{where}: the image {info}" if where == rel else f"{where}: image {rel} {info}")
            paths.append(rel)
            digests.append(info.digest if isinstance(info, ImageInfo) else b"")
        return {**row, "images": paths}, tuple(digests)


def pixel_budget(model: dict) -> int:
    """The most pixels an image keeps in ms-swift: IMAGE_MAX_TOKEN_NUM x (patch x merge)^2."""
    return model["image_max_token_num"] * PATCH_PX[model["model_type"]] ** 2


def large_image_warning(n: int, largest: tuple[int, str, int, int], model: dict) -> str | None:
    """How many images exceed the pixel budget and the largest, (px, path, w, h), as a warning."""
    if not n:
        return None
    _, path, w, h = largest
    side = PATCH_PX[model["model_type"]]
    return (f"{n:,} image(s) exceed the pixel budget model.image_max_token_num {model['image_max_token_num']} "
            f"x {side}x{side} px = {pixel_budget(model):,} px and will be downscaled to it by ms-swift "
            f"(largest: {path}, {w}x{h} px); raise model.image_max_token_num to keep more detail")
