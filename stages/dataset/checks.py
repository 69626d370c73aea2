"""Checks of the build stage: every image path and file, every row's messages, unique ids; and the warning
about images over the pixel budget (the split's warnings are in stages/dataset/split.py).

Images are checked one at a time (stages/dataset/images.py) and only a digest and a size are kept, so memory does
not grow with them.
"""
from __future__ import annotations

import functools
import os
import unicodedata
from pathlib import Path

from stages.dataset.images import ImageInfo, inspect_image
from stages.dataset.records import Place, Record

PATCH_PX = {"qwen3_vl": 16 * 2, "qwen2_5_vl": 14 * 2, "qwen2_vl": 14 * 2}   # vision patch x spatial merge
ROLES = ("system", "user", "assistant", "tool", "tool_call", "tool_response")


class DataError(ValueError):
    """The input data has problems; the message lists every one of them."""



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
    if value.startswith("data:"):
        return (f"image {value[:40]!r}{'...' if len(value) > 40 else ''} is a data: URI (the bytes inline); expected a "
                "file in the data folder (save it there)")
    full = Path(os.path.normpath(place.raw_dir / value.replace("\\", "/")))
    if not full.is_relative_to(place.raw_dir):
        return f"image path {value!r} escapes the data folder {place.rel(place.raw_dir)}; expected a path inside it"
    # the same name in the other Unicode form: macOS writes file names decomposed (NFD), spreadsheets composed (NFC)
    full = next((alt for form in ("NFC", "NFD") if not full.is_file()
                 and (alt := Path(unicodedata.normalize(form, str(full)))).is_file()), full)
    if not full.is_file():
        return f"image not found: {place.rel(full)}"
    if not (real := full.resolve()).is_relative_to(real_dir(place.raw_dir)):   # a symbolic link on the way
        return (f"image {place.rel(full)} is a link to {real}, outside the data folder {place.rel(place.raw_dir)}; "
                "expected a file inside it (copy it in)")
    return full, place.rel(full)


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
