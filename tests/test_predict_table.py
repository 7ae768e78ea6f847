"""predict --input/--output: a table scored as a stream, its columns kept, written in parts, resumed exactly."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import TEXTS, SignalsItself, child_env

from albert_pytorch.cli import main
from albert_pytorch.deploy.predict import predict
from albert_pytorch.rundir import FolderLock


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_back(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="," if path.suffix == ".csv" else "\t"))


def predict_cli(model: Path, *args: str) -> int:
    with pytest.raises(SystemExit) as done:
        main(["predict", "--model_dir", str(model), "--quiet", *map(str, args)])
    return done.value.code


def sentences(count: int) -> list[str]:
    return [f"{TEXTS[i % len(TEXTS)]} {i}" for i in range(count)]


def test_rows_come_back_in_order_with_their_columns_and_score_as_predict(trained_model, tmp_path):
    texts = sentences(60)
    table = write_csv(tmp_path / "in.csv", [{"id": f"r{i}", "sentence": t, "date": "2026-12-02"}
                                            for i, t in enumerate(texts)])
    expected = list(predict(trained_model, [(t, None) for t in texts]))
    for suffix in (".jsonl", ".csv", ".tsv", ".parquet"):
        out = tmp_path / f"out{suffix}"
        assert predict_cli(trained_model, "--input", table, "--output", out, "--chunk_rows", 16) == 0
        rows = read_back(out)
        assert [r["id"] for r in rows] == [f"r{i}" for i in range(60)] and all(r["date"] == "2026-12-02" for r in rows)
        assert list(rows[0]) == ["id", "sentence", "date", "label", "score", "probability_negative",
                                 "probability_positive"]
        for row, want in zip(rows, expected, strict=True):
            assert row["sentence"] == want["text"] and row["label"] == want["label"]
            for label, share in want["probabilities"].items():
                assert abs(float(row[f"probability_{label}"]) - share) < 1e-6
            assert float(row["score"]) == max(float(row["probability_negative"]), float(row["probability_positive"]))
        assert not out.with_name(out.name + ".parts").exists()
    whole = tmp_path / "whole.jsonl"  # the chunking changes no row, and no score beyond float rounding
    assert predict_cli(trained_model, "--input", table, "--output", whole) == 0
    for row, chunked in zip(read_back(whole), read_back(tmp_path / "out.jsonl"), strict=True):
        assert list(row) == list(chunked)
        for key, value in row.items():
            scored = key == "score" or key.startswith("probability_")
            assert abs(value - chunked[key]) < 1e-6 if scored else value == chunked[key], key


def test_a_folder_a_glob_and_plain_text_read_as_one_table(trained_model, tmp_path, capsys):
    folder = tmp_path / "tables"
    folder.mkdir()
    write_csv(folder / "a.csv", [{"sentence": t, "label": "1"} for t in sentences(3)])
    write_csv(folder / "b.csv", [{"sentence": t, "label": "0"} for t in sentences(5)[3:]])
    for given in (folder, folder / "*.csv"):
        out = tmp_path / "out.jsonl"
        assert predict_cli(trained_model, "--input", given, "--output", out, "--overwrite") == 0
        rows = read_back(out)
        # the input's own label comes back beside the prediction's
        assert [r["sentence"] for r in rows] == sentences(5) and [r["label_input"] for r in rows] == list("11100")
    lines = tmp_path / "lines.txt"
    lines.write_text("a joy to watch .\n\nwarm and funny\tand smart\n")
    assert predict_cli(trained_model, "--input", lines) == 0  # JSON lines on stdout
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    single, pair = predict(trained_model, [("a joy to watch .", None), ("warm and funny", "and smart")])
    assert [r["text"] for r in printed] == ["a joy to watch .", "warm and funny\tand smart"]
    assert abs(printed[1]["probability_positive"] - pair["probabilities"]["positive"]) < 1e-6
    assert abs(printed[0]["probability_positive"] - single["probabilities"]["positive"]) < 1e-6


def test_a_regression_model_scores_pairs_of_a_table_as_predict_does(stsb_regressor, tmp_path):
    pairs = [("a kettle boils", "water boils"), ("a man plays a guitar", "the stock market fell")]
    table = write_csv(tmp_path / "pairs.csv", [{"sentence1": a, "sentence2": b} for a, b in pairs])
    out = tmp_path / "scored.parquet"
    # sentence1/sentence2 are found as training finds them
    assert predict_cli(stsb_regressor, "--input", table, "--output", out) == 0
    rows = read_back(out)
    assert list(rows[0]) == ["sentence1", "sentence2", "score"]
    expected = [r["score"] for r in predict(stsb_regressor, pairs)]
    assert all(abs(r["score"] - e) < 1e-6 for r, e in zip(rows, expected, strict=True))


def test_a_bad_row_stops_the_run_naming_it_or_goes_to_rejected(trained_model, tmp_path, caplog):
    rows = [{"id": str(i), "sentence": t} for i, t in enumerate(sentences(10))]
    rows[2]["sentence"] = "   "
    table = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "out.csv"
    assert predict_cli(trained_model, "--input", table, "--output", out) == 1
    assert f"{table}:4: column 'sentence' is empty" in caplog.text  # line 4: the header is line 1
    assert not out.exists() and not (tmp_path / "out.csv.parts").exists()  # a failed run leaves nothing
    assert predict_cli(trained_model, "--input", table, "--output", out, "--skip_bad_rows", "--chunk_rows", 4) == 0
    assert [r["id"] for r in read_back(out)] == [str(i) for i in range(10) if i != 2]
    (rejected,) = read_back(tmp_path / "out.csv.rejected.jsonl")
    assert rejected["line"] == 4 and "is empty" in rejected["reason"] and rejected["row"]["id"] == "2"
    assert "1 rejected" in caplog.text


def test_refusals_change_nothing(trained_model, tmp_path, caplog):
    table = write_csv(tmp_path / "in.csv", [{"sentence": t} for t in sentences(8)])
    out = tmp_path / "out.jsonl"
    out.write_text("an earlier result\n")
    assert predict_cli(trained_model, "--input", table, "--output", out) == 2
    assert "exists; --overwrite replaces it" in caplog.text and out.read_text() == "an earlier result\n"
    assert not (tmp_path / "out.jsonl.parts").exists()
    assert predict_cli(trained_model, "--input", table, "--output", out, "--resume") == 2
    assert "this one has finished" in caplog.text
    parts = tmp_path / "out.jsonl.parts"
    parts.mkdir()
    with FolderLock(parts):  # another run writing there now
        assert predict_cli(trained_model, "--input", table, "--output", out, "--overwrite") == 2
    assert f"--output {out} is in use by another run" in caplog.text and out.read_text() == "an earlier result\n"
    assert predict_cli(trained_model, "--input", table, "--output", out) == 2  # the parts of an unfinished run
    assert "continue it with --resume, or start again with --overwrite" in caplog.text
    assert predict_cli(trained_model, "--input", table, "--output", out, "--overwrite") == 0
    assert len(read_back(out)) == 8 and not parts.exists()
    assert predict_cli(trained_model, "--input", tmp_path / "nothing-*.csv", "--output", tmp_path / "x.csv") == 2
    assert "no such file or folder, and no file matches it" in caplog.text


def _started(command: list[str], tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen(command, env=child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_parts(parts: Path, count: int, process: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while len(list(parts.glob("part-*"))) < count and time.time() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)


@pytest.mark.parametrize("suffix, stop", [(".jsonl", signal.SIGKILL), (".parquet", signal.SIGINT)])
def test_a_stopped_run_resumes_to_what_an_uninterrupted_run_writes(trained_model, tmp_path, suffix, stop):
    table = write_csv(tmp_path / "in.csv", [{"id": str(i), "sentence": t} for i, t in enumerate(sentences(4000))])
    reference = tmp_path / f"reference{suffix}"
    assert predict_cli(trained_model, "--input", table, "--output", reference, "--chunk_rows", 50) == 0
    out = tmp_path / f"out{suffix}"
    command = [sys.executable, "-m", "albert_pytorch", "predict", "--model_dir", str(trained_model), "--input",
               str(table), "--output", str(out), "--chunk_rows", "50", "--quiet"]
    process = _started(command, tmp_path)
    parts = tmp_path / f"out{suffix}.parts"
    _wait_for_parts(parts, 3, process)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == (-signal.SIGKILL if stop == signal.SIGKILL else 130)
    if stop == signal.SIGINT:
        assert "interrupted" in stderr and "--resume continues after them" in stderr
    assert not out.exists() and len(list(parts.glob("part-*"))) >= 3
    resumed = subprocess.run(command + ["--resume"], env=child_env(tmp_path), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "already scored by the stopped run" in resumed.stderr
    if suffix == ".parquet":
        assert pq.read_table(out).equals(pq.read_table(reference))
    else:
        assert out.read_bytes() == reference.read_bytes()
    assert not parts.exists()


def test_a_ctrl_c_python_dropped_stops_the_run_after_that_chunk_keeping_it(trained_model, tmp_path, monkeypatch,
                                                                           caplog, own_signal_handlers, dropped):
    from albert_pytorch.deploy import table as table_job

    table = write_csv(tmp_path / "in.csv", [{"sentence": t} for t in sentences(40)])
    scored = []

    def chunk_dropping_a_ctrl_c_at_the_second(*args):
        scored.append(1)
        if len(scored) == 2:
            SignalsItself(signal.SIGINT)
        return score_chunk(*args)

    score_chunk = table_job._score_chunk
    monkeypatch.setattr(table_job, "_score_chunk", chunk_dropping_a_ctrl_c_at_the_second)
    out = tmp_path / "out.jsonl"
    assert predict_cli(trained_model, "--input", table, "--output", out, "--chunk_rows", 5) == 130
    assert dropped == [KeyboardInterrupt] and len(scored) == 2
    assert "2 finished part(s) of 5 rows each are kept" in caplog.text and not out.exists()


def test_resuming_with_other_inputs_is_refused(trained_model, tmp_path, caplog):
    table = write_csv(tmp_path / "in.csv", [{"sentence": t} for t in sentences(20)])
    out = tmp_path / "out.jsonl"
    assert predict_cli(trained_model, "--input", table, "--output", out, "--chunk_rows", 5) == 0
    parts = tmp_path / "out.jsonl.parts"
    parts.mkdir()  # an unfinished run's parts, made from the table as it was
    (parts / "manifest.json").write_text(json.dumps({"inputs": [], "columns": ["sentence", None]}))
    assert predict_cli(trained_model, "--input", table, "--output", out, "--chunk_rows", 5, "--resume") == 2
    assert "were made from other inputs" in caplog.text and parts.exists()


def _replica_pids() -> list[int]:
    """The processes of Ray Data's model replicas (their titles name the map stage)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"MapBatches(_Replica)" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds Ray's replica processes through /proc")
