"""The files the data params name, read line by line: problems are collected, never raised, so one run reports
them all (each as `file:line: what is wrong; what is expected`)."""
from __future__ import annotations

import codecs
import json
import os
from pathlib import Path
from typing import Iterator

from stages.dataset.records import Place


def text_lines(path: Path, where: str, problems: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file (BOM allowed), streamed. Lines that are not UTF-8 are one problem for
    the file, naming the first and how many; it says so when the file is GBK, as Chinese Excel saves a 'CSV'."""
    bad, slot, first = 0, len(problems), None
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, (raw.removeprefix(codecs.BOM_UTF8) if n == 1 else raw).decode("utf-8")
            except UnicodeDecodeError as e:
                if first is None:
                    first = (n, raw[e.start], e.start + 1, is_gbk(path))
                    problems.append("")
                bad += 1
                problems[slot] = not_utf8(where, *first, lines=bad)


def is_gbk(path: Path) -> bool:
    try:
        Path(path).read_bytes().decode("gb18030")
        return True
    except UnicodeDecodeError:
        return False


def not_utf8(where: str, n: int, byte: int, at: int, gbk: bool, lines: int) -> str:
    """The one problem of a file that is not UTF-8: where it starts, how many lines, and GBK when it is."""
    encoding = "; it reads as GBK (GB18030), as Excel saves a plain 'CSV' on a Chinese system" if gbk else ""
    return (f"{where}:{n}: not UTF-8 text (byte 0x{byte:02x} at byte {at} of the line; {lines:,} "
            f"line{'s' if lines != 1 else ''} in all){encoding}; expected UTF-8: save the file as UTF-8 "
            "(Excel: 'CSV UTF-8')")


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
    """data.system_file's text (a prompt file): plain text, or JSON {"system_prompt": "..."}."""
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
