"""The input formats of the build stage (docs/data-formats.md): module `<name>.py` here reads format `<name>` of
FORMATS in stages/params/schema.py, so a new format is its module and its name there.

A format module defines
    FOLDER                                       True if data.labels names a folder, False if a file
    detects(path, first) -> bool                 whether `data.format: auto` picks it; `first()` is the first JSON
                                                 object of the file (None if there is none), read only if asked
    read(path, cfg, place, problems, exclude)    -> the file's `Record`s, each problem appended to `problems`
"""
from __future__ import annotations

import functools
import importlib
from pathlib import Path
from types import ModuleType

from stages.dataset.sources import jsonl_objects
from stages.params.schema import FORMATS


def reader(name: str) -> ModuleType:
    """The module of format `name` (one of FORMATS)."""
    return importlib.import_module(f"{__name__}.{name}")


def detect(path: Path) -> str:
    """`data.format: auto`: the first of FORMATS whose module claims `path`, else table."""
    first = functools.cache(lambda: next((obj for _, obj in jsonl_objects(path, str(path), [])), None))
    return next((name for name in FORMATS if reader(name).detects(path, first)), "table")
