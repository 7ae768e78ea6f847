"""The training job end to end at tiny sizes: outputs, transformers interop, exact resumption."""

import dataclasses
import json
import logging
import random
import re
import shutil
import signal
import subprocess
import time

import pytest
import torch
import transformers
from helpers import (
    assert_resume_matches_uninterrupted,
    child_env,
    make_loss_overflow_at,
    max_weight_difference,
    train_command,
)

from albert_pytorch import AlbertForSequenceClassification
from albert_pytorch.checkpoint import verify
from albert_pytorch.loop import TrainingDiverged
from albert_pytorch.train import TrainConfig, run


def tiny_run(tiny_task_dir, tiny_model_dir, output_dir, **overrides) -> TrainConfig:
    values = dict(data_dir=str(tiny_task_dir), model_name_or_path=str(tiny_model_dir), output_dir=str(output_dir),
                  from_scratch=True, learning_rate=2e-3, batch_size=16, max_seq_length=48, num_train_epochs=2,
                  logging_steps=5, progress=False, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


def test_embedded_sample_learns_and_writes_every_output(tmp_path):
    summary = run(TrainConfig(output_dir=str(tmp_path), learning_rate=2e-3, num_train_epochs=10, batch_size=16,
                              max_seq_length=64, logging_steps=10, progress=False, device="cpu"))
    assert summary["acc"] > 0.8  # 120 balanced-ish dev sentences: chance is about 0.5
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["eval_samples"] == 120 and results["eval_accuracy"] == summary["acc"]
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert {"step", "epoch", "loss", "learning_rate", "samples_per_second"} <= set(log[0])
    assert (tmp_path / "training_curves.png").stat().st_size > 1000
    assert list((tmp_path / "tensorboard").iterdir())
    # the output directory is a transformers model directory with the same behaviour
    ours = AlbertForSequenceClassification.from_pretrained(tmp_path).eval()
    theirs = transformers.AlbertForSequenceClassification.from_pretrained(tmp_path).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    batch = tokenizer(["the film is a joy to watch .", "the plot is dull and lifeless ."], padding=True,
                      return_token_type_ids=True, return_tensors="pt")
    with torch.no_grad():
        a = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
        b = theirs(**batch).logits
    assert (a - b).abs().max() < 1e-5
    assert theirs.config.id2label == {0: "negative", 1: "positive"}  # as the datasets library names them


def test_resume_from_checkpoint_matches_uninterrupted_run(tiny_task_dir, tiny_model_dir, tmp_path):
    assert_resume_matches_uninterrupted(run, lambda out: tiny_run(
        tiny_task_dir, tiny_model_dir, out, max_steps=12, save_steps=4, do_eval=False, gradient_accumulation_steps=2),
        tmp_path)


@pytest.mark.parametrize("change, difference", [
    ({"max_steps": 12}, "settings.max_steps: 8 in the checkpoint, 12 now"),
    ({"max_train_samples": 300}, "train_data: "),
    ({"config_overrides": "intermediate_size=64"}, "model.intermediate_size: 128 in the checkpoint, 64 now"),
])
def test_resuming_another_runs_checkpoint_is_refused_with_the_difference(tiny_task_dir, tiny_model_dir, tmp_path,
                                                                         change, difference):
    from albert_pytorch.errors import UsageError

    cfg = tiny_run(tiny_task_dir, tiny_model_dir, tmp_path, max_steps=8, save_steps=4, do_eval=False)
    run(cfg)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    other = dataclasses.replace(cfg, resume_from_checkpoint="latest", **change)
    with pytest.raises(UsageError, match=rf"checkpoint-8 belongs to another run.*{re.escape(difference)}"):
        run(other)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_own_data_relabelled_is_another_run(tmp_path, tiny_model_dir):
    from albert_pytorch.errors import UsageError

    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"sentence number {i},{'ab'[i % 2]}\n" for i in range(40)))
    cfg = TrainConfig(train_file=str(train), model_name_or_path=str(tiny_model_dir), from_scratch=True,
                      output_dir=str(tmp_path / "out"), max_steps=4, save_steps=2, batch_size=8, max_seq_length=32,
                      do_eval=False, progress=False, device="cpu", report_to="none")
    run(cfg)
    relabelled = dataclasses.replace(cfg, label_names="b,a", resume_from_checkpoint="latest")
    with pytest.raises(UsageError, match=re.escape('labels: ["a", "b"] in the checkpoint, ["b", "a"] now')):
        run(relabelled)


