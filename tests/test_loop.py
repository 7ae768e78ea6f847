"""`fit()` knows no task: its own behaviours on a toy corpus and ALBERT's pretraining objective (the loss
falls, evaluation and checkpoint cadence, exact resume, accumulation, the NaN stop, early stopping), and
fp16's skipped steps through a fine-tuning run."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import tiny_config
from torch.utils.data import DataLoader

from albert_pytorch import AlbertForPreTraining
from albert_pytorch.data import LengthGroupedBatchSampler
from albert_pytorch.device import DistContext
from albert_pytorch.loop import Ranking, TrainingDiverged, fit
from albert_pytorch.run_config import LoopConfig
from albert_pytorch.runlog import RunLog
from albert_pytorch.train import TrainConfig, run

MASK_ID = 4


class InOrder:
    """Consecutive batches of `batch_size` rows, the same every epoch, resumable mid-epoch (as fit needs)."""

    def __init__(self, rows: int, batch_size: int):
        self.rows, self.batch_size, self.start = rows, batch_size, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.start = start_batch

    def __iter__(self):
        return (list(range(i, i + self.batch_size)) for i in range(self.start * self.batch_size, self.rows,
                                                                     self.batch_size))

    def __len__(self) -> int:
        return self.rows // self.batch_size


def toy_mlm_batches(rows: int = 64, length: int = 12, batch_size: int | None = None):
    """Sequences over 10 token ids with every 4th position masked, and random sentence-order labels; batches
    of 8 length-grouped, or of `batch_size` in order."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 15, (rows, length), generator=generator)
    masked = torch.zeros(rows, length, dtype=torch.bool)
    masked[:, 1::4] = True
    examples = [{"input_ids": torch.where(masked[i], MASK_ID, ids[i]), "attention_mask": torch.ones(length).long(),
                 "token_type_ids": torch.zeros(length).long(), "labels": torch.where(masked[i], ids[i], -100),
                 "sentence_order_label": torch.randint(0, 2, (), generator=generator)} for i in range(rows)]
    sampler = (LengthGroupedBatchSampler(torch.full((rows,), length), batch_size=8, seed=0) if batch_size is None
               else InOrder(rows, batch_size))
    collate = lambda batch: {k: torch.stack([row[k] for row in batch]) for k in batch[0]}  # noqa: E731
    return DataLoader(examples, batch_sampler=sampler, collate_fn=collate)


def test_fit_trains_the_pretraining_objective_with_the_same_loop(tmp_path):
    model = AlbertForPreTraining.from_config(tiny_config())
    cfg = LoopConfig(output_dir=str(tmp_path), max_steps=40, learning_rate=5e-3, warmup_proportion=0.0,
                     logging_steps=10, eval_steps=20, save_steps=20, progress=False, device="cpu")
    evaluations = []
    summary = fit(model, toy_mlm_batches(), cfg, DistContext(), torch.device("cpu"), RunLog(tmp_path, enabled=True),
                  write_model_files=lambda trained, directory: trained.save_pretrained(directory),
                  evaluate=lambda: evaluations.append(1) or {"calls": len(evaluations)})
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["type"] == "train"]
    # from ln(120) + ln(2) towards the 10 ids' entropy: the masked tokens' distribution is learned
    assert summary["step"] == 40 and losses[0] > losses[-1] + 1.0
    assert [r["eval_calls"] for r in log if r["type"] == "eval"] == [1, 2]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-40"]
    assert (tmp_path / "checkpoint-40" / "model.safetensors").is_file()


def toy_fit(output_dir, model=None, batch_size: int | None = None, evaluate=None, ranking=None, resume_from=None,
            **settings):
    """fit() on the toy corpus with a tiny pretraining model (no dropout: runs compare exactly)."""
    model = model or AlbertForPreTraining.from_config(tiny_config(classifier_dropout_prob=0.0))
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    values = dict(output_dir=str(output_dir), max_steps=12, learning_rate=5e-3, warmup_proportion=0.0,
                  logging_steps=4, save_steps=4, progress=False, device="cpu", report_to="none")
    cfg = LoopConfig(**{**values, **settings})
    summary = fit(model, toy_mlm_batches(batch_size=batch_size), cfg, DistContext(), torch.device("cpu"),
                  RunLog(Path(output_dir), enabled=True, tensorboard=False),
                  write_model_files=lambda trained, directory: trained.save_pretrained(directory),
                  evaluate=evaluate, ranking=ranking, resume_from=resume_from)
    return model, summary


