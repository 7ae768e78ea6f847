"""A user's own data: CSV, TSV or JSON files with named columns, as a task that trains like GLUE's.

The format follows the extension: .csv (standard quoting), .tsv (read as GLUE's are, without quoting: a
quote is text), .jsonl (one object per line), .json (the same, or one array of objects) and .parquet. Files are
read as a stream of rows (a .json array whole), so a file of any size costs a row's memory. Classes are
the training file's labels (sorted; integers, `+1`/`-1` included, numerically) or `--label_names`;
labels that are numbers, some of them not integers, make a regression task. A label column that mixes
numbers and words, or holds a missing value (empty, null, nan), is an error at that row. Every row is
checked: a problem raises `DataError` naming file, line and column.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from ..io import NotUtf8Error, read_utf8
from .tasks import DataError, Example, ReadReport, Task, label_text, parse_label

logger = logging.getLogger("albert_pytorch")

FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}
TASK_TYPES = ("auto", "classification", "regression")
_INTEGER = re.compile(r"^[+-]?\d+$")
_ID_COLUMNS = ("id", "idx", "index", "guid")

Row = dict | DataError  # a data row's fields, or what is wrong with it


def own_data_task(train_file: str | None, validation_file: str | None, test_file: str | None,
                  text_column: str | None, text_pair_column: str | None, label_column: str,
                  label_names: list[str] | None = None, task_type: str = "auto",
                  skip_bad_rows: bool = False) -> Task:
    """The task these files describe. Without a training file (evaluation only), `label_names` are the
    classes, as the trained model's config.json names them. `text_column` None picks the text columns as
    transformers' run_glue does. A training row without a label is an error, or with `skip_bad_rows` left
    out of the classes (and skipped when the file is read)."""
    files = {split: Path(path).resolve() for split, path in
             (("train", train_file), ("validation", validation_file), ("test", test_file)) if path}
    for path in files.values():
        table_format(path)
    first = next(iter(files.values()))
    if text_column is None:
        text_column, text_pair_column = text_columns(first, label_column, text_pair_column)
    if task_type == "regression":
        labels = None
    elif label_names:
        labels = tuple(label_names)
    elif train_file is None:
        raise ValueError("without --train_file, give --label_names (the classes, in the model's order)")
    else:
        labels = _labels_of(files["train"], [c for c in (text_column, text_pair_column, label_column) if c],
                            label_column, task_type, skip_bad_rows)
    return Task(name="custom", labels=labels, text_a=text_column, text_b=text_pair_column, label=label_column,
                    metric="corr" if labels is None else "acc",
                    eval_splits=("validation",) if validation_file else (), test_splits=("test",) if test_file else (),
                    files={split: str(path) for split, path in files.items()},
                    submission_names={"test": "predict_results.tsv"}, reader="table", score_range=None)


def table_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(path, None, f"unknown file type {path.suffix!r}: use .csv, .tsv, .json, .jsonl or "
                                   ".parquet")
    return fmt


def text_columns(path: Path, label_column: str, pair_column: str | None) -> tuple[str, str | None]:
    """run_glue's choice: `sentence` (or `sentence1` and `sentence2`), else the one or two columns left
    besides the label (and an id column)."""
    header = _header(path)
    if "sentence" in header:
        return "sentence", pair_column
    if pair_column is None and {"sentence1", "sentence2"} <= set(header):
        return "sentence1", "sentence2"
    others = [c for c in header if c not in (label_column, pair_column) and c.lower() not in _ID_COLUMNS]
    if len(others) == 1 or (len(others) == 2 and pair_column is None):
        chosen = (others[0], pair_column if len(others) == 1 else others[1])
        logger.info("%s: text column %r%s (choose others with --text_column/--text_pair_column)", path, chosen[0],
                    f", pair column {chosen[1]!r}" if chosen[1] else "")
        return chosen
    raise DataError(path, 1, f"cannot tell which column is the text: the columns besides {label_column!r} are "
                        f"{', '.join(map(repr, others)) or 'none'}; name it with --text_column")


def _header(path: Path) -> list[str]:
    for _, row in table_rows(path, []):
        if isinstance(row, dict):
            return list(row)
    raise DataError(path, None, "has no data rows (a header only?): no columns to read")


def _labels_of(path: Path, columns: list[str], label_column: str, task_type: str,
               skip_bad_rows: bool) -> tuple[str, ...] | None:
    """The classes of a training file (None: a regression task), each row's label checked for its type."""
    values: list[tuple[int, str]] = []
    for line, row in table_rows(path, columns):
        if not isinstance(row, dict) or label_column not in row:
            continue  # a malformed row: reported (or skipped) when the file is read
        try:
            values.append((line, label_text(row[label_column], path, line)))
        except DataError:
            if not skip_bad_rows:
                raise
    if not values:
        raise DataError(path, None, "has no data rows with a label (a header only?): nothing to train on")
    kinds = {line: _kind(text) for line, text in values}
    if task_type == "auto":
        words = [line for line, kind in kinds.items() if kind == "word"]
        if words and len(words) < len(values):
            numbers = [line for line, kind in kinds.items() if kind != "word"]
            odd, kind, rest = (words, "word", "numbers") if len(words) <= len(numbers) else (numbers, "number", "words")
            lines = ", ".join(map(str, odd[:3])) + (" ..." if len(odd) > 3 else "")
            raise DataError(path, odd[0], f"label {dict(values)[odd[0]]!r} is a {kind} in a column of {rest} "
                                f"(lines {lines}); fix the row, or give --task_type classification to take every "
                                "label as a class name")
        if not words and any(kind == "number" for kind in kinds.values()):
            return None
    names = {text for _, text in values}
    if len(names) == 1:
        raise DataError(path, None, f"every label in column {label_column!r} is {next(iter(names))!r}: a classifier "
                            "needs at least two classes. Add rows of the other classes, name them all with "
                            "--label_names, or give --task_type regression for a score")
    if all(kind == "integer" for kind in kinds.values()):
        return tuple(sorted(names, key=int))
    return tuple(sorted(names))


