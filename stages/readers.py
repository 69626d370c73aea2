"""Readers of the build stage's input formats (docs/data-formats.md). Each streams `Record`s - an ms-swift row
and where it came from - and appends what is wrong to a shared `problems` list instead of stopping.

  table        stages/table.py: CSV/TSV or JSONL with column roles in data.columns
  filename     stages/label_map.py: an image folder whose names encode the labels (seed 002)
  qa_jsonl     here: one `{image | images, question, answer, system?, id?}` per line (seed 003)
  swift_jsonl  here: ms-swift rows `{messages, images, ...}`, passed through

Image paths stay as written (relative to data.raw_dir); stages/validate.py checks and rewrites them.
"""
from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Iterator, NamedTuple

QA_KEYS = ("id", "image", "images", "question", "answer", "system")


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
    return value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip())


def text_lines(path: Path, where: str, problems: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file (BOM allowed), streamed; a line that is not UTF-8 is a problem."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, (raw.removeprefix(codecs.BOM_UTF8) if n == 1 else raw).decode("utf-8")
            except UnicodeDecodeError as e:
                problems.append(f"{where}:{n}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start + 1} "
                                "of the line); expected UTF-8: save the file as UTF-8 (Excel: 'CSV UTF-8')")


def jsonl_objects(path: Path, where: str, problems: list[str]) -> Iterator[tuple[int, dict]]:
    """(line number, object) of a JSON Lines file; blank lines are skipped, malformed ones are problems."""
    for n, text in text_lines(path, where, problems):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            hint = ("the file looks like one JSON array; expected JSON Lines, one object per line"
                    if n == 1 and text.lstrip().startswith("[") else "expected one JSON object per line")
            problems.append(f"{where}:{n}: malformed JSON ({e.msg} at column {e.colno}); {hint}")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{where}:{n}: expected a JSON object, got a JSON {type(obj).__name__}")
            continue
        yield n, obj


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
    return Record(where, swift_row(sid, images if isinstance(images, list) else [], text_or(obj.get("question"), cfg["prompt"]),
                                   answer, text_or(obj.get("system"), cfg["system"])))


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


def detect_format(path: Path) -> str:
    """`data.format: auto`: a folder -> filename; .csv/.tsv -> table; JSONL by the keys of its first row."""
    if path.is_dir():
        return "filename"
    if path.suffix in (".csv", ".tsv"):
        return "table"
    for _, obj in jsonl_objects(path, str(path), []):
        if "messages" in obj:
            return "swift_jsonl"
        return "qa_jsonl" if "answer" in obj and ("image" in obj or "images" in obj) else "table"
    return "table"
