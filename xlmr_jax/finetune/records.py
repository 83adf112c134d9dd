"""A task's data file as records (one dict per example), checked where it enters.

Formats, by extension:
- `.jsonl`: one JSON object per line (blank lines are skipped);
- `.json`: JSON lines, a JSON array of objects, or the official SQuAD layout
  `{"data": [{"paragraphs": [{"context", "qas": [{"id", "question", "answers", "is_impossible"}]}]}]}`,
  flattened to `{id, question, context, answers: {"text": [...], "answer_start": [...]}}` (the flat
  form of the reference's run_qa.py; an impossible question has no answers);
- `.csv` (RFC 4180 quoting) and `.tsv` (tab-separated, no quoting: quotes are text, as in GLUE's files):
  a header line, then one record per line. Cells are text; a column is typed as a whole: int when
  every cell is an integer, float when every cell is a number, JSON when every cell is a JSON list
  or object (so `tokens` / `ner_tags` / multi-label `label` cells are written as JSON:
  `["EU", "rejects"]`); otherwise it stays text;
- `.txt`: one record `{"text": line}` per non-blank line (language modelling).

Every error is a `DataError` (a ValueError) naming the file and the line (or record).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Container, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

FORMATS = (".jsonl", ".json", ".csv", ".tsv", ".txt")
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class DataError(ValueError):
    """Bad input data; the message names the file and the line or record."""


class UnknownFormatError(DataError):
    pass


class EmptyDataError(DataError):
    pass


class MalformedRecordError(DataError):
    pass


class MissingColumnError(DataError):
    pass


class UnseenLabelError(DataError):
    pass


class Records(list):
    """The records of one file (a list of dicts) and where each came from, for error messages."""

    def __init__(self, items: Sequence[dict] = (), *, path: str | None = None, places: Sequence[str] | None = None):
        super().__init__(items)
        self.path = path
        self.places = list(places) if places is not None else None


def where(records: Sequence[dict], index: int) -> str:
    """`file line N (record i)` for records read from a file, `record i` for a plain list."""
    if isinstance(records, Records) and records.places is not None:
        return f"{records.path} {records.places[index]} (record {index})"
    return f"record {index}"


def read_records(path: str | os.PathLike, *, columns: Mapping[str, str] | None = None,
                 required: Sequence[str]) -> Records:
    """The records of a local `.jsonl`/`.json`/`.csv`/`.tsv`/`.txt` file.

    `columns` renames a file's columns to the task's names (`{"review": "sentence1"}`); every record
    must then hold the `required` columns.
    """
    path = Path(path)
    extension = path.suffix.lower()
    if extension not in FORMATS:
        raise UnknownFormatError(f"{path}: unknown file type {extension or '(no extension)'!r}; "
                                 f"expected one of {', '.join(FORMATS)}")
    text = _read_text(path)
    if not text.strip():
        raise EmptyDataError(f"{path}: the file is empty")
    parse = {".jsonl": _json_lines, ".json": _json_document, ".csv": _delimited, ".tsv": _delimited,
             ".txt": _text_lines}[extension]
    places, items = [], []
    for place, record in parse(path, text):
        places.append(place)
        items.append(_renamed(record, columns or {}, path, place))
    if not items:
        raise EmptyDataError(f"{path}: no records in the file")
    for place, record in zip(places, items, strict=True):
        missing = [name for name in required if name not in record]
        if missing:
            raise MissingColumnError(
                f"{path} {place}: no column {', '.join(map(repr, missing))}; the columns present are "
                f"{', '.join(map(repr, record)) or '(none)'} (rename yours with columns={{yours: ours}})")
    return Records(items, path=str(path), places=places)


def text_column(records: Sequence[dict], name: str, *, optional: bool = False) -> list[str] | None:
    """Column `name` of every record, each a str. An optional column may be absent, null or empty in
    every record (None is returned: a CSV's empty column), not in some only."""
    if optional and all(record.get(name) in (None, "") for record in records):
        return None
    values = []
    for index, record in enumerate(records):
        value = record.get(name)
        if not isinstance(value, str):
            got = "nothing (no such column)" if name not in record else f"{type(value).__name__} {value!r:.60}"
            raise MalformedRecordError(f"{where(records, index)}: {name!r} must be text, got {got}")
        values.append(value)
    return values


def merge_columns(defaults: Mapping[str, str], user: Mapping[str, str] | None, known: Container[str],
                  task: str) -> dict[str, str]:
    """A task's default renames (the reference scripts' aliases) with the user's on top; a default
    alias to a name the user maps a column to is dropped (the user's column is the one wanted)."""
    user = dict(user or {})
    unknown = sorted(target for target in user.values() if target not in known)
    if unknown:
        raise ValueError(f"{task}: columns= maps to {', '.join(map(repr, unknown))}, which the task does not "
                         f"read; its columns are {', '.join(sorted(set(defaults.values())))}")
    taken = set(user.values())
    merged = {source: target for source, target in defaults.items() if target not in taken}
    merged.update(user)
    return merged


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"data file not found: {path}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise MalformedRecordError(f"{path} line {line}: not UTF-8 text ({error.reason})") from None


def _renamed(record: dict, columns: Mapping[str, str], path: Path, place: str) -> dict:
    if not columns:
        return record
    renamed = {}
    for name, value in record.items():
        target = columns.get(name, name)
        if target in renamed:
            raise MalformedRecordError(f"{path} {place}: two columns become {target!r} (check columns= and "
                                       f"the file's column names {', '.join(map(repr, record))})")
        renamed[target] = value
    return renamed


# -- JSON ----------------------------------------------------------------------------------------------

def _json_lines(path: Path, text: str) -> Iterator[tuple[str, dict]]:
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise MalformedRecordError(f"{path} line {number}: not valid JSON ({error.msg} at column "
                                       f"{error.colno})") from None
        if not isinstance(record, dict):
            raise MalformedRecordError(f"{path} line {number}: expected a JSON object, got "
                                       f"{type(record).__name__} {line.strip()[:60]!r}")
        yield f"line {number}", record


def _json_document(path: Path, text: str) -> Iterator[tuple[str, dict]]:
    """A whole JSON document (SQuAD layout or an array of objects), else JSON lines."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as document_error:
        lines = _json_lines(path, text)
        try:
            first = next(lines)
        except MalformedRecordError:
            # not JSON lines either: the document's own error says where it breaks
            raise MalformedRecordError(f"{path} line {document_error.lineno}: not valid JSON "
                                       f"({document_error.msg} at column {document_error.colno})") from None
        yield first
        yield from lines
        return
    if isinstance(document, dict) and "data" in document:
        yield from _squad_records(path, document["data"])
    elif isinstance(document, list):
        for index, record in enumerate(document):
            if not isinstance(record, dict):
                raise MalformedRecordError(f"{path} item {index}: expected a JSON object, got {type(record).__name__}")
            yield f"item {index}", record
    elif isinstance(document, dict):
        yield "line 1", document  # a single JSON line
    else:
        raise MalformedRecordError(f"{path} line 1: expected JSON objects, got {type(document).__name__}")


def _squad_records(path: Path, data: Any) -> Iterator[tuple[str, dict]]:
    def need(container: Any, key: str, kinds: tuple[type, ...], place: str) -> Any:
        if not isinstance(container, dict) or key not in container:
            raise MalformedRecordError(f"{path} {place}: no {key!r} (SQuAD layout: data[].paragraphs[]"
                                       f".qas[] with context, question, id, answers)")
        if not isinstance(container[key], kinds) or isinstance(container[key], bool):
            raise MalformedRecordError(f"{path} {place}.{key}: expected {' or '.join(k.__name__ for k in kinds)}, "
                                       f"got {type(container[key]).__name__}")
        return container[key]

    if not isinstance(data, list):
        raise MalformedRecordError(f"{path}: 'data' must be a list of articles, got {type(data).__name__}")
    for a, article in enumerate(data):
        for p, paragraph in enumerate(need(article, "paragraphs", (list,), f"data[{a}]")):
            place = f"data[{a}].paragraphs[{p}]"
            context = need(paragraph, "context", (str,), place)
            for q, qa in enumerate(need(paragraph, "qas", (list,), place)):
                qa_place = f"{place}.qas[{q}]"
                record = {"id": str(need(qa, "id", (str, int), qa_place)),
                          "question": need(qa, "question", (str,), qa_place), "context": context,
                          "answers": {"text": [], "answer_start": []}}
                if not qa.get("is_impossible", False):  # v2's impossible questions list no answer
                    for n, answer in enumerate(need(qa, "answers", (list,), qa_place)):
                        answer_place = f"{qa_place}.answers[{n}]"
                        record["answers"]["text"].append(need(answer, "text", (str,), answer_place))
                        record["answers"]["answer_start"].append(need(answer, "answer_start", (int,), answer_place))
                yield qa_place, record


# -- CSV / TSV / text ----------------------------------------------------------------------------------

def _delimited(path: Path, text: str) -> Iterator[tuple[str, dict]]:
    tsv = path.suffix.lower() == ".tsv"
    dialect = dict(delimiter="\t", quoting=csv.QUOTE_NONE) if tsv else dict(delimiter=",")
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))  # a long QA context is one field
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, **dialect)
    rows, places = [], []
    header, header_line, line = None, 0, 0
    try:
        for row in reader:
            start, line = line + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if header is None:
                header, header_line = row, start
                duplicated = sorted({name for name in row if row.count(name) > 1})
                if duplicated:
                    raise MalformedRecordError(f"{path} line {start}: the header names {duplicated} twice")
                continue
            if len(row) != len(header):
                raise MalformedRecordError(f"{path} line {start}: {len(row)} fields, but the header (line "
                                           f"{header_line}) has {len(header)}")
            rows.append(row)
            places.append(f"line {start}")
    except csv.Error as error:
        raise MalformedRecordError(f"{path} line {reader.line_num}: {error}") from None
    columns = [_typed_column(name, [row[i] for row in rows], places, path) for i, name in enumerate(header or ())]
    for index, place in enumerate(places):
        yield place, {name: column[index] for name, column in zip(header, columns, strict=True)}


def _typed_column(name: str, cells: list[str], places: list[str], path: Path) -> list:
    """The column's cells as ints, floats or JSON values when every cell is one, else as text."""
    if cells and all(_INTEGER.fullmatch(cell) for cell in cells):
        return [int(cell) for cell in cells]
    if cells and all(_NUMBER.fullmatch(cell) for cell in cells):
        return [float(cell) for cell in cells]
    if cells and all(cell.lstrip()[:1] in ("[", "{") for cell in cells):
        values = []
        for cell, place in zip(cells, places, strict=True):
            try:
                values.append(json.loads(cell))
            except json.JSONDecodeError as error:
                raise MalformedRecordError(f"{path} {place}: column {name!r} holds JSON lists/objects, but this "
                                           f"cell is not valid JSON ({error.msg}): {cell[:60]!r}") from None
        return values
    return cells


def _text_lines(path: Path, text: str) -> Iterator[tuple[str, dict]]:
    for number, line in enumerate(_lines(text), start=1):
        if line.strip():
            yield f"line {number}", {"text": line}


def _lines(text: str) -> list[str]:
    # only "\n" ends a line: str.splitlines would also split at U+2028 or U+0085 inside a JSON string
    return [line.removesuffix("\r") for line in text.split("\n")]