def test_damaged_checkpoint_is_reported_and_the_previous_one_used(tiny_task_dir, tiny_model_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cfg = tiny_run(tiny_task_dir, tiny_model_dir, tmp_path, max_steps=8, save_steps=4, do_eval=False)
    run(cfg)
    weights = tmp_path / "checkpoint-8" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, as by a full disk
    cfg.resume_from_checkpoint = "latest"
    run(cfg)
    assert "checkpoint-8" in caplog.text and "damaged" in caplog.text and "resumed from" in caplog.text
    assert "checkpoint-4 at step 4" in caplog.text
    assert verify(tmp_path / "checkpoint-8")["step"] == 8  # saved again, whole


def test_nan_loss_stops_with_step_and_last_checkpoint(tiny_task_dir, tiny_model_dir, tmp_path, monkeypatch):
    make_loss_overflow_at(monkeypatch, 7)
    cfg = tiny_run(tiny_task_dir, tiny_model_dir, tmp_path, max_steps=30, save_steps=4, do_eval=False,
                   logging_steps=10)
    with pytest.raises(TrainingDiverged, match=r"NaN or infinite at step 7\b.*Last good checkpoint: .*checkpoint-4"):
        run(cfg)
    assert not (tmp_path / "checkpoint-8").exists()  # nothing trained on garbage was saved


def test_max_seq_length_beyond_positions_is_refused(tiny_task_dir, tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="exceeds the model's max_position_embeddings"):
        run(tiny_run(tiny_task_dir, tiny_model_dir, tmp_path, max_seq_length=4096))


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_matches_uninterrupted(tiny_task_dir, tiny_model_dir, tmp_path):
    env = child_env(tmp_path)
    subprocess.run(train_command(tiny_task_dir, tiny_model_dir, tmp_path / "full"), check=True, env=env,
                   capture_output=True)
    target = tmp_path / "killed"
    rng = random.Random(1234)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(train_command(tiny_task_dir, tiny_model_dir, target, "--resume_from_checkpoint",
                                               "latest"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not list(target.glob("checkpoint-*")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    subprocess.run(train_command(tiny_task_dir, tiny_model_dir, target, "--resume_from_checkpoint", "latest"),
                   check=True, env=env, capture_output=True)
    assert kills >= 1
    assert max_weight_difference(tmp_path / "full", target) < 1e-6


def test_do_predict_writes_glue_submission_files(tiny_task_dir, tiny_model_dir, tmp_path):
    task_dir = tmp_path / "SST-2"
    shutil.copytree(tiny_task_dir, task_dir)
    (task_dir / "test.tsv").write_text("index\tsentence\n0\tthe film is a joy to watch .\n1\ta dull movie .\n")
    run(tiny_run(task_dir, tiny_model_dir, tmp_path / "out", max_steps=3, do_eval=False, do_predict=True))
    lines = (tmp_path / "out" / "SST-2.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and [line.split("\t")[0] for line in lines[1:]] == ["0", "1"]
    assert all(line.split("\t")[1] in ("0", "1") for line in lines[1:])


def test_attention_follows_the_precision_unless_the_run_names_it(tiny_task_dir, tiny_model_dir, tmp_path):
    from helpers import tiny_run

    for name, settings, expected in (("fp32", {}, "sdpa"), ("bf16", {"bf16": True}, "eager"),
                                     ("named", {"bf16": True, "attn_implementation": "sdpa"}, "sdpa")):
        out = tmp_path / name
        run(tiny_run(tiny_task_dir, tiny_model_dir, out, max_steps=1, save_steps=0, **settings))
        assert json.loads((out / "config.json").read_text())["attn_implementation"] == expected
        assert json.loads((out / "train_config.json").read_text())["attn_implementation"] == expected


def test_the_gemm_row_split_is_measured_for_bf16_on_a_cpu_and_recorded(tiny_task_dir, tiny_model_dir, tmp_path):
    from helpers import tiny_run

    from albert_pytorch.gemm_rows import RowSplit

    recorded = {}
    for name, settings in (("fp32", {}), ("bf16", {"bf16": True}), ("named", {"gemm_row_split": "32:4:1-9999"})):
        out = tmp_path / name
        run(tiny_run(tiny_task_dir, tiny_model_dir, out, max_steps=1, save_steps=0, **settings))
        recorded[name] = json.loads((out / "train_config.json").read_text())["gemm_row_split"]
    assert recorded["fp32"] == "off" and recorded["named"] == "32:4:1-9999"
    assert isinstance(recorded["bf16"], str)
    RowSplit.parse(recorded["bf16"])  # what this host measured: a window or none
