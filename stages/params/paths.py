"""Params against the files on disk: checked by check_params, which DVC runs before any stage, because DVC itself
deletes a stage's output folder before running the stage."""
from __future__ import annotations

from pathlib import Path

GENERATED = frozenset({"images", "labels.csv"})   # what stages.generate writes into synth.out_dir


def foreign_files(out_dir: Path) -> list[str]:
    """What `out_dir` holds that the generate stage did not write (and replacing it would delete)."""
    return sorted(f.name for f in out_dir.iterdir() if f.name not in GENERATED) if out_dir.is_dir() else []


def synth_folder_problem(root: Path, out_dir: str) -> str | None:
    if not (foreign := foreign_files(root / out_dir)):
        return None
    return (f"synth.out_dir: {out_dir} holds files the generate stage did not write ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}), which replacing it would delete: name a new or empty folder "
            "under data/, or move them")
