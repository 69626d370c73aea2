"""Stage `build`: the user's data, in one of four formats (docs/data-formats.md), -> ms-swift JSONL
train/val/test with a seeded (optionally stratified) split, or an error listing every problem and no output.

Each row is `{"id", "messages": [system?, user "<image>...<image>question", assistant answer], "images": [paths
relative to the repo]}`; ms-swift resolves the paths from the repo root, where the stages run, so the files stay
portable between machines. The formats: stages/dataset/formats/; checks: stages/dataset/checks.py; splits:
stages/dataset/split.py.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from tqdm import tqdm

from stages.common import ROOT, atomic_dir, count, setup_logging, stage_params
from stages.dataset.checks import Checker, DataError, large_image_warning, pixel_budget
from stages.dataset.formats import detect, reader
from stages.dataset.records import Place, Record
from stages.dataset.sources import inputs, system_prompt
from stages.dataset.split import class_label, imbalance_warning, leakage_warning, split, stratified_split

OUT = ROOT / "data" / "dataset"
log = logging.getLogger("build")


def records(fmt: str, path: Path, cfg: dict, place: Place, problems: list[str],
            exclude: set[Path]) -> Iterator[Record]:
    """The records of one labels file (or image folder) in format `fmt`."""
    fmt_module = reader(fmt)
    if fmt_module.FOLDER and not path.is_dir():
        problems.append(f"{place.rel(path)}: format {fmt} expects data.labels to name the image folder")
    elif not fmt_module.FOLDER and path.is_dir():
        problems.append(f"{place.rel(path)} is a folder; format {fmt} expects a labels file "
                        "(for labels in image file names, set data.format: filename)")
    else:
        yield from fmt_module.read(path, cfg, place, problems, exclude)


def check_all(fmt: str, paths: dict[str, Path], cfg: dict, place: Place, checker: Checker,
              spool: TextIO) -> tuple[list[int], list[tuple[bytes, ...]], list[str]]:
    """Stream the records of data.labels (then data.test_labels) through the checker into `spool`; return how
    many rows each file gave, each row's image digests and, with data.stratify, its class."""
    sizes, digests, labels, field = [], [], [], cfg["stratify"]
    for key in [k for k in ("labels", "test_labels") if k in paths]:
        before = len(checker.problems)
        exclude = {p for p in paths.values() if not paths[key].is_relative_to(p)}   # a test folder inside it
        for rec in tqdm(records(fmt, paths[key], cfg, place, checker.problems, exclude), unit=" rows", disable=None):
            row, digest = checker.check(rec)
            spool.write(json.dumps(row, ensure_ascii=False) + "\n")
            digests.append(digest)
            if field:
                labels.append(label := class_label(row, field))
                if label is None:
                    checker.problems.append(f"{rec.where}: the answer has no field {field!r} (data.stratify); "
                                            "expected a JSON object with it")
        sizes.append(len(digests) - sum(sizes))
        if not sizes[-1] and len(checker.problems) == before:
            checker.problems.append(f"{place.rel(paths[key])}: no samples; expected at least one (format {fmt})")
    return sizes, digests, labels


def split_rows(sizes: list[int], labels: list[str], cfg: dict, seed: int) -> dict[str, list[int]]:
    """Split data.labels' rows (stratified when asked); data.test_labels' rows, if any, are the test part."""
    n, fixed_test = sizes[0], sum(sizes[1:])
    test_ratio = 0 if len(sizes) > 1 else cfg["test_ratio"]
    parts = (stratified_split(labels[:n], cfg["val_ratio"], test_ratio, seed, cfg["stratify"]) if cfg["stratify"]
             else split(n, cfg["val_ratio"], test_ratio, seed))
    parts["test"] += list(range(n, n + fixed_test))
    return parts


def build_dataset(cfg: dict, model: dict, seed: int, spool: TextIO,
                  root: Path = ROOT) -> tuple[dict[str, list[int]], list[str]]:
    """Read and check every input, writing each row to `spool` (a JSON line, in input order) and keeping only
    its image digests and class; return the split (indices of spool lines) and the warnings.
    Raises DataError listing every problem, before any output is written."""
    place = Place(root, Path(os.path.normpath(root / cfg["raw_dir"])))
    paths, problems = inputs(cfg, place)
    if "system_file" in paths:
        system, bad = system_prompt(paths["system_file"], place.rel(paths["system_file"]))
        cfg, problems = {**cfg, "system": system}, problems + bad
    if problems or "labels" not in paths:
        raise DataError(f"{count(len(problems), 'problem')} in the data params (nothing was written):\n  "
                        + "\n  ".join(problems))
    fmt = detect(paths["labels"]) if cfg["format"] == "auto" else cfg["format"]
    checker = Checker(place, pixel_budget(model))
    sizes, digests, labels = check_all(fmt, paths, cfg, place, checker, spool)
    log.info("%s read (format %s), %s checked", count(len(digests), "sample"), fmt,
             count(len(checker.images), "image file"))
    parts = {}
    if sizes[0]:
        try:
            parts = split_rows(sizes, labels, cfg, seed)
        except DataError as e:
            checker.problems.append(str(e))
    if checker.problems:
        raise DataError(f"{count(len(checker.problems), 'problem')} in the input data (nothing was written):\n  "
                        + "\n  ".join(checker.problems))
    warnings = [large_image_warning(checker.n_large, checker.largest, model), leakage_warning(parts, digests, checker.images),
                imbalance_warning(labels, cfg["stratify"], cfg["imbalance_ratio"]) if cfg["stratify"] else None]
    return parts, [w for w in warnings if w]


def write_parts(lines: Iterable[str], parts: dict[str, list[int]], out: Path) -> None:
    """Stream the spooled rows into out/{train,val,test}.jsonl, each part in input order."""
    part_of = {i: name for name, idx in parts.items() for i in idx}
    with contextlib.ExitStack() as stack:
        files = {name: stack.enter_context(open(out / f"{name}.jsonl", "w", encoding="utf-8")) for name in parts}
        for i, line in enumerate(lines):
            files[part_of[i]].write(line)


def main() -> None:
    setup_logging()
    p = stage_params("build")
    try:
        with atomic_dir(OUT) as tmp, open(tmp / "rows.spool", "w+", encoding="utf-8") as spool:
            parts, warnings = build_dataset(p["data"], p["model"], p["seed"], spool)
            spool.seek(0)
            write_parts(spool, parts, tmp)
            os.remove(spool.name)
    except DataError as e:   # atomic_dir has removed the temp dir: the previous outputs are as they were
        log.error("%s", e)
        sys.exit(1)
    for warning in warnings:
        log.warning(warning)
    log.info("%s: %s train / %s val / %s test", count(sum(map(len, parts.values())), "sample"),
             f"{len(parts['train']):,}", f"{len(parts['val']):,}", f"{len(parts['test']):,}")


if __name__ == "__main__":
    main()
