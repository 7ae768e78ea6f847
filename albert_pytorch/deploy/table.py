"""`predict --input PATH --output FILE`: score a table of any size as a stream, and resume it after a stop.

Rows are read as a stream (CSV, TSV, JSON lines, Parquet, or plain text: a sentence or a tab-separated pair per
line), cut into chunks of `chunk_rows` input rows, scored through the engine `serve` runs, and each chunk's
records written whole into `<output>.parts/` (a temporary file renamed in). Memory is a chunk's, whatever the
file's size. When every chunk is in, the parts are joined into the output (again a temporary file renamed in)
and the parts folder removed. A stopped run keeps its finished parts: the same command with `--resume` checks
that the inputs and settings are the ones the parts were made from, skips the finished chunks and ends with the
output an uninterrupted run writes, byte for byte (an equal table for Parquet).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..data.files import open_text, require_fields, row_text, table_rows, text_columns
from ..data.tasks import DataError
from ..errors import UsageError
from ..io import atomic_path, atomic_write_json, atomic_write_text
from ..rundir import LOCK_NAME, FolderLock
from ..serving.engine import Engine, probabilities
from ..signals import raise_if_signalled
from .predict import score, text_pair

logger = logging.getLogger("albert_pytorch")

INPUT_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt")
OUTPUT_FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
_DELIMITERS = {"csv": ",", "tsv": "\t"}
TEXT_LINE = "text"  # the one column of a plain-text input


@dataclass(frozen=True)
class TableJob:
    """What to score and where: the settings a resumed run must share with the parts it finds."""

    input: str  # a file, a folder or a glob
    output: str | None  # None: JSON lines on stdout
    text_column: str | None = None  # None: run_glue's choice (`sentence`, `sentence1`/`sentence2`, ...)
    text_pair_column: str | None = None
    chunk_rows: int = 4096
    batch_size: int = 32
    skip_bad_rows: bool = False
    resume: bool = False
    overwrite: bool = False
    progress: bool = True


@dataclass
class TableSummary:
    rows: int = 0  # scored
    rejected: int = 0
    seconds: float = 0.0
    resumed_rows: int = 0  # input rows a resumed run found already scored
    first_chunk_seconds: float = 0.0  # until the first chunk was in: start-up (Ray's, the model's warm-up) included
    first_chunk_rows: int = 0

    @property
    def steady_rows_per_s(self) -> float:
        """Rows/s after the first chunk: the rate a larger table converges to."""
        later = self.seconds - self.first_chunk_seconds
        return (self.rows - self.first_chunk_rows) / later if later > 0 else 0.0


def input_files(pattern: str) -> list[Path]:
    """The files `--input` names: a file, every table of a folder (sorted), or a glob's matches (sorted)."""
    path = Path(pattern)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in INPUT_SUFFIXES and p.is_file())
        if not found:
            raise UsageError(f"--input {pattern}: the folder holds no {', '.join(INPUT_SUFFIXES)} files")
    elif path.is_file():
        found = [path]
    else:
        found = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
        if not found:
            raise UsageError(f"--input {pattern}: no such file or folder, and no file matches it")
    for file in found:
        if file.suffix.lower() not in INPUT_SUFFIXES:
            raise UsageError(f"--input {file}: unknown file type {file.suffix!r}; use {', '.join(INPUT_SUFFIXES)}")
    return found


def run_table_job(engine: Engine, job: TableJob, files: list[Path], scorer: Scorer | None = None) -> TableSummary:
    """Score every row of `files` (`input_files(job.input)`) into `job.output` (or stdout); see the module's
    docstring. `scorer` scores the chunks: in this process (`local_chunks`, the default) or on Ray Data."""
    scorer = scorer or local_chunks
    columns = _columns(files[0], job)
    if job.output is None:
        if job.resume or job.overwrite:
            raise UsageError("--resume and --overwrite need --output: a run printing to stdout keeps no parts")
        return _score(scorer(engine, job, files, columns, 0), job, files, _StdoutSink())
    output = Path(job.output)
    fmt = OUTPUT_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise UsageError(f"--output {output}: unknown file type {output.suffix!r}; use "
                         f"{', '.join(OUTPUT_FORMATS)}")
    parts = output.with_name(output.name + ".parts")
    manifest = _manifest(engine, job, files, columns, fmt)
    if output.is_dir():
        raise UsageError(f"--output {output} is a folder; give a file (.jsonl, .csv, .tsv or .parquet)")
    unfinished = parts.is_dir()
    parts.mkdir(parents=True, exist_ok=True)
    with FolderLock(parts, f"--output {output}"):  # first: a run writing there now is named as such
        try:
            _check_output(output, parts, unfinished, job)
        except UsageError:
            if not unfinished:
                shutil.rmtree(parts, ignore_errors=True)  # a refused run leaves nothing
            raise
        if job.overwrite:
            _empty(parts)
        done = _resumable_chunks(parts, manifest) if job.resume else 0
        atomic_write_json(parts / "manifest.json", manifest)
        sink = _PartSink(parts, fmt)
        try:
            summary = _score(scorer(engine, job, files, columns, done), job, files, sink)
        except BaseException as err:
            kept = sink.count()
            if kept:
                err.add_note(f"{kept} finished part(s) of {job.chunk_rows} rows each are kept in {parts}: the same "
                             "command with --resume continues after them.")
            else:
                shutil.rmtree(parts, ignore_errors=True)
                err.add_note(f"Nothing was written to {output}.")
            raise
        _join(parts, output, fmt)
        shutil.rmtree(parts, ignore_errors=True)
    return summary


