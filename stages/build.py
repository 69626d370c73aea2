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

from stages.common import ROOT, count, setup_logging, stage_params
from stages.dataset.checks import Checker, DataError, large_image_warning
from stages.dataset.formats import detect, reader
from stages.dataset.records import Place, Record
from stages.dataset.rows import Rows, last_content, sort_problems
from stages.dataset.sources import inputs, system_prompt
from stages.dataset.split import class_label, imbalance_warning, leakage_warning, split, stratified_split
from stages.scoring.fields import answer_kind, reference, resolve_fields
from stages.storage.atomic import atomic_dir

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


def check_all(fmt: str, paths: dict[str, Path], cfg: dict, place: Place, checker: Checker, spool: TextIO) -> Rows:
    """Stream the records of data.labels (then data.test_labels) through the checker into `spool`, noting each
    row's problems by its place."""
    rows, field = Rows(), cfg["stratify"]
    for n_file, key in enumerate(k for k in ("labels", "test_labels") if k in paths):
        before_file, count_before = len(checker.problems), len(rows.where)
        exclude = {p for p in paths.values() if not paths[key].is_relative_to(p)}   # a test folder inside it
        for rec in tqdm(records(fmt, paths[key], cfg, place, checker.problems, exclude), unit=" rows", disable=None):
            row, digest = checker.check(rec)
            spool.write(json.dumps(row, ensure_ascii=False) + "\n")
            label = class_label(row, field) if field else None
            if field and label is None:
                checker.problems.append(f"{rec.where}: the answer has no field {field!r} (data.stratify); "
                                        "expected a JSON object with it")
            rows.add(n_file, digest, label, rec.where, last_content(row))
        if len(rows.where) == count_before and len(checker.problems) == before_file:
            checker.problems.append(f"{place.rel(paths[key])}: no samples; expected at least one (format {fmt})")
    return rows


def split_rows(rows: Rows, kept: list[int], cfg: dict, seed: int) -> dict[str, list[int]]:
    """Split data.labels' kept rows (stratified when asked); data.test_labels' rows, if any, are the test part.
    Returns spool line indices."""
    main, fixed_test = [i for i in kept if rows.file[i] == 0], [i for i in kept if rows.file[i] == 1]
    test_ratio = 0 if 1 in rows.file else cfg["test_ratio"]
    labels = [rows.labels[i] for i in main]
    parts = (stratified_split(labels, cfg["val_ratio"], test_ratio, seed, cfg["stratify"]) if cfg["stratify"]
             else split(len(main), cfg["val_ratio"], test_ratio, seed))
    parts = {name: [main[j] for j in idx] for name, idx in parts.items()}
    parts["test"] += fixed_test
    return parts


def what_is_scored(rows: Rows, kept: list[int], cfg: dict, score: dict) -> tuple[dict, list[str], list[str]]:
    """fields.json (the answer kind, each field's type and tolerance), the problems of rows whose answers do not fit
    the kind, and the problems and warnings of the score params against the answers."""
    if not kept:   # nothing to judge: the other problems say why
        return {"answer_kind": cfg["answer_kind"], "fields": {}}, [], []
    kind, row_problems, warnings = answer_kind([(rows.where[i], rows.answers[i]) for i in kept], cfg["answer_kind"])
    named = {p.split(": ", 1)[0] for p in row_problems}
    good = [i for i in kept if rows.where[i] not in named]
    refs = [reference(rows.answers[i], kind) for i in good]
    specs, problems, more = resolve_fields(refs, score["fields"], score["tolerance"], score["max_classes"],
                                           [rows.where[i] for i in good])
    return {"answer_kind": kind, "fields": specs}, row_problems + problems, warnings + more


