"""The benchmark's FLOP count, checked against PyTorch's own counter (no timings here)."""

import torch
from helpers import tiny_config
from torch.utils.flop_counter import FlopCounterMode

from albert_pytorch import AlbertForSequenceClassification
from albert_pytorch.benchmark.harness import PADDED, forward_flops, load_workload
from albert_pytorch.benchmark.training import TrainVariant, _step_peak_bytes
from albert_pytorch.data import Collator
from albert_pytorch.device import Precision
from albert_pytorch.tokenization import load_tokenizer


def test_analytic_flops_match_pytorchs_counter():
    config = tiny_config(hidden_size=64, intermediate_size=256, num_hidden_layers=3)
    model = AlbertForSequenceClassification.from_config(config).eval()
    ids = torch.randint(5, 100, (2, 24))
    # explicit attention: plain matmuls, which the counter sees (fused SDPA it does not)
    with FlopCounterMode(display=False) as counter, torch.no_grad(), model.implementation("explicit"):
        model(ids, torch.ones_like(ids))
    counted = counter.get_total_flops()
    expected = forward_flops(config, torch.tensor([24, 24]))
    assert abs(counted - expected) / counted < 0.01


def test_cpu_training_memory_counts_state_once_and_activations_per_row(tiny_model_dir, tiny_task_dir, tmp_path):
    config = tiny_config(vocab_size=len(load_tokenizer(tiny_model_dir)), hidden_size=64, intermediate_size=256,
                         max_position_embeddings=128)
    config.set_labels(["0", "1"])
    work = load_workload(str(tiny_model_dir), str(tiny_task_dir), 64, 8, tmp_path, tmp_path / "no-shared-data")
    work.config = config
    device, sizes = torch.device("cpu"), {}
    for rows in (4, 8):
        model = AlbertForSequenceClassification.from_config(config)
        variant = TrainVariant("ours", "ours", model, [list(range(rows))], Collator(0, PADDED), work, device,
                               Precision())
        variant.run(1, timed=False)
        sizes[rows] = _step_peak_bytes(variant)
    state = 4 * sum(p.nbytes for p in model.parameters())  # weights, gradients, AdamW's two moments
    activations = {rows: size - state for rows, size in sizes.items()}
    assert activations[4] > 0
    assert 1.8 < activations[8] / activations[4] < 2.2  # saved activations grow with the batch; weights do not


def test_the_gemm_thread_check_times_each_row_count_whole_and_halved():
    from albert_pytorch.benchmark.gemm_threads import benchmark_gemm_threads

    result = benchmark_gemm_threads(64, 256, rounds=1, rows=(64, 96))
    assert set(result["halves_ratio"]) == {"64", "256"}
    assert all(set(per_rows) == {"64", "96"} for per_rows in result["halves_ratio"].values())
    ratios = [r for per_rows in result["halves_ratio"].values() for r in per_rows.values()]
    assert all(0.05 < r < 20 for r in ratios) and result["hidden_gemm_halves_ratio_max"] == max(ratios)
    assert set(result["hidden_gemm_idle_thread_rows"]) <= {64, 96} and result["threads"] == torch.get_num_threads()