def test_fit_resumes_exactly_from_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    full, _ = toy_fit(tmp_path / "full")
    torch.manual_seed(0)
    toy_fit(tmp_path / "part", max_steps=12)
    shutil.rmtree(tmp_path / "part" / "checkpoint-12")
    torch.manual_seed(1)  # the resumed run's own init is overwritten by the checkpoint
    resumed, summary = toy_fit(tmp_path / "part", resume_from=tmp_path / "part" / "checkpoint-8")
    assert summary["step"] == 12
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_accumulating_two_half_batches_steps_as_one_whole_batch(tmp_path):
    torch.manual_seed(0)
    whole, _ = toy_fit(tmp_path / "whole", batch_size=8, max_steps=6)
    torch.manual_seed(0)
    halves, _ = toy_fit(tmp_path / "halves", batch_size=4, gradient_accumulation_steps=2, max_steps=6)
    for (name, a), b in zip(whole.state_dict().items(), halves.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name


def test_a_nan_loss_stops_training_naming_the_step_and_the_last_good_checkpoint(tmp_path):
    class Diverging(AlbertForPreTraining):
        calls = 0

        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            Diverging.calls += 1
            if Diverging.calls == 7:
                out.loss = out.loss * float("nan")
            return out

    model = Diverging.from_config(tiny_config())
    with pytest.raises(TrainingDiverged, match=r"at step 7\b.*Last good checkpoint: .*checkpoint-4"):
        toy_fit(tmp_path, model=model)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-4"]  # nothing after step 7 kept


def test_early_stopping_stops_after_patience_evaluations_without_a_better_one(tmp_path):
    scores = iter([0.5, 0.9, 0.8, 0.7, 0.95, 0.99])  # best at the second evaluation, then two worse ones
    _, summary = toy_fit(tmp_path, evaluate=lambda: {"score": next(scores)}, ranking=Ranking("score"),
                         eval_steps=2, early_stopping_patience=2)
    assert summary["step"] == 8 and summary["best_step"] == 4 and summary["best_metric"] == 0.9


def test_bf16_training_learns_as_fp32_does_with_fp32_weights(tmp_path):
    torch.manual_seed(0)
    fp32, fp32_summary = toy_fit(tmp_path / "fp32", max_steps=30)
    torch.manual_seed(0)
    bf16, bf16_summary = toy_fit(tmp_path / "bf16", max_steps=30, bf16=True)  # emulated on CPUs without bf16 units
    assert all(p.dtype == torch.float32 for p in bf16.parameters())  # autocast: the weights stay fp32
    losses = {name: [json.loads(line)["loss"] for line in (tmp_path / name / "train_log.jsonl").read_text()
                     .splitlines() if '"train"' in line] for name in ("fp32", "bf16")}
    assert losses["bf16"][-1] < losses["bf16"][0] - 1.0  # it learns
    assert abs(losses["bf16"][-1] - losses["fp32"][-1]) < 0.1 * losses["fp32"][-1]  # and about as fp32 does


def test_fp16_overflow_steps_are_skipped_and_counted(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_forward = AlbertForPreTraining.forward

    def overflow_on_the_third_call(self, *args, **kwargs):
        out = real_forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            out.loss = out.loss * float("inf")
        return out

    monkeypatch.setattr(AlbertForPreTraining, "forward", overflow_on_the_third_call)
    toy_fit(tmp_path, fp16=True, max_steps=6, logging_steps=3, batch_size=8)  # the loop's own fp16, on the CPU
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in log] == [1, 1]  # counted once, and training went on to step 6
    assert log[-1]["step"] == 6


def test_fp16_on_a_cpu_says_so_once_and_trains_in_fp32(tiny_task_dir, tiny_model_dir, tmp_path, caplog):
    run(TrainConfig(data_dir=str(tiny_task_dir), model_name_or_path=str(tiny_model_dir), output_dir=str(tmp_path),
                    from_scratch=True, fp16=True, fp16_opt_level="O2", max_steps=2, batch_size=16, max_seq_length=48,
                    do_eval=False, progress=False, device="cpu", report_to="none"))
    warnings = [r.getMessage() for r in caplog.records if "--fp16 on a CPU" in r.getMessage()]
    assert len(warnings) == 1 and "trains in fp32" in warnings[0]
    assert json.loads((tmp_path / "train_config.json").read_text())["fp16"] is False  # what ran


def test_bf16_advice_says_what_bf16_does_for_this_size_on_this_cpu():
    from albert_pytorch.device import Precision
    from albert_pytorch.loop import bf16_advice

    cpu, amx, avx2 = torch.device("cpu"), ["avx512f", "amx_bf16"], ["avx2"]
    bf16, fp32 = Precision(torch.bfloat16), Precision()
    assert "faster" in bf16_advice(fp32, cpu, 768, amx) and "amx_bf16" in bf16_advice(fp32, cpu, 768, amx)
    assert bf16_advice(fp32, cpu, 128, amx) is None  # nothing to gain: nothing said
    assert "gains nothing" in bf16_advice(bf16, cpu, 128, amx)
    assert "emulated" in bf16_advice(bf16, cpu, 768, avx2)
    assert bf16_advice(fp32, cpu, 768, avx2) is None and bf16_advice(bf16, torch.device("cuda"), 768, []) is None


def test_without_a_progress_bar_each_log_step_prints_a_line(tmp_path, caplog):
    caplog.set_level("INFO", logger="albert_pytorch")
    toy_fit(tmp_path, max_steps=8, logging_steps=4, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ") and "eta=" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["step 4/8", "step 8/8"]
    assert all(re.search(r"loss=\d+\.\d{4} learning_rate=\S+ epoch=\d+\.\d\d samples_per_second=[\d.]+ eta=\d+m\d\ds$",
                         line) for line in lines), lines
    assert lines[-1].endswith("eta=0m00s")
