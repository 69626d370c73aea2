"""The `table` format: a CSV/TSV (read with pandas) or JSONL labels table whose columns play the roles set in
data.columns: id, image paths (one or more), answer fields (the answer JSON, in order), per-row question/system.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import pandas as pd

from stages.dataset.records import Place, Record, answer_text, is_empty, swift_row
from stages.dataset.sources import jsonl_objects, text_lines

INT = r"[+-]?(0|[1-9]\d*)"
DECIMAL_COMMA = r"[+-]?\d+,\d+"   # 5,5: a number as European spreadsheets write it
FLOAT = r"[+-]?((0|[1-9]\d*)(\.\d*)?|\.\d+)([eE][+-]?\d+)?"
FOLDER = False
MISSING = {"nan", "-nan", "na", "n/a", "null", "none", "inf", "+inf", "-inf", "infinity", "-infinity", "-", "?",
           "#n/a", "#value!", "#div/0!", "#num!"}   # what spreadsheets and pandas write for a number that is not there


def detects(path: Path, first) -> bool:
    return path.suffix in (".csv", ".tsv")


def delimiter(path: Path) -> str:
    """Tab for .tsv; for .csv a comma, or a semicolon when the header has semicolons and no comma (Excel in a locale
    whose decimal mark is the comma saves 'CSV' so)."""
    if path.suffix == ".tsv":
        return "\t"
    first = next((text for _, text in text_lines(path, "", []) if text.strip()), "")
    return ";" if ";" in first and "," not in first else ","


def csv_records(path: Path, sep: str, where: str, problems: list[str]) -> tuple[list[str], list[tuple[int, list]]]:
    """The header and the (start line, fields) of each well-formed record of a CSV/TSV; a ragged or badly quoted
    record is a problem and the others are still read (pandas would stop at the first bad line)."""
    last = 0

    def counted():
        nonlocal last
        for last, text in text_lines(path, where, problems):
            yield text
    reader, records, header = csv.reader(counted(), delimiter=sep, strict=True), [], None
    try:
        for fields in reader:
            start = last - sum(f.count("\n") for f in fields)   # quoted fields may span lines
            if not fields or (len(fields) == 1 and not fields[0].strip()):   # a blank line, as pandas skips it
                continue
            if header is None:
                header = [f.strip() for f in fields]   # "image_1, image_2": the names without the spaces
            elif len(fields) != len(header):
                problems.append(f"{where}:{start}: malformed row: {len(fields)} fields, expected {len(header)} "
                                f"like the header ({', '.join(header)}); quote values that contain {sep!r}")
            else:
                records.append((start, fields))
    except csv.Error as e:
        problems.append(f"{where}:{last}: malformed CSV ({e}), so the rest of the file cannot be read; expected "
                        "fields quoted with \"...\"")
    return header or [], records


def typed(cells: pd.Series) -> list:
    """A label column's values: integers or floats when every cell is one (codes with leading zeros, such as
    007, stay text), booleans when every cell is true/false, otherwise the text as written. Empty -> None."""
    text = cells.dropna().str.strip()
    if text.empty:
        kind = str
    elif text.str.fullmatch(INT).all():
        kind = int
    elif text.str.fullmatch(FLOAT).all():
        kind = float
    elif text.str.lower().isin(["true", "false"]).all():
        def kind(s: str) -> bool:
            return s.strip().lower() == "true"
    else:
        kind = str
    return [None if is_empty(v) else kind(v) for v in cells.astype(object)]


def decimal_commas(cells: pd.Series, lines: list[int]) -> list[tuple[int, str]]:
    """(line, cell) of numbers written with a decimal comma in a column of numbers: typed as text otherwise."""
    text = cells.dropna().astype(str).str.strip()
    commas = text.str.fullmatch(DECIMAL_COMMA)
    if not commas.any() or not (commas | text.str.fullmatch(FLOAT)).all():
        return []
    at = dict(zip(cells.index, lines))
    return [(at[i], v) for i, v in text[commas].items()]


def not_numbers(cells: pd.Series, lines: list[int]) -> list[tuple[int, str]]:
    """(line, cell) of the missing-value markers (NaN, n/a, #DIV/0!, inf...) in a column whose other cells are all
    numbers: one of them would otherwise turn the whole column into text, its numbers no longer scored as numbers."""
    text = cells.dropna().astype(str).str.strip()
    numeric = text.str.fullmatch(FLOAT)
    markers = text[~numeric]
    if numeric.sum() == 0 or not markers.str.lower().isin(MISSING).all():
        return []
    at = dict(zip(cells.index, lines))
    return [(at[i], v) for i, v in markers.items()]


def plain_text(cfg: dict, values: list) -> bool:
    """Whether the answer is the one answer column's text rather than a JSON object of the answer columns:
    data.answer_kind text, or auto with one answer column of text (a caption stays a caption; a column of numbers
    or booleans stays a typed JSON field)."""
    return cfg["answer_kind"] == "text" or (cfg["answer_kind"] == "auto" and len(cfg["columns"]["answer"]) == 1
                                            and all(v is None or isinstance(v, str) for v in values))


def table_record(rec: dict, where: str, default_id: str, cfg: dict, problems: list[str], plain: bool) -> Record:
    """One table row -> an ms-swift row; the answer is the answer columns as a JSON object, in their order, or the
    one answer column's text (`plain_text`)."""
    cols = cfg["columns"]
    sid = default_id if not cols["id"] or is_empty(rec[cols["id"]]) else str(rec[cols["id"]])
    if cols["id"] and is_empty(rec[cols["id"]]):
        problems.append(f"{where}: column {cols['id']} is empty; expected a sample id")
    images = []
    for col in cols["images"]:
        if is_empty(rec[col]):
            problems.append(f"{where}: column {col} is empty; expected an image path")
        else:
            images.append(rec[col])
    answer = {c: rec[c] for c in cols["answer"]}
    if empty := [c for c, v in answer.items() if is_empty(v)]:
        problems.append(f"{where}: empty answer field(s) {', '.join(empty)}; expected a value in every answer column")
    if plain and not empty:   # (an empty one is reported above, once)
        answer = answer_text(rec[cols["answer"][0]])
    question = cfg["prompt"] if not cols["question"] or is_empty(rec[cols["question"]]) else str(rec[cols["question"]])
    system = cfg["system"] if not cols["system"] or is_empty(rec[cols["system"]]) else str(rec[cols["system"]])
    return Record(where, swift_row(sid, images, question, answer_text(answer), system))


def jsonl_table(path: Path, cfg: dict, where: str, needed: list[str], problems: list[str]) -> Iterator[Record]:
    """Rows of a .jsonl table: the JSON types are kept."""
    answer_cols = cfg["columns"]["answer"]
    for n, obj in jsonl_objects(path, where, problems):
        if missing := [c for c in needed if c not in obj]:
            problems.append(f"{where}:{n}: missing key(s) {', '.join(missing)}; the row has {', '.join(obj)}")
        elif nan := [c for c in answer_cols if isinstance(obj[c], float) and obj[c] != obj[c]]:
            problems.append(f"{where}:{n}: {', '.join(nan)} is NaN, which JSON does not allow (Python's json "
                            "writes it for a missing number); expected a number")
        else:
            plain = plain_text(cfg, [obj[c] for c in answer_cols])
            yield table_record(obj, f"{where}:{n}", f"{path.stem}-{n}", cfg, problems, plain)


def read(path: Path, cfg: dict, place: Place, problems: list[str], exclude: set[Path]) -> Iterator[Record]:
    """Rows of a .csv/.tsv/.jsonl table. JSONL values keep their JSON types; CSV/TSV cells are typed per column
    (`typed`); rows without an id column get `<file stem>-<line>`."""
    cols, where = cfg["columns"], place.rel(path)
    needed = [c for c in (cols["id"], *cols["images"], *cols["answer"], cols["question"], cols["system"]) if c]
    if path.suffix == ".jsonl":
        yield from jsonl_table(path, cfg, where, needed, problems)
        return
    if path.suffix not in (".csv", ".tsv"):
        problems.append(f"{where}: unsupported labels format {path.suffix!r}; expected .csv, .tsv or .jsonl "
                        "(export spreadsheets as 'CSV UTF-8')")
        return
    header, rows = csv_records(path, delimiter(path), where, problems)
    lines = [n for n, _ in rows]
    df = pd.DataFrame([fields for _, fields in rows], columns=header, dtype=object)
    df = df.mask(df == "")   # an empty cell is NaN, as pandas reads it
    if not header:
        return
    if missing := [c for c in needed if c not in df.columns]:
        problems.append(f"{where}: missing column(s) {', '.join(missing)}; "
                        f"the table has {', '.join(map(str, df.columns))}")
        return
    if len(set(header)) < len(header):
        problems.append(f"{where}:1: column name(s) {', '.join(sorted({h for h in header if header.count(h) > 1}))} "
                        "appear more than once in the header; expected each column once")
        return
    for col in cols["answer"]:
        if commas := decimal_commas(df[col], lines):
            problems.append(f"{where}: column {col} holds numbers written with a comma (a decimal comma or a thousands "
                            f"separator), line(s) {', '.join(f'{n} ({v!r})' for n, v in commas[:5])}"
                            f"{', ...' if len(commas) > 5 else ''}; expected plain numbers with a decimal point (5.5, "
                            "1000): save the table with '.' as the decimal mark")
        if bad := not_numbers(df[col], lines):
            problems.append(f"{where}: column {col} holds numbers, but line(s) "
                            f"{', '.join(f'{n} ({v!r})' for n, v in bad[:5])}{', ...' if len(bad) > 5 else ''} "
                            "hold a missing or non-finite value; expected a number in every row")
            df.loc[df[col].notna() & df[col].astype(str).str.strip().isin([v for _, v in bad]), col] = "0"   # build fails on the problem; meanwhile the
            #   column stays numeric, so the score checks do not also report it as text
    plain = plain_text(cfg, typed(df[cols["answer"][0]]))
    for col in cols["answer"] if not plain else []:   # plain text stays as written
        df[col] = pd.Series(typed(df[col]), index=df.index, dtype=object)
    for start in range(0, len(df), 1000):   # rows as dicts, a chunk at a time
        for n, rec in zip(lines[start:start + 1000], df.iloc[start:start + 1000].to_dict("records")):
            yield table_record(rec, f"{where}:{n}", f"{path.stem}-{n}", cfg, problems, plain)
