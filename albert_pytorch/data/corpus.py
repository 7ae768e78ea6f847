"""Raw text -> documents -> sentence-order pairs, as ALBERT's create_pretraining_data builds them.

A document ends at a blank line or a WikiText title line (` = Title = `); section headings
(` = = Section = = `) are dropped. A paragraph is split into sentences after `.`, `!` or `?`. With
`line_by_line`, every non-blank line is a document of its own (a file of SST-2 phrases).

Pairs pack consecutive sentences of one document into segments A and B of at most
`max_seq_length - 3` tokens (room for [CLS] and two [SEP]); with probability `short_seq_prob` the target
length is shorter, so the model also sees short inputs. Sentence-order prediction: label 0 keeps A
before B, label 1 swaps them, 50/50. A chunk of a single sentence is split inside the sentence, so
one-sentence documents give pairs too.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..io import publish_directory

_TITLE = re.compile(r"^ ?= [^=].* = ?$")  # ` = Title = `, not ` = = Section = = `
_HEADING = re.compile(r"^ ?(= )+.*( =)+ ?$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def read_documents(paths: Iterable[str | os.PathLike], line_by_line: bool = False) -> Iterator[list[str]]:
    """Documents, each a list of sentences, from text files in the order given."""
    for path in map(Path, paths):
        with open(path, "rb") as handle:
            yield from _documents(handle, lambda number, path=path: f"{path}, line {number}", line_by_line)


def _documents(lines: Iterable[bytes], where: Callable[[int], str], line_by_line: bool) -> Iterator[list[str]]:
    """The documents of lines of text; `where(n)` names the n-th line in errors."""
    document: list[str] = []
    for number, raw_bytes in enumerate(lines, start=1):
        try:
            raw = raw_bytes.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{where(number)}: not UTF-8 text ({err.reason})") from None
        line = raw.strip()
        if line_by_line:
            if line:
                yield [line]
            continue
        if not line or _TITLE.match(raw.rstrip("\r\n")):
            if document:
                yield document
            document = []
            continue
        if _HEADING.match(raw.rstrip("\r\n")):
            continue
        document += [s for s in _SENTENCE_END.split(line) if s.strip()]
    if document:
        yield document


# -- parts: a corpus cut at document starts, so that each part's pairs depend on its own text alone -----


@dataclass(frozen=True)
class CorpusPart:
    """Bytes [start, end) of a text file, whole documents."""

    path: str
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    def read(self) -> bytes:
        with open(self.path, "rb") as handle:
            handle.seek(self.start)
            return handle.read(self.size)

    def documents(self, text: bytes, line_by_line: bool) -> Iterator[list[str]]:
        """The documents of this part's `text` (its bytes, as `read` gives them)."""

        def where(number: int) -> str:  # counted from the file's start only when there is an error to report
            with open(self.path, "rb") as handle:
                before = handle.read(self.start).count(b"\n")
            return f"{self.path}, line {before + number}"

        return _documents(io.BytesIO(text), where, line_by_line)


def plan_parts(paths: Iterable[str | os.PathLike], part_bytes: int, line_by_line: bool = False) -> list[CorpusPart]:
    """The files cut into parts of at least `part_bytes`, each cut moved on to the next document start: the
    line after a blank line (any line, line by line). The plan depends on the files and `part_bytes` alone, so
    every worker of a job, whatever their number, derives the same parts."""
    parts = []
    for path in map(Path, paths):
        size = path.stat().st_size
        starts = [0]
        with open(path, "rb") as handle:
            while starts[-1] + part_bytes < size:
                cut = _next_document_start(handle, starts[-1] + part_bytes, line_by_line)
                if cut >= size:
                    break
                starts.append(cut)
        parts += [CorpusPart(str(path), a, b) for a, b in zip(starts, [*starts[1:], size], strict=True) if b > a]
    return parts


def _next_document_start(handle, offset: int, line_by_line: bool) -> int:
    """The first document start at or after `offset` (the file's size when there is none)."""
    handle.seek(offset - 1)
    if handle.read(1) != b"\n":
        handle.readline()  # the rest of the line `offset` falls in
    if line_by_line:
        return handle.tell()
    # a blank line ends a document whatever follows it (a title line too), so the line after one starts a
    # part exactly as the whole file's reading would; bytes.strip() only strips ASCII blanks, which str.strip()
    # also strips, so a line taken as blank here is blank to the reader
    for line in iter(handle.readline, b""):
        if not line.strip():
            return handle.tell()
    return handle.tell()


@dataclass
class SentencePair:
    tokens_a: list[int]
    tokens_b: list[int]
    sentence_order_label: int  # 0: A then B as written; 1: swapped


