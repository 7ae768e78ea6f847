"""Readers for the nine GLUE tasks in their official TSV layouts.

GLUE files are tab-separated with no quoting (quotes are text), mostly with a header row. Columns are
found by header name, so MNLI's 12-column train and 16-column dev read alike. Every row is checked;
a bad one raises `GlueDataError` naming file, line and problem, or, with `skip_bad_rows`, is
counted and reported in `ReadReport`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path


class GlueDataError(ValueError):
    """A GLUE file that cannot be read as its task's layout."""

    def __init__(self, path: str | os.PathLike, line: int | None, problem: str):
        self.path, self.line, self.problem = Path(path), line, problem
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


STSB_RANGE = (0.0, 5.0)


@dataclass(frozen=True)
class GlueTask:
    name: str
    labels: tuple[str, ...] | None  # None: regression (STS-B)
    text_a: str
    text_b: str | None
    label: str
    metric: str  # the one number that ranks models on this task
    # CoLA's train/dev files have no header; their columns are then these positions.
    headerless_columns: dict[str, int] | None = None
    eval_splits: tuple[str, ...] = ("dev",)
    test_splits: tuple[str, ...] = ("test",)
    files: dict[str, str] = field(default_factory=dict)  # split -> file name, where not f"{split}.tsv"
    submission_names: dict[str, str] = field(default_factory=dict)  # test split -> GLUE submission file
    reader: str = "glue"  # "glue": the official TSV layout; "table": a user's CSV/TSV/JSON lines (data.files)
    score_range: tuple[float, float] | None = STSB_RANGE  # regression targets outside it are bad rows
    # what each class means, as the datasets library's GLUE features name them (a model's id2label); the
    # file's own values (`labels`) where they are names already
    class_names: tuple[str, ...] | None = None

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def names(self) -> tuple[str, ...] | None:
        """The classes' names for people and for config.json's id2label (None: regression)."""
        return self.class_names or self.labels

    def file_name(self, split: str) -> str:
        return self.files.get(split, f"{split}.tsv")

    def submission_name(self, split: str) -> str:
        return self.submission_names.get(split, f"{self.name}.tsv")


_NLI = ("contradiction", "entailment", "neutral")
_BINARY_NLI = ("entailment", "not_entailment")

