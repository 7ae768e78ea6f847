import pytest
from glue_fixtures import EXPECTED_FIRST, FIXTURES, write_task
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from albert_pytorch.data import TASKS, DataError, get_task, read_file, read_split


@pytest.mark.parametrize("task_name", sorted(FIXTURES))
def test_every_reader_parses_its_official_layout(task_name, tmp_path):
    folder = write_task(tmp_path, task_name)
    task = get_task(task_name)
    examples, report = read_split(task, folder, "train")
    first = examples[0]
    assert (first.text_a, first.text_b, first.label) == EXPECTED_FIRST[task_name]
    assert report.rows == len(examples) and not report.skipped
    if "test.tsv" in FIXTURES[task_name]:
        test, _ = read_split(task, folder, "test")
        assert test[0].label is None and test[0].guid == "0"


def test_mnli_matched_dev_file_has_more_columns_than_train(tmp_path):
    folder = write_task(tmp_path, "MNLI")
    dev, _ = read_split(get_task("MNLI"), folder, "dev")
    assert dev[0].label == get_task("MNLI").labels.index("neutral")


def test_real_sst2_and_stsb(shared_data):
    sst2 = get_task("SST-2")
    dev, _ = read_split(sst2, shared_data / "glue" / "SST-2", "dev")
    assert len(dev) == 872 and sum(e.label for e in dev) == 444
    train, _ = read_split(sst2, shared_data / "glue" / "SST-2", "train")
    assert len(train) == 67349 and sum(e.label for e in train) == 37569
    stsb, _ = read_split(get_task("STS-B"), shared_data / "glue" / "STS-B", "dev")
    assert len(stsb) == 1500 and all(0 <= e.label <= 5 for e in stsb)


BAD_ROWS = [
    ("sentence\tlabel\ngood one\t1\nmissing its label\n", 3, "expected 2 tab-separated fields, found 1"),
    ("sentence\tlabel\ngood one\t1\ntoo\tmany\tfields\n", 3, "expected 2 tab-separated fields, found 3"),
    ("sentence\tlabel\ngood one\t2\n", 2, "label '2' is not one of the classes 0, 1"),
    ("sentence\tlabel\n \t1\n", 2, "column 'sentence' is empty"),
    (b"sentence\tlabel\n" + b"caf\xe9\t1\n", 2, "invalid UTF-8"),
    ("text\tlabel\nfine\t1\n", 1, "header lacks column(s) 'sentence'"),
]


@pytest.mark.parametrize("content,line,problem", BAD_ROWS)
def test_bad_rows_name_file_line_and_problem(content, line, problem, tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as err:
        read_file(get_task("SST-2"), path, "train")
    assert err.value.line == line and problem in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("score,problem", [("high", "label 'high' is not a number"), ("nan", "the label is missing"),
                                           ("5.5", "label '5.5' is outside the task's range"),
                                           ("-0.1", "label .-0.1. is outside"),
                                           ("inf", "label 'inf' is not a finite number")])
def test_bad_stsb_scores(score, problem, tmp_path):
    header = FIXTURES["STS-B"]["train.tsv"].splitlines()[0]
    row = f"0\tg\tf\ty\to\ts1\ts2\tA man.\tA person.\t{score}"
    path = tmp_path / "train.tsv"
    path.write_text(f"{header}\n{row}\n")
    with pytest.raises(DataError, match=f"train.tsv:2: {problem}"):
        read_file(get_task("STS-B"), path, "train")


def test_skip_bad_rows_counts_and_reports(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes(b"sentence\tlabel\nok\t1\nbad\t7\n\xff\t0\nfine\t0\n")
    examples, report = read_file(get_task("SST-2"), path, "train", skip_bad_rows=True)
    assert [e.text_a for e in examples] == ["ok", "fine"]
    assert len(report.skipped) == 2 and "train.tsv:3" in report.skipped[0] and "2 bad rows skipped" in report.summary()


def test_crlf_bom_and_quotes_parse_as_text(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes(b'\xef\xbb\xbfsentence\tlabel\r\n"a quoted" film \'s charm\t1\r\n')
    examples, _ = read_file(get_task("SST-2"), path, "train")
    assert examples[0].text_a == '"a quoted" film \'s charm' and examples[0].label == 1


@pytest.mark.parametrize("content", [b"", b"sentence\tlabel\n", b"\n\n"])
def test_empty_and_header_only_files(content, tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes(content)
    with pytest.raises(DataError, match="train.tsv"):
        read_file(get_task("SST-2"), path, "train")


def test_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="albert_pytorch download"):
        read_split(get_task("RTE"), tmp_path, "train")


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown GLUE task"):
        get_task("SQuAD")


def test_every_glue_task_names_its_classes_as_the_datasets_library_does():
    names = {task.name: task.names for task in TASKS.values()}
    assert names == {
        "CoLA": ("unacceptable", "acceptable"), "SST-2": ("negative", "positive"),
        "MRPC": ("not_equivalent", "equivalent"), "STS-B": None, "QQP": ("not_duplicate", "duplicate"),
        "MNLI": ("contradiction", "entailment", "neutral"),  # the TSV's own names, in the reference's order
        "QNLI": ("entailment", "not_entailment"), "RTE": ("entailment", "not_entailment"),
        "WNLI": ("not_entailment", "entailment"),
    }


FIELD = st.one_of(st.text(max_size=30), st.sampled_from(["0", "1", "2", "nan", "inf", "-1", "5.0", "3.2", "",
                                                         '"', "entailment", "neutral", "x\r"]))
ROW = st.lists(FIELD, min_size=0, max_size=12).map("\t".join)


def header_for(task):
    if task.headerless_columns is not None:
        return None
    return [task.text_a] + ([task.text_b] if task.text_b else []) + [task.label]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(task_name=st.sampled_from(sorted(TASKS)), rows=st.lists(ROW, max_size=6), bom=st.booleans(),
       crlf=st.booleans(), junk=st.binary(max_size=8), header=st.booleans())
def test_fuzzed_tsvs_parse_correctly_or_fail_with_file_and_line(tmp_path, task_name, rows, bom, crlf, junk, header):
    task = get_task(task_name)
    names = header_for(task)
    lines = (["\t".join(names)] if names and header else []) + rows
    newline = "\r\n" if crlf else "\n"
    data = (b"\xef\xbb\xbf" if bom else b"") + newline.join(lines).encode() + junk
    path = tmp_path / "train.tsv"
    path.write_bytes(data)
    try:
        examples, _ = read_file(task, path, "train")
    except DataError as err:
        assert str(path) in str(err) and err.problem
        return
    for e in examples:  # what parses must be right: non-empty texts and labels from the task's set
        assert e.text_a.strip() and (task.text_b is None or e.text_b.strip())
        if task.is_regression:
            assert 0.0 <= e.label <= 5.0
        else:
            assert 0 <= e.label < task.num_labels


def test_very_long_lines_are_read_and_truncated_later(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\n" + "word " * 200_000 + "\t1\n")
    (example,), _ = read_file(get_task("SST-2"), path, "train")
    assert len(example.text_a) == 1_000_000
