"""The `filename` format: labels encoded in image file names through a positional label map.

The label code is the file name up to the first `data.label_separator` (`130_x.jpg` -> `130`); its i-th
character is looked up in `positions[i].map`, and `defaults` are added after the positional fields:

    {"mapping_type": "positional",
     "positions": [{"field": "status", "map": {"0": "No Leakage", "1": "Leakage"}}, ...],
     "defaults": {"confidence": 1.0}}
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterator

from stages.dataset.records import Place, Record, answer_text, swift_row

log = logging.getLogger("build")
Positions = list[tuple[str, dict]]
FOLDER = True


def detects(path: Path, first) -> bool:
    return path.is_dir()


def parse_label_map(spec, where: str) -> tuple[Positions, dict, list[str]]:
    """(positions as (field, map), defaults, problems) of a label map that has been read as JSON."""
    if not isinstance(spec, dict) or spec.get("mapping_type") != "positional":
        got = spec.get("mapping_type") if isinstance(spec, dict) else type(spec).__name__
        return [], {}, [f"{where}: mapping_type is {got!r}; expected \"positional\""]
    raw, defaults = spec.get("positions"), spec.get("defaults", {})
    if not isinstance(raw, list) or not raw:
        return [], {}, [f"{where}: 'positions' must be a non-empty list of {{\"field\": ..., \"map\": {{...}}}}"]
    positions, problems = [], []
    for i, pos in enumerate(raw):
        field, mapping = (pos.get("field"), pos.get("map")) if isinstance(pos, dict) else (None, None)
        if not isinstance(field, str) or not field or not isinstance(mapping, dict) or not mapping:
            problems.append(f"{where}: positions[{i}] must be {{\"field\": a name, \"map\": {{code: value, ...}}}}")
        elif long := [k for k in mapping if len(k) != 1]:
            problems.append(f"{where}: positions[{i}] ({field}) map key(s) {', '.join(map(repr, long))} must be "
                            "one character each: every character of the code is one position")
        elif field in (f for f, _ in positions):
            problems.append(f"{where}: positions[{i}]: field {field!r} appears twice")
        else:
            positions.append((field, mapping))
    if not isinstance(defaults, dict):
        problems.append(f"{where}: 'defaults' must be a JSON object")
    elif clash := [f for f, _ in positions if f in defaults]:
        problems.append(f"{where}: 'defaults' repeat positional field(s) {', '.join(clash)}")
    return positions, defaults if isinstance(defaults, dict) else {}, problems


def decode(code: str, positions: Positions, defaults: dict, map_name: str) -> tuple[dict, list[str]]:
    """The answer a label code stands for, e.g. '130' -> {status, sub_type, is_night_mode, ...defaults}."""
    fields = ", ".join(f for f, _ in positions)
    if len(code) != len(positions):
        return {}, [f"label code {code!r} has {len(code)} character(s); expected {len(positions)}, one per "
                    f"position of {map_name} ({fields})"]
    answer, problems = {}, []
    for i, (ch, (field, mapping)) in enumerate(zip(code, positions), 1):
        if ch in mapping:
            answer[field] = mapping[ch]
        else:
            problems.append(f"label value {ch!r} at position {i} ({field}) is not in {map_name}; "
                            f"expected one of {', '.join(mapping)}")
    return {**answer, **defaults}, problems


def image_files(folder: Path, exclude: set[Path]) -> list[Path]:
    """Every file under `folder`, sorted, except hidden ones (.DS_Store, .git/...) and `exclude`d paths."""
    files, hidden = [], 0
    for p in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(folder).parts):
            hidden += p.is_file()
        elif p.is_file() and not any(p == e or e in p.parents for e in exclude):
            files.append(p)
    if hidden:
        log.info("skipped %d hidden file(s) under %s", hidden, folder)
    return files


def read_label_map(path: Path, where: str) -> tuple[Positions, dict, list[str]]:
    if not path.is_file():
        return [], {}, [f"{where}: label map not found; expected a positional label_map.json (data.label_map)"]
    try:
        return parse_label_map(json.loads(path.read_text(encoding="utf-8-sig")), where)
    except UnicodeDecodeError:
        return [], {}, [f"{where}: not UTF-8 text; expected UTF-8: save the file as UTF-8"]
    except json.JSONDecodeError as e:
        return [], {}, [f"{where}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})"]


def read(folder: Path, cfg: dict, place: Place, problems: list[str], exclude: set[Path]) -> Iterator[Record]:
    """One record per image file under `folder`; its id is the path under the folder without the suffix."""
    map_path = Path(os.path.normpath(place.raw_dir / cfg["label_map"]))
    if not map_path.is_relative_to(place.raw_dir):
        problems.append(f"data.label_map {cfg['label_map']!r} is outside data.raw_dir; keep every input inside it")
        return
    positions, defaults, bad = read_label_map(map_path, place.rel(map_path))
    problems += bad
    if bad:
        return
    sep = cfg["label_separator"]
    for f in image_files(folder, exclude | {map_path}):
        code = f.stem.split(sep)[0] if sep else f.stem
        answer, wrong = decode(code, positions, defaults, map_path.name)
        where = place.rel(f)
        problems += [f"{where}: {w}" for w in wrong]
        sid, image = f.relative_to(folder).with_suffix("").as_posix(), f.relative_to(place.raw_dir).as_posix()
        yield Record(where, swift_row(sid, [image], cfg["prompt"], answer_text(answer), cfg["system"]))
