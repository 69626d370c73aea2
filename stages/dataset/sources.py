"""The files the data params name, read line by line: problems are collected, never raised, so one run reports
them all (each as `file:line: what is wrong; what is expected`)."""
from __future__ import annotations

import codecs
import json
import os
from pathlib import Path
from typing import Iterator

import charset_normalizer

from stages.dataset.records import Place

CHINESE = ("gb18030", "gbk", "gb2312", "hz", "big5")


def text_lines(path: Path, where: str, problems: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file (BOM allowed), streamed. Lines that are not UTF-8 are one problem for
    the file, naming the first, how many and the file's likely encoding (GBK, as Chinese Excel saves a 'CSV')."""
    bad, slot, first = 0, len(problems), None
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, (raw.removeprefix(codecs.BOM_UTF8) if n == 1 else raw).decode("utf-8")
            except UnicodeDecodeError as e:
                if first is None:
                    first = (n, raw[e.start], e.start + 1, likely_encoding(path))
                    problems.append("")
                bad += 1
                problems[slot] = not_utf8(where, *first, lines=bad)


def likely_encoding(path: Path) -> str | None:
    """The encoding a file that is not UTF-8 most likely has (charset-normalizer's best guess), None if unknown.
    Short Chinese text decodes as well in Korean code pages, which charset-normalizer may rank first; a Chinese
    encoding that reads the file as cleanly wins, since Chinese Excel's GBK is what our users' files come in."""
    matches = charset_normalizer.from_path(path)
    best = matches.best()
    if best is None:
        return None
    chinese = next((m for m in matches if m.encoding in CHINESE and m.chaos <= best.chaos), None)
    return (chinese or best).encoding


def iconv_name(encoding: str) -> str:
    """Python's codec name as iconv spells it: gb18030 -> GB18030, utf_16 -> UTF-16, euc_kr -> EUC-KR."""
    return encoding.upper().replace("_", "-")


def not_utf8(where: str, n: int, byte: int, at: int, encoding: str | None, lines: int) -> str:
    """The one problem of a file that is not UTF-8: where it starts, how many lines, its likely encoding and how
    to convert it."""
    file = where.rsplit("/", 1)[-1]
    guess = (f"; it is most likely {encoding}"
             + (" (GBK), as Excel saves a plain 'CSV' on a Chinese system" if encoding in CHINESE else "")
             + f"; convert it with `iconv -f {iconv_name(encoding)} -t UTF-8 {file} > utf8-{file}`, or save it from Excel as "
             "'CSV UTF-8'") if encoding else "; save it as UTF-8 (Excel: 'CSV UTF-8')"
    return (f"{where}:{n}: not UTF-8 text (byte 0x{byte:02x} at byte {at} of the line; {lines:,} "
            f"line{'s' if lines != 1 else ''} in all){guess}; expected UTF-8")


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
