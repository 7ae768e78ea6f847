"""A corpus's pairs prepared once per job, its parts spread over every worker the job has.

    pairs = prepare_corpus(files, tokenizer, PairSettings(max_seq_length=128), ctx=ctx, workers=8)

The files are cut into parts at document starts (`corpus.plan_parts`), and a part's pairs depend only
on its bytes, the tokenizer and the settings, so the shards are the same whoever prepares them:

- under torchrun, rank r prepares parts r, r + world_size, ... (with a pool of its machine's share of
  the cores) into the cache folder, shared storage on a cluster; when a machine's cache is its own,
  its ranks then prepare what it lacks among themselves;
- on one machine, a pool of `workers` processes;
- with `ray_address`, Ray tasks on a cluster (the cache folder must be on storage its nodes share).

Each part is published whole as it finishes, so an interrupted preparation keeps its finished parts,
and a corpus that grows by a file prepares only the new file's parts.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist
from tqdm.auto import tqdm

from ..device import DistContext
from ..io import cache_root
from ..signals import raise_if_signalled
from ..threads import usable_cores
from ..tokenization import backend_copy, fingerprint
from .corpus import CorpusPart, PairSettings, PairShards, PartJob, PartResult, plan_parts, published

logger = logging.getLogger("albert_pytorch")

# fork starts a worker in milliseconds (spawn re-imports torch, over a second each); the workers run only
# the tokenizer and numpy, as DataLoader's forked workers do
_START_METHOD = "fork" if sys.platform == "linux" else "spawn"


@dataclass
class PreparationReport:
    """What one process saw: the corpus's parts, and which of them it prepared or found in the cache."""

    parts: int
    text_bytes: int
    prepared: list[int]
    cached: list[int]
    prepared_bytes: int
    seconds: float

    def describe(self, source: str, pairs: int) -> str:
        rate = f" ({self.prepared_bytes / 2**20 / self.seconds:.2f} MB/s)" if self.prepared and self.seconds else ""
        parts = f"{self.parts} part" + ("s" if self.parts != 1 else "")
        return (f"{source}: {parts}, {self.text_bytes / 2**20:.1f} MB of text, {pairs:,} pairs; "
                f"{len(self.prepared)} prepared here in {self.seconds:.1f} s{rate}, {len(self.cached)} found in "
                "the cache")