# -- inputs --------------------------------------------------------------------------------------------------

def _columns(first: Path, job: TableJob) -> tuple[str, str | None]:
    if first.suffix.lower() == ".txt":
        if job.text_column or job.text_pair_column:
            raise UsageError(f"--input {first}: a plain-text file has no columns (a sentence, or a tab-separated "
                             "pair, per line); --text_column and --text_pair_column are for tables")
        return TEXT_LINE, None
    if job.text_column is not None:
        return job.text_column, job.text_pair_column
    return text_columns(first, "label", job.text_pair_column)


def _rows(files: list[Path], columns: tuple[str, str | None]) -> Iterator[tuple[Path, int, dict | DataError]]:
    needed = [c for c in columns if c]
    for path in files:
        if path.suffix.lower() == ".txt":
            yield from _text_lines(path)
        else:
            for line, row in table_rows(path, needed):
                yield path, line, row


def _text_lines(path: Path) -> Iterator[tuple[Path, int, dict | DataError]]:
    with open_text(path) as handle:
        for line, text in enumerate(handle, start=1):
            text = text.rstrip("\r\n")
            if text.strip():
                yield path, line, {TEXT_LINE: text}


def row_sequence(path: Path, line: int | None, row: dict, columns: tuple[str, str | None],
                 plain_text: bool) -> tuple[str, str | None]:
    """A row's (text, pair or None); a DataError naming the file, line and column when it has none."""
    text_column, pair_column = columns
    if plain_text:  # a line of a .txt file: a sentence, or a pair joined by a tab
        return text_pair(row[TEXT_LINE])
    require_fields(row, columns, path, line)
    return row_text(row, text_column, path, line), (row_text(row, pair_column, path, line) if pair_column else None)


def _estimated_rows(files: list[Path]) -> int:
    """Rows to expect, for the progress bar's ETA: Parquet's count, else the lines (a CSV field's line breaks
    make it an estimate)."""
    total = 0
    for path in files:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            total += pq.ParquetFile(path).metadata.num_rows
            continue
        with open(path, "rb") as handle:
            lines = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
        total += max(lines - (path.suffix.lower() in (".csv", ".tsv")), 0)
    return total


# -- scoring ---------------------------------------------------------------------------------------------------

# One chunk's outcome: (input rows, records, rejected rows); records None for a chunk a resumed run skips.
ChunkResult = tuple[int, list[dict] | None, list[dict] | None]
# What scores the chunks: (engine, job, files, columns, chunks already done) -> each chunk's result, in order.
Scorer = Callable[[Engine, TableJob, list[Path], tuple[str, str | None], int], Iterator[ChunkResult]]


def local_chunks(engine: Engine, job: TableJob, files: list[Path], columns: tuple[str, str | None],
                 done_chunks: int) -> Iterator[ChunkResult]:
    """Each chunk scored in this process; the chunks a resumed run finished are read past, not scored. (Reading
    the next chunk in a thread while the model runs gained nothing on 2 cores: the model's threads use both.)"""
    for index, chunk in enumerate(_chunks(_rows(files, columns), job.chunk_rows)):
        if index < done_chunks:
            yield len(chunk), None, None
        else:
            yield len(chunk), *_score_chunk(engine, job, chunk, columns)


