"""ALBERT's n-gram masking for masked-LM pretraining, as Google's create_pretraining_data defines it.

15% of a sequence's non-special tokens are predicted, chosen as n-grams of whole SentencePiece words
(a piece starting with "▁" and the pieces that continue it), n from 1 to 3 with p(n) proportional to
1/n (6/11, 3/11, 2/11). Each chosen token becomes [MASK] (80%), a random token (10%) or stays (10%).
Masks are drawn from the generator passed in; `MaskingCollator` seeds it per (seed, rank, epoch, batch),
so every epoch sees new masks and a resumed run the same ones.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from .padding import model_inputs, padded

IGNORE_INDEX = -100  # labels of positions that are not predicted (PyTorch's cross-entropy default)


@dataclass(frozen=True)
class MaskingSpec:
    mask_id: int
    special_ids: frozenset[int]
    word_start: np.ndarray = field(repr=False)  # per vocabulary id: does the piece begin a word?
    mask_prob: float = 0.15
    max_ngram: int = 3
    max_predictions: int = 20  # per sequence (Google's max_predictions_per_seq for length 128)

    @classmethod
    def from_tokenizer(cls, tokenizer, **settings) -> MaskingSpec:
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        return cls(mask_id=tokenizer.mask_token_id, special_ids=frozenset(tokenizer.all_special_ids),
                   word_start=np.array([piece.startswith("▁") for piece in pieces]), **settings)

    @cached_property
    def ngram_cumulative(self) -> list[float]:
        """Cumulative p(n) for n = 1..max_ngram, p(n) proportional to 1/n."""
        weights = 1.0 / np.arange(1, self.max_ngram + 1)
        return np.cumsum(weights / weights.sum()).tolist()

    def replacement_ids(self) -> np.ndarray:
        """Ids a token may be swapped for: every piece but the special ones."""
        return np.array([i for i in range(len(self.word_start)) if i not in self.special_ids])


@dataclass
class MaskedSequence:
    input_ids: np.ndarray  # with [MASK] / random tokens in place
    labels: np.ndarray  # the original id where a token is predicted, IGNORE_INDEX elsewhere
    ngram_lengths: list[int]  # words per chosen n-gram, in the order they were chosen


def mask_ngrams(ids: np.ndarray, spec: MaskingSpec, rng: np.random.Generator,
                replacements: np.ndarray | None = None) -> MaskedSequence:
    """Choose and mask n-grams of whole words in one sequence of token ids."""
    ids = np.asarray(ids)
    words = _words(ids, spec)
    candidates = sum(len(word) for word in words)
    budget = min(spec.max_predictions, max(1, round(candidates * spec.mask_prob))) if candidates else 0
    cumulative = spec.ngram_cumulative
    covered: set[int] = set()
    lengths = []
    for start in rng.permutation(len(words)):
        if len(covered) >= budget:
            break
        longest = min(spec.max_ngram, len(words) - start)
        # p(n) renormalized over 1..longest; a uniform draw costs far less than Generator.choice with p=
        n = 1 + bisect.bisect_right(cumulative, rng.random() * cumulative[longest - 1])
        # too long for what is left of the budget: the longest shorter n-gram from the same start that fits;
        # one that runs into an n-gram already chosen is skipped (both as Google's code does)
        while n > 0 and len(covered) + sum(len(w) for w in words[start:start + n]) > budget:
            n -= 1
        positions = [p for word in words[start:start + n] for p in word]
        if n == 0 or covered.intersection(positions):
            continue
        covered.update(positions)
        lengths.append(n)
    chosen = np.array(sorted(covered), dtype=np.int64)
    labels = np.full_like(ids, IGNORE_INDEX)
    labels[chosen] = ids[chosen]
    masked = ids.copy()
    draw = rng.random(len(chosen))
    masked[chosen[draw < 0.8]] = spec.mask_id
    swapped = chosen[(draw >= 0.8) & (draw < 0.9)]
    pool = spec.replacement_ids() if replacements is None else replacements
    masked[swapped] = rng.choice(pool, size=len(swapped))
    return MaskedSequence(masked, labels, lengths)


def _words(ids: np.ndarray, spec: MaskingSpec) -> list[list[int]]:
    """Positions grouped into whole words; special tokens belong to none."""
    words: list[list[int]] = []
    for position, token in enumerate(ids.tolist()):
        if token in spec.special_ids:
            continue
        if spec.word_start[token] or not words or words[-1][-1] != position - 1:
            words.append([position])
        else:
            words[-1].append(position)
    return words


class MaskingCollator:
    """Pads a batch of pairs and masks it, with masks drawn from the batch's own seed (`batch_seed`, put
    there by the dataset from `BatchIndices`): new masks every epoch, the same ones after a resume."""

    def __init__(self, pad_token_id: int, spec: MaskingSpec, pad_to_multiple_of: int = 1):
        self.pad_token_id, self.spec, self.pad_to_multiple_of = pad_token_id, spec, pad_to_multiple_of
        self.replacements = spec.replacement_ids()

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        seed = rows[0].get("batch_seed")
        if seed is None:
            raise ValueError("masking needs each batch's seed: batch the data with LengthGroupedBatchSampler")
        rng = np.random.default_rng(seed)
        masked = [mask_ngrams(row["input_ids"].numpy(), self.spec, rng, self.replacements) for row in rows]
        inputs = model_inputs([torch.from_numpy(m.input_ids) for m in masked], [row["token_type_ids"] for row in rows],
                              self.pad_token_id, self.pad_to_multiple_of)
        labels = padded([torch.from_numpy(m.labels) for m in masked], inputs["input_ids"].shape[1], IGNORE_INDEX)
        return {**inputs, "labels": labels,
                "sentence_order_label": torch.stack([row["sentence_order_label"] for row in rows]),
                "index": torch.tensor([row["index"] for row in rows], dtype=torch.long)}
