"""The `qa_jsonl` (seed 003) and `swift_jsonl` formats: JSON Lines, one sample per line."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from stages.readers import Place, Record, answer_text, jsonl_objects, swift_row

QA_KEYS = ("id", "image", "images", "question", "answer", "system")


def text_or(value, default: str) -> str:
    return value if isinstance(value, str) and value.strip() else default


def qa_record(obj: dict, where: str, default_id: str, cfg: dict, problems: list[str]) -> Record:
    """`{image | images, question, answer, system?, id?}` -> an ms-swift row (seed 003's format). An empty or
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


def swift_record(obj: dict, where: str, default_id: str, problems: list[str]) -> Record:
    """An ms-swift row, kept as it is (other keys too), with an `id` first; stages/validate.py checks it."""
    images = obj.get("images", [])
    if not isinstance(images, list):
        problems.append(f"{where}: 'images' is a JSON {type(images).__name__}; expected a list of paths")
        images = []
    if "messages" not in obj:
        problems.append(f"{where}: no 'messages'; expected an ms-swift row {{\"messages\": [...], \"images\": [...]}}")
    sid = str(obj["id"]) if obj.get("id") not in (None, "") else default_id
    rest = {k: v for k, v in obj.items() if k not in ("id", "messages", "images")}
    return Record(where, {"id": sid, "messages": obj.get("messages", []), "images": images, **rest})


def read_jsonl(fmt: str, path: Path, cfg: dict, place: Place, problems: list[str]) -> Iterator[Record]:
    """The records of a qa_jsonl or swift_jsonl file; rows without an `id` get `<file stem>-<line>`."""
    where = place.rel(path)
    for n, obj in jsonl_objects(path, where, problems):
        if fmt == "qa_jsonl":
            yield qa_record(obj, f"{where}:{n}", f"{path.stem}-{n}", cfg, problems)
        else:
            yield swift_record(obj, f"{where}:{n}", f"{path.stem}-{n}", problems)
