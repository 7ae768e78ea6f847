"""Examples -> token ids, cached on disk, and a collator that pads each batch to its own longest row.

Features are stored unpadded (flat ids + offsets) so that padding is decided per batch: SST-2's
sentences average 14 tokens, and padding them all to 128 would waste most of the compute.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..io import atomic_write, cache_root
from ..tokenization import encode, fingerprint
from .padding import model_inputs
from .tasks import Example, Task

logger = logging.getLogger(__name__)

CACHE_FORMAT = "1"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")  # the model's inputs, in its argument order


def default_cache_dir() -> Path:
    return cache_root() / "features"


class Features(Dataset):
    """Token ids of one split, unpadded, with their labels; item i is example i of the file."""

    def __init__(self, ids: torch.Tensor, token_types: torch.Tensor, offsets: torch.Tensor, labels: torch.Tensor):
        self.ids, self.token_types, self.offsets, self.labels = ids, token_types, offsets, labels

    @classmethod
    def from_encoded(cls, encoded: dict[str, list[list[int]]], labels: torch.Tensor) -> Features:
        lengths = torch.tensor([len(row) for row in encoded["input_ids"]], dtype=torch.long)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        flat = [token for row in encoded["input_ids"] for token in row]
        flat_types = [token for row in encoded["token_type_ids"] for token in row]
        return cls(torch.tensor(flat, dtype=torch.int32), torch.tensor(flat_types, dtype=torch.int8), offsets, labels)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        start, end = self.offsets[i], self.offsets[i + 1]
        return {"index": i, "input_ids": self.ids[start:end], "token_type_ids": self.token_types[start:end],
                "labels": self.labels[i]}

    def fingerprint(self) -> str:
        """A hash of every token id and label: equal for the same data, tokenizer and length."""
        digest = hashlib.sha256()
        for tensor in (self.ids, self.token_types, self.offsets, self.labels):
            digest.update(str(tensor.dtype).encode() + tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()[:20]

    def subset(self, n: int) -> Features:
        """The first n examples (for --max_train_samples / --max_eval_samples)."""
        n = min(n, len(self))
        end = self.offsets[n]
        return Features(self.ids[:end], self.token_types[:end], self.offsets[: n + 1], self.labels[:n])


def label_tensor(task: Task, examples: list[Example]) -> torch.Tensor:
    """Class indices (long), scores (float32), or -1 for unlabelled test rows."""
    if task.is_regression:
        return torch.tensor([float("nan") if e.label is None else e.label for e in examples], dtype=torch.float32)
    return torch.tensor([-1 if e.label is None else e.label for e in examples], dtype=torch.long)


def build_features(task: Task, examples: list[Example], tokenizer, max_seq_length: int) -> Features:
    texts_b = [e.text_b for e in examples] if task.text_b else None
    encoded = encode(tokenizer, [e.text_a for e in examples], texts_b, max_seq_length)
    return Features.from_encoded(encoded, label_tensor(task, examples))


def cache_key(task: Task, split: str, examples: list[Example], tokenizer, max_seq_length: int) -> str:
    """Changes whenever anything the token ids depend on does: texts, tokenizer, task, split, length."""
    digest = hashlib.sha256()
    for part in (CACHE_FORMAT, task.name, split, str(max_seq_length), fingerprint(tokenizer)):
        digest.update(part.encode() + b"\0")
    for e in examples:
        digest.update(f"{e.text_a}\t{e.text_b}\n".encode())
    return f"{task.name}_{split}_{max_seq_length}_{digest.hexdigest()[:20]}"


def load_or_build_features(task: Task, split: str, examples: list[Example], tokenizer, max_seq_length: int,
                           cache_dir: str | os.PathLike | None = None) -> Features:
    """Token ids from the cache when its key matches, else tokenized now and cached.

    The cache holds tensors only (safetensors), so a planted cache file cannot run code; labels
    always come from the examples just read.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / f"{cache_key(task, split, examples, tokenizer, max_seq_length)}.safetensors"
    labels = label_tensor(task, examples)
    if path.is_file():
        try:
            cached = load_file(str(path))
            if len(cached["offsets"]) == len(examples) + 1:
                return Features(cached["ids"], cached["token_types"], cached["offsets"], labels)
            logger.warning("%s: feature cache does not match the data; rebuilding it", path)
        except (SafetensorError, OSError, KeyError) as err:
            logger.warning("%s: unreadable feature cache (%s); rebuilding it", path, err)
    features = build_features(task, examples, tokenizer, max_seq_length)
    tensors = {"ids": features.ids, "token_types": features.token_types, "offsets": features.offsets}
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
    except OSError as err:  # a read-only cache only costs the next run a re-tokenization
        logger.warning("cannot write the feature cache %s (%s)", path, err)
    return features


@dataclass
class Collator:
    """Pads a batch to its longest row (rounded up to `pad_to_multiple_of`, which suits tensor cores)."""

    pad_token_id: int = 0
    pad_to_multiple_of: int = 1

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        inputs = model_inputs([r["input_ids"] for r in rows], [r["token_type_ids"] for r in rows], self.pad_token_id,
                              self.pad_to_multiple_of)
        return {**inputs, "labels": torch.stack([torch.as_tensor(r["labels"]) for r in rows]),
                "index": torch.tensor([r["index"] for r in rows], dtype=torch.long)}
