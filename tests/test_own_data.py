"""Training on your own files: CSV, TSV or JSON lines, label names kept, errors that name file and line."""

import csv
import json

import pytest
import transformers

from albert_pytorch.cli import main
from albert_pytorch.data import GlueDataError, get_task, read_file
from albert_pytorch.data.files import own_data_task, read_table
from albert_pytorch.deploy.predict import predict
from albert_pytorch.sample import sample_data_dir

NAMES = {0: "negative", 1: "positive"}


def sample_rows(split: str) -> list[dict]:
    examples, _ = read_file(get_task("SST-2"), sample_data_dir() / f"{split}.tsv", split)
    return [{"text": e.text_a, "label": NAMES[e.label]} for e in examples]


def write_table(path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return path
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_every_format_reads_the_same_examples(tmp_path, suffix):
    rows = sample_rows("dev")
    path = write_table(tmp_path / f"dev{suffix}", rows)
    task = own_data_task(str(path), None, None, "text", None, "label")
    examples, _ = read_table(task, path, "train")
    assert task.labels == ("negative", "positive") and not task.is_regression
    assert [(e.text_a, task.labels[e.label]) for e in examples] == [(r["text"], r["label"]) for r in rows]


def test_csv_with_text_and_label_trains_and_keeps_the_label_names(tmp_path, tiny_model_dir):
    train = write_table(tmp_path / "train.csv", sample_rows("train"))
    dev = write_table(tmp_path / "dev.csv", sample_rows("dev"))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as done:
        main(["train", "--train_file", str(train), "--validation_file", str(dev), "--text_column", "text",
              "--model_name_or_path", str(tiny_model_dir), "--from_scratch", "--output_dir", str(out),
              "--learning_rate", "2e-3", "--num_train_epochs", "4", "--batch_size", "16", "--max_seq_length", "64",
              "--device", "cpu", "--no-progress"])
    assert done.value.code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    assert transformers.AutoConfig.from_pretrained(out).id2label == {0: "negative", 1: "positive"}
    assert json.loads((out / "eval_results.json").read_text())["eval_samples"] == 120
    (record,) = predict(out, [("a joy to watch , warm and funny .", None)])
    assert record["label"] in ("negative", "positive") and set(record["probabilities"]) == {"negative", "positive"}


def test_float_labels_make_a_regression_task(tmp_path):
    path = write_table(tmp_path / "train.jsonl", [{"sentence": "a", "label": 0.5}, {"sentence": "b", "label": 4.25}])
    task = own_data_task(str(path), None, None, "sentence", None, "label")
    assert task.is_regression and task.metric == "corr"
    assert [e.label for e in read_table(task, path, "train")[0]] == [0.5, 4.25]


def test_bad_rows_name_the_file_line_and_column(tmp_path):
    train = write_table(tmp_path / "train.csv", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}])
    task = own_data_task(str(train), None, None, "text", None, "label")
    dev = write_table(tmp_path / "dev.csv", [{"text": "fine", "label": "pos"}, {"text": "odd", "label": "meh"}])
    with pytest.raises(GlueDataError, match=r"dev.csv:3: label 'meh' is not one of the training labels neg, pos"):
        read_table(task, dev, "validation")
    empty = write_table(tmp_path / "empty.jsonl", [{"text": "fine", "label": "pos"}, {"text": " ", "label": "neg"}])
    with pytest.raises(GlueDataError, match=r"empty.jsonl:2: column 'text' is empty"):
        read_table(task, empty, "validation")
    with pytest.raises(GlueDataError, match=r"train.csv:1: no column\(s\) 'review'; the header has 'text', 'label'"):
        own_data_task(str(train), None, None, "review", None, "label")
    with pytest.raises(GlueDataError, match=r"unknown file type '.xlsx'"):
        own_data_task(str(tmp_path / "train.xlsx"), None, None, "text", None, "label")
