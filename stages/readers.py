"""Readers of the build stage's input formats (docs/data-formats.md). Each streams `Record`s - an ms-swift row
and where it came from - and appends what is wrong to a shared `problems` list instead of stopping.

  table        stages/table.py: CSV/TSV or JSONL with column roles in data.columns
  filename     stages/label_map.py: an image folder whose names encode the labels (seed 002)
  qa_jsonl     stages/jsonl_rows.py: one `{image | images, question, answer, system?, id?}` per line (seed 003)
  swift_jsonl  stages/jsonl_rows.py: ms-swift rows `{messages, images, ...}`, passed through

Image paths stay as written (relative to data.raw_dir); stages/validate.py checks and rewrites them.
"""
from __future__ import annotations

import codecs
import json
import os
from pathlib import Path
from typing import Iterator, NamedTuple


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


def inputs(cfg: dict, place: Place) -> tuple[dict[str, Path], list[str]]:
    """The files named in data.labels/test_labels/system_file, each checked to exist inside data.raw_dir
    (the stage's only data dep)."""
    if not place.raw_dir.is_relative_to(place.root) or not place.raw_dir.is_dir():
        return {}, [f"data.raw_dir {cfg['raw_dir']!r}: expected an existing folder inside the repository"]
    paths, problems = {}, []
    for key in [k for k in ("labels", "test_labels", "system_file") if cfg[k]]:
        full = Path(os.path.normpath(place.raw_dir / cfg[key]))
        if not full.is_relative_to(place.raw_dir):
            problems.append(f"data.{key} {cfg[key]!r} is outside data.raw_dir {cfg['raw_dir']}; "
                            "keep every input inside it")
        elif not full.exists():
            problems.append(f"data.{key}: {place.rel(full)} not found (paths are relative to data.raw_dir)")
        else:
            paths[key] = full
    return paths, problems


def system_prompt(path: Path, where: str) -> tuple[str, list[str]]:
    """data.system_file's text (seed 002's prompt file): plain text, or JSON {"system_prompt": "..."}."""
    try:
        text = path.read_text(encoding="utf-8-sig").strip()
    except UnicodeDecodeError:
        return "", [f"{where}: not UTF-8 text; expected UTF-8: save the file as UTF-8"]
    try:
        obj = json.loads(text)
    except ValueError:
        return text, [] if text else [f"{where}: empty; expected the system prompt"]
    if isinstance(obj, dict) and isinstance(obj.get("system_prompt"), str) or isinstance(obj, str):
        return (obj if isinstance(obj, str) else obj["system_prompt"]), []
    return "", [f"{where}: JSON, but not {{\"system_prompt\": \"...\"}}; expected that or plain text"]
