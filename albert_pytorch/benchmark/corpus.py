"""Preparing a pretraining corpus, in MB of text per second: ours (text -> sentence-order pair shards) with 1 and
2 pool workers, against run_mlm's way with `datasets` (load_dataset("text"), then `map(batched=True,
num_proc=2)` to tokenize and to group the tokens into sequences), with the same tokenizer on the same text.
Each round runs every variant into a fresh cache, so nothing is found ready."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from itertools import chain
from pathlib import Path

from ..data.corpus import PairSettings
from ..data.prepare import prepare_corpus
from ..threads import usable_cores
from .harness import albert_base_dir, logger, spread


def benchmark_corpus_preparation(work_dir: Path, shared_dir: Path, copies: int, part_mb: float,
                                 rounds: int) -> dict[str, dict]:
    """Rows of MB/s per variant on WikiText-2 (valid and test, `copies` times over in one file: the larger, the
    less fixed costs count), ours in parts of `part_mb`, interleaved over `rounds`. Each run is a process of its
    own, timed inside it: a parent that has already tokenized would change the tokenizer's threads in forked
    workers (it turns them off), so neither side inherits this process's state."""
    wikitext = shared_dir / "corpus" / "wikitext-2"
    if not wikitext.is_dir():
        logger.info("corpus preparation: skipped (no WikiText-2 under %s)", shared_dir)
        return {}
    tokenizer_dir = albert_base_dir(shared_dir, work_dir)
    text = b"".join((wikitext / name).read_bytes() for name in ("valid.txt", "test.txt")) * copies
    corpus = work_dir / "corpus.txt"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    corpus.write_bytes(text)
    megabytes = len(text) / 2**20
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for number in range(1, rounds + 1):
        for name in VARIANTS:
            with tempfile.TemporaryDirectory(dir=work_dir) as cache:
                done = subprocess.run([sys.executable, "-c", _TIMED_RUN, name, str(corpus), str(tokenizer_dir), cache,
                                       str(part_mb)], capture_output=True, text=True, check=True, timeout=1800)
            seconds[name].append(float(done.stdout.split()[-1]))
            logger.info("corpus preparation round %d/%d: %-20s %.2f MB/s", number, rounds, name,
                        megabytes / seconds[name][-1])
    return {name: {"mb_per_s": megabytes * len(times) / sum(times),
                   "per_round_mb_per_s": [megabytes / t for t in times], "text_mb": megabytes, "part_mb": part_mb}
            for name, times in seconds.items()}


_TIMED_RUN = """
import sys, time
from pathlib import Path
import datasets  # imported before the clock starts, as a run_mlm process has it
from albert_pytorch.benchmark.corpus import VARIANTS
from albert_pytorch.tokenization import load_tokenizer
name, corpus, tokenizer_dir, cache, part_mb = sys.argv[1:]
tokenizer = load_tokenizer(tokenizer_dir)
started = time.perf_counter()
VARIANTS[name](Path(corpus), tokenizer, Path(cache), float(part_mb))
print(time.perf_counter() - started)
"""


def _ours(workers: int) -> Callable[[Path, object, Path, float], None]:
    def prepare(corpus: Path, tokenizer, cache: Path, part_mb: float) -> None:
        prepare_corpus([corpus], tokenizer, PairSettings(128), cache, part_mb, workers)

    return prepare


def _run_mlm_way(corpus: Path, tokenizer, cache: Path, part_mb: float, max_seq_length: int = 128) -> None:
    """transformers' run_mlm.py without --line_by_line: tokenize every line, then cut the concatenated tokens into
    sequences of `max_seq_length` (`part_mb` is ours alone)."""
    import datasets

    datasets.disable_progress_bars()
    raw = datasets.load_dataset("text", data_files={"train": str(corpus)}, cache_dir=str(cache))["train"]

    def tokenize(examples: dict) -> dict:
        return tokenizer(examples["text"], return_special_tokens_mask=True)

    def group_texts(examples: dict) -> dict:
        joined = {key: list(chain(*values)) for key, values in examples.items()}
        total = len(joined["input_ids"]) // max_seq_length * max_seq_length
        return {key: [values[i:i + max_seq_length] for i in range(0, total, max_seq_length)]
                for key, values in joined.items()}

    tokenized = raw.map(tokenize, batched=True, num_proc=2, remove_columns=["text"])
    tokenized.map(group_texts, batched=True, num_proc=2)


VARIANTS = {"ours_1_worker": _ours(1), "ours_2_workers": _ours(2), "datasets_map_2_proc": _run_mlm_way}


def corpus_summary(sections: dict[str, dict]) -> dict:
    """The headline ratios with their spreads over rounds, and the cores they were measured on."""
    rows = sections.get("corpus_preparation")
    if not rows:
        return {}
    report: dict = {"corpus_prep_cores": usable_cores(), "corpus_prep_text_mb": rows["ours_1_worker"]["text_mb"]}
    for key, variant, base in (("corpus_prep_ratio_vs_datasets_map", "ours_2_workers", "datasets_map_2_proc"),
                               ("corpus_prep_scaling_2_workers", "ours_2_workers", "ours_1_worker")):
        report[key] = rows[variant]["mb_per_s"] / rows[base]["mb_per_s"]
        per_round = [a / b for a, b in zip(rows[variant]["per_round_mb_per_s"], rows[base]["per_round_mb_per_s"],
                                           strict=True)]
        report[f"{key}_spread"] = rounds = spread(per_round)
        logger.info("%-36s %6.2fx  (rounds: min %.2f, median %.2f, max %.2f; %d cores)", key, report[key],
                    rounds["min"], rounds["median"], rounds["max"], report["corpus_prep_cores"])
    for name, row in rows.items():
        logger.info("corpus preparation %-22s %6.2f MB/s", name, row["mb_per_s"])
    return report

