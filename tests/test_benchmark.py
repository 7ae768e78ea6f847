"""The benchmark's FLOP count, checked against PyTorch's own counter (no timings here)."""

import torch
from conftest import tiny_config
from torch.utils.flop_counter import FlopCounterMode

from albert_pytorch import AlbertForSequenceClassification
from albert_pytorch.benchmark import forward_flops


def test_analytic_flops_match_pytorchs_counter():
    config = tiny_config(hidden_size=64, intermediate_size=256, num_hidden_layers=3)
    model = AlbertForSequenceClassification.from_config(config).eval()
    model.albert.export_mode = True  # attention as plain matmuls, which the counter sees (fused SDPA it does not)
    ids = torch.randint(5, 100, (2, 24))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(ids, torch.ones_like(ids))
    counted = counter.get_total_flops()
    expected = forward_flops(config, torch.tensor([24, 24]))
    assert abs(counted - expected) / counted < 0.01
