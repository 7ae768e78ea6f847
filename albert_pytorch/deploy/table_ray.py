"""`predict --ray [ADDRESS]`: the table job on Ray Data, on a local Ray instance or a cluster.

Ray reads the files (tasks), tokenizes them (tasks: the `Encoder` alone, no model) and scores them on an actor
pool of model replicas (`--num_replicas`, each with `--threads`); a replica that dies is restarted and its
batches run again, so every row is scored once in the output. This process takes the scored rows back in input
order, a chunk at a time, and writes them as the local job does (parts written whole, `--resume`, the same
output file). Ray is imported here only.
"""

from __future__ import annotations

import csv
import functools
import logging
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..data.tasks import DataError
from ..errors import UsageError
from ..serving.engine import Encoded, Encoder, Engine, EngineOptions, read_model_dir
from .predict import score_encoded
from .table import ChunkResult, Scorer, TableJob, prediction_record, row_sequence

READERS = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt")


@dataclass(frozen=True)
class RayScale:
    """Where and how wide: `address` None starts a local Ray instance."""

    address: str | None = None
    num_replicas: int = 2
    threads: int | None = None  # each replica's intra-op threads


def ray_scorer(scale: RayScale) -> Scorer:
    """A `Scorer` that runs the chunks on Ray Data."""
    return functools.partial(_ray_chunks, scale=scale)


def _ray_chunks(engine: Engine, job: TableJob, files: list[Path], columns: tuple[str, str | None],
                done_chunks: int, scale: RayScale):
    import ray

    logging.getLogger("ray").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="ray")  # Ray Data's advice on concurrency for a small input
    ray.init(address=scale.address or "local", include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    try:
        yield from _stream(engine, job, files, columns, done_chunks, scale)
    finally:
        ray.shutdown()


def _stream(engine: Engine, job: TableJob, files: list[Path], columns: tuple[str, str | None], done_chunks: int,
            scale: RayScale):
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its plan and timings, at INFO, per dataset
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows come back in input order
    context.enable_progress_bars = False  # ours counts the rows written
    options = replace(engine.options, max_input_length=engine.max_input_length, threads=scale.threads)
    # Reading and tokenizing reserve no CPU of Ray's count, which the replicas take whole (their threads): on one
    # machine the replicas may hold every core, and tasks that waited for a free one would never run.
    dataset = _read(files)
    dataset = dataset.map_batches(_tokenize, fn_kwargs={"options": options, "columns": columns,
                                                        "txt": files[0].suffix.lower() == ".txt"},
                                  batch_format="pyarrow", batch_size=1024, num_cpus=0)
    dataset = dataset.map_batches(_Replica, fn_constructor_kwargs={"options": options, "batch_size": job.batch_size},
                                  batch_format="numpy", batch_size=256, concurrency=scale.num_replicas,
                                  num_cpus=scale.threads or 1, max_restarts=-1, max_task_retries=-1)
    for index, batch in enumerate(dataset.iter_batches(batch_size=job.chunk_rows, batch_format="numpy")):
        yield _chunk_result(batch, job, index < done_chunks)


def _chunk_result(batch: dict[str, np.ndarray], job: TableJob, done: bool) -> ChunkResult:
    rows = len(batch["__record"])
    if done:
        return rows, None, None
    records = [r for r, kind in zip(batch["__record"], batch["__kind"], strict=True) if kind == "record"]
    rejected = [r for r, kind in zip(batch["__record"], batch["__kind"], strict=True) if kind == "rejected"]
    if rejected and not job.skip_bad_rows:
        raise DataError(job.input, None, f"{rejected[0]['reason']} (a row of this input; --skip_bad_rows writes "
                                         "such rows to <output>.rejected.jsonl and goes on)")
    return rows, records, rejected


def _check_json_lines(files: list[Path]) -> None:
    for path in files:
        with open(path, encoding="utf-8-sig") as handle:
            start = handle.read(4096).lstrip()[:1]
        if start == "[":
            raise UsageError(f"--input {path} holds one JSON array; --ray reads JSON lines (one object per "
                             "line): convert it, or score it without --ray")


def _read(files: list[Path]):
    """The files as one dataset, every value as its file holds it (a CSV's fields as text, as the local job reads
    them: an id "007" stays "007")."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import ray.data

    kinds = {f.suffix.lower() for f in files}
    if len(kinds) > 1:
        raise UsageError(f"--ray reads one file type at a time; --input holds {', '.join(sorted(kinds))}")
    kind, paths = kinds.pop(), [str(f) for f in files]
    if kind in (".csv", ".tsv"):
        with open(files[0], encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle, delimiter="," if kind == ".csv" else "\t"))
        return ray.data.read_csv(paths, num_cpus=0, parse_options=pacsv.ParseOptions(
            delimiter="," if kind == ".csv" else "\t", quote_char='"' if kind == ".csv" else False,
            newlines_in_values=kind == ".csv"), convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in header}, strings_can_be_null=False))
    if kind in (".jsonl", ".json"):
        _check_json_lines(files)
        return ray.data.read_json(paths, lines=True, num_cpus=0)
    if kind == ".parquet":
        return ray.data.read_parquet(paths, num_cpus=0)
    return ray.data.read_text(paths, num_cpus=0)  # a column "text", the local job's name for a plain-text line


@functools.lru_cache(maxsize=2)
def _encoder(options: EngineOptions) -> Encoder:
    _, tokenizer = read_model_dir(options)
    return Encoder(tokenizer, options.max_input_length)


def _tokenize(table, options: EngineOptions, columns: tuple[str, str | None], txt: bool) -> dict[str, np.ndarray]:
    """A block of rows -> each row, its token ids or why it cannot be scored (a Ray Data task). Ray's numpy
    batches turn None into NaN, so an absent value is an empty list or string here."""
    rows = table.to_pylist()
    sequences, kept, reasons = [], [], [""] * len(rows)
    where = Path("(ray)")
    for i, row in enumerate(rows):
        try:
            sequences.append(row_sequence(where, None, row, columns, txt))
            kept.append(i)
        except DataError as err:
            reasons[i] = err.problem
    ids, types = [[] for _ in rows], [[] for _ in rows]
    if sequences:
        encoded = _encoder(options).encode(sequences, truncate=True)
        for i, row_ids, row_types in zip(kept, encoded.ids, encoded.types, strict=True):
            ids[i], types[i] = row_ids, row_types
    return {"__row": _objects(rows), "__ids": _objects(ids), "__types": _objects(types),
            "__reason": np.array(reasons, dtype=object)}


class _Replica:
    """One model replica of the actor pool: the engine `serve` and `predict` load."""

    def __init__(self, options: EngineOptions, batch_size: int):
        self.engine, self.batch_size = Engine(options), batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        reasons = batch["__reason"]
        good = [i for i, reason in enumerate(reasons) if not reason]
        out = [{"file": None, "line": None, "reason": reason, "row": row} if reason else None
               for row, reason in zip(batch["__row"], reasons, strict=True)]
        if good:
            encoded = Encoded([list(batch["__ids"][i]) for i in good], [list(batch["__types"][i]) for i in good])
            logits = score_encoded(self.engine, encoded, self.batch_size)
            for k, i in enumerate(good):
                out[i] = prediction_record(batch["__row"][i], logits[k], self.engine)
        return {"__record": _objects(out),
                "__kind": np.array(["rejected" if reason else "record" for reason in reasons], dtype=object)}


def _objects(values: list) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array
