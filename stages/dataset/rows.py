"""What the build stage keeps of every row it reads, and which problems drop which rows under
`data.on_error: skip`."""
from __future__ import annotations

import re

ROW_PLACE = re.compile(r".+:\d+")   # file:line
# The problems of one line that no row came out of (a ragged CSV row, a bad JSON line): skippable. Other file:line
# problems (bad quoting that ends the file's reading, lines that are not UTF-8, a broken label map) cover more than
# one row, so they stop the build even under skip.
ONE_LINE = ("malformed row:", "expected one JSON object per line", "expected a JSON object, got a JSON",
            "missing key(s)")


class Rows:
    """What the build keeps of every row it read, in spool order: its file (0: data.labels, 1: data.test_labels),
    image digests, class (data.stratify), place and answer, and the problems of each place (file:line or image)."""

    def __init__(self):
        self.file, self.digests, self.labels, self.where, self.answers = [], [], [], [], []
        self.bad: dict[str, list[str]] = {}     # place -> its problems: rows that are not kept

    def add(self, file: int, digest: tuple[bytes, ...], label: str | None, where: str, answer: str) -> None:
        for column, value in zip((self.file, self.digests, self.labels, self.where, self.answers),
                                 (file, digest, label, where, answer)):
            column.append(value)

    def kept(self) -> list[int]:
        return [i for i, w in enumerate(self.where) if w not in self.bad]


def sort_problems(problems: list[str], rows: Rows, skip: bool) -> list[str]:
    """With data.on_error: skip, every problem of one row (file:line, or the image file of the filename format)
    marks that row as dropped; the problems left (of a file or the params) still stop the build."""
    if not skip:
        return problems
    places, fatal = set(rows.where), []
    for p in problems:
        where, _, what = p.partition(": ")
        if where in places or (ROW_PLACE.fullmatch(where) and any(m in what for m in ONE_LINE)):
            rows.bad.setdefault(where, []).append(p)
        else:
            fatal.append(p)
    return fatal


def last_content(row: dict) -> str:
    """The text of a row's last message ("" when the row has none: its problem is reported by the checks)."""
    msgs = row.get("messages")
    last = msgs[-1] if isinstance(msgs, list) and msgs else None
    content = last.get("content") if isinstance(last, dict) else None
    return content if isinstance(content, str) else ""
