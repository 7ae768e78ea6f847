"""Training on your own files: CSV, TSV or JSON lines, label names kept, errors that name file and line."""

import csv
import json
import shutil

import pytest
import transformers

from albert_pytorch.cli import main
from albert_pytorch.data import DataError, get_task, read_file
from albert_pytorch.data.files import own_data_task, read_table
from albert_pytorch.deploy.predict import predict
from albert_pytorch.sample import sample_data_dir

NAMES = {0: "negative", 1: "positive"}


def sample_rows(split: str) -> list[dict]:
    examples, _ = read_file(get_task("SST-2"), sample_data_dir() / f"{split}.tsv", split)
    return [{"text": e.text_a, "label": NAMES[e.label]} for e in examples]


def write_table(path, rows):
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return path
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
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
    with pytest.raises(DataError, match=r"dev.csv:3: label 'meh' is not one of the classes neg, pos"):
        read_table(task, dev, "validation")
    empty = write_table(tmp_path / "empty.jsonl", [{"text": "fine", "label": "pos"}, {"text": " ", "label": "neg"}])
    with pytest.raises(DataError, match=r"empty.jsonl:2: column 'text' is empty"):
        read_table(task, empty, "validation")
    with pytest.raises(DataError, match=r"train.csv:1: no column\(s\) 'review'; the header has 'text', 'label'"):
        own_data_task(str(train), None, None, "review", None, "label")
    with pytest.raises(DataError, match=r"unknown file type '.xlsx'"):
        own_data_task(str(tmp_path / "train.xlsx"), None, None, "text", None, "label")


def train_own(tmp_path, tiny_model_dir, *args) -> int:
    with pytest.raises(SystemExit) as done:
        main(["train", "--model_name_or_path", str(tiny_model_dir), "--from_scratch", "--output_dir",
              str(tmp_path / "out"), "--max_steps", "3", "--batch_size", "16", "--max_seq_length", "48",
              "--device", "cpu", "--no-progress", "--report_to", "none", *map(str, args)])
    return done.value.code


def test_a_training_file_without_a_dev_file_trains(tmp_path, tiny_model_dir):
    train = write_table(tmp_path / "train.csv", sample_rows("train"))
    assert train_own(tmp_path, tiny_model_dir, "--train_file", train, "--text_column", "text") == 0
    assert (tmp_path / "out" / "model.safetensors").is_file() and not (tmp_path / "out" / "eval_results.json").exists()
    shutil.rmtree(tmp_path / "out")
    assert train_own(tmp_path, tiny_model_dir, "--train_file", train, "--text_column", "text", "--no-do_eval") == 0


@pytest.mark.parametrize("bad, line, problem", [
    ("nan", 5, "the label is missing"), ("null", 5, "the label is missing"), ("", 5, "the label is missing"),
    ("abc", 5, "is a word in a column of numbers"),
])
def test_a_missing_or_mistyped_label_is_named_with_its_line(tmp_path, bad, line, problem):
    rows = [{"text": f"sentence {i}", "label": f"{i % 7 * 0.5:.2f}"} for i in range(60)]
    rows[3]["label"] = bad  # line 5: the header is line 1
    train = write_table(tmp_path / "train.csv", rows)
    with pytest.raises(DataError, match=rf"train.csv:{line}: .*{problem}"):
        own_data_task(str(train), None, None, "text", None, "label")


def test_json_null_labels_and_header_only_files_are_named(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "a", "label": "pos"}\n{"text": "b", "label": null}\n')
    with pytest.raises(DataError, match=r"train.jsonl:2: the label is missing"):
        own_data_task(str(train), None, None, "text", None, "label")
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(DataError, match=r"header.csv: has no data rows with a label \(a header only\?\)"):
        own_data_task(str(header_only), None, None, "text", None, "label")


def test_signed_integers_are_classes_and_decimals_make_regression(tmp_path):
    signed = write_table(tmp_path / "signed.csv", [{"text": "a", "label": "+1"}, {"text": "b", "label": "-1"},
                                                   {"text": "c", "label": "+1"}])
    task = own_data_task(str(signed), None, None, "text", None, "label")
    assert task.labels == ("-1", "+1") and not task.is_regression
    scores = write_table(tmp_path / "scores.csv", [{"text": "a", "label": "1"}, {"text": "b", "label": "2.5"}])
    assert own_data_task(str(scores), None, None, "text", None, "label").is_regression


def test_duplicate_label_names_are_refused(tmp_path, tiny_model_dir, caplog):
    train = write_table(tmp_path / "train.csv", sample_rows("train"))
    names = "negative,positive,negative"
    assert train_own(tmp_path, tiny_model_dir, "--train_file", train, "--label_names", names) == 2
    assert "--label_names names 'negative' more than once" in caplog.text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_texts_longer_than_csvs_field_limit_read_as_in_json(tmp_path, suffix):
    long_text = "word " * 40_000  # 200,000 characters, over csv's 131,072 default
    rows = [{"text": long_text, "label": "pos"}, {"text": "b", "label": "neg"}]
    path = write_table(tmp_path / f"train{suffix}", rows)
    task = own_data_task(str(path), None, None, "text", None, "label")
    assert read_table(task, path, "train")[0][0].text_a == long_text


