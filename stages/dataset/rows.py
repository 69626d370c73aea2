"""What the build stage keeps of every row it reads, and which problems drop which rows under
`data.on_error: skip`."""
from __future__ import annotations

import re

ROW_PLACE = re.compile(r".+:\d+")   # file:line


class Rows:
    """What the build keeps of every row it read, in spool order: its file (0: data.labels, 1: data.test_labels),
    image digests, class (data.stratify), place and answer, and the problems of each place (file:line or image)."""

    def __init__(self):
        self.file, self.digests, self.labels, self.where, self.answers = [], [], [], [], []
        self.bad: dict[str, list[str]] = {}     # place -> its problems: rows that are not kept

    def kept(self) -> list[int]:
        return [i for i, w in enumerate(self.where) if w not in self.bad]


def sort_problems(problems: list[str], rows: Rows, skip: bool) -> list[str]:
    """With data.on_error: skip, every problem of one row (file:line, or the image file of the filename format)
    marks that row as dropped; the problems left (of a file or the params) still stop the build."""
    if not skip:
        return problems
    places, fatal = set(rows.where), []
    for p in problems:
        where = next((w for w in (p.split(": ", 1)[0],) if w in places or ROW_PLACE.fullmatch(w)), None)
        rows.bad.setdefault(where, []).append(p) if where else fatal.append(p)
    return fatal
