"""Stage `build`: raw images + a labels table -> ms-swift JSONL (train/val/test), seeded split.

Each row becomes `{"id", "messages": [system?, user "<image>...<image>prompt", assistant answer-JSON],
"images": [paths relative to the repo]}`; ms-swift resolves the paths from the repo root, where the
stages run, so the files stay portable between machines.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stages.common import ROOT, atomic_dir, count, setup_logging, stage_params, write_jsonl

OUT = ROOT / "data" / "dataset"
log = logging.getLogger("build")


@dataclass(frozen=True)
class Sample:
    id: str
    images: tuple[str, ...]     # relative to the repo root
    answer: dict


class DataError(ValueError):
    """The input data has problems; the message lists every one of them."""


def plain(value):
    """numpy/pandas scalars -> JSON types, so that numbers stay numbers in the answer."""
    return value.item() if hasattr(value, "item") else value


def read_table(path: Path, text_columns: list[str]) -> pd.DataFrame:
    """A labels table; ids and paths stay text (`000017` keeps its zeros), other columns get their type."""
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=False).convert_dtypes()
    sep = "\t" if path.suffix == ".tsv" else ","
    return pd.read_csv(path, sep=sep, dtype=dict.fromkeys(text_columns, str)).convert_dtypes()


def rows_to_samples(df: pd.DataFrame, cfg: dict, raw_dir: Path, where: str) -> tuple[list[Sample], list[str]]:
    """Turn table rows into samples; collect every problem (with its line number) instead of stopping."""
    needed = [cfg["id_column"], *cfg["image_columns"], *cfg["answer_columns"]]
    if missing := [c for c in needed if c not in df.columns]:
        return [], [f"{where}: missing column(s) {', '.join(missing)}; the table has {', '.join(map(str, df.columns))}"]
    samples, problems, seen = [], [], set()
    root = raw_dir.resolve()
    for i, row in enumerate(df.to_dict("records"), start=2):  # line 1 is the header
        sid = str(row[cfg["id_column"]])
        if sid in seen:
            problems.append(f"{where}:{i}: duplicate id {sid!r}")
        seen.add(sid)
        images = []
        for col in cfg["image_columns"]:
            rel = row[col]
            path = (raw_dir / str(rel)).resolve()
            if pd.isna(rel) or not str(rel).strip():
                problems.append(f"{where}:{i}: column {col} is empty")
            elif not path.is_relative_to(root):
                problems.append(f"{where}:{i}: image path {rel!r} escapes the data folder {raw_dir}")
            elif not path.is_file():
                problems.append(f"{where}:{i}: image not found: {raw_dir / str(rel)}")
            else:
                images.append(str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path))
        answer = {c: plain(row[c]) for c in cfg["answer_columns"]}
        if empty := [c for c, v in answer.items() if v is None or v is pd.NA or (isinstance(v, str) and not v.strip())]:
            problems.append(f"{where}:{i}: empty answer field(s) {', '.join(empty)}")
        samples.append(Sample(sid, tuple(images), answer))
    return samples, problems


def to_swift(sample: Sample, prompt: str, system: str) -> dict:
    """One ms-swift row: an <image> tag per image, then the prompt; the answer is compact JSON."""
    user = "<image>" * len(sample.images) + prompt
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": json.dumps(sample.answer, ensure_ascii=False)},
    ]
    return {"id": sample.id, "messages": messages, "images": list(sample.images)}


def split(n: int, val_ratio: float, test_ratio: float, seed: int) -> dict[str, list[int]]:
    """Seeded split into index lists; test and (if asked) val get at least one sample each."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * test_ratio))
    n_val = max(1, round(n * val_ratio)) if val_ratio > 0 else 0
    if n - n_test - n_val < 1:
        raise DataError(f"{count(n, 'sample')} is too few to split into train/val/test "
                        f"(val_ratio {val_ratio}, test_ratio {test_ratio})")
    parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    return {k: sorted(int(i) for i in v) for k, v in parts.items()}


def load_samples(cfg: dict) -> list[Sample]:
    raw_dir = ROOT / cfg["raw_dir"]
    table = raw_dir / cfg["labels"]
    if not table.is_file():
        raise DataError(f"labels file not found: {table} (data.raw_dir / data.labels)")
    if table.suffix not in (".csv", ".tsv", ".jsonl"):
        raise DataError(f"{table}: unsupported labels format {table.suffix!r}; use .csv, .tsv or .jsonl")
    samples, problems = rows_to_samples(read_table(table, [cfg["id_column"], *cfg["image_columns"]]), cfg, raw_dir, str(table.relative_to(ROOT)))
    if not samples and not problems:
        problems.append(f"{table}: no samples")
    if problems:
        raise DataError(f"{count(len(problems), 'problem')} in the input data:\n  " + "\n  ".join(problems))
    return samples


def main() -> None:
    setup_logging()
    p = stage_params("build")
    cfg = p["data"]
    samples = load_samples(cfg)
    parts = split(len(samples), cfg["val_ratio"], cfg["test_ratio"], p["seed"])
    with atomic_dir(OUT) as tmp:
        for name, idx in parts.items():
            write_jsonl(tmp / f"{name}.jsonl", (to_swift(samples[i], cfg["prompt"], cfg["system"]) for i in idx))
    log.info("%s: %s train / %s val / %s test", count(len(samples), "sample"),
             f"{len(parts['train']):,}", f"{len(parts['val']):,}", f"{len(parts['test']):,}")


if __name__ == "__main__":
    main()