def build_dataset(cfg: dict, model: dict, score: dict, seed: int, spool: TextIO,
                  root: Path = ROOT) -> tuple[dict[str, list[int]], dict, dict[str, list[str]], list[str]]:
    """Read and check every input, writing each row to `spool` (a JSON line, in input order) and keeping only
    its image digests, class and answer; return the split (indices of spool lines), fields.json, the dropped rows'
    problems (data.on_error: skip) and the warnings. Raises DataError listing every problem, before any output."""
    place = Place(root, Path(os.path.normpath(root / cfg["raw_dir"])))
    paths, problems = inputs(cfg, place)
    if "system_file" in paths:
        system, bad = system_prompt(paths["system_file"], place.rel(paths["system_file"]))
        cfg, problems = {**cfg, "system": system}, problems + bad
    if problems or "labels" not in paths:
        raise DataError(f"{count(len(problems), 'problem')} in the data params (nothing was written):\n  "
                        + "\n  ".join(problems))
    fmt = detect(paths["labels"]) if cfg["format"] == "auto" else cfg["format"]
    checker, skip = Checker(place, model), cfg["on_error"] == "skip"
    rows = check_all(fmt, paths, cfg, place, checker, spool)
    log.info("%s read (format %s), %s checked", count(len(rows.where), "sample"), fmt,
             count(len(checker.images), "image file"))
    troubled = {p.split(": ", 1)[0] for p in checker.problems}    # answers judged only on rows without problems
    fatal = sort_problems(checker.problems, rows, skip)
    schema, more, scoring_warnings = what_is_scored(rows, [i for i in rows.kept() if rows.where[i] not in troubled], cfg, score)
    fatal += sort_problems(more, rows, skip)
    parts, kept = {}, rows.kept()
    for n_file, key in enumerate(k for k in ("labels", "test_labels") if k in paths):
        if rows.bad and not fatal and not any(rows.file[i] == n_file for i in kept):
            fatal.append(f"data.{key}: no rows left after dropping {count(len(rows.bad), 'row')} with problems:\n  "
                         + "\n  ".join(ps[0] for ps in list(rows.bad.values())[:20]))
    if kept and not fatal:
        try:
            parts = split_rows(rows, kept, cfg, seed)
        except DataError as e:
            fatal.append(str(e))
    if fatal:
        raise DataError(f"{count(len(fatal), 'problem')} in the input data (nothing was written):\n  "
                        + "\n  ".join(fatal))
    labels = [rows.labels[i] for i in kept if rows.file[i] == 0]
    warnings = [large_image_warning(checker.n_large, checker.largest, model),
                leakage_warning(parts, rows.digests, checker.images),
                imbalance_warning(labels, cfg["stratify"], cfg["imbalance_ratio"]) if cfg["stratify"] else None,
                *scoring_warnings]
    return parts, schema, rows.bad, [w for w in warnings if w]


def write_parts(lines: Iterable[str], parts: dict[str, list[int]], out: Path) -> None:
    """Stream the spooled rows into out/{train,val,test}.jsonl, each part in input order."""
    part_of = {i: name for name, idx in parts.items() for i in idx}
    with contextlib.ExitStack() as stack:
        files = {name: stack.enter_context(open(out / f"{name}.jsonl", "w", encoding="utf-8")) for name in parts}
        for i, line in enumerate(lines):
            if i in part_of:   # not a dropped row
                files[part_of[i]].write(line)


def dropped_lines(bad: dict[str, list[str]]) -> str:
    """data/dataset/dropped.jsonl: one line per dropped row, its place and every problem (data.on_error: skip)."""
    return "".join(json.dumps({"where": w, "problems": [p.split(": ", 1)[-1] for p in ps]}, ensure_ascii=False) + "\n"
                   for w, ps in bad.items())


def main() -> None:
    setup_logging()
    p = stage_params("build")
    try:
        with atomic_dir(OUT) as tmp, open(tmp / "rows.spool", "w+", encoding="utf-8") as spool:
            parts, schema, bad, warnings = build_dataset(p["data"], p["model"], p["score"], p["seed"], spool)
            spool.seek(0)
            write_parts(spool, parts, tmp)
            os.remove(spool.name)
            (tmp / "fields.json").write_text(json.dumps(schema, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            (tmp / "dropped.jsonl").write_text(dropped_lines(bad), encoding="utf-8")
    except DataError as e:   # atomic_dir has removed the temp dir: the previous outputs are as they were
        log.error("%s", e)
        sys.exit(1)
    for warning in warnings:
        log.warning(warning)
    if bad:
        log.warning("data.on_error: skip dropped %s with problems (every one in data/dataset/dropped.jsonl):\n  %s",
                    count(len(bad), "row"), "\n  ".join(ps[0] for ps in list(bad.values())[:10])
                    + ("\n  ..." if len(bad) > 10 else ""))
    log.info("answers: %s; scored fields: %s", schema["answer_kind"],
             ", ".join(f"{f} ({s['type']})" for f, s in schema["fields"].items()))
    log.info("%s: %s train / %s val / %s test", count(sum(map(len, parts.values())), "sample"),
             f"{len(parts['train']):,}", f"{len(parts['val']):,}", f"{len(parts['test']):,}")


if __name__ == "__main__":
    main()
