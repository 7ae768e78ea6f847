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
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..io import cache_root, publish_directory, sha256_file
from ..tokenization import fingerprint

_TITLE = re.compile(r"^ ?= [^=].* = ?$")  # ` = Title = `, not ` = = Section = = `
_HEADING = re.compile(r"^ ?(= )+.*( =)+ ?$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def read_documents(paths: Iterable[str | os.PathLike], line_by_line: bool = False) -> Iterator[list[str]]:
    """Documents, each a list of sentences, from text files in the order given."""
    for path in map(Path, paths):
        document: list[str] = []
        with open(path, "rb") as handle:
            for number, raw_bytes in enumerate(handle, start=1):
                try:
                    raw = raw_bytes.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise ValueError(f"{path}, line {number}: not UTF-8 text ({err.reason})") from None
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

SHARD_FORMAT = "1"
_FLUSH_TOKENS = 1 << 16  # tokens buffered before a write: memory stays flat whatever the corpus size


class PairShards(Dataset):
    """Sentence-order pairs in memory-mapped files, so a corpus larger than RAM trains with flat memory:
    `tokens.u16` (each pair's A then B, back to back), `bounds.i64` ([pairs, 3]: start of A, start of B,
    end) and `labels.u8` (sentence order). Item i is `[CLS] A [SEP] B [SEP]` with segment ids."""

    def __init__(self, directory: str | os.PathLike, cls_id: int, sep_id: int):
        self.directory = directory = Path(directory)  # its name is the cache key: it identifies the pairs
        self.tokens = np.memmap(directory / "tokens.u16", dtype=np.uint16, mode="r")
        self.bounds = np.memmap(directory / "bounds.i64", dtype=np.int64, mode="r").reshape(-1, 3)
        self.labels = np.memmap(directory / "labels.u8", dtype=np.uint8, mode="r")
        self.cls_id, self.sep_id = cls_id, sep_id

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> torch.Tensor:
        """Tokens per item, special ones included (for length-grouped batches)."""
        return torch.from_numpy(np.asarray(self.bounds[:, 2] - self.bounds[:, 0] + 3))

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """The rows of one batch, each carrying the batch's seed (from `BatchIndices`) for the masks."""
        seed = getattr(indices, "seed", None)
        return [{**self[i], "batch_seed": seed} for i in indices]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        a_start, b_start, end = (int(v) for v in self.bounds[i])
        a, b = self.tokens[a_start:b_start].astype(np.int64), self.tokens[b_start:end].astype(np.int64)
        ids = np.concatenate([[self.cls_id], a, [self.sep_id], b, [self.sep_id]])
        types = np.concatenate([np.zeros(len(a) + 2, dtype=np.int64), np.ones(len(b) + 1, dtype=np.int64)])
        return {"index": i, "input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
                "sentence_order_label": torch.tensor(int(self.labels[i]))}


def build_pair_shards(documents: Iterable[list[str]], encode: Callable[[list[str]], list[list[int]]],
                      max_seq_length: int, directory: str | os.PathLike, short_seq_prob: float = 0.1,
                      seed: int = 0, source: str = "the corpus") -> int:
    """Write the sentence-order pairs of `documents` (sentences, tokenized by `encode`) to `directory`,
    built beside it and renamed into place whole; returns the number of pairs. `source` names the text in
    errors."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        pairs = 0
        with _Writer(tmp) as writer:
            for document in documents:
                for pair in sentence_order_pairs(encode(document), max_seq_length, rng, short_seq_prob):
                    writer.add(pair)
                    pairs += 1
        if pairs == 0:
            raise ValueError(f"{source}: no sentence pairs in this text: is it empty, or is each document a single "
                             "token? (A document gives pairs once it holds two sentences or more than one token.)")
        publish_directory(tmp)
        try:
            os.replace(tmp, directory)
        except OSError:
            if not (directory / "labels.u8").is_file():
                raise
            # another process (a rank of another node on a shared disk) published the same pairs first
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


def load_or_build_pair_shards(paths: list[str | os.PathLike], tokenizer, max_seq_length: int,
                              cache_dir: str | os.PathLike | None = None, line_by_line: bool = False,
                              short_seq_prob: float = 0.1, seed: int = 0) -> PairShards:
    """The corpus's pairs from the cache when everything they depend on matches, else built now: the key
    covers the files' contents, the tokenizer, the length, the pairing settings and the seed."""
    digest = hashlib.sha256()
    for part in (SHARD_FORMAT, fingerprint(tokenizer), str(max_seq_length), str(short_seq_prob), str(seed),
                 str(line_by_line)):
        digest.update(part.encode() + b"\0")
    for path in map(Path, paths):
        digest.update(path.name.encode() + b"\0" + sha256_file(path).encode())
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "pretraining"
    directory = root / f"pairs_{max_seq_length}_{digest.hexdigest()[:20]}"
    if not (directory / "labels.u8").is_file():

        def encode(sentences: list[str]) -> list[list[int]]:
            return tokenizer(sentences, add_special_tokens=False)["input_ids"]

        build_pair_shards(read_documents(paths, line_by_line), encode, max_seq_length, directory, short_seq_prob,
                          seed, source=", ".join(map(str, paths)))
    return PairShards(directory, tokenizer.cls_token_id, tokenizer.sep_token_id)
