"""The `swift_jsonl` format: ms-swift rows `{messages, images, ...}`, one per line, passed through."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from stages.dataset.records import Place, Record
from stages.dataset.sources import jsonl_objects

FOLDER = False


def detects(path: Path, first) -> bool:
    return "messages" in (first() or {})


def swift_record(obj: dict, where: str, default_id: str, problems: list[str]) -> Record:
    """An ms-swift row, kept as it is (other keys too), with an `id` first; stages/dataset/checks.py checks it."""
    images = obj.get("images", [])
    if not isinstance(images, list):
        problems.append(f"{where}: 'images' is a JSON {type(images).__name__}; expected a list of paths")
        images = []
    if "messages" not in obj:
        problems.append(f"{where}: no 'messages'; expected an ms-swift row {{\"messages\": [...], \"images\": [...]}}")
    sid = str(obj["id"]) if obj.get("id") not in (None, "") else default_id
    rest = {k: v for k, v in obj.items() if k not in ("id", "messages", "images")}
    return Record(where, {"id": sid, "messages": obj.get("messages", []), "images": images, **rest})


def read(path: Path, cfg: dict, place: Place, problems: list[str], exclude: set[Path]) -> Iterator[Record]:
    """The records of a swift_jsonl file; rows without an `id` get `<file stem>-<line>`."""
    where = place.rel(path)
    for n, obj in jsonl_objects(path, where, problems):
        yield swift_record(obj, f"{where}:{n}", f"{path.stem}-{n}", problems)
