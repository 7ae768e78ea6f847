"""Dev set -> one .npy per sample and input, the layout ais_bench and our runtime read."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..config import AlbertConfig
from ..data import INPUT_NAMES, get_task, read_split
from ..io import atomic_write_json
from ..tokenization import encode, fingerprint, load_tokenizer

MANIFEST = "manifest.json"


def preprocess(pth_dir: str | os.PathLike, data_dir: str | os.PathLike, save_dir: str | os.PathLike,
               max_seq_length: int = 128, task_name: str = "SST-2", split: str = "dev",
               progress: bool = True) -> Path:
    """Write `save_dir/{input_ids,attention_mask,token_type_ids}/{i}.npy` (int64 [1, seq]), `label.npy`
    and `manifest.json` (index -> example id, file line, token count; task; tokenizer fingerprint).

    Only the model directory's config.json and tokenizer are read: no pickled arguments.
    """
    task = get_task(task_name)
    AlbertConfig.from_pretrained(pth_dir).check_sequence_length(max_seq_length)
    tokenizer = load_tokenizer(pth_dir)
    examples, _ = read_split(task, data_dir, split)
    texts_b = [e.text_b for e in examples] if task.text_b else None
    encoded = encode(tokenizer, [e.text_a for e in examples], texts_b, max_seq_length)
    save_dir = Path(save_dir)
    for name in INPUT_NAMES:
        (save_dir / name).mkdir(parents=True, exist_ok=True)
    lengths = []
    rows = zip(encoded["input_ids"], encoded["token_type_ids"], strict=True)
    for i, (ids, types) in enumerate(tqdm(rows, total=len(examples), desc="preprocess", disable=not progress)):
        padded = np.zeros((3, 1, max_seq_length), dtype=np.int64)
        padded[0, 0, : len(ids)] = ids
        padded[1, 0, : len(ids)] = 1
        padded[2, 0, : len(ids)] = types
        for name, array in zip(INPUT_NAMES, padded, strict=True):
            np.save(save_dir / name / f"{i}.npy", array)
        lengths.append(len(ids))
    labels = np.array([e.label for e in examples], dtype=np.float32 if task.is_regression else np.int64)
    np.save(save_dir / "label.npy", labels)
    manifest = {"task": task.name, "split": split, "max_seq_length": max_seq_length,
                "tokenizer": fingerprint(tokenizer), "num_examples": len(examples),
                "examples": [{"index": i, "id": e.guid, "line": e.line, "length": n}
                             for i, (e, n) in enumerate(zip(examples, lengths, strict=True))]}
    atomic_write_json(save_dir / MANIFEST, manifest)
    return save_dir
