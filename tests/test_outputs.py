"""Output folders that cannot lose or mix runs: refusal, clearing, permissions, a full disk, exit codes."""

import contextlib
import json
import shutil
import stat
import subprocess

import pytest
from helpers import child_env, log_steps, make_loss_overflow_at, max_weight_difference, tiny_run, train_command

from albert_pytorch import checkpoint
from albert_pytorch.checkpoint import CheckpointError
from albert_pytorch.cli import main
from albert_pytorch.errors import UsageError
from albert_pytorch.loop import TrainingDiverged
from albert_pytorch.train import run


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
    with pytest.raises(UsageError, match="holds no earlier training run"):
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


def snapshot(folder):
    """Every file under `folder` with its contents: equal snapshots mean nothing was lost or changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*args) -> int:
    with pytest.raises(SystemExit) as done:
        main([*map(str, args), "--device", "cpu", "--no-progress"])
    return done.value.code


def tiny_cli_run(tiny_task_dir, tiny_model_dir, output_dir, *extra) -> list[str]:
    return ["train", "--data_dir", tiny_task_dir, "--model_name_or_path", tiny_model_dir, "--output_dir", output_dir,
            "--from_scratch", "--max_steps", "4", "--save_steps", "2", "--batch_size", "16", "--max_seq_length", "48",
            "--report_to", "none", *extra]


@pytest.mark.parametrize("typo", [("--data_dir", "no/such/SST-2"), ("--model_name_or_path", "no/such/model"),
                                  ("--config_overrides", "hiden_size=3"), ("--max_seq_length", "4096"),
                                  ("--resume_from_checkpoint", "no/such/checkpoint")])
def test_overwrite_with_a_mistyped_input_keeps_the_earlier_run(tiny_task_dir, tiny_model_dir, tmp_path, typo):
    out = tmp_path / "run"
    assert cli(*tiny_cli_run(tiny_task_dir, tiny_model_dir, out)) == 0
    before = snapshot(out)
    args = tiny_cli_run(tiny_task_dir, tiny_model_dir, out, "--overwrite_output_dir")
    flag, value = typo
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    assert cli(*args) == 2  # an argument error, found before the folder is touched
    assert snapshot(out) == before


def test_overwrite_replaces_only_what_a_run_writes(tiny_task_dir, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    assert cli(*tiny_cli_run(tiny_task_dir, tiny_model_dir, out, "--max_steps", "6")) == 0
    (out / "notes.md").write_text("what I tried")
    (out / "plots").mkdir()
    (out / "plots" / "mine.png").write_bytes(b"png")
    assert cli(*tiny_cli_run(tiny_task_dir, tiny_model_dir, out, "--overwrite_output_dir")) == 0
    assert (out / "notes.md").read_text() == "what I tried" and (out / "plots" / "mine.png").read_bytes() == b"png"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]  # not step 6's
    assert not (out / ".previous-run").exists()


def test_a_run_that_fails_before_saving_leaves_the_folder_as_it_found_it(tiny_task_dir, tiny_model_dir, tmp_path,
                                                                        monkeypatch):
    out = tmp_path / "run"
    run(tiny_run(tiny_task_dir, tiny_model_dir, out, report_to="none"))
    (out / "notes.md").write_text("mine")
    before = snapshot(out)
    make_loss_overflow_at(monkeypatch, 1)  # NaN at step 1, before the first checkpoint
    with pytest.raises(TrainingDiverged):
        run(tiny_run(tiny_task_dir, tiny_model_dir, out, overwrite_output_dir=True, report_to="none"))
    assert snapshot(out) == before  # the earlier run is back, nothing of the failed one is left
    fresh = tmp_path / "fresh"
    make_loss_overflow_at(monkeypatch, 1)
    with pytest.raises(TrainingDiverged):
        run(tiny_run(tiny_task_dir, tiny_model_dir, fresh))
    assert not fresh.exists()  # so the corrected rerun is not refused


def test_a_bad_row_fails_before_anything_is_written_and_the_fixed_rerun_runs(tiny_task_dir, tiny_model_dir, tmp_path):
    data = tmp_path / "SST-2"
    data.mkdir()
    rows = (tiny_task_dir / "train.tsv").read_text().splitlines()
    rows[51] = rows[51].rsplit("\t", 1)[0] + "\t7"  # line 52
    (data / "train.tsv").write_text("\n".join(rows) + "\n")
    shutil.copy(tiny_task_dir / "dev.tsv", data / "dev.tsv")
    out = tmp_path / "run"
    assert cli(*tiny_cli_run(data, tiny_model_dir, out)) == 1  # a data error, not an argument error
    assert not out.exists()
    shutil.copy(tiny_task_dir / "train.tsv", data / "train.tsv")
    assert cli(*tiny_cli_run(data, tiny_model_dir, out)) == 0


def test_an_evaluation_never_writes_into_a_training_runs_folder(tiny_task_dir, tiny_model_dir, tmp_path):
    trained = tmp_path / "trained"
    assert cli(*tiny_cli_run(tiny_task_dir, tiny_model_dir, trained)) == 0
    before = snapshot(trained)
    for extra in ([], ["--overwrite_output_dir"]):
        assert cli("train", "--do_eval", "--data_dir", tiny_task_dir, "--model_name_or_path", trained,
                   "--output_dir", trained, "--max_seq_length", "48", *extra) == 2
    assert snapshot(trained) == before
    evaluation = tmp_path / "eval"
    assert cli("train", "--do_eval", "--data_dir", tiny_task_dir, "--model_name_or_path", trained,
               "--output_dir", evaluation, "--max_seq_length", "48") == 0
    assert sorted(p.name for p in evaluation.iterdir()) == ["all_results.json", "eval_config.json",
                                                            "eval_results.json"]
    assert cli("train", "--do_eval", "--data_dir", tiny_task_dir, "--model_name_or_path", trained,
               "--output_dir", evaluation, "--max_seq_length", "48") == 2  # a used folder, as for training


def test_every_file_a_run_writes_is_one_overwrite_may_replace(tiny_task_dir, tiny_model_dir, tmp_path):
    from albert_pytorch.rundir import TRAINING, _is_output

    task_dir = tmp_path / "SST-2"
    shutil.copytree(tiny_task_dir, task_dir)
    (task_dir / "test.tsv").write_text("index\tsentence\n0\tthe film is a joy to watch .\n")
    out = tmp_path / "run"
    assert cli(*tiny_cli_run(task_dir, tiny_model_dir, out, "--do_predict", "--eval_steps", "2",
                             "--report_to", "tensorboard")) == 0
    assert {"SST-2.tsv", "tensorboard", "eval_results.json", "training_curves.png"} <= {p.name for p in out.iterdir()}
    assert [p.name for p in out.iterdir() if not _is_output(p.name, TRAINING)] == []


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 4 MB tmpfs (CI runs as root); skipped where mounting is not allowed."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_the_disk_after(monkeypatch, checkpoint_name: str, filler, leave: int = 0):
    """Fault injection: once `checkpoint_name` is saved, whatever else shares the disk takes all the room but
    `leave` bytes. Returns the real pruning function, to undo it."""
    real_prune = checkpoint._prune

    def prune_then_fill(output_dir, keep, protect):
        real_prune(output_dir, keep, protect)
        if (output_dir / checkpoint_name).is_dir() and not filler.exists():
            with open(filler, "wb", buffering=0) as handle:
                with contextlib.suppress(OSError):
                    while True:
                        handle.write(b"\0" * 65536)
                handle.truncate(max(0, handle.tell() - leave))

    monkeypatch.setattr(checkpoint, "_prune", prune_then_fill)
    return real_prune


def test_a_full_disk_while_saving_names_the_last_good_checkpoint_which_resumes(tiny_task_dir, tiny_model_dir,
                                                                               small_tmpfs, monkeypatch):
    filler = small_tmpfs / "filler"
    real_prune = fill_the_disk_after(monkeypatch, "checkpoint-2", filler)
    out = small_tmpfs / "run"
    cfg = tiny_run(tiny_task_dir, tiny_model_dir, out, max_steps=6, report_to="none")
    with pytest.raises(CheckpointError, match=r"cannot write .*checkpoint-4: No space left on device .*The last "
                                              r"good checkpoint is .*checkpoint-2") as failure:
        run(cfg)
    assert "inline_container" not in str(failure.value)  # the OS's words, not torch's internals
    assert [p.name for p in out.iterdir() if "checkpoint" in p.name] == ["checkpoint-2"]  # no half copy
    filler.unlink()  # room again
    monkeypatch.setattr(checkpoint, "_prune", real_prune)
    cfg.resume_from_checkpoint = "latest"
    run(cfg)
    assert log_steps(out) == [2, 4, 6]


def test_a_full_disk_while_saving_the_final_model_keeps_no_half_model_and_resumes(tiny_task_dir, tiny_model_dir,
                                                                                   small_tmpfs, monkeypatch):
    filler = small_tmpfs / "filler"
    real_prune = fill_the_disk_after(monkeypatch, "checkpoint-4", filler, leave=32768)  # the small JSON files fit
    out = small_tmpfs / "run"
    cfg = tiny_run(tiny_task_dir, tiny_model_dir, out, report_to="none")
    with pytest.raises(CheckpointError, match=r"cannot save the model in .*: No space left on device .*Its last "
                                              r"checkpoint, .*checkpoint-4, holds the trained weights"):
        run(cfg)
    assert not [p.name for p in out.iterdir() if p.name in ("config.json", "model.safetensors", "tokenizer.json",
                                                            "spiece.model") or p.name.startswith(".model-")]
    filler.unlink()
    monkeypatch.setattr(checkpoint, "_prune", real_prune)
    cfg.resume_from_checkpoint = "latest"
    run(cfg)
    json.loads((out / "tokenizer.json").read_text())  # whole
    assert max_weight_difference(out / "checkpoint-4", out) == 0
