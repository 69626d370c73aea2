"""The `qa_jsonl` format: JSON Lines, one `{image | images, question, answer, system?, id?}` per line."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from stages.dataset.records import Place, Record, answer_text, swift_row
from stages.dataset.sources import jsonl_objects

QA_KEYS = ("id", "image", "images", "question", "answer", "system")
FOLDER = False


def detects(path: Path, first) -> bool:
    row = first() or {}
    return "answer" in row and ("image" in row or "images" in row)


def text_or(value, default: str) -> str:
    return value if isinstance(value, str) and value.strip() else default


def qa_record(obj: dict, where: str, default_id: str, cfg: dict, problems: list[str]) -> Record:
    """`{image | images, question, answer, system?, id?}` -> an ms-swift row. An empty or
    missing question falls back to data.prompt, a missing system to data.system; an answer that is not a string
    (a JSON object) becomes compact JSON."""
    if unknown := [k for k in obj if k not in QA_KEYS]:
        problems.append(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(QA_KEYS)}")
    if "image" in obj and "images" in obj:
        problems.append(f"{where}: both 'image' and 'images'; expected one of them")
    images = [obj["image"]] if "image" in obj else obj.get("images")
    if images is None:
        problems.append(f"{where}: no image; expected 'image' (a path) or 'images' (a list of paths)")
    elif not isinstance(images, list):
        problems.append(f"{where}: 'images' is a JSON {type(images).__name__}; expected a list of paths")
    if bad := [k for k in ("question", "system") if obj.get(k) is not None and not isinstance(obj[k], str)]:
        problems.append(f"{where}: {' and '.join(bad)} must be text")
    answer = "" if obj.get("answer") is None else answer_text(obj["answer"])
    sid = str(obj["id"]) if obj.get("id") not in (None, "") else default_id
    question, system = text_or(obj.get("question"), cfg["prompt"]), text_or(obj.get("system"), cfg["system"])
    return Record(where, swift_row(sid, images if isinstance(images, list) else [], question, answer, system))


def read(path: Path, cfg: dict, place: Place, problems: list[str], exclude: set[Path]) -> Iterator[Record]:
    """The records of a qa_jsonl file; rows without an `id` get `<file stem>-<line>`."""
    where = place.rel(path)
    for n, obj in jsonl_objects(path, where, problems):
        yield qa_record(obj, f"{where}:{n}", f"{path.stem}-{n}", cfg, problems)