def test_a_json_array_reads_with_each_objects_line(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('[\n  {"text": "a joy", "label": "pos"},\n  {"text": "dull", "label": "neg"},\n'
                    '  {"text": "", "label": "neg"}\n]\n')
    task = own_data_task(str(path), None, None, "text", None, "label")
    with pytest.raises(DataError, match=r"train.json:4: column 'text' is empty"):
        read_table(task, path, "train")
    examples, report = read_table(task, path, "train", skip_bad_rows=True)
    assert [e.text_a for e in examples] == ["a joy", "dull"] and len(report.skipped) == 1


@pytest.mark.parametrize("suffix, bad_row", [(".csv", 'x,y,"too",many\n'), (".tsv", "x\ty\tz\n"),
                                             (".jsonl", '{"text": "broken\n')])
def test_skip_bad_rows_skips_malformed_rows_of_own_files_and_counts_them(tmp_path, suffix, bad_row):
    path = write_table(tmp_path / f"train{suffix}", sample_rows("dev")[:10])
    path.write_text(path.read_text() + bad_row)
    task = own_data_task(str(path), None, None, "text", None, "label")
    bad_line = 11 if suffix == ".jsonl" else 12  # after a header row, if the format has one
    with pytest.raises(DataError, match=rf"train{suffix}:{bad_line}: "):
        read_table(task, path, "train")
    examples, report = read_table(task, path, "train", skip_bad_rows=True)
    assert len(examples) == 10 and len(report.skipped) == 1 and "1 bad rows skipped" in report.summary()


def test_not_utf8_is_named_with_the_files_line_and_column(tmp_path):
    path = write_table(tmp_path / "train.csv", sample_rows("train"))
    data = bytearray(path.read_bytes())
    data[data.index(b"\n", len(data) // 2) + 3] = 0xFF  # far past the first decode chunk
    path.write_bytes(bytes(data))
    line = data[:data.index(0xFF)].count(b"\n") + 1
    with pytest.raises(DataError, match=rf"train.csv:{line}: not UTF-8 text .*column 3 of the line"):
        own_data_task(str(path), None, None, "text", None, "label")


def test_a_text_and_a_label_column_train_without_naming_the_text(tmp_path, tiny_model_dir):
    train = write_table(tmp_path / "train.csv", sample_rows("train"))
    dev = write_table(tmp_path / "dev.csv", sample_rows("dev"))
    assert train_own(tmp_path, tiny_model_dir, "--train_file", train, "--validation_file", dev) == 0
    assert json.loads((tmp_path / "out" / "eval_results.json").read_text())["eval_samples"] == 120
    pairs = write_table(tmp_path / "pairs.csv", [{"id": 1, "premise": "a", "hypothesis": "b", "label": "yes"},
                                                        {"id": 2, "premise": "c", "hypothesis": "d", "label": "no"}])
    task = own_data_task(str(pairs), None, None, None, None, "label")
    assert (task.text_a, task.text_b) == ("premise", "hypothesis")  # as run_glue pairs two columns


def test_predictions_of_a_file_without_ids_are_numbered_from_zero(tmp_path, tiny_model_dir):
    train = write_table(tmp_path / "train.csv", sample_rows("train"))
    test = tmp_path / "test.csv"
    test.write_text("text\na joy to watch\na dull film\nwarm and funny\n")
    assert train_own(tmp_path, tiny_model_dir, "--train_file", train, "--test_file", test, "--do_predict") == 0
    rows = (tmp_path / "out" / "predict_results.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in rows] == ["index", "0", "1", "2"]


@pytest.mark.parametrize("header", ["text,label,label", "text,text,label"])
def test_a_column_named_twice_is_an_error_naming_file_and_columns(tmp_path, header):
    path = tmp_path / "train.csv"
    path.write_text(f"{header}\na joy,positive,negative\ndull,negative,positive\n")
    twice = "label" if header.endswith("label,label") else "text"
    with pytest.raises(DataError, match=f"{path}:1: the header names column\\(s\\) '{twice}' more than once"):
        own_data_task(str(path), None, None, "text", None, "label")


def test_a_classification_file_with_one_class_is_an_error(tmp_path):
    path = write_table(tmp_path / "train.csv", [{"text": "a joy", "label": "positive"},
                                                {"text": "a delight", "label": "positive"}])
    with pytest.raises(DataError, match=f"{path}: every label in column 'label' is 'positive': a classifier needs "
                                        "at least two classes"):
        own_data_task(str(path), None, None, "text", None, "label")
    own_data_task(str(path), None, None, "text", None, "label", label_names=["negative", "positive"])  # named: fine
