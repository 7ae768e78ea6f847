"""Output folders that cannot lose or mix runs: refusal, clearing, permissions, a full disk, exit codes."""

import json
import stat
import subprocess

import pytest
import torch
from conftest import child_env, train_command

from albert_pytorch import checkpoint
from albert_pytorch.checkpoint import CheckpointError
from albert_pytorch.cli import main
from albert_pytorch.config import UsageError
from albert_pytorch.train import TrainConfig, run


def tiny_run(tiny_task_dir, tiny_model_dir, output_dir, **overrides) -> TrainConfig:
    values = dict(data_dir=str(tiny_task_dir), model_name_or_path=str(tiny_model_dir), output_dir=str(output_dir),
                  from_scratch=True, learning_rate=2e-3, batch_size=16, max_seq_length=48, max_steps=4, save_steps=2,
                  logging_steps=2, do_eval=False, progress=False, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


def log_steps(output_dir):
    return [json.loads(line)["step"] for line in (output_dir / "train_log.jsonl").read_text().splitlines()]


def test_a_second_run_into_a_used_folder_is_refused_until_overwrite_clears_it(tiny_task_dir, tiny_model_dir,
                                                                               tmp_path):
    run(tiny_run(tiny_task_dir, tiny_model_dir, tmp_path, max_steps=6))
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    with pytest.raises(UsageError, match="is not empty.*--overwrite_output_dir.*--resume_from_checkpoint"):
        run(tiny_run(tiny_task_dir, tiny_model_dir, tmp_path))
    run(tiny_run(tiny_task_dir, tiny_model_dir, tmp_path, overwrite_output_dir=True))
    # nothing of the first run is left to mix with the second: its log lines and its step-6 checkpoint
    assert log_steps(tmp_path) == [2, 4]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert len(list((tmp_path / "tensorboard").iterdir())) == 1


def test_overwrite_never_clears_a_folder_that_holds_no_run(tiny_task_dir, tiny_model_dir, tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(UsageError, match="holds no earlier run"):
        run(tiny_run(tiny_task_dir, tiny_model_dir, tmp_path, overwrite_output_dir=True))
    assert (tmp_path / "thesis.tex").read_text() == "years of work"
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is a file"):
        run(tiny_run(tiny_task_dir, tiny_model_dir, tmp_path / "file"))


def test_outputs_have_the_usual_permissions_under_the_umask(tiny_task_dir, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    command = " ".join(train_command(tiny_task_dir, tiny_model_dir, out)).replace("--max_steps 40", "--max_steps 2")
    subprocess.run(["bash", "-c", f"umask 027 && {command}"], check=True, env=child_env(tmp_path),
                   capture_output=True)
    for path in (out / "model.safetensors", out / "config.json", out / "checkpoint-2" / "model.safetensors",
                 out / "checkpoint-2" / "checkpoint.json", out / "train_log.jsonl"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
    assert stat.S_IMODE((out / "checkpoint-2").stat().st_mode) == 0o750


def test_a_full_disk_while_saving_names_the_last_good_checkpoint_which_resumes(tiny_task_dir, tiny_model_dir,
                                                                               tmp_path, monkeypatch):
    real_save, calls = torch.save, {"n": 0}

    def save_on_a_full_disk(obj, path):
        calls["n"] += 1
        if calls["n"] == 2:  # what torch.save raises when the disk fills up mid-write
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        real_save(obj, path)

    monkeypatch.setattr(checkpoint.torch, "save", save_on_a_full_disk)
    cfg = tiny_run(tiny_task_dir, tiny_model_dir, tmp_path, max_steps=6)
    with pytest.raises(CheckpointError, match=r"cannot write .*checkpoint-4.*last good checkpoint is .*checkpoint-2"):
        run(cfg)
    assert [p.name for p in tmp_path.iterdir() if "checkpoint" in p.name] == ["checkpoint-2"]  # no half copy
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    cfg.resume_from_checkpoint = "latest"
    run(cfg)
    assert log_steps(tmp_path) == [2, 4, 6]


def test_exit_codes_and_debug(tiny_task_dir, tiny_model_dir, tmp_path):
    bad = tmp_path / "SST-2"
    bad.mkdir()
    (bad / "train.tsv").write_text("sentence\tlabel\na fine film .\t7\n")
    (bad / "dev.tsv").write_text("sentence\tlabel\na fine film .\t1\n")
    args = ["train", "--data_dir", str(bad), "--model_name_or_path", str(tiny_model_dir), "--from_scratch",
            "--output_dir", str(tmp_path / "out"), "--device", "cpu", "--max_steps", "1"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 1  # a failure while running (a bad row), not a bad argument
    with pytest.raises(ValueError, match=r"train.tsv:2: label '7'"):
        main([*args, "--debug", "--overwrite_output_dir"])


def test_results_in_transformers_shapes(tiny_task_dir, tiny_model_dir, tmp_path):
    run(tiny_run(tiny_task_dir, tiny_model_dir, tmp_path, do_eval=True, max_steps=6, eval_steps=3))
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert {"epoch", "eval_loss", "eval_accuracy", "eval_samples", "eval_per_class", "eval_confusion_matrix"} <= set(
        results)
    assert results["eval_samples"] == 120 and sum(map(sum, results["eval_confusion_matrix"])) == 120
    everything = json.loads((tmp_path / "all_results.json").read_text())
    assert everything["train_samples"] == 400 and everything["eval_accuracy"] == results["eval_accuracy"]
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    evals = [(r["step"], bool(r.get("final"))) for r in state["log_history"] if r["type"] == "eval"]
    assert state["global_step"] == 6 and evals == [(3, False), (6, False), (6, True)]
    assert state["best_global_step"] in (3, 6) and state["best_metric"] is not None


def test_best_checkpoint_is_kept_loaded_and_early_stopping_stops(tiny_task_dir, tiny_model_dir, tmp_path):
    # learning rate 0 after a good start: later evaluations cannot beat the first, which must survive pruning
    cfg = tiny_run(tiny_task_dir, tiny_model_dir, tmp_path, do_eval=True, max_steps=40, eval_steps=2, save_steps=0,
                   save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="eval_loss",
                   early_stopping_patience=3, learning_rate=5e-2, warmup_proportion=0.0, logging_steps=2)
    summary = run(cfg)
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    evals = [(r["step"], r["eval_loss"]) for r in state["log_history"] if r["type"] == "eval" and not r.get("final")]
    best_step, best_loss = min(evals, key=lambda e: e[1])
    assert state["best_global_step"] == best_step and state["best_metric"] == best_loss
    assert summary["step"] == evals[-1][0] < 40  # stopped early
    assert evals[-1][0] - best_step == 3 * 2  # three evaluations without improvement
    assert (tmp_path / f"checkpoint-{best_step}").is_dir()  # the best is never pruned
    final = json.loads((tmp_path / "eval_results.json").read_text())
    assert final["eval_loss"] == pytest.approx(best_loss, abs=1e-6)  # the final model is the best one


def test_epoch_strategies_and_no_tensorboard(tiny_task_dir, tiny_model_dir, tmp_path):
    # 400 rows in batches of 16: 25 steps an epoch
    run(tiny_run(tiny_task_dir, tiny_model_dir, tmp_path, do_eval=True, max_steps=-1, num_train_epochs=2,
                 eval_strategy="epoch", save_strategy="epoch", save_total_limit=5, report_to="none"))
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert [r["step"] for r in state["log_history"] if r["type"] == "eval" and not r.get("final")] == [25, 50]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-25", "checkpoint-50"]
    assert not (tmp_path / "tensorboard").exists()