def prepare_corpus(paths: list[str | os.PathLike], tokenizer, settings: PairSettings,
                   cache_dir: str | os.PathLike | None = None, part_mb: float = 4.0, workers: int | None = None,
                   ctx: DistContext | None = None, ray_address: str | None = None,
                   progress: bool = False) -> tuple[PairShards, PreparationReport]:
    """The corpus's pairs, each part prepared by one worker of the job or found in the cache; every rank of
    `ctx` calls it and gets the whole dataset. `workers` is this machine's process count (default its cores),
    which torchrun's ranks on the machine share."""
    ctx = ctx or DistContext()
    started = time.perf_counter()
    job = PartJob(backend_copy(tokenizer), fingerprint(tokenizer), settings,
                  str(Path(cache_dir) if cache_dir is not None else cache_root() / "pretraining"))
    parts = plan_parts(paths, max(1, int(part_mb * 2**20)), settings.line_by_line)
    source = ", ".join(map(str, paths))
    if not parts:
        raise ValueError(f"{source}: no text to pretrain on (the files are empty)")
    own_workers = max(1, (workers or usable_cores()) // max(1, ctx.local_world_size))
    mine = [(i, part) for i, part in enumerate(parts) if i % ctx.world_size == ctx.rank]
    own = sorted(_run_parts(mine, job, own_workers, ray_address, progress), key=lambda r: r.index)
    results = own
    if ctx.enabled:  # every rank's results, rank after rank: back into the parts' order
        results = sorted(_fill_local_cache(_gathered(own, ctx.world_size), parts, job, own_workers, ctx),
                         key=lambda r: r.index)
    report = PreparationReport(len(parts), sum(p.size for p in parts), [r.index for r in own if r.prepared],
                               [r.index for r in own if not r.prepared],
                               sum(r.text_bytes for r in own if r.prepared), time.perf_counter() - started)
    pairs = PairShards([Path(job.cache_dir) / r.name for r in results if r.pairs], tokenizer.cls_token_id,
                       tokenizer.sep_token_id)
    if len(pairs) == 0:
        raise ValueError(f"{source}: no sentence pairs in this text: is it empty, or is each document a single "
                         "token? (A document gives pairs once it holds two sentences or more than one token.)")
    if ctx.is_main:
        logger.info("%s", report.describe(source, len(pairs)))
    return pairs, report


def _run_parts(tasks: list[tuple[int, CorpusPart]], job: PartJob, workers: int, ray_address: str | None,
               progress: bool) -> list[PartResult]:
    results: list[PartResult] = []
    if not tasks:
        return results
    bar = tqdm(total=sum(part.size for _, part in tasks), unit="B", unit_scale=True, desc="preparing the corpus",
               disable=not progress)
    done = _on_ray(tasks, job, ray_address) if ray_address is not None else _in_pool(tasks, job,
                                                                                        min(workers, len(tasks)))
    with bar, contextlib.closing(done):  # closed at once on a stop: the pool cancels the parts not yet started
        for result in done:
            results.append(result)
            bar.update(result.text_bytes)
            raise_if_signalled()  # a Ctrl-C that Python dropped: stop, the parts prepared so far kept in the cache
    return results


def _in_pool(tasks: list[tuple[int, CorpusPart]], job: PartJob, workers: int) -> Iterator[PartResult]:
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(_START_METHOD),
                             initializer=_start_worker, initargs=(job,)) as pool:
        try:
            for future in as_completed([pool.submit(_run_part, index, part) for index, part in tasks]):
                yield future.result()
        except BaseException:
            # a bad part (or Ctrl-C) ends the job now, not after every queued part has run
            pool.shutdown(wait=False, cancel_futures=True)
            raise


_worker_job: PartJob | None = None


def _start_worker(job: PartJob) -> None:
    global _worker_job
    _worker_job = job
    # one tokenizer thread per worker: the pool already holds the cores
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _run_part(index: int, part: CorpusPart) -> PartResult:
    return _worker_job(index, part)


def _on_ray(tasks: list[tuple[int, CorpusPart]], job: PartJob, address: str) -> Iterator[PartResult]:
    import ray

    logging.getLogger("ray").setLevel(logging.ERROR)
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        remote = ray.remote(num_cpus=1, max_retries=3)(_run_job)
        job_ref = ray.put(job)
        pending = [remote.remote(job_ref, index, part) for index, part in tasks]
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            yield ray.get(finished[0])
    finally:
        ray.shutdown()


def _run_job(job: PartJob, index: int, part: CorpusPart) -> PartResult:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    return job(index, part)


def _gathered(results: list[PartResult], world_size: int) -> list[PartResult]:
    everyone: list[list[PartResult] | None] = [None] * world_size
    dist.all_gather_object(everyone, results)
    return [result for rank_results in everyone for result in rank_results]


def _fill_local_cache(results: list[PartResult], parts: list[CorpusPart], job: PartJob, workers: int,
                      ctx: DistContext) -> list[PartResult]:
    """Parts another machine prepared into a cache this machine cannot see, prepared here too, by this
    machine's ranks among themselves (on shared storage there are none)."""
    missing = sorted(r.index for r in results if not published(Path(job.cache_dir) / r.name))
    dist.barrier()  # every rank has looked before any adds to the cache, so they split the same list
    if missing:
        logger.warning("%d parts prepared on other machines are not in this machine's cache %s: preparing them "
                       "here too (put --cache_dir on storage every machine shares to prepare each part once)",
                       len(missing), job.cache_dir)
        local = [(i, parts[i]) for n, i in enumerate(missing) if n % ctx.local_world_size == ctx.local_rank]
        _run_parts(local, job, workers, None, progress=False)
    dist.barrier()
    return results
