"""Readers for the nine GLUE tasks in their official TSV layouts.

GLUE files are tab-separated with no quoting (quotes are text), mostly with a header row. Columns are
found by header name, so MNLI's 12-column train and 16-column dev read alike. Every row is checked;
a bad one raises `DataError` naming file, line and problem, or, with `skip_bad_rows`, is
counted and reported in `ReadReport`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .tasks import DataError, Example, ReadReport, Task, parse_label

STSB_RANGE = (0.0, 5.0)


_NLI = ("contradiction", "entailment", "neutral")
_BINARY_NLI = ("entailment", "not_entailment")

TASKS: dict[str, Task] = {t.name.lower(): t for t in (
    Task("CoLA", ("0", "1"), "sentence", None, "label", "mcc",
             headerless_columns={"label": 1, "sentence": 3}, class_names=("unacceptable", "acceptable")),
    Task("SST-2", ("0", "1"), "sentence", None, "label", "acc", class_names=("negative", "positive")),
    Task("MRPC", ("0", "1"), "#1 String", "#2 String", "Quality", "acc_and_f1",
             class_names=("not_equivalent", "equivalent")),
    Task("STS-B", None, "sentence1", "sentence2", "score", "corr", score_range=STSB_RANGE),
    Task("QQP", ("0", "1"), "question1", "question2", "is_duplicate", "acc_and_f1",
             class_names=("not_duplicate", "duplicate")),
    Task("MNLI", _NLI, "sentence1", "sentence2", "gold_label", "acc",
             eval_splits=("dev", "dev_mismatched"), test_splits=("test", "test_mismatched"),
             files={"dev": "dev_matched.tsv", "test": "test_matched.tsv"},
             submission_names={"test": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"}),
    Task("QNLI", _BINARY_NLI, "question", "sentence", "label", "acc"),
    Task("RTE", _BINARY_NLI, "sentence1", "sentence2", "label", "acc"),
    Task("WNLI", ("0", "1"), "sentence1", "sentence2", "label", "acc",
             class_names=("not_entailment", "entailment")),
)}


def get_task(name: str) -> Task:
    """A task by its GLUE name in any spelling users type: SST-2, sst2, sst-2, STS_B, stsb, mnli ..."""
    task = _BY_KEY.get(_task_key(name))
    if task is None:
        raise ValueError(f"unknown GLUE task {name!r}; choose from {', '.join(t.name for t in TASKS.values())}")
    return task


def _task_key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


_BY_KEY = {_task_key(t.name): t for t in TASKS.values()}


def read_file(task: Task, path: str | os.PathLike, split: str,
              skip_bad_rows: bool = False) -> tuple[list[Example], ReadReport]:
    path = Path(path)
    lines = _decoded_lines(path)
    labelled = not split.startswith("test")
    if task.headerless_columns is not None and labelled:
        columns, width, body = dict(task.headerless_columns), None, lines
    else:
        if not lines:
            raise DataError(path, None, "empty file: expected a header row and examples")
        header = [name.strip() for name in lines[0][1].split("\t")]
        columns = _locate_columns(task, path, header, labelled)
        width, body = len(header), lines[1:]
        if "index" in header or "id" in header:
            columns["id"] = header.index("index" if "index" in header else "id")

    report, examples = ReadReport(path), []
    for line_no, text in body:
        if isinstance(text, DataError):
            row_error: DataError | None = text
        elif not text.strip():
            continue  # blank lines (e.g. a trailing one) carry no example
        else:
            try:
                examples.append(_parse_row(task, path, line_no, text, columns, width, split, labelled))
                continue
            except DataError as err:
                row_error = err
        if not skip_bad_rows:
            raise row_error
        report.skipped.append(str(row_error))
    if not examples:
        raise DataError(path, None, "no examples: the file has no data rows"
                            + (f" ({len(report.skipped)} bad rows skipped)" if report.skipped else ""))
    report.rows = len(examples)
    return examples, report


def _decoded_lines(path: Path) -> list[tuple[int, str | DataError]]:
    """(line number, text) pairs; undecodable lines carry their error so leniency can skip them."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines: list[tuple[int, str | DataError]] = []
    for number, chunk in enumerate(raw.split(b"\n"), start=1):
        chunk = chunk.removesuffix(b"\r")
        try:
            lines.append((number, chunk.decode("utf-8")))
        except UnicodeDecodeError as err:
            lines.append((number, DataError(path, number, f"invalid UTF-8 at byte {err.start} of the line")))
    while lines and lines[-1][1] == "":
        lines.pop()
    if lines and isinstance(lines[0][1], DataError):
        raise lines[0][1]
    return lines


def _locate_columns(task: Task, path: Path, header: list[str], labelled: bool) -> dict[str, int]:
    wanted = [task.text_a] + ([task.text_b] if task.text_b else []) + ([task.label] if labelled else [])
    missing = [name for name in wanted if name not in header]
    if missing:
        raise DataError(path, 1, f"header lacks column(s) {', '.join(map(repr, missing))} that {task.name} "
                            f"needs; found {', '.join(map(repr, header))}")
    return {name: header.index(name) for name in wanted}


def _parse_row(task: Task, path: Path, line: int, text: str, columns: dict[str, int], width: int | None,
               split: str, labelled: bool) -> Example:
    fields = text.split("\t")
    needed = max(columns.values()) + 1
    if (width is not None and len(fields) != width) or len(fields) < needed:
        expected = width if width is not None else f"at least {needed}"
        raise DataError(path, line, f"expected {expected} tab-separated fields, found {len(fields)}")
    text_a = _sentence(fields[columns[task.text_a]], path, line, task.text_a)
    text_b = _sentence(fields[columns[task.text_b]], path, line, task.text_b) if task.text_b else None
    label = parse_label(task, fields[columns[task.label]], path, line) if labelled else None
    guid = fields[columns["id"]] if "id" in columns and not labelled else f"{split}-{line}"
    return Example(guid=guid, text_a=text_a, text_b=text_b, label=label, line=line)


def _sentence(value: str, path: Path, line: int, column: str) -> str:
    if not value.strip():
        raise DataError(path, line, f"column {column!r} is empty")
    return value