def _kind(text: str) -> str:
    if _INTEGER.match(text):
        return "integer"
    try:
        return "number" if math.isfinite(float(text)) else "word"
    except ValueError:
        return "word"


def read_table(task: Task, path: Path, split: str, skip_bad_rows: bool = False) -> tuple[list[Example],
                                                                                             ReadReport]:
    """Examples of one file; test files may lack the label column. Rows of test files without an id column
    are numbered 0..N-1 in file order, as run_glue numbers its predictions."""
    labelled = not split.startswith("test")
    columns = [task.text_a] + ([task.text_b] if task.text_b else []) + ([task.label] if labelled else [])
    examples, report = [], ReadReport(path)
    for ordinal, (line, row) in enumerate(table_rows(path, columns)):
        try:
            if isinstance(row, DataError):
                raise row
            examples.append(_example(task, path, line, row, labelled, ordinal))
        except DataError as err:
            if not skip_bad_rows:
                raise
            report.skipped.append(str(err))
    if not examples:
        raise DataError(path, None, "no examples: the file has no data rows"
                            + (f" ({len(report.skipped)} bad rows skipped)" if report.skipped else ""))
    report.rows = len(examples)
    return examples, report


def _example(task: Task, path: Path, line: int, row: dict, labelled: bool, ordinal: int) -> Example:
    require_fields(row, (task.text_a, task.text_b, task.label if labelled else None), path, line)
    text_a = row_text(row, task.text_a, path, line)
    text_b = row_text(row, task.text_b, path, line) if task.text_b else None
    label = parse_label(task, row[task.label], path, line) if labelled else None
    guid = next((str(row[c]) for c in _ID_COLUMNS if c in row), str(ordinal))
    return Example(guid=guid, text_a=text_a, text_b=text_b, label=label, line=line)


def require_fields(row: dict, columns: tuple[str | None, ...], path: Path, line: int | None) -> None:
    """A DataError naming the columns (None: not asked for) the row lacks."""
    missing = [c for c in columns if c and c not in row]
    if missing:
        raise DataError(path, line, f"no {', '.join(map(repr, missing))} field; found {', '.join(map(repr, row))}")


def row_text(row: dict, column: str, path: Path, line: int) -> str:
    value = row[column]
    if isinstance(value, str) and not value.strip() or value is None:
        raise DataError(path, line, f"column {column!r} is empty")
    if not isinstance(value, str):
        raise DataError(path, line, f"column {column!r} is {value!r}: expected text")
    return value


def table_rows(path: Path, columns: list[str]) -> Iterator[tuple[int, Row]]:
    """(line number, fields or the row's error) per data row, read as a stream (a Parquet file's row number for
    its line). A header without the needed columns, or a file that is not text of its format, is an error for
    the whole file."""
    fmt = table_format(path)
    if not path.is_file():
        raise DataError(path, None, "no such file")
    if fmt == "parquet":
        yield from _parquet_rows(path, columns)
        return
    with open_text(path) as handle:
        if fmt in ("json", "jsonl"):
            yield from _json_rows(path, handle)
        else:
            yield from _delimited_rows(path, handle, fmt, columns)


