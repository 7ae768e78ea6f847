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

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_TITLE = re.compile(r"^ ?= [^=].* = ?$")  # ` = Title = `, not ` = = Section = = `
_HEADING = re.compile(r"^ ?(= )+.*( =)+ ?$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def read_documents(paths: Iterable[str | os.PathLike], line_by_line: bool = False) -> Iterator[list[str]]:
    """Documents, each a list of sentences, from text files in the order given."""
    for path in map(Path, paths):
        document: list[str] = []
        with open(path, encoding="utf-8") as handle:
            for raw in handle:
                line = raw.strip()
                if line_by_line:
                    if line:
                        yield [line]
                    continue
                if not line or _TITLE.match(raw.rstrip("\n")):
                    if document:
                        yield document
                    document = []
                    continue
                if _HEADING.match(raw.rstrip("\n")):
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
