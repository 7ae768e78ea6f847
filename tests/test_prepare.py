"""A corpus prepared in parts: the parts read as the whole file does, the shards are the same whatever the
number of pool workers or ranks, each rank prepares its own parts, and a killed preparation keeps what it
finished."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import TEXTS, child_env

from albert_pytorch.data import LengthGroupedBatchSampler
from albert_pytorch.data.corpus import PairSettings, plan_parts, read_documents
from albert_pytorch.data.prepare import prepare_corpus

SETTINGS = PairSettings(max_seq_length=48, seed=5)
PART_MB = 1500 / 2**20  # parts of about 1.5 KB: a dozen parts per file


def write_corpus(path: Path, documents: int = 100, offset: int = 0) -> Path:
    """WikiText-like text: titles, section headings and documents of 1 to 5 of the test sentences."""
    lines = []
    for d in range(offset, offset + documents):
        if d % 10 == 0:
            lines += [f" = Title {d} = ", ""]
        if d % 10 == 5:
            lines += [" = = Section = = ", ""]
        lines += [" ".join(TEXTS[(d * 7 + i) % 10] for i in range(d % 5 + 1)), ""]
    path.write_text("\n".join(lines) + "\n")
    return path


def shard_bytes(pairs) -> dict[str, bytes]:
    return {f"{d.name}/{f.name}": f.read_bytes() for d in pairs.directories for f in sorted(d.iterdir())}


@pytest.mark.parametrize("line_by_line", [False, True])
def test_parts_cut_at_document_starts_and_read_as_the_whole_file(tmp_path, line_by_line):
    corpus = write_corpus(tmp_path / "corpus.txt")
    with open(corpus, "ab") as handle:
        handle.write(b" a last line without its newline .")
    whole = list(read_documents([corpus], line_by_line))
    for part_bytes in (1, 700, 1500, 10**6):
        parts = plan_parts([corpus], part_bytes, line_by_line)
        assert parts[0].start == 0 and parts[-1].end == corpus.stat().st_size
        assert all(a.end == b.start for a, b in zip(parts, parts[1:], strict=False))  # no gap, no overlap
        assert all(p.size >= part_bytes for p in parts[:-1])
        assert [d for p in parts for d in p.documents(p.read(), line_by_line)] == whole
    assert len(plan_parts([corpus], 700, line_by_line)) > 10


def test_a_bad_byte_is_named_by_file_and_line_whichever_part_holds_it(tmp_path, tiny_tokenizer, monkeypatch):
    from albert_pytorch.data import corpus as corpus_module

    encode = corpus_module.PartJob._encode

    def slow_encode(self, sentences):  # parts that take a while, as real ones do (the pool's workers inherit it)
        time.sleep(0.2)
        return encode(self, sentences)

    monkeypatch.setattr(corpus_module.PartJob, "_encode", slow_encode)
    corpus = write_corpus(tmp_path / "corpus.txt", documents=300)
    lines = corpus.read_bytes().split(b"\n")
    lines[150] = b"caf\xe9 au lait ."
    corpus.write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError, match=r"corpus.txt, line 151: not UTF-8"):
        prepare_corpus([corpus], tiny_tokenizer, SETTINGS, tmp_path / "cache", PART_MB, workers=2)
    # the job stopped at the bad part: the parts queued behind it were never prepared
    assert len(published(tmp_path / "cache")) < len(plan_parts([corpus], int(PART_MB * 2**20))) / 2


def test_parts_are_cached_by_content_so_a_new_file_prepares_only_its_own(tmp_path, tiny_tokenizer):
    first = write_corpus(tmp_path / "a.txt")
    cache = tmp_path / "cache"
    pairs, report = prepare_corpus([first], tiny_tokenizer, SETTINGS, cache, PART_MB, workers=2)
    assert report.parts > 5 and report.prepared == list(range(report.parts)) and not report.cached
    again, report = prepare_corpus([first], tiny_tokenizer, SETTINGS, cache, PART_MB, workers=2)
    assert again.key == pairs.key and not report.prepared
    second = write_corpus(tmp_path / "b.txt", documents=30, offset=100)
    grown, report = prepare_corpus([first, second], tiny_tokenizer, SETTINGS, cache, PART_MB, workers=2)
    new_parts = len(plan_parts([second], int(PART_MB * 2**20)))
    assert report.prepared == list(range(report.parts - new_parts, report.parts))
    assert grown.directories[:len(pairs.directories)] == pairs.directories and len(grown) > len(pairs)
    other_seed, report = prepare_corpus([first], tiny_tokenizer, PairSettings(48, seed=6), cache, PART_MB)
    assert other_seed.key != pairs.key and len(report.prepared) == report.parts


def test_one_and_three_workers_give_byte_identical_shards(tmp_path, tiny_tokenizer):
    files = [write_corpus(tmp_path / "a.txt"), write_corpus(tmp_path / "b.txt", documents=60, offset=100)]
    one, _ = prepare_corpus(files, tiny_tokenizer, SETTINGS, tmp_path / "one", PART_MB, workers=1)
    three, report = prepare_corpus(files, tiny_tokenizer, SETTINGS, tmp_path / "three", PART_MB, workers=3)
    assert report.parts > 10 and shard_bytes(one) == shard_bytes(three)
    assert [one[i]["input_ids"].tolist() for i in range(len(one))] == [
        three[i]["input_ids"].tolist() for i in range(len(three))]


RANK_SCRIPT = """
import json, sys
import torch.distributed as dist
from albert_pytorch.data import LengthGroupedBatchSampler
from albert_pytorch.data.corpus import PairSettings
from albert_pytorch.data.prepare import prepare_corpus
from albert_pytorch.device import DistContext
from albert_pytorch.tokenization import load_tokenizer