def _score(results: Iterator[ChunkResult], job: TableJob, files: list[Path], sink) -> TableSummary:
    summary, start = TableSummary(), time.perf_counter()
    shown = job.progress and sys.stderr.isatty()
    bar = tqdm(total=_estimated_rows(files) if shown else None, unit=" rows", file=sys.stderr, disable=not shown,
               dynamic_ncols=True, smoothing=0.1)
    with bar:
        for index, (rows, records, rejected) in enumerate(results):
            if records is None:
                summary.resumed_rows += rows
            else:
                sink.write(index, records, rejected)
                summary.rows += len(records)
                summary.rejected += len(rejected)
                if not summary.first_chunk_rows:
                    summary.first_chunk_rows, summary.first_chunk_seconds = len(records), time.perf_counter() - start
            bar.update(rows)
            raise_if_signalled()  # a Ctrl-C that Python dropped: stop with this chunk kept
    summary.seconds = time.perf_counter() - start
    return summary


def _chunks(rows: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _score_chunk(engine: Engine, job: TableJob, chunk: list, columns: tuple[str, str | None]
                 ) -> tuple[list[dict], list[dict]]:
    kept, sequences, rejected = [], [], []
    for path, line, row in chunk:
        try:
            if isinstance(row, DataError):
                raise row
            sequences.append(row_sequence(path, line, row, columns, path.suffix.lower() == ".txt"))
            kept.append(row)
        except DataError as err:
            if not job.skip_bad_rows:
                raise
            rejected.append({"file": str(path), "line": line, "reason": err.problem,
                             "row": row if isinstance(row, dict) else None})
    if not sequences:
        return [], rejected
    logits = score(engine, sequences, job.batch_size)
    return [prediction_record(row, logits[i], engine) for i, row in enumerate(kept)], rejected


def prediction_columns(engine: Engine) -> list[str]:
    """The columns a prediction adds to a row: the label, the winning class's probability as `score`, and each
    class's as `probability_<label>`; a regression model's score alone."""
    if engine.is_regression:
        return ["score"]
    return ["label", "score", *(f"probability_{label}" for label in engine.labels)]


def prediction_record(row: dict, logits, engine: Engine) -> dict:
    added = prediction_columns(engine)
    record = {(f"{name}_input" if name in added else name): value for name, value in row.items()}
    if engine.is_regression:
        record["score"] = float(logits[0])
        return record
    shares = probabilities(logits[None, :])[0]
    best = int(shares.argmax())
    record["label"], record["score"] = engine.labels[best], float(shares[best])
    for label, share in zip(engine.labels, shares, strict=True):
        record[f"probability_{label}"] = float(share)
    return record


# -- outputs ---------------------------------------------------------------------------------------------------

class _StdoutSink:
    def write(self, index: int, records: list[dict], rejected: list[dict]) -> None:
        for bad in rejected:
            logger.warning("skipped %s:%s: %s", bad["file"], bad["line"], bad["reason"])
        sys.stdout.write("".join(_json_line(record) for record in records))
        sys.stdout.flush()


class _PartSink:
    """Each chunk's records as `part-NNNNNN<ext>` (and its rejected rows beside it), each file written whole."""

    def __init__(self, parts: Path, fmt: str):
        self.parts, self.fmt = parts, fmt

    def write(self, index: int, records: list[dict], rejected: list[dict]) -> None:
        if rejected:
            atomic_write_text(self.parts / f"part-{index:06d}.rejected.jsonl", "".join(map(_json_line, rejected)))
        with atomic_path(self.parts / f"part-{index:06d}.{self.fmt}") as tmp:
            _write_part(tmp, self.fmt, records)

    def count(self) -> int:
        return len(_finished_parts(self.parts, self.fmt))


def _write_part(path: Path, fmt: str, records: list[dict]) -> None:
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    elif fmt == "jsonl":
        path.write_text("".join(map(_json_line, records)), encoding="utf-8")
    else:  # csv, tsv: the columns as a JSON line, then the rows; the join writes the header once
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, delimiter=_DELIMITERS[fmt], lineterminator="\n")
        writer.writerows([_cell(v) for v in record.values()] for record in records)
        columns = json.dumps(list(records[0]) if records else None)
        path.write_text(columns + "\n" + buffer.getvalue(), encoding="utf-8")


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value


def _json_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def _finished_parts(parts: Path, fmt: str) -> list[Path]:
    """The parts of the first chunks, in order, up to the first one missing."""
    names = {path.name for path in parts.iterdir()}
    found = []
    while (name := f"part-{len(found):06d}.{fmt}") in names:
        found.append(parts / name)
    return found


def _concatenate(files: list[Path], target: Path) -> None:
    with open(target, "wb") as out:
        for part in files:
            out.write(part.read_bytes())