def sentence_order_pairs(document: list[list[int]], max_seq_length: int, rng: np.random.Generator,
                         short_seq_prob: float = 0.1) -> list[SentencePair]:
    """Pairs from one tokenized document (a list of sentences' token ids)."""
    max_tokens = max_seq_length - 3
    target = _target_length(max_tokens, short_seq_prob, rng)
    pairs, chunk, length = [], [], 0
    for i, sentence in enumerate(document):
        chunk.append(sentence)
        length += len(sentence)
        if i == len(document) - 1 or length >= target:
            pair = _pair(chunk, max_tokens, rng)
            if pair is not None:
                pairs.append(pair)
            chunk, length = [], 0
            target = _target_length(max_tokens, short_seq_prob, rng)
    return pairs


def _target_length(max_tokens: int, short_seq_prob: float, rng: np.random.Generator) -> int:
    return int(rng.integers(2, max_tokens + 1)) if rng.random() < short_seq_prob else max_tokens


def _pair(chunk: list[list[int]], max_tokens: int, rng: np.random.Generator) -> SentencePair | None:
    if len(chunk) >= 2:
        a_end = int(rng.integers(1, len(chunk)))  # A: the first a_end sentences, B: the rest
        tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
        tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
    else:
        tokens = chunk[0]
        if len(tokens) < 2:
            return None  # a one-token document has no order to predict
        cut = int(rng.integers(1, len(tokens)))
        tokens_a, tokens_b = tokens[:cut], tokens[cut:]
    _truncate_pair(tokens_a, tokens_b, max_tokens, rng)
    if rng.random() < 0.5:
        return SentencePair(tokens_b, tokens_a, 1)
    return SentencePair(tokens_a, tokens_b, 0)


def _truncate_pair(tokens_a: list[int], tokens_b: list[int], max_tokens: int, rng: np.random.Generator) -> None:
    """Trim the longer segment, from its front or back at random (Google's truncate_seq_pair), until both fit."""
    while len(tokens_a) + len(tokens_b) > max_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        del longer[0 if rng.random() < 0.5 else -1]


# -- pairs on disk ------------------------------------------------------------------------------------

SHARD_FORMAT = "2"
_FLUSH_TOKENS = 1 << 16  # tokens buffered before a write: memory stays flat whatever the corpus size
_ENCODE_SENTENCES = 2048  # sentences per tokenizer call: fewer calls, and memory still flat


class PairShards(Dataset):
    """Sentence-order pairs in memory-mapped files, so a corpus larger than RAM trains with flat memory.

    Each part's folder holds `tokens.u16` (each pair's A then B, back to back), `bounds.i64` ([pairs, 3]: start
    of A, start of B, end) and `labels.u8` (sentence order); the dataset is the parts' pairs in part order.
    Item i is `[CLS] A [SEP] B [SEP]` with segment ids."""

    def __init__(self, directories: list[str | os.PathLike], cls_id: int, sep_id: int):
        self.directories = [Path(d) for d in directories]  # their names are cache keys: they identify the pairs
        self.parts = [(_mapped(d / "tokens.u16", np.uint16), _mapped(d / "bounds.i64", np.int64).reshape(-1, 3),
                       _mapped(d / "labels.u8", np.uint8)) for d in self.directories]
        self.offsets = np.cumsum([0] + [len(labels) for _, _, labels in self.parts])
        self.cls_id, self.sep_id = cls_id, sep_id

    @property
    def key(self) -> str:
        """What identifies these pairs (a resumed run checks it): a digest of the parts' names in order."""
        return hashlib.sha256("\n".join(d.name for d in self.directories).encode()).hexdigest()[:20]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def lengths(self) -> torch.Tensor:
        """Tokens per item, special ones included (for length-grouped batches)."""
        ends = [bounds[:, 2] - bounds[:, 0] + 3 for _, bounds, _ in self.parts]
        return torch.from_numpy(np.concatenate(ends).astype(np.int64) if ends else np.zeros(0, np.int64))

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """The rows of one batch, each carrying the batch's seed (from `BatchIndices`) for the masks."""
        seed = getattr(indices, "seed", None)
        return [{**self[i], "batch_seed": seed} for i in indices]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        part = int(np.searchsorted(self.offsets, i, side="right")) - 1
        tokens, bounds, labels = self.parts[part]
        j = i - int(self.offsets[part])
        a_start, b_start, end = (int(v) for v in bounds[j])
        a, b = tokens[a_start:b_start].astype(np.int64), tokens[b_start:end].astype(np.int64)
        ids = np.concatenate([[self.cls_id], a, [self.sep_id], b, [self.sep_id]])
        types = np.concatenate([np.zeros(len(a) + 2, dtype=np.int64), np.ones(len(b) + 1, dtype=np.int64)])
        return {"index": i, "input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
                "sentence_order_label": torch.tensor(int(labels[j]))}


def published(directory: Path) -> bool:
    """Whether a part's shards are in place: its folder is renamed in whole, so its last file marks it."""
    return (directory / "labels.u8").is_file()


def _mapped(path: Path, dtype) -> np.ndarray:
    # a part without pairs has empty files, which cannot be memory-mapped
    return np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype=dtype)


