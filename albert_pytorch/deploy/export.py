"""PyTorch -> ONNX, checked: ONNX checker, then ONNX Runtime against PyTorch on real inputs.

ALBERT's shared layer is one set of parameters used num_hidden_layers times; the TorchScript-based
exporter keeps it as one set of initializers, so the file stays the size of the weights instead of
growing about 7x as exporters that unroll and copy the layer do.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import INPUT_NAMES, get_task, read_file
from ..io import atomic_write_json
from ..modeling import AlbertForSequenceClassification
from ..sample import sample_data_dir
from ..tokenization import load_tokenizer, save_tokenizer_files

logger = logging.getLogger(__name__)

OUTPUT_NAME = "output"
# "modelzoo": one file, albert_seq{L}_bs{B}.onnx (static, for ATC) or albert_dynamic.onnx, output "output".
# "optimum": a folder that optimum.onnxruntime.ORTModelForSequenceClassification.from_pretrained loads:
#            model.onnx (dynamic axes, output "logits", as optimum reads it), config.json and the tokenizer.
LAYOUTS = ("modelzoo", "optimum")
DEFAULT_OPSET = 14  # LayerNorm decomposed: accepted by Ascend ATC, and fused back by ONNX Runtime


class ExportError(RuntimeError):
    """An exported model that fails its checks."""


class _LogitsOnly(nn.Module):
    """The exported signature: three int64 inputs in, float32 logits out."""

    def __init__(self, model: AlbertForSequenceClassification):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids, attention_mask, token_type_ids).logits


def onnx_file_name(max_seq_length: int, batch_size: int, dynamic: bool) -> str:
    return "albert_dynamic.onnx" if dynamic else f"albert_seq{max_seq_length}_bs{batch_size}.onnx"


def sample_inputs(tokenizer, texts: list[str], batch_size: int, max_seq_length: int) -> dict[str, np.ndarray]:
    """Real token ids for the export and its checks: `texts` cycled to fill the batch, padded to max length."""
    rows = [texts[i % len(texts)] for i in range(batch_size)]
    encoded = tokenizer(rows, truncation=True, max_length=max_seq_length, padding="max_length",
                        return_token_type_ids=True, return_attention_mask=True, return_tensors="np")
    return {name: encoded[name].astype(np.int64) for name in INPUT_NAMES}


def export(model_dir: str | os.PathLike, onnx_dir: str | os.PathLike, batch_size: int = 32,
           max_seq_length: int = 128, dynamic: bool = False, texts: list[str] | None = None,
           opset: int = DEFAULT_OPSET, atol: float = 1e-4, layout: str = "modelzoo") -> Path:
    """Export `model_dir` into `onnx_dir` in `layout` (see LAYOUTS), check it, and return the .onnx path."""
    if layout not in LAYOUTS:
        raise ValueError(f"--layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    optimum = layout == "optimum"
    dynamic = dynamic or optimum
    model = AlbertForSequenceClassification.from_pretrained(model_dir).eval()
    model.config.check_sequence_length(max_seq_length)
    tokenizer = load_tokenizer(model_dir)
    inputs = sample_inputs(tokenizer, texts or _default_texts(), batch_size, max_seq_length)
    output_name = "logits" if optimum else OUTPUT_NAME
    path = Path(onnx_dir) / ("model.onnx" if optimum else onnx_file_name(max_seq_length, batch_size, dynamic))
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
        dynamic_axes[output_name] = {0: "batch"}
    tmp = path.with_suffix(".onnx.tmp")
    with torch.no_grad(), model.implementation("explicit"):
        torch.onnx.export(_LogitsOnly(model).eval(), tuple(torch.from_numpy(inputs[n]) for n in INPUT_NAMES), str(tmp),
                          input_names=list(INPUT_NAMES), output_names=[output_name], opset_version=opset,
                          dynamic_axes=dynamic_axes, do_constant_folding=True, dynamo=False)
    os.replace(tmp, path)
    check_against_pytorch(path, model, inputs, atol, output_name)
    if optimum:
        model.config.save_pretrained(path.parent)
        save_tokenizer_files(tokenizer, model_dir, path.parent, model.config.max_position_embeddings)
        _readable_by_transformers_4(path.parent / "tokenizer_config.json")
    logger.info("exported %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def _readable_by_transformers_4(tokenizer_config: Path) -> None:
    """optimum-onnx runs on transformers 4.x, which reads `extra_special_tokens` as a dict and fails on the
    list transformers 5 writes; tokenizer.json still marks those tokens special, so the list can go."""
    config = json.loads(tokenizer_config.read_text(encoding="utf-8"))
    if isinstance(config.get("extra_special_tokens"), list):
        del config["extra_special_tokens"]
        atomic_write_json(tokenizer_config, config)


def _default_texts() -> list[str]:
    examples, _ = read_file(get_task("SST-2"), sample_data_dir() / "dev.tsv", "dev")
    return [e.text_a for e in examples]


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def check_against_pytorch(path: Path, model: AlbertForSequenceClassification, inputs: dict[str, np.ndarray],
                          atol: float, output_name: str = OUTPUT_NAME) -> float:
    """ONNX checker, then ONNX Runtime vs PyTorch on the same inputs; raises ExportError past `atol`."""
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as err:
        raise ExportError(f"{path}: the ONNX checker rejects the export: {err}") from err
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (ours,) = session.run([output_name], inputs)
    with torch.no_grad():
        reference = model(*(torch.from_numpy(inputs[n]) for n in INPUT_NAMES)).logits.numpy()
    diff = max_abs_diff(ours, reference)
    if not diff < atol:
        raise ExportError(f"{path}: ONNX Runtime and PyTorch disagree by {diff:.2e} (limit {atol:.0e})")
    logger.info("%s: ONNX Runtime matches PyTorch, max |diff| %.2e", path.name, diff)
    return diff