TASKS: dict[str, GlueTask] = {t.name.lower(): t for t in (
    GlueTask("CoLA", ("0", "1"), "sentence", None, "label", "mcc",
             headerless_columns={"label": 1, "sentence": 3}, class_names=("unacceptable", "acceptable")),
    GlueTask("SST-2", ("0", "1"), "sentence", None, "label", "acc", class_names=("negative", "positive")),
    GlueTask("MRPC", ("0", "1"), "#1 String", "#2 String", "Quality", "acc_and_f1",
             class_names=("not_equivalent", "equivalent")),
    GlueTask("STS-B", None, "sentence1", "sentence2", "score", "corr"),
    GlueTask("QQP", ("0", "1"), "question1", "question2", "is_duplicate", "acc_and_f1",
             class_names=("not_duplicate", "duplicate")),
    GlueTask("MNLI", _NLI, "sentence1", "sentence2", "gold_label", "acc",
             eval_splits=("dev", "dev_mismatched"), test_splits=("test", "test_mismatched"),
             files={"dev": "dev_matched.tsv", "test": "test_matched.tsv"},
             submission_names={"test": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"}),
    GlueTask("QNLI", _BINARY_NLI, "question", "sentence", "label", "acc"),
    GlueTask("RTE", _BINARY_NLI, "sentence1", "sentence2", "label", "acc"),
    GlueTask("WNLI", ("0", "1"), "sentence1", "sentence2", "label", "acc",
             class_names=("not_entailment", "entailment")),
)}


def get_task(name: str) -> GlueTask:
    """A task by its GLUE name in any spelling users type: SST-2, sst2, sst-2, STS_B, stsb, mnli ..."""
    task = _BY_KEY.get(_task_key(name))
    if task is None:
        raise ValueError(f"unknown GLUE task {name!r}; choose from {', '.join(t.name for t in TASKS.values())}")
    return task


def _task_key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


_BY_KEY = {_task_key(t.name): t for t in TASKS.values()}


@dataclass
class Example:
    guid: str  # "{split}-{line}", or the file's own id column for test sets
    text_a: str
    text_b: str | None
    label: int | float | None  # class index, STS-B score, or None for test sets
    line: int


@dataclass
class ReadReport:
    path: Path
    rows: int = 0
    skipped: list[str] = field(default_factory=list)  # "path:line: problem" for each skipped row

    def summary(self) -> str:
        text = f"{self.path}: {self.rows} examples"
        if self.skipped:
            text += f", {len(self.skipped)} bad rows skipped (first: {self.skipped[0]})"
        return text


def read_split(task: GlueTask, data_dir: str | os.PathLike, split: str,
               skip_bad_rows: bool = False) -> tuple[list[Example], ReadReport]:
    path = Path(data_dir) / task.file_name(split)
    if task.reader == "table":
        from .files import read_table

        return read_table(task, path, split, skip_bad_rows)
    if not path.is_file():
        raise GlueDataError(path, None, f"no such file; a {task.name} folder holds "
                            f"{', '.join(task.file_name(s) for s in ('train', *task.eval_splits))} "
                            "(get them with `python3 -m albert_pytorch download`)")
    return read_file(task, path, split, skip_bad_rows=skip_bad_rows)


def read_file(task: GlueTask, path: str | os.PathLike, split: str,
              skip_bad_rows: bool = False) -> tuple[list[Example], ReadReport]:
    path = Path(path)
    lines = _decoded_lines(path)
    labelled = not split.startswith("test")
    if task.headerless_columns is not None and labelled:
        columns, width, body = dict(task.headerless_columns), None, lines
    else:
        if not lines:
            raise GlueDataError(path, None, "empty file: expected a header row and examples")
        header = [name.strip() for name in lines[0][1].split("\t")]
        columns = _locate_columns(task, path, header, labelled)
        width, body = len(header), lines[1:]
        if "index" in header or "id" in header:
            columns["id"] = header.index("index" if "index" in header else "id")

    report, examples = ReadReport(path), []
    for line_no, text in body:
        if isinstance(text, GlueDataError):
            row_error: GlueDataError | None = text
        elif not text.strip():
            continue  # blank lines (e.g. a trailing one) carry no example
        else:
            try:
                examples.append(_parse_row(task, path, line_no, text, columns, width, split, labelled))
                continue
            except GlueDataError as err:
                row_error = err
        if not skip_bad_rows:
            raise row_error
        report.skipped.append(str(row_error))
    if not examples:
        raise GlueDataError(path, None, "no examples: the file has no data rows"
                            + (f" ({len(report.skipped)} bad rows skipped)" if report.skipped else ""))
    report.rows = len(examples)
    return examples, report


def _decoded_lines(path: Path) -> list[tuple[int, str | GlueDataError]]:
    """(line number, text) pairs; undecodable lines carry their error so leniency can skip them."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines: list[tuple[int, str | GlueDataError]] = []
    for number, chunk in enumerate(raw.split(b"\n"), start=1):
        chunk = chunk.removesuffix(b"\r")
        try:
            lines.append((number, chunk.decode("utf-8")))
        except UnicodeDecodeError as err:
            lines.append((number, GlueDataError(path, number, f"invalid UTF-8 at byte {err.start} of the line")))
    while lines and lines[-1][1] == "":
        lines.pop()
    if lines and isinstance(lines[0][1], GlueDataError):
        raise lines[0][1]
    return lines


def _locate_columns(task: GlueTask, path: Path, header: list[str], labelled: bool) -> dict[str, int]:
    wanted = [task.text_a] + ([task.text_b] if task.text_b else []) + ([task.label] if labelled else [])
    missing = [name for name in wanted if name not in header]
    if missing:
        raise GlueDataError(path, 1, f"header lacks column(s) {', '.join(map(repr, missing))} that {task.name} "
                            f"needs; found {', '.join(map(repr, header))}")
    return {name: header.index(name) for name in wanted}


def _parse_row(task: GlueTask, path: Path, line: int, text: str, columns: dict[str, int], width: int | None,
               split: str, labelled: bool) -> Example:
    fields = text.split("\t")
    needed = max(columns.values()) + 1
    if (width is not None and len(fields) != width) or len(fields) < needed:
        expected = width if width is not None else f"at least {needed}"
        raise GlueDataError(path, line, f"expected {expected} tab-separated fields, found {len(fields)}")
    text_a = _sentence(fields[columns[task.text_a]], path, line, task.text_a)
    text_b = _sentence(fields[columns[task.text_b]], path, line, task.text_b) if task.text_b else None
    label = _label(task, fields[columns[task.label]], path, line) if labelled else None
    guid = fields[columns["id"]] if "id" in columns and not labelled else f"{split}-{line}"
    return Example(guid=guid, text_a=text_a, text_b=text_b, label=label, line=line)


def _sentence(value: str, path: Path, line: int, column: str) -> str:
    if not value.strip():
        raise GlueDataError(path, line, f"column {column!r} is empty")
    return value


def _label(task: GlueTask, value: str, path: Path, line: int) -> int | float:
    value = value.strip()
    if task.labels is not None:
        if value not in task.labels:
            raise GlueDataError(path, line, f"label {value!r} is not one of {', '.join(task.labels)}")
        return task.labels.index(value)
    try:
        score = float(value)
    except ValueError:
        raise GlueDataError(path, line, f"score {value!r} is not a number") from None
    low, high = task.score_range
    if not math.isfinite(score) or not low <= score <= high:
        raise GlueDataError(path, line, f"score {value!r} is outside [{low:g}, {high:g}]")
    return score
