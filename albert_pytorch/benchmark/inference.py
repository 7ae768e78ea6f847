"""Inference over the dev rows: transformers eager padded to 128, our PyTorch path, our export through ONNX
Runtime in fp32 and int8; and int8's argmax agreement with fp32."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..data import Collator, EvalShardSampler
from ..deploy.export import export
from ..deploy.optimize import optimize
from ..device import Precision, default_pad_multiple, synchronize
from ..evaluate import batch_logits
from ..modeling import AlbertForSequenceClassification
from .harness import PADDED, Workload, forward_flops, logger
from .reference import TransformersAlbert


@torch.no_grad()
def benchmark_inference(work: Workload, device: torch.device, precision: Precision, rounds: int,
                        work_dir: Path, with_bf16: bool, batch_size: int = 32) -> tuple[dict[str, dict], dict]:
    """Samples/s over the dev rows per variant, each with the number format it computes in; and the argmax
    agreement of each cheaper format with fp32 (`--model_dir` with a trained model makes it meaningful)."""
    torch.manual_seed(0)
    ours = AlbertForSequenceClassification.from_config(work.config)
    if work.weights is not None:
        ours.load_state_dict(work.weights)
    ours.eval().to(device)
    reference = TransformersAlbert(work.config).eval()
    reference.load_state_dict(ours.state_dict())
    reference.to(device)
    model_dir = work_dir / "model"
    ours.save_pretrained(model_dir)
    work.tokenizer.save_pretrained(str(model_dir))
    exported = export(model_dir, work_dir, 4, PADDED, dynamic=True)
    fp32, int8 = work_dir / "ort_fp32.onnx", work_dir / "ort_int8.onnx"
    optimize(exported, fp32, "ort")
    optimize(exported, int8, "ort", int8=True)

    dev, n = work.dev, len(work.dev)
    in_order = [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]
    by_length = list(EvalShardSampler(dev.lengths, batch_size))
    flops = forward_flops(work.config, dev.lengths)
    outputs: dict[str, np.ndarray] = {}

    def torch_runner(model, collator, batches, in_precision=precision):
        def run_once():
            logits = np.zeros((n, 2), dtype=np.float32)
            for rows in batches:
                logits[rows] = batch_logits(model, collator([dev[i] for i in rows]), device, in_precision).numpy()
            return logits
        return run_once

    def ort_runner(path):
        import onnxruntime as ort

        providers = ["CUDAExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(path), providers=providers)
        collator = Collator(0, 1)

        def run_once():
            logits = np.zeros((n, 2), dtype=np.float32)
            for rows in by_length:
                batch = collator([dev[i] for i in rows])
                feed = {k: batch[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids")}
                logits[rows] = session.run(None, feed)[0]
            return logits
        return run_once

    pad_multiple = default_pad_multiple(device)
    torch_format = "bf16" if precision.dtype == torch.bfloat16 else "fp32"
    runners = {  # key: (label, number format, run once over the dev rows)
        "transformers_padded": ("transformers eager, padded to 128", torch_format,
                                torch_runner(reference, Collator(0, PADDED), in_order)),
        "ours_pytorch": (f"ours, PyTorch {torch_format} (length-sorted)", torch_format,
                         torch_runner(ours, Collator(0, pad_multiple), by_length)),
        "ours_ort_fp32": ("ours, ONNX Runtime fp32", "fp32", ort_runner(fp32)),
        "ours_ort_int8": ("ours, ONNX Runtime int8", "int8", ort_runner(int8)),
    }
    if with_bf16 and torch_format == "fp32":
        runners["ours_pytorch_bf16"] = ("ours, PyTorch bf16 (length-sorted)", "bf16", torch_runner(
            ours, Collator(0, pad_multiple), by_length, Precision(torch.bfloat16)))
    per_round: dict[str, list[float]] = {key: [] for key in runners}
    for key, (_, _, runner) in runners.items():
        outputs[key] = runner()  # warm-up, and the logits compared below
    for round_number in range(1, rounds + 1):
        for key, (label, _, runner) in runners.items():
            logger.info("inference round %d/%d: %s", round_number, rounds, label)
            synchronize(device)
            start = time.perf_counter()
            runner()
            synchronize(device)
            per_round[key].append(time.perf_counter() - start)
    results = {key: {"label": label, "format": number_format, "samples_per_s": n * rounds / sum(per_round[key]),
                     "gflops": flops * rounds / sum(per_round[key]) / 1e9,
                     "per_round_samples_per_s": [n / s for s in per_round[key]]}
               for key, (label, number_format, _) in runners.items()}
    fp32_pred = outputs["ours_ort_fp32"].argmax(-1)
    checks = {"int8_argmax_agreement": float((outputs["ours_ort_int8"].argmax(-1) == fp32_pred).mean()),
              "fp32_max_abs_diff_vs_transformers": float(np.abs(outputs["ours_ort_fp32"]
                                                                - outputs["transformers_padded"]).max())}
    if "ours_pytorch_bf16" in outputs:
        checks["bf16_argmax_agreement"] = float((outputs["ours_pytorch_bf16"].argmax(-1) == fp32_pred).mean())
    return results, checks


