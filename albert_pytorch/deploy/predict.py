"""Raw text -> label names and probabilities (or the STS-B score), from PyTorch or an exported model, through the
engine `serve` runs: one way to encode, batch and run the model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from ..config import AlbertConfig
from ..data import INPUT_NAMES
from ..errors import UsageError
from ..serving.engine import Encoded, Engine, EngineOptions, probabilities, read_model_dir
from .runtime import open_session, pad_to_batch, static_dims


def text_pair(line: str) -> tuple[str, str | None]:
    """A line of raw text as (sentence, None), or a pair (two sentences joined by a tab)."""
    first, _, second = line.partition("\t")
    return first, second or None


def read_inputs(texts: list[str]) -> list[tuple[str, str | None]]:
    """Sentences, or tab-separated pairs, from the command line."""
    if not texts:
        raise ValueError("nothing to predict: give sentences as arguments or --input FILE")
    return [text_pair(text) for text in texts]


def scoring_engine(model_dir: str | os.PathLike, onnx_file: str | None = None, max_seq_length: int = 128,
                   provider: str = "cpu", bf16: bool = False, quantize: str | None = None,
                   threads: int | None = None) -> Engine:
    """The model as `serve` loads it: PyTorch (`bf16` in bfloat16 autocast), or ONNX Runtime with `onnx_file` or
    with `quantize` "int8" (the directory's cached export, quantized)."""
    if bf16 and (onnx_file is not None or quantize is not None):
        raise UsageError("--bf16 is PyTorch's precision; an ONNX model runs as it was exported (see opt_onnx.py "
                         "--fp16/--int8)")
    options = EngineOptions(str(model_dir), backend="onnx" if onnx_file or quantize else "torch", onnx=onnx_file,
                            quantize=quantize, provider=provider, threads=threads, bf16=bf16)
    model_files = read_model_dir(options)  # serve's checks, with their messages
    # the model's own limit where it reads fewer positions than asked
    limit = min(max_seq_length, model_files[0].max_position_embeddings)
    return Engine(replace(options, max_input_length=limit), model_files=model_files)


def score(engine: Engine, pairs: list[tuple[str, str | None]], batch_size: int) -> np.ndarray:
    """Logits [inputs, labels] in input order, each input encoded as what it is (a sentence or a pair) and cut to
    the engine's length."""
    return score_encoded(engine, engine.encoder.encode(pairs, truncate=True), batch_size)


def score_encoded(engine: Engine, encoded: Encoded, batch_size: int) -> np.ndarray:
    """Logits [rows, labels] of encoded rows in their order; the model runs over length-sorted batches, which pad
    little."""
    order = sorted(range(len(encoded.ids)), key=lambda i: len(encoded.ids[i]))
    return engine.logits(encoded, [order[i:i + batch_size] for i in range(0, len(order), batch_size)])


def predict(model_dir: str | os.PathLike, pairs: list[tuple[str, str | None]], onnx_file: str | None = None,
            batch_size: int = 32, max_seq_length: int = 128, provider: str = "cpu",
            bf16: bool = False) -> Iterator[dict]:
    """One record per input, in input order: the label and each class's probability, or the regression score."""
    engine = scoring_engine(model_dir, onnx_file, max_seq_length, provider, bf16)
    logits = score(engine, pairs, batch_size)
    shares = None if engine.is_regression else probabilities(logits)
    for i, (text_a, text_b) in enumerate(pairs):
        record = {"text": text_a} | ({"text_b": text_b} if text_b is not None else {})
        if shares is None:
            record["score"] = float(logits[i, 0])
        else:
            record["label"] = engine.labels[int(logits[i].argmax())]
            record["probabilities"] = {label: float(p) for label, p in zip(engine.labels, shares[i], strict=True)}
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