@contextlib.contextmanager
def open_text(path: Path) -> Iterator[TextIO]:
    """A UTF-8 text file to read as a stream (a byte-order mark dropped); a byte that is not UTF-8 is a
    DataError naming its line."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            yield handle
    except UnicodeDecodeError:
        try:
            read_utf8(path)  # names the line and column, which the stream's decoder cannot
        except NotUtf8Error as err:
            raise DataError(path, err.line, err.problem) from None
        raise


def _parquet_rows(path: Path, columns: list[str]) -> Iterator[tuple[int, Row]]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as err:  # pyarrow's own error types: a damaged or non-Parquet file
        raise DataError(path, None, f"not readable as Parquet ({err})") from None
    header = table.schema_arrow.names
    absent = [c for c in columns if c not in header]
    if absent:
        raise DataError(path, None, f"no column(s) {', '.join(map(repr, absent))}; the file has "
                                    f"{', '.join(map(repr, header))} (choose with --text_column, "
                                    "--text_pair_column, --label_column)")
    line = 0
    for batch in table.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            line += 1
            yield line, row


def _delimited_rows(path: Path, handle, fmt: str, columns: list[str]) -> Iterator[tuple[int, Row]]:
    field_limit = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)  # a text longer than csv's 131,072-character default reads as in JSON
    try:
        reader = csv.DictReader(handle, delimiter="," if fmt == "csv" else "\t",
                                quoting=csv.QUOTE_MINIMAL if fmt == "csv" else csv.QUOTE_NONE)
        header = reader.fieldnames or []
        twice = sorted({name for name in header if header.count(name) > 1})
        if twice:  # csv keeps the last of two same-named columns and says nothing
            raise DataError(path, 1, f"the header names column(s) {', '.join(map(repr, twice))} more than once "
                                f"({', '.join(map(repr, header))}); give every column its own name")
        absent = [c for c in columns if c not in header]
        if absent:
            raise DataError(path, 1, f"no column(s) {', '.join(map(repr, absent))}; the header has "
                                f"{', '.join(map(repr, header)) or 'nothing'} (choose with --text_column, "
                                "--text_pair_column, --label_column)")
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                raise DataError(path, reader.line_num, f"not readable as {fmt.upper()} ({err})") from None
            if None in row or None in row.values():
                yield reader.line_num, DataError(path, reader.line_num,
                                                     f"expected {len(header)} fields like the header")
            else:
                yield reader.line_num, row
    finally:
        csv.field_size_limit(field_limit)


def _json_rows(path: Path, lines: Iterator[str]) -> Iterator[tuple[int, Row]]:
    """JSON lines, or one JSON array of objects (read whole), with each object's line number."""
    first = True
    for line, chunk in enumerate(lines, start=1):
        if not chunk.strip():
            continue
        if first and chunk.lstrip().startswith("["):
            blank_lines = "\n" * (line - 1)  # keeps the array's line numbers the file's
            yield from _json_array_rows(path, blank_lines + chunk + "".join(lines))
            return
        first = False
        try:
            row = json.loads(chunk)
        except json.JSONDecodeError as err:
            yield line, DataError(path, line, f"not a JSON object ({err.msg}); use JSON lines, one object per line")
            continue
        yield line, row if isinstance(row, dict) else DataError(
            path, line, f"expected a JSON object, found {type(row).__name__}")


def _json_array_rows(path: Path, text: str) -> Iterator[tuple[int, Row]]:
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    while True:
        position = _skip(text, position, " \t\r\n")
        if position < len(text) and text[position] == "]":
            return
        line = text.count("\n", 0, position) + 1
        try:
            row, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            raise DataError(path, text.count("\n", 0, err.pos) + 1, f"not valid JSON ({err.msg})") from None
        yield line, row if isinstance(row, dict) else DataError(
            path, line, f"expected a JSON object in the array, found {type(row).__name__}")
        position = _skip(text, position, " \t\r\n")
        if position < len(text) and text[position] == ",":
            position += 1
        elif position >= len(text) or text[position] != "]":
            raise DataError(path, text.count("\n", 0, position) + 1, "not valid JSON (expected ',' or ']')")


def _skip(text: str, position: int, characters: str) -> int:
    while position < len(text) and text[position] in characters:
        position += 1
    return position
