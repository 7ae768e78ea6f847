"""Two CPU processes on gloo under torchrun: DDP training runs, and evaluation equals one process's."""

import json
import subprocess
import sys

import pytest
from conftest import child_env


def torchrun(nproc: int, tmp_path, *args, timeout: float = 240):
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
               "-m", "albert_pytorch", "train", *args]
    done = subprocess.run(command, env=child_env(tmp_path), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_ddp_training_then_exact_distributed_evaluation(tiny_task_dir, tiny_model_dir, tmp_path):
    common = ["--data_dir", str(tiny_task_dir), "--device", "cpu", "--max_seq_length", "48"]
    trained = tmp_path / "trained"
    torchrun(2, tmp_path, *common, "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(trained),
             "--from_scratch", "--do_train", "--learning_rate", "2e-3", "--batch_size", "8", "--max_steps", "20")
    assert (trained / "model.safetensors").is_file()
    results = {}
    for nproc in (1, 2):
        out = tmp_path / f"eval{nproc}"
        # batch 7 over 120 rows and 2 ranks: partial batches on both ranks, nothing may be dropped or repeated
        torchrun(nproc, tmp_path, *common, "--model_name_or_path", str(trained), "--output_dir", str(out), "--do_eval",
                 "--eval_batch_size", "7")
        results[nproc] = json.loads((out / "eval_results.json").read_text())
    assert results[1]["eval_samples"] == results[2]["eval_samples"] == 120
    assert results[1] == results[2]


def test_torchrun_store_keys_are_kept_apart_per_restart(monkeypatch, caplog):
    import datetime

    import torch.distributed as dist

    from albert_pytorch.device import _restart_safe_store

    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "3")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(server.port))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    timeout = datetime.timedelta(seconds=10)
    _restart_safe_store(2, timeout).set("rank_1", "address")
    assert server.get("albert_pytorch/attempt_1/rank_1") == b"address"
    assert _restart_safe_store(4, timeout) is None  # two nodes: restart counts may differ, so no prefix
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in caplog.text


@pytest.mark.slow
def test_ddp_pretraining_splits_the_pairs_and_evaluates_each_once(tmp_path, tiny_tokenizer_dir):
    from conftest import TEXTS

    documents = ["\n".join(TEXTS[(d * 3 + i) % 10] for i in range(d % 4 + 1)) for d in range(80)]
    (tmp_path / "train.txt").write_text("\n\n".join(documents[:60]) + "\n")
    (tmp_path / "heldout.txt").write_text("\n\n".join(documents[60:]) + "\n")
    common = ["--train_files", str(tmp_path / "train.txt"), "--validation_files", str(tmp_path / "heldout.txt"),
              "--tokenizer_name", str(tiny_tokenizer_dir), "--from_scratch", "--max_seq_length", "48",
              "--config_overrides", "embedding_size=16,hidden_size=32,num_hidden_layers=2,num_attention_heads=4,"
              "intermediate_size=37,max_position_embeddings=64", "--batch_size", "4", "--eval_batch_size", "3",
              "--max_steps", "6", "--device", "cpu", "--report_to", "none"]
    results = {}
    for nproc in (1, 2):
        out = tmp_path / f"pretrained{nproc}"
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
                   "-m", "albert_pytorch", "pretrain", *common, "--output_dir", str(out)]
        done = subprocess.run(command, env=child_env(tmp_path), capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        results[nproc] = json.loads((out / "all_results.json").read_text())
        assert (out / "model.safetensors").is_file()
    # every held-out pair is scored exactly once however many ranks share the evaluation
    assert results[1]["eval_num_examples"] == results[2]["eval_num_examples"] > 0
