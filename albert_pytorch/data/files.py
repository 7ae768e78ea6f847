"""A user's own data: CSV, TSV or JSON-lines files with named columns, as a task that trains like GLUE's.

The format follows the extension (.csv, .tsv, .json/.jsonl: one object per line). TSV is read as GLUE's
are, without quoting (a quote is text); CSV with standard quoting. Classes are the training file's
labels (sorted; numbers numerically) or `--label_names`; labels that are non-integer numbers make a
regression task. Every row is checked: a problem raises `GlueDataError` naming file, line and column.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path

from .glue import Example, GlueDataError, GlueTask, ReadReport

FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "jsonl", ".jsonl": "jsonl"}
TASK_TYPES = ("auto", "classification", "regression")


def own_data_task(train_file: str | None, validation_file: str | None, test_file: str | None, text_column: str,
                  text_pair_column: str | None, label_column: str, label_names: list[str] | None = None,
                  task_type: str = "auto") -> GlueTask:
    """The task these files describe. Without a training file (evaluation only), `label_names` are the
    classes, as the trained model's config.json names them."""
    files = {split: str(Path(path).resolve()) for split, path in
             (("train", train_file), ("validation", validation_file), ("test", test_file)) if path}
    for path in files.values():
        table_format(Path(path))
    if task_type == "regression":
        labels = None
    elif label_names:
        labels = tuple(label_names)
    else:
        if train_file is None:
            raise ValueError("without --train_file, give --label_names (the classes, in the model's order)")
        needed = [c for c in (text_column, text_pair_column, label_column) if c]
        values = [row[label_column] for _, row in _rows(Path(files["train"]), needed) if label_column in row]
        regression = task_type == "auto" and _all_numbers(values) and not all(_is_integer(v) for v in values)
        labels = None if regression else _sorted_labels(values)
    return GlueTask(name="custom", labels=labels, text_a=text_column, text_b=text_pair_column, label=label_column,
                    metric="corr" if labels is None else "acc",
                    eval_splits=("validation",) if validation_file else (), test_splits=("test",) if test_file else (),
                    files=files, submission_names={"test": "predict_results.tsv"}, reader="table", score_range=None)


def table_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise GlueDataError(path, None, f"unknown file type {path.suffix!r}: use .csv, .tsv, .json or .jsonl")
    return fmt


def read_table(task: GlueTask, path: Path, split: str, skip_bad_rows: bool = False) -> tuple[list[Example],
                                                                                             ReadReport]:
    """Examples of one file; test files may lack the label column."""
    labelled = not split.startswith("test")
    columns = [task.text_a] + ([task.text_b] if task.text_b else []) + ([task.label] if labelled else [])
    examples, report = [], ReadReport(path)
    for line, row in _rows(path, columns):
        try:
            examples.append(_example(task, path, line, row, split, labelled))
        except GlueDataError as err:
            if not skip_bad_rows:
                raise
            report.skipped.append(str(err))
    if not examples:
        raise GlueDataError(path, None, "no examples: the file has no data rows")
    report.rows = len(examples)
    return examples, report


def _example(task: GlueTask, path: Path, line: int, row: dict, split: str, labelled: bool) -> Example:
    missing = [c for c in (task.text_a, task.text_b, task.label if labelled else None) if c and c not in row]
    if missing:
        raise GlueDataError(path, line, f"no {', '.join(map(repr, missing))} field; found {', '.join(map(repr, row))}")
    text_a = _text(row, task.text_a, path, line)
    text_b = _text(row, task.text_b, path, line) if task.text_b else None
    label = _label(task, row[task.label], path, line) if labelled else None
    guid = str(row.get("id", row.get("idx", f"{split}-{line}")))
    return Example(guid=guid, text_a=text_a, text_b=text_b, label=label, line=line)


def _text(row: dict, column: str, path: Path, line: int) -> str:
    value = row[column]
    if isinstance(value, str) and not value.strip() or value is None:
        raise GlueDataError(path, line, f"column {column!r} is empty")
    if not isinstance(value, str):
        raise GlueDataError(path, line, f"column {column!r} is {value!r}: expected text")
    return value


def _label(task: GlueTask, value, path: Path, line: int) -> int | float:
    text = str(value).strip()
    if task.labels is not None:
        if text not in task.labels:
            raise GlueDataError(path, line, f"label {text!r} is not one of the training labels "
                                f"{', '.join(task.labels)}")
        return task.labels.index(text)
    try:
        score = float(text)
    except ValueError:
        raise GlueDataError(path, line, f"label {text!r} is not a number (regression)") from None
    if not math.isfinite(score):
        raise GlueDataError(path, line, f"label {text!r} is not a finite number")
    return score


def _rows(path: Path, columns: list[str]) -> Iterator[tuple[int, dict]]:
    """(line number, field dict) per data row; a header without the needed columns is an error at line 1."""
    fmt = table_format(path)
    if not path.is_file():
        raise GlueDataError(path, None, "no such file")
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            if fmt == "jsonl":
                yield from _json_rows(path, handle)
                return
            reader = csv.DictReader(handle, delimiter="," if fmt == "csv" else "\t",
                                    quoting=csv.QUOTE_MINIMAL if fmt == "csv" else csv.QUOTE_NONE)
            header = reader.fieldnames or []
            absent = [c for c in columns if c not in header]
            if absent:
                raise GlueDataError(path, 1, f"no column(s) {', '.join(map(repr, absent))}; the header has "
                                    f"{', '.join(map(repr, header)) or 'nothing'} (choose with --text_column, "
                                    "--text_pair_column, --label_column)")
            for row in reader:
                if None in row or None in row.values():
                    raise GlueDataError(path, reader.line_num, f"expected {len(header)} fields like the header")
                yield reader.line_num, row
    except UnicodeDecodeError as err:
        raise GlueDataError(path, None, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise GlueDataError(path, None, f"not readable as {fmt.upper()} ({err})") from None


def _json_rows(path: Path, handle) -> Iterator[tuple[int, dict]]:
    for line, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            raise GlueDataError(path, line, f"not a JSON object ({err.msg})") from None
        if not isinstance(row, dict):
            raise GlueDataError(path, line, f"expected a JSON object, found {type(row).__name__}")
        yield line, row


def _all_numbers(values: list) -> bool:
    try:
        return bool(values) and all(math.isfinite(float(str(v))) for v in values)
    except ValueError:
        return False


def _is_integer(value) -> bool:
    return str(value).strip().lstrip("-").isdigit()


def _sorted_labels(values: list) -> tuple[str, ...]:
    names = {str(v).strip() for v in values}
    if all(_is_integer(n) for n in names):
        return tuple(sorted(names, key=int))
    return tuple(sorted(names))