def encoded_documents(documents: Iterable[list[str]], encode: Callable[[list[str]], list[list[int]]]
                      ) -> Iterator[list[list[int]]]:
    """Each document's sentences as token ids, `encode` called on the sentences of many documents at once."""
    batch: list[list[str]] = []
    for document in documents:
        batch.append(document)
        if sum(map(len, batch)) >= _ENCODE_SENTENCES:
            yield from _split_back(batch, encode)
            batch = []
    yield from _split_back(batch, encode)


def _split_back(documents: list[list[str]], encode: Callable[[list[str]], list[list[int]]]
                ) -> Iterator[list[list[int]]]:
    if not documents:
        return
    ids = iter(encode([sentence for document in documents for sentence in document]))
    for document in documents:
        yield [next(ids) for _ in document]


def build_pair_shards(documents: Iterable[list[list[int]]], max_seq_length: int, directory: str | os.PathLike,
                      short_seq_prob: float = 0.1, seed: int | Sequence[int] = 0) -> int:
    """Write the sentence-order pairs of tokenized `documents` to `directory`, built beside it and renamed into
    place whole; returns the number of pairs."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        pairs = 0
        with _Writer(tmp) as writer:
            for document in documents:
                for pair in sentence_order_pairs(document, max_seq_length, rng, short_seq_prob):
                    writer.add(pair)
                    pairs += 1
        publish_directory(tmp)
        try:
            os.replace(tmp, directory)
        except OSError:
            if not published(directory):
                raise
            # another process (a rank of another node on a shared disk, a second run) published the same pairs first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return pairs


class _Writer:
    """Buffers pairs and appends them to the three files in large writes."""

    def __init__(self, directory: Path):
        self.files = [open(directory / name, "wb") for name in ("tokens.u16", "bounds.i64", "labels.u8")]
        self.tokens: list[int] = []
        self.bounds: list[int] = []
        self.labels: list[int] = []
        self.offset = 0

    def __enter__(self) -> _Writer:
        return self

    def add(self, pair: SentencePair) -> None:
        start = self.offset + len(self.tokens)
        self.tokens += pair.tokens_a + pair.tokens_b
        self.bounds += [start, start + len(pair.tokens_a), start + len(pair.tokens_a) + len(pair.tokens_b)]
        self.labels.append(pair.sentence_order_label)
        if len(self.tokens) >= _FLUSH_TOKENS:
            self.flush()

    def flush(self) -> None:
        tokens = np.asarray(self.tokens, dtype=np.int64)
        if tokens.size and (tokens.min() < 0 or tokens.max() > np.iinfo(np.uint16).max):
            raise ValueError("token ids above 65535 do not fit the uint16 shards; use a smaller vocabulary")
        for handle, values, dtype in zip(self.files, (tokens, self.bounds, self.labels),
                                         (np.uint16, np.int64, np.uint8), strict=True):
            handle.write(np.asarray(values, dtype=dtype).tobytes())
        self.offset += len(self.tokens)
        self.tokens, self.bounds, self.labels = [], [], []

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.flush()
        for handle in self.files:
            handle.close()


# -- one part, prepared by whichever worker holds it ----------------------------------------------------


@dataclass(frozen=True)
class PairSettings:
    """What a corpus's pairs depend on besides its text and the tokenizer."""

    max_seq_length: int
    short_seq_prob: float = 0.1
    seed: int = 0
    line_by_line: bool = False


@dataclass(frozen=True)
class PartResult:
    index: int
    name: str  # the part's folder in the cache
    pairs: int
    text_bytes: int
    prepared: bool  # False: found in the cache


@dataclass(frozen=True)
class PartJob:
    """Everything a worker needs to prepare any part: picklable, so it travels to pool processes and Ray tasks.
    `tokenizer` is a `tokenizers.Tokenizer` (a transformers tokenizer's backend), `tokenizer_key` its
    fingerprint."""

    tokenizer: Any
    tokenizer_key: str
    settings: PairSettings
    cache_dir: str

    def __call__(self, index: int, part: CorpusPart) -> PartResult:
        """The part's pairs, from the cache when a worker already published them. The folder's name covers the
        part's bytes, the tokenizer and the settings; the part's seed derives from the run's seed and its bytes,
        so the pairs are the same whichever worker, rank or machine prepares them."""
        text = part.read()
        digest = hashlib.sha256(text).hexdigest()
        key = hashlib.sha256("\0".join([SHARD_FORMAT, self.tokenizer_key, repr(self.settings), digest]).encode())
        name = f"pairs_{self.settings.max_seq_length}_{key.hexdigest()[:24]}"
        directory = Path(self.cache_dir) / name
        if published(directory):
            return PartResult(index, name, (directory / "labels.u8").stat().st_size, part.size, prepared=False)
        documents = encoded_documents(part.documents(text, self.settings.line_by_line), self._encode)
        pairs = build_pair_shards(documents, self.settings.max_seq_length, directory, self.settings.short_seq_prob,
                                  seed=[self.settings.seed, int(digest[:16], 16)])
        return PartResult(index, name, pairs, part.size, prepared=True)

    def _encode(self, sentences: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(sentences, add_special_tokens=False)]
