"""`read_split`: one split of a task, from GLUE's TSVs or from a user's own files, as `Example`s."""

from __future__ import annotations

import os
from pathlib import Path

from .files import read_table
from .glue import read_file
from .tasks import DataError, Example, ReadReport, Task


def read_split(task: Task, data_dir: str | os.PathLike, split: str,
               skip_bad_rows: bool = False) -> tuple[list[Example], ReadReport]:
    path = Path(data_dir) / task.file_name(split)
    if task.reader == "table":
        return read_table(task, path, split, skip_bad_rows)
    if not path.is_file():
        raise DataError(path, None, f"no such file; a {task.name} folder holds "
                        f"{', '.join(task.file_name(s) for s in ('train', *task.eval_splits))} "
                        "(get them with `python3 -m albert_pytorch download`)")
    return read_file(task, path, split, skip_bad_rows=skip_bad_rows)
