"""What the data readers share: a task's description, its examples, the error a bad row raises, and the
one parser of a row's label.

A `Task` is a GLUE task (`glue.TASKS`) or a user's own files (`files.own_data_task`); `readers.read_split`
reads either kind of split into `Example`s. Every problem raises `DataError` naming file, line and problem.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

# pandas' spellings of a missing value: never a class name or a score
MISSING_LABELS = frozenset({"", "nan", "NaN", "NAN", "null", "NULL", "None", "none", "NA", "N/A", "n/a", "<NA>"})


class DataError(ValueError):
    """A data file that cannot be read as its task's layout."""

    def __init__(self, path: str | os.PathLike, line: int | None, problem: str):
        self.path, self.line, self.problem = Path(path), line, problem
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Task:
    """What a task's files hold and how a model is judged on them."""

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
    score_range: tuple[float, float] | None = None  # regression targets outside it are bad rows
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


def parse_label(task: Task, value, path: Path, line: int) -> int | float:
    """A row's label as the model takes it: a class index, or a finite score (inside the task's range)."""
    text = label_text(value, path, line)
    if task.labels is not None:
        if text not in task.labels:
            raise DataError(path, line, f"label {text!r} is not one of the classes {', '.join(task.labels)}")
        return task.labels.index(text)
    try:
        score = float(text)
    except ValueError:
        raise DataError(path, line, f"label {text!r} is not a number (regression)") from None
    if not math.isfinite(score):
        raise DataError(path, line, f"label {text!r} is not a finite number")
    if task.score_range is not None and not task.score_range[0] <= score <= task.score_range[1]:
        low, high = task.score_range
        raise DataError(path, line, f"label {text!r} is outside the task's range [{low:g}, {high:g}]")
    return score


def label_text(value, path: Path, line: int) -> str:
    """A label field as text; a missing value (empty, null, nan ...) or a JSON list or object is an error."""
    if isinstance(value, dict | list):
        kind = "object" if isinstance(value, dict) else "array"
        raise DataError(path, line, f"label {str(value)[:40]} is a JSON {kind}: expected a class name or a number")
    text = "" if value is None else str(value).strip()
    if text in MISSING_LABELS:
        raise DataError(path, line, f"the label is missing ({text or 'empty'!r}); every labelled row needs one")
    return text
