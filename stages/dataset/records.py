"""What every input format yields: `Record`s, an ms-swift row and where it came from (file:line).

Image paths stay as written (relative to data.raw_dir); stages/dataset/checks.py checks and rewrites them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple


class Place(NamedTuple):
    root: Path      # the repository root: output image paths are relative to it
    raw_dir: Path   # data.raw_dir, absolute: input paths are relative to it

    def rel(self, path: Path) -> str:
        return Path(path).relative_to(self.root).as_posix()


class Record(NamedTuple):
    where: str      # "data/raw/labels.csv:12" (file:line), or the image file for the filename format
    row: dict       # {"id", "messages", "images", ...}


def swift_row(sid: str, images: list, question: str, answer: str, system: str) -> dict:
    """An ms-swift row: one <image> tag per image before the question, unless the question places its own."""
    user = question if "<image>" in question else "<image>" * len(images) + question
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"id": sid, "messages": messages, "images": list(images)}


def answer_text(answer) -> str:
    """The assistant's text: a string as it is, anything else (a JSON object, a number) as compact JSON."""
    return answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)


def is_empty(value) -> bool:
    """None, NaN (pandas' empty cell) or blank text."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or (isinstance(value, float) and value != value)
