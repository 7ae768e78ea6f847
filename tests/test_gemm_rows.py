"""GEMMs with a hidden-wide output in row chunks (`gemm_rows`): the choice from timings, the spec, the products."""

import json

import pytest
import torch

from albert_pytorch import gemm_rows
from albert_pytorch.errors import UsageError
from albert_pytorch.gemm_rows import RowSplit
from albert_pytorch.run_config import TrainConfig

ROWS = [128, 256, 384, 512, 640, 768, 896, 1024, 1152]


def whole_seconds(slow: set[int]) -> list[float]:
    """1 ms per 128 rows, and twice that (one thread of two) at the `slow` counts."""
    return [m / 128e3 * (2 if m in slow else 1) for m in ROWS]


def test_a_window_is_where_the_whole_call_is_slow_and_chunks_are_faster():
    slow = {768, 896}
    split = gemm_rows.choose(ROWS, whole_seconds(slow), lambda m, chunk: m / 128e3, 768)
    # chunks of the best count below the slowdown; the window's ends halfway to the counts measured either side
    assert split == RowSplit(768, 128, ((705, 960),))
    assert [split.calls(m) for m in (704, 705, 960, 961)] == [1, 6, 8, 1]


def test_two_slow_stretches_make_two_windows_and_the_last_count_closes_its_own():
    split = gemm_rows.choose(ROWS, whole_seconds({512, 1152}), lambda m, chunk: m / 128e3, 768)
    assert split.windows == ((449, 576), (1089, 1152))


@pytest.mark.parametrize("slow, chunked_speedup", [(set(), 2.0), ({768, 896}, 1.1)])
def test_no_split_where_no_count_is_slow_or_where_chunks_do_not_pay(slow, chunked_speedup):
    assert gemm_rows.choose(ROWS, whole_seconds(slow), lambda m, chunk: m / 128e3 * 2 / chunked_speedup
                            if m in slow else m / 128e3, 768) is None


def test_a_split_reads_back_from_its_spec_and_bad_specs_say_what_is_wanted():
    split = RowSplit(768, 448, ((705, 1344), (1500, 1600)))
    assert split.spec() == "768:448:705-1344,1500-1600"
    assert RowSplit.parse(split.spec()) == split
    assert RowSplit.parse("off") is None
    for bad in ("768:448", "768:0:1-2", "768:448:9-2", "on"):
        with pytest.raises(ValueError, match="WIDTH:CHUNK:LO-HI|positive"):
            RowSplit.parse(bad)
    with pytest.raises(UsageError, match="--gemm_row_split '768:448'"):
        TrainConfig(gemm_row_split="768:448").validate()


@pytest.mark.parametrize("bias", [False, True])
def test_chunked_calls_compute_the_whole_product(bias):
    a, b = torch.randn(37, 16, dtype=torch.float64), torch.randn(16, 8, dtype=torch.float64)
    c = torch.randn(8, dtype=torch.float64) if bias else None
    split = RowSplit(8, 10, ((30, 40),))
    assert split.calls(37) == 4
    expected = a @ b + (c if bias else 0)
    assert torch.allclose(gemm_rows.matmul(a, b, c, split), expected)
    assert torch.allclose(gemm_rows.matmul(a, b.repeat(1, 2), None, split), a @ b.repeat(1, 2))  # another width


def test_a_resume_computes_with_the_split_of_the_run_it_resumes(tmp_path):
    (tmp_path / "train_config.json").write_text(json.dumps({"gemm_row_split": "768:448:705-1344"}))
    assert TrainConfig(output_dir=str(tmp_path), resume_from_checkpoint="latest").row_split() == "768:448:705-1344"
    assert TrainConfig(output_dir=str(tmp_path), resume_from_checkpoint="latest",
                       gemm_row_split="off").row_split() == "off"
    assert TrainConfig(output_dir=str(tmp_path)).row_split() is None  # a new run measures
    (tmp_path / "train_config.json").write_text(json.dumps({"gemm_row_split": "garbled"}))
    assert TrainConfig(output_dir=str(tmp_path), resume_from_checkpoint="latest").row_split() is None