def _join(parts: Path, output: Path, fmt: str) -> None:
    """The parts, in order, as one output file (and one `<output>.rejected.jsonl` if rows were rejected)."""
    files = _finished_parts(parts, fmt)
    with atomic_path(output) as tmp:
        if fmt == "parquet":
            _join_parquet(files, tmp)
        elif fmt == "jsonl":
            _concatenate(files, tmp)
        else:
            _join_delimited(files, tmp, fmt)
    rejected = sorted(parts.glob("part-*.rejected.jsonl"))
    target = output.with_name(output.name + ".rejected.jsonl")
    if rejected:
        with atomic_path(target) as tmp:
            _concatenate(rejected, tmp)
    elif target.exists():
        target.unlink()  # an earlier run's, which --overwrite replaces


def _join_delimited(files: list[Path], tmp: Path, fmt: str) -> None:
    header = None
    with open(tmp, "w", encoding="utf-8", newline="") as out:
        for part in files:
            first, _, rows = part.read_text(encoding="utf-8").partition("\n")
            names = json.loads(first)
            if names is None:  # a chunk whose every row was rejected
                continue
            if header is None:
                header = names
                csv.writer(out, delimiter=_DELIMITERS[fmt], lineterminator="\n").writerow(header)
            elif names != header:
                raise DataError(part, None, f"the inputs' columns differ ({', '.join(names)} against "
                                            f"{', '.join(header)}); score files with the same columns together")
            out.write(rows)


def _join_parquet(files: list[Path], tmp: Path) -> None:
    import pyarrow.parquet as pq

    writer = None
    try:
        for part in files:
            table = pq.read_table(part)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            elif table.schema != writer.schema:
                table = table.cast(writer.schema)  # a column all null in one chunk is typed null there
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


# -- resuming ----------------------------------------------------------------------------------------------------

def _manifest(engine: Engine, job: TableJob, files: list[Path], columns: tuple[str, str | None], fmt: str) -> dict:
    """What the parts are made from: the inputs (path, size, modification time), the model and the settings
    that change a record."""
    options = engine.options
    return {"inputs": [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files],
            "model": {"model_dir": str(Path(options.model_dir).resolve()), "backend": options.backend,
                      "onnx": options.onnx, "quantize": options.quantize, "bf16": options.bf16,
                      "max_input_length": engine.max_input_length},
            "columns": list(columns), "format": fmt,
            "settings": {k: v for k, v in asdict(job).items() if k in ("chunk_rows", "skip_bad_rows")}}


def _check_output(output: Path, parts: Path, unfinished: bool, job: TableJob) -> None:
    """Refused before anything is written: an existing output without --overwrite, an interrupted run's parts
    without --resume or --overwrite."""
    if job.resume and job.overwrite:
        raise UsageError("--resume continues a run and --overwrite starts one again: give one of them")
    if unfinished and not (job.resume or job.overwrite):
        raise UsageError(f"--output {output}: an unfinished run's parts are in {parts}; continue it with "
                         "--resume, or start again with --overwrite")
    if output.exists() and not job.overwrite and not unfinished:
        raise UsageError(f"--output {output} exists; --overwrite replaces it" +
                         (" (--resume continues only an unfinished run, and this one has finished)"
                          if job.resume else ""))


def _resumable_chunks(parts: Path, manifest: dict) -> int:
    found = parts / "manifest.json"
    if not found.is_file():
        return 0
    earlier = json.loads(found.read_text(encoding="utf-8"))
    if earlier != manifest:
        changed = [key for key in manifest if earlier.get(key) != manifest[key]]
        raise UsageError(f"--resume: the parts in {parts} were made from other {', '.join(changed)} than this "
                         "command's; run the same command as before, or start again with --overwrite")
    return len(_finished_parts(parts, manifest["format"]))


def _empty(parts: Path) -> None:
    for path in parts.iterdir():
        if path.name != LOCK_NAME:
            path.unlink() if path.is_file() else shutil.rmtree(path)


def summary_line(summary: TableSummary, output: str | None) -> str:
    rate = summary.rows / summary.seconds if summary.seconds else 0.0
    where = f" into {output}" if output else ""
    steady = (f"; {summary.steady_rows_per_s:,.0f} rows/s after the first chunk, which took "
              f"{summary.first_chunk_seconds:.1f} s" if summary.rows > summary.first_chunk_rows else "")
    return (f"scored {summary.rows:,} rows{where} in {summary.seconds:.1f} s ({rate:,.0f} rows/s{steady})"
            + (f", {summary.rejected:,} rejected (see {output}.rejected.jsonl)" if summary.rejected and output
               else f", {summary.rejected:,} rejected" if summary.rejected else "")
            + (f"; {summary.resumed_rows:,} rows were already scored by the stopped run" if summary.resumed_rows
               else ""))
