"""Stage `build`: the user's data, in one of four formats (docs/data-formats.md), -> ms-swift JSONL
train/val/test with a seeded (optionally stratified) split, or an error listing every problem and no output.

Each row is `{"id", "messages": [system?, user "<image>...<image>question", assistant answer], "images": [paths
relative to the repo]}`; ms-swift resolves the paths from the repo root, where the stages run, so the files stay
portable between machines. Readers: stages/readers.py, table.py, label_map.py; checks: stages/validate.py.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from stages.common import ROOT, atomic_dir, count, setup_logging, stage_params, write_jsonl
from stages.label_map import read_filename
from stages.readers import Place, Record, detect_format, read_jsonl
from stages.splits import class_labels, split, stratified_split
from stages.table import read_table
from stages.validate import Checker, DataError, imbalance_warning, large_image_warning, leakage_warning, pixel_budget

OUT = ROOT / "data" / "dataset"
log = logging.getLogger("build")


def inputs(cfg: dict, place: Place) -> tuple[dict[str, Path], list[str]]:
    """The files named in data.labels/test_labels/system_file, each checked to exist inside data.raw_dir
    (the stage's only data dep)."""
    if not place.raw_dir.is_relative_to(place.root) or not place.raw_dir.is_dir():
        return {}, [f"data.raw_dir {cfg['raw_dir']!r}: expected an existing folder inside the repository"]
    paths, problems = {}, []
    for key in ("labels", "test_labels", "system_file"):
        full = Path(os.path.normpath(place.raw_dir / cfg[key]))
        if not cfg[key]:
            continue
        if not full.is_relative_to(place.raw_dir):
            problems.append(f"data.{key} {cfg[key]!r} is outside data.raw_dir {cfg['raw_dir']}; keep every input inside it")
        elif not full.exists():
            problems.append(f"data.{key}: {place.rel(full)} not found (paths are relative to data.raw_dir)")
        else:
            paths[key] = full
    return paths, problems


def system_prompt(path: Path, where: str) -> tuple[str, list[str]]:
    """data.system_file's text (seed 002's prompt file): plain text, or JSON {"system_prompt": "..."}."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        return "", [f"{where}: not UTF-8 text; expected UTF-8: save the file as UTF-8"]
    try:
        obj = json.loads(text)
    except ValueError:
        return text, [] if text else [f"{where}: empty; expected the system prompt"]
    if isinstance(obj, dict) and isinstance(obj.get("system_prompt"), str) or isinstance(obj, str):
        return (obj if isinstance(obj, str) else obj["system_prompt"]), []
    return "", [f"{where}: JSON, but not {{\"system_prompt\": \"...\"}}; expected that or plain text"]


def records(fmt: str, path: Path, cfg: dict, place: Place, problems: list[str], exclude: set[Path]) -> Iterator[Record]:
    if fmt == "filename" and not path.is_dir():
        problems.append(f"{place.rel(path)}: format filename expects data.labels to name the image folder")
    elif fmt != "filename" and path.is_dir():
        problems.append(f"{place.rel(path)} is a folder; format {fmt} expects a labels file "
                        "(for labels in image file names, set data.format: filename)")
    elif fmt == "filename":
        yield from read_filename(path, cfg, place, problems, exclude)
    elif fmt == "table":
        yield from read_table(path, cfg, place, problems)
    else:
        yield from read_jsonl(fmt, path, cfg, place, problems)


def build_dataset(cfg: dict, model: dict, seed: int, root: Path = ROOT) -> tuple[list[dict], dict[str, list[int]], list[str]]:
    """(rows, split index lists, warnings), reading and checking everything before anything is written.
    Raises DataError listing every problem found."""
    place = Place(root, Path(os.path.normpath(root / cfg["raw_dir"])))
    paths, problems = inputs(cfg, place)
    if "system_file" in paths:
        system, bad = system_prompt(paths["system_file"], place.rel(paths["system_file"]))
        cfg, problems = {**cfg, "system": system}, problems + bad
    if problems or "labels" not in paths:
        raise DataError(f"{count(len(problems), 'problem')} in the data params (nothing was written):\n  " + "\n  ".join(problems))
    fmt = detect_format(paths["labels"]) if cfg["format"] == "auto" else cfg["format"]
    checker, rows, digests, wheres, sizes = Checker(place, pixel_budget(model)), [], [], [], []
    for key in ("labels", "test_labels"):
        if key not in paths:
            continue
        for rec in tqdm(records(fmt, paths[key], cfg, place, checker.problems, set(paths.values()) - {paths[key]}),
                        unit=" rows", disable=None):
            row, digest = checker.check(rec)
            rows.append(row)
            digests.append(digest)
            wheres.append(rec.where)
        sizes.append(len(rows) - sum(sizes))
        if not sizes[-1]:
            checker.problems.append(f"{place.rel(paths[key])}: no samples; expected at least one (format {fmt})")
    log.info("%s read (format %s), %s checked", count(len(rows), "sample"), fmt, count(len(checker.images), "image file"))
    labels, parts = [], {}
    if cfg["stratify"]:
        labels, bad = class_labels(rows, wheres, cfg["stratify"])
        checker.problems += bad
    if sizes[0]:
        try:
            n, test_ratio = sizes[0], (0 if len(sizes) > 1 else cfg["test_ratio"])
            parts = (stratified_split(labels[:n], cfg["val_ratio"], test_ratio, seed, cfg["stratify"]) if labels
                     else split(n, cfg["val_ratio"], test_ratio, seed))
            parts["test"] += list(range(n, len(rows)))
        except DataError as e:
            checker.problems.append(str(e))
    if checker.problems:
        raise DataError(f"{count(len(checker.problems), 'problem')} in the input data (nothing was written):\n  "
                        + "\n  ".join(checker.problems))
    warnings = [large_image_warning(checker.large, model), leakage_warning(parts, digests, rows),
                imbalance_warning(labels, cfg["stratify"], cfg["imbalance_ratio"]) if labels else None]
    return rows, parts, [w for w in warnings if w]


def main() -> None:
    setup_logging()
    p = stage_params("build")
    try:
        rows, parts, warnings = build_dataset(p["data"], p["model"], p["seed"])
    except DataError as e:
        log.error("%s", e)
        sys.exit(1)
    for warning in warnings:
        log.warning(warning)
    with atomic_dir(OUT) as tmp:
        for name, idx in parts.items():
            write_jsonl(tmp / f"{name}.jsonl", (rows[i] for i in idx))
    log.info("%s: %s train / %s val / %s test", count(len(rows), "sample"),
             f"{len(parts['train']):,}", f"{len(parts['val']):,}", f"{len(parts['test']):,}")


if __name__ == "__main__":
    main()