files, tokenizer_dir, cache, part_mb, batch_size = json.loads(sys.argv[1])
dist.init_process_group("gloo")
ctx = DistContext.from_env()
cache = cache.format(rank=ctx.rank)
pairs, report = prepare_corpus(files, load_tokenizer(tokenizer_dir), PairSettings(48, seed=5), cache, part_mb,
                               workers=2, ctx=ctx)
sampler = LengthGroupedBatchSampler(pairs.lengths, batch_size, seed=5, world_size=ctx.world_size, rank=ctx.rank)
batches = [[pairs[i]["input_ids"].tolist() for i in batch] for batch in list(sampler)[:20]]
print(json.dumps({"prepared": report.prepared, "cached": report.cached, "key": pairs.key, "batches": batches}))
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(tmp_path, files, tiny_tokenizer_dir, cache: str, local_world_size: int) -> list[dict]:
    """The rank script on two processes over gloo; `cache` may name each rank's own folder by {rank}."""
    arguments = json.dumps([[str(f) for f in files], str(tiny_tokenizer_dir), cache, PART_MB, 3])
    port = _free_port()
    ranks = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, arguments], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=child_env(tmp_path, RANK=str(r), LOCAL_RANK=str(r % local_world_size),
                                            WORLD_SIZE="2", LOCAL_WORLD_SIZE=str(local_world_size),
                                            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)))
             for r in (0, 1)]
    outputs = []
    for rank in ranks:
        out, err = rank.communicate(timeout=180)
        assert rank.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.splitlines()[-1]))
    return outputs


@pytest.mark.slow
def test_two_ranks_prepare_disjoint_parts_and_read_what_one_process_reads(tmp_path, tiny_tokenizer,
                                                                           tiny_tokenizer_dir):
    files = [write_corpus(tmp_path / "a.txt", documents=210), write_corpus(tmp_path / "b.txt", offset=210)]
    outputs = run_ranks(tmp_path, files, tiny_tokenizer_dir, str(tmp_path / "shared"), local_world_size=2)
    alone, report = prepare_corpus(files, tiny_tokenizer, SETTINGS, tmp_path / "alone", PART_MB, workers=1)
    prepared = [outputs[0]["prepared"], outputs[1]["prepared"]]
    assert not set(prepared[0]) & set(prepared[1])  # no part prepared twice
    assert sorted(prepared[0] + prepared[1]) == list(range(report.parts)) and report.parts > 20
    assert outputs[0]["key"] == outputs[1]["key"] == alone.key
    shared = type(alone)([tmp_path / "shared" / d.name for d in alone.directories], 2, 3)
    assert shard_bytes(shared) == shard_bytes(alone)
    # the same global batches: world size 1 at batch 6 against two ranks at batch 3 each (an even number of
    # pairs, or two ranks would pad by one row, as DistributedSampler does)
    assert len(alone) % 2 == 0
    sampler = LengthGroupedBatchSampler(alone.lengths, 6, seed=5)
    expected = [[alone[i]["input_ids"].tolist() for i in batch] for batch in list(sampler)[:20]]
    assert [a + b for a, b in zip(outputs[0]["batches"], outputs[1]["batches"], strict=True)] == expected