def test_ray_scores_as_the_local_job_does_and_survives_a_killed_replica(trained_model, tmp_path):
    texts = sentences(20_000)
    table = write_csv(tmp_path / "in.csv", [{"id": f"{i:05d}", "sentence": t} for i, t in enumerate(texts)])
    local = tmp_path / "local.jsonl"
    assert predict_cli(trained_model, "--input", table, "--output", local) == 0
    out = tmp_path / "ray.jsonl"
    # Ray's socket paths must stay short: its session folder goes under /tmp, not the test's long folder
    command = [sys.executable, "-m", "albert_pytorch", "predict", "--model_dir", str(trained_model), "--input",
               str(table), "--output", str(out), "--chunk_rows", "500", "--quiet", "--ray", "--num_replicas", "2",
               "--threads", "1"]
    process = subprocess.Popen(command, env=child_env(tmp_path, TMPDIR="/tmp"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_parts(tmp_path / "ray.jsonl.parts", 2, process)  # scoring is under way
        victims = _replica_pids()
        assert victims, "no replica process found"
        os.kill(victims[0], signal.SIGKILL)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)
    assert process.returncode == 0, stderr
    ours, theirs = read_back(out), read_back(local)
    assert [r["id"] for r in ours] == [f"{i:05d}" for i in range(20_000)]  # every row once, in input order
    assert [r["label"] for r in ours] == [r["label"] for r in theirs]
    worst = max(abs(a["probability_positive"] - b["probability_positive"]) for a, b in zip(ours, theirs, strict=True))
    assert worst < 1e-5
