"""Raw text -> label names and probabilities (or the STS-B score), from PyTorch or an exported model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from ..config import AlbertConfig
from ..data import INPUT_NAMES, Collator, EvalShardSampler, Features
from ..device import Precision
from ..errors import UsageError
from ..evaluate import batch_logits
from ..io import read_utf8
from ..modeling import AlbertForSequenceClassification
from ..tokenization import encode_inputs, load_tokenizer
from .runtime import open_session, pad_to_batch, static_dims


def read_inputs(texts: list[str], input_file: str | os.PathLike | None) -> list[tuple[str, str | None]]:
    """Sentences, or tab-separated pairs, from the command line or a file (one per line)."""
    lines = list(texts)
    if input_file is not None:
        if not Path(input_file).is_file():
            raise UsageError(f"--input {input_file}: no such file")
        text = read_utf8(input_file)
        lines += [line for line in text.splitlines() if line.strip()]
    pairs = []
    for line in lines:
        first, _, second = line.partition("\t")
        pairs.append((first, second or None))
    if not pairs:
        raise ValueError("nothing to predict: give sentences as arguments or --input FILE")
    return pairs


def predict(model_dir: str | os.PathLike, pairs: list[tuple[str, str | None]], onnx_file: str | None = None,
            batch_size: int = 32, max_seq_length: int = 128, provider: str = "cpu",
            bf16: bool = False) -> Iterator[dict]:
    """One record per input, in input order; batches are length-sorted so they pad little. `bf16`: PyTorch
    computes in bfloat16 (autocast; fast on CPUs with bf16 units), where no ONNX file is given."""
    if bf16 and onnx_file is not None:
        raise UsageError("--bf16 is PyTorch's precision; an ONNX model runs as it was exported (see opt_onnx.py "
                         "--fp16/--int8)")
    if not Path(model_dir).is_dir():
        raise UsageError(f"--model_dir {model_dir}: no such folder (a model directory that train wrote)")
    config = AlbertConfig.from_pretrained(model_dir)  # the labels; the weights are the export's with --onnx
    tokenizer = load_tokenizer(model_dir)
    static_batch = static_width = None  # a static export takes only its own batch and length
    if onnx_file is not None:
        model = OnnxSequenceClassifier(onnx_file, config, provider)
        static_batch, static_width = model.batch, model.width
    else:
        model = AlbertForSequenceClassification.from_pretrained(model_dir, config=config).eval()
    encoded = encode_inputs(tokenizer, pairs, static_width or max_seq_length)
    features = Features.from_encoded(encoded, torch.zeros(len(pairs)))
    collator = Collator(tokenizer.pad_token_id)
    logits = np.zeros((len(pairs), config.num_labels), dtype=np.float32)
    for rows in EvalShardSampler(features.lengths, static_batch or batch_size):
        batch = collator([features[i] for i in rows])
        with torch.no_grad():
            logits[rows] = batch_logits(model, batch, torch.device("cpu"),
                                        Precision(torch.bfloat16 if bf16 else None)).numpy()
    labels = config.id2label
    for (text_a, text_b), row in zip(pairs, logits, strict=True):
        record = {"text": text_a} | ({"text_b": text_b} if text_b is not None else {})
        if config.is_regression:
            record["score"] = float(row[0])
        else:
            probabilities = np.exp(row - row.max())
            probabilities /= probabilities.sum()
            record["label"] = labels[int(row.argmax())]
            record["probabilities"] = {labels[k]: float(p) for k, p in enumerate(probabilities)}
        yield record


class OnnxSequenceClassifier(nn.Module):
    """An exported classifier behind the interface evaluation and prediction call on our PyTorch model
    (`model(input_ids, attention_mask, token_type_ids).logits`, `model.config`): any export of ours, static or
    dynamic, optimized or quantized, on ONNX Runtime. A static export's batch and width (`batch`, `width`, None
    where dynamic) are met by padding, and the padding's outputs dropped."""

    def __init__(self, onnx_file: str | os.PathLike, config: AlbertConfig, provider: str = "cpu"):
        super().__init__()
        self.config = config
        self.session = open_session(onnx_file, provider)
        self.batch, self.width = static_dims(self.session)
        self.onnx_file = Path(onnx_file)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> SimpleNamespace:
        rows, length = input_ids.shape
        if self.width is not None and length > self.width:
            raise UsageError(f"{self.onnx_file} takes {self.width} tokens, and a batch holds {length}: give "
                             f"--max_seq_length {self.width}, the length it was exported at")
        arrays = {}
        for name, tensor in zip(INPUT_NAMES, (input_ids, attention_mask, token_type_ids), strict=True):
            array = tensor.cpu().numpy()
            if self.width is not None:  # padded positions: the pad id, masked out, segment 0
                fill = self.config.pad_token_id if name == "input_ids" else 0
                array = np.pad(array, [(0, 0), (0, self.width - length)], constant_values=fill)
            arrays[name] = array
        step = self.batch or rows  # a static export takes its own batch size, so a larger batch runs in parts
        logits = [self.session.run(None, {name: pad_to_batch(a[start:start + step], self.batch)
                                          for name, a in arrays.items()})[0][:min(step, rows - start)]
                  for start in range(0, rows, step)]
        return SimpleNamespace(logits=torch.from_numpy(np.concatenate(logits).astype(np.float32)))