@pytest.mark.slow
def test_machines_whose_caches_are_their_own_each_end_with_every_part(tmp_path, tiny_tokenizer, tiny_tokenizer_dir):
    files = [write_corpus(tmp_path / "a.txt")]
    outputs = run_ranks(tmp_path, files, tiny_tokenizer_dir, str(tmp_path / "machine{rank}"), local_world_size=1)
    alone, _ = prepare_corpus(files, tiny_tokenizer, SETTINGS, tmp_path / "alone", PART_MB, workers=1)
    assert outputs[0]["key"] == outputs[1]["key"] == alone.key
    for machine in ("machine0", "machine1"):
        copy = type(alone)([tmp_path / machine / d.name for d in alone.directories], 2, 3)
        assert shard_bytes(copy) == shard_bytes(alone)


KILLED_SCRIPT = """
import json, sys, time
import albert_pytorch.data.corpus as corpus
from albert_pytorch.data.prepare import prepare_corpus
from albert_pytorch.tokenization import load_tokenizer

encode = corpus.PartJob._encode
def slow_encode(self, sentences):  # time to be killed mid-way
    time.sleep(0.3)
    return encode(self, sentences)
corpus.PartJob._encode = slow_encode
files, tokenizer_dir, cache, part_mb = json.loads(sys.argv[1])
prepare_corpus(files, load_tokenizer(tokenizer_dir), corpus.PairSettings(48, seed=5), cache, part_mb, workers=1)
"""


def published(cache: Path) -> set[str]:
    return {d.name for d in cache.glob("pairs_*")} if cache.is_dir() else set()


def test_a_killed_preparation_keeps_its_parts_and_the_next_prepares_only_the_rest(tmp_path, tiny_tokenizer,
                                                                                   tiny_tokenizer_dir):
    corpus = write_corpus(tmp_path / "corpus.txt")
    cache = tmp_path / "cache"
    arguments = json.dumps([[str(corpus)], str(tiny_tokenizer_dir), str(cache), PART_MB])
    child = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, arguments], env=child_env(tmp_path),
                             start_new_session=True)
    deadline = time.time() + 120
    while len(published(cache)) < 3 and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)  # the job and its pool worker, as an OOM kill or a lost node would
    child.wait()
    kept = published(cache)
    pairs, report = prepare_corpus([corpus], tiny_tokenizer, SETTINGS, cache, PART_MB, workers=2)
    assert 3 <= len(kept) < report.parts
    assert len(report.cached) == len(kept) and kept <= {d.name for d in pairs.directories}
    assert len(report.prepared) == report.parts - len(kept)
    fresh, _ = prepare_corpus([corpus], tiny_tokenizer, SETTINGS, tmp_path / "fresh", PART_MB, workers=1)
    assert shard_bytes(pairs) == shard_bytes(fresh)


@pytest.mark.slow
def test_ray_tasks_prepare_the_shards_the_pool_does(tmp_path, tiny_tokenizer):
    files = [write_corpus(tmp_path / "a.txt"), write_corpus(tmp_path / "b.txt", documents=40, offset=100)]
    local, _ = prepare_corpus(files, tiny_tokenizer, SETTINGS, tmp_path / "local", PART_MB, workers=2)
    on_ray, report = prepare_corpus(files, tiny_tokenizer, SETTINGS, tmp_path / "ray", PART_MB, ray_address="local")
    assert report.prepared == list(range(report.parts)) and shard_bytes(on_ray) == shard_bytes(local)


def test_a_ctrl_c_python_dropped_stops_preparation_after_that_part(tmp_path, tiny_tokenizer, monkeypatch,
                                                                    own_signal_handlers, dropped):
    from helpers import SignalsItself

    from albert_pytorch.data import prepare
    from albert_pytorch.signals import stop_on_signals

    corpus = write_corpus(tmp_path / "corpus.txt")
    cache = tmp_path / "cache"
    in_pool = prepare._in_pool
    handed = []

    def pool_dropping_a_ctrl_c_at_the_second_part(*args):
        with contextlib.closing(in_pool(*args)) as results:  # closed with this one, as the job closes the pool's
            for result in results:
                handed.append(result.index)
                if len(handed) == 2:
                    SignalsItself(signal.SIGINT)
                yield result

    monkeypatch.setattr(prepare, "_in_pool", pool_dropping_a_ctrl_c_at_the_second_part)
    stop_on_signals()
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus([corpus], tiny_tokenizer, SETTINGS, cache, PART_MB, workers=1)
    assert dropped == [KeyboardInterrupt] and len(handed) == 2  # without the check it would have run to the end
    monkeypatch.setattr(prepare, "_in_pool", in_pool)
    pairs, report = prepare_corpus([corpus], tiny_tokenizer, SETTINGS, cache, PART_MB, workers=1)
    assert set(handed) <= set(report.cached) and len(report.cached) + len(report.prepared) == report.parts > 2
