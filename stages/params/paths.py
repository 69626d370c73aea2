"""Params against the files on disk. The generate stage replaces data/raw whole; DVC keeps the folder while the stage
runs (persist), so the stage checks it before it writes, whichever stage or command runs first; check_params says the
same earlier when it runs first."""
from __future__ import annotations

import re
from pathlib import Path

from stages.params.rules import SYNTH_DIR

# What stages.generate writes into data/raw: labels.csv with this header, and images/<id>_<1|2>.png
GENERATED_COLUMNS = ["id", "image_1", "image_2", "analysis", "direction", "distance"]
GENERATED_IMAGE = re.compile(r"\d+_[12]\.png")


def _generated_labels(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.readline().rstrip("\r\n") == ",".join(GENERATED_COLUMNS)


def foreign_files(out_dir: Path) -> list[str]:
    """What `out_dir` holds that the generate stage did not write (and replacing it would delete), relative to it:
    a user's labels.csv or images/ of the same names are theirs unless they look exactly like the stage's own."""
    if not out_dir.is_dir():
        return []
    foreign = []
    for f in sorted(out_dir.iterdir()):
        if f.name == "labels.csv" and f.is_file() and not f.is_symlink() and _generated_labels(f):
            continue
        if f.name == "images" and f.is_dir() and not f.is_symlink():
            foreign += [f"images/{i.name}" for i in sorted(f.iterdir())
                        if not (i.is_file() and not i.is_symlink() and GENERATED_IMAGE.fullmatch(i.name))]
            continue
        foreign.append(f.name)
    return foreign


def synth_folder_problem(root: Path, out_dir: str = SYNTH_DIR) -> str | None:
    """Why the generate stage may not replace `root/out_dir`, or None: it holds what the stage did not write."""
    if not (foreign := foreign_files(root / out_dir)):
        return None
    return (f"{out_dir} holds files the generate stage did not write ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}), which replacing it would delete: {out_dir} is the synthetic "
            "data's folder; move your own data to a folder of its own (e.g. data/mine) and set data.raw_dir to it")
