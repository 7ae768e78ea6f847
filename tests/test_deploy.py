"""The inference chain on a tiny model: preprocess -> export -> optimize -> runtime -> postprocess."""

import configparser
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import tiny_config

from albert_pytorch import AlbertForSequenceClassification
from albert_pytorch.cli import main
from albert_pytorch.data import Collator, get_task, load_or_build_features, read_split
from albert_pytorch.deploy.export import export
from albert_pytorch.deploy.optimize import optimize
from albert_pytorch.deploy.postprocess import OutputError, postprocess
from albert_pytorch.deploy.preprocess import preprocess
from albert_pytorch.deploy.runtime import InputError, RunOptions, run
from albert_pytorch.device import DistContext, Precision
from albert_pytorch.evaluate import predict_logits
from albert_pytorch.metrics import compute_metrics
from albert_pytorch.tokenization import load_tokenizer

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model_dir):
    directory = tmp_path_factory.mktemp("finetuned")
    config = tiny_config(vocab_size=len(load_tokenizer(tiny_model_dir)), num_hidden_layers=3)
    config.set_labels(["0", "1"])
    AlbertForSequenceClassification.from_config(config).save_pretrained(directory)
    shutil.copy(tiny_model_dir / "spiece.model", directory)
    return directory


def pytorch_predictions(model_dir, task_dir, max_seq_length):
    task = get_task("SST-2")
    tokenizer = load_tokenizer(model_dir)
    examples, _ = read_split(task, task_dir, "dev")
    features = load_or_build_features(task, "dev", examples, tokenizer, max_seq_length)
    model = AlbertForSequenceClassification.from_pretrained(model_dir)
    logits = predict_logits(model, features, 16, torch.device("cpu"), Precision(), DistContext(), Collator())
    return logits.argmax(-1), features.labels.numpy()


def run_chain(model_dir, task_dir, tmp_path, seq, batch, target, dynamic=False):
    pre = preprocess(model_dir, task_dir, tmp_path / "pre", seq, progress=False)
    exported = export(model_dir, tmp_path / "onnx", batch, seq, dynamic=dynamic)
    optimized = tmp_path / "onnx" / f"{target}.onnx"
    report = optimize(exported, optimized, target)
    summary = run(optimized, [pre / n for n in INPUTS], tmp_path / "results",
                  RunOptions(output_dirname="out", batchsize=batch, progress=False))
    outputs = np.stack([np.load(tmp_path / "results" / "out" / f"{i}_0.npy")[0] for i in range(120)])
    return pre, report, summary, outputs


@pytest.mark.parametrize("seq,batch,target,dynamic", [(64, 16, "atc", False), (16, 64, "atc", False),
                                                      (64, 16, "ort", True)])
def test_chain_predictions_equal_pytorch_evaluation(model_dir, tiny_task_dir, tmp_path, seq, batch, target, dynamic):
    pre, report, summary, outputs = run_chain(model_dir, tiny_task_dir, tmp_path, seq, batch, target, dynamic)
    expected, labels = pytorch_predictions(model_dir, tiny_task_dir, seq)
    assert np.array_equal(outputs.argmax(-1), expected)  # the same predictions, not just a close accuracy
    metrics = postprocess(tmp_path / "results" / "out", pre / "label.npy")
    assert metrics["acc"] == compute_metrics(get_task("SST-2"), expected, labels)["acc"]
    assert summary["num_samples"] == 120 and summary["compute"]["throughput_samples_per_s"] > 0
    assert (tmp_path / "results" / "out_summary.json").is_file()
    assert json.loads((tmp_path / "results" / "out_postprocess.json").read_text()) == metrics  # beside it, as JSON
    if target == "atc":
        assert report["domains"] == ["ai.onnx"] and "Expand" in report["ops"]
    else:
        assert report["ops"].get("Attention", 0) >= 1 and report["ops"].get("SkipLayerNormalization", 0) >= 1


@pytest.mark.parametrize("hidden_act", ["gelu_new", "gelu"])
def test_atc_graph_scales_by_mul_and_names_gelus_as_precision_ini_does(tiny_model_dir, tmp_path, hidden_act):
    config = tiny_config(vocab_size=len(load_tokenizer(tiny_model_dir)), num_hidden_layers=12, hidden_act=hidden_act)
    AlbertForSequenceClassification.from_config(config).save_pretrained(tmp_path / "model")
    shutil.copy(tiny_model_dir / "spiece.model", tmp_path / "model")
    optimize(export(tmp_path / "model", tmp_path, 4, 16), tmp_path / "atc.onnx", "atc")
    nodes = onnx.load(str(tmp_path / "atc.onnx")).graph.node
    producers = {out: node for node in nodes for out in node.output}
    consumers = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    assert not [n for n in nodes if n.op_type == "Div" and producers[n.input[0]].op_type == "MatMul"]
    named = {node.name: node for node in nodes}
    for layer in range(12):
        anchor = named[f"albert/layer{layer}/gelu"]
        if hidden_act == "gelu_new":  # ATC's tanh pattern: x -> Pow(x, 3) -> ... -> Mul(x, ...), named after the Pow
            assert anchor.op_type == "Pow"
            end = anchor
            for _ in range(7):
                (end,) = consumers[end.output[0]]
            assert end.op_type == "Mul" and anchor.input[0] in end.input
        else:  # ATC's erf pattern: x -> Div -> Erf -> Add -> Mul(x, ...) -> Mul, named after the last Mul
            assert anchor.op_type == "Mul" and producers[anchor.input[0]].op_type == "Mul"
            assert "Erf" in {producers[name].op_type for name in producers[producers[anchor.input[0]].input[1]].input
                             if name in producers}
    ini = configparser.ConfigParser()
    ini.optionxform = str  # node names are case-sensitive
    ini.read(Path(__file__).parents[1] / "precision.ini")
    assert ini["ByOpType"]["Gelu"] == "high_performance"
    for name, mode in ini["ByNodeName"].items():
        assert name.endswith("/Gelu") and name.removesuffix("/Gelu") in named and mode == "high_precision"


def test_shared_layer_is_stored_once(model_dir, tmp_path):
    path = export(model_dir, tmp_path, 2, 16)
    weights = AlbertForSequenceClassification.from_pretrained(model_dir)
    size = sum(p.numel() * 4 for p in weights.parameters())
    initializers = sum(np.prod(i.dims) * 4 for i in onnx.load(str(path)).graph.initializer)
    assert initializers < 1.2 * size  # 3 layer applications, one copy of the layer


def test_manifest_traces_outputs_to_examples(model_dir, tiny_task_dir, tmp_path):
    pre = preprocess(model_dir, tiny_task_dir, tmp_path, 32, progress=False)
    manifest = json.loads((pre / "manifest.json").read_text())
    assert manifest["num_examples"] == 120 and manifest["examples"][0] == {
        "index": 0, "id": "dev-2", "line": 2, "length": manifest["examples"][0]["length"]}
    ids = np.load(pre / "input_ids" / "0.npy")
    assert ids.shape == (1, 32) and ids.dtype == np.int64


def test_runtime_rejects_wrong_shapes_naming_the_file(model_dir, tiny_task_dir, tmp_path):
    pre = preprocess(model_dir, tiny_task_dir, tmp_path / "pre", 32, progress=False)
    exported = export(model_dir, tmp_path, 8, 64)
    with pytest.raises(InputError, match=r"0\.npy: shape \[1, 32\].*\[8, 64\]|0\.npy: shape \[1, 32\]"):
        run(exported, [pre / n for n in INPUTS], tmp_path / "r", RunOptions(batchsize=8, progress=False))
    np.save(pre / "input_ids" / "0.npy", np.zeros((1, 32), dtype=np.float32))
    exported32 = export(model_dir, tmp_path, 8, 32)
    with pytest.raises(InputError, match="0.npy: dtype float32"):
        run(exported32, [pre / n for n in INPUTS], tmp_path / "r", RunOptions(batchsize=8, progress=False))


def test_postprocess_refuses_missing_and_extra_outputs(tmp_path):
    np.save(tmp_path / "label.npy", np.array([0, 1, 1]))
    results = tmp_path / "results"
    results.mkdir()
    for i in range(2):
        np.save(results / f"{i}_0.npy", np.array([[0.1, 0.9]], dtype=np.float32))
    with pytest.raises(OutputError, match="1 output files are missing, e.g. 2_0.npy"):
        postprocess(results, tmp_path / "label.npy", "SST-2")
    for i in (2, 3):
        np.save(results / f"{i}_0.npy", np.array([[0.1, 0.9]], dtype=np.float32))
    with pytest.raises(OutputError, match="match no label, e.g. 3_0.npy"):
        postprocess(results, tmp_path / "label.npy", "SST-2")


def test_postprocess_handles_regression_and_many_classes(tmp_path):
    np.save(tmp_path / "label.npy", np.array([0.5, 2.0, 4.5], dtype=np.float32))
    for i, score in enumerate([0.7, 2.2, 4.0]):
        np.save(tmp_path / f"{i}_0.npy", np.array([[score]], dtype=np.float32))
    metrics = postprocess(tmp_path, tmp_path / "label.npy", "STS-B")
    assert metrics["spearmanr"] == pytest.approx(1.0)
    (tmp_path / "mnli").mkdir()
    np.save(tmp_path / "mnli" / "label.npy", np.array([2, 0]))
    for i, row in enumerate([[0.1, 0.2, 0.7], [0.8, 0.1, 0.1]]):
        np.save(tmp_path / "mnli" / f"{i}_0.npy", np.array([row], dtype=np.float32))
    assert postprocess(tmp_path / "mnli", tmp_path / "mnli" / "label.npy", "MNLI")["acc"] == 1.0


def test_wrapper_scripts_parse_modelzoo_flags(capsys):
    with pytest.raises(SystemExit) as done:
        main(["pth2onnx", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--pth_dir", "--onnx_dir", "--batch_size", "--max_seq_length", "--dynamic"))


def test_predict_from_pytorch_and_from_onnx_agree(model_dir, tmp_path):
    from albert_pytorch.deploy.predict import predict, read_inputs

    pairs = read_inputs(["the film is a joy to watch .", "a dull , lifeless movie .", "warm , funny and smart ."])
    eager = list(predict(model_dir, pairs))
    for onnx_file in (export(model_dir, tmp_path, 2, 32), export(model_dir, tmp_path, 2, 32, dynamic=True)):
        exported = list(predict(model_dir, pairs, onnx_file=str(onnx_file)))
        assert [r["label"] for r in exported] == [r["label"] for r in eager]
        assert all(abs(a["probabilities"]["1"] - b["probabilities"]["1"]) < 1e-4 for a, b in zip(eager, exported,
                                                                                                strict=True))
    assert [r["text"] for r in eager] == [p[0] for p in pairs]
    assert sum(eager[0]["probabilities"].values()) == pytest.approx(1.0)
    in_bf16 = list(predict(model_dir, pairs, bf16=True))  # bf16 units where the CPU has them, emulated elsewhere
    assert all(abs(a["probabilities"]["1"] - b["probabilities"]["1"]) < 0.02 for a, b in zip(eager, in_bf16,
                                                                                            strict=True))
    with pytest.raises(ValueError, match="--bf16 is PyTorch's precision"):
        list(predict(model_dir, pairs, onnx_file=str(onnx_file), bf16=True))


def test_int8_quantizes_the_fused_graph(model_dir, tmp_path):
    exported = export(model_dir, tmp_path, 4, 32, dynamic=True)
    report = optimize(exported, tmp_path / "int8.onnx", "ort", int8=True)
    assert report["int8"] and report["argmax_agreement"] >= 0.75
    assert any(op in report["ops"] for op in ("DynamicQuantizeMatMul", "MatMulInteger", "QAttention"))


def test_bin_outputs_score_like_npy_and_the_summary_has_ais_bench_keys(model_dir, tiny_task_dir, tmp_path):
    pre = preprocess(model_dir, tiny_task_dir, tmp_path / "pre", 32, progress=False)
    exported = export(model_dir, tmp_path, 8, 32)
    reports = {}
    for outfmt in ("NPY", "BIN"):
        summary = run(exported, [pre / n for n in INPUTS], tmp_path / "results",
                      RunOptions(output_dirname=outfmt, outfmt=outfmt, batchsize=8, progress=False))
        reports[outfmt] = postprocess(tmp_path / "results" / outfmt, pre / "label.npy", outfmt=outfmt)
    assert reports["BIN"] == reports["NPY"]
    assert sum(map(sum, reports["NPY"]["confusion_matrix"])) == 120
    assert set(reports["NPY"]["per_class"]) == {"negative", "positive"}
    for key in ("NPU_compute_time", "H2D_latency", "D2H_latency"):
        assert set(summary[key]) == {"min", "max", "mean", "median", "percentile(99%)"}
    assert summary["throughput"] == pytest.approx(1000 * 8 / summary["NPU_compute_time"]["mean"])
    (tmp_path / "results" / "BIN" / "0_0.bin").write_bytes(np.zeros(3, dtype=np.float32).tobytes())
    with pytest.raises(OutputError, match=r"0_0.bin: 3 values .*expected one sample's 2 values of float32"):
        postprocess(tmp_path / "results" / "BIN", pre / "label.npy", outfmt="BIN")


def test_class_report_per_class_and_confusion_matrix():
    from albert_pytorch.metrics import class_report

    report = class_report(get_task("MNLI"), np.array([0, 1, 1, 2, 2, 2]), np.array([0, 1, 2, 2, 2, 0]))
    assert report["confusion_matrix"] == [[1, 0, 1], [0, 1, 0], [0, 1, 2]]
    assert report["per_class"]["neutral"] == {"precision": 2 / 3, "recall": 2 / 3, "f1": pytest.approx(2 / 3),
                                              "support": 3}


def test_optimum_layout_is_a_folder_optimum_loads(model_dir, tmp_path):
    """The contract of optimum.onnxruntime.ORTModelForSequenceClassification.from_pretrained(folder): model.onnx
    whose output is named "logits", dynamic batch and sequence axes, config.json and the tokenizer files.
    (optimum-onnx pins transformers < 4.58, so it cannot be installed beside ours; see the issue note.)"""
    import onnxruntime as ort
    import transformers

    path = export(model_dir, tmp_path / "optimum", 2, 32, layout="optimum")
    assert path == tmp_path / "optimum" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert all(isinstance(d, str) for i in session.get_inputs() for d in i.shape)  # dynamic axes
    assert transformers.AutoConfig.from_pretrained(path.parent).id2label == {0: "0", 1: "1"}
    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent)
    batch = tokenizer(["a joy to watch .", "dull ."], padding=True, return_tensors="np", return_token_type_ids=True)
    (logits,) = session.run(None, {name: batch[name].astype(np.int64) for name in INPUTS})
    with torch.no_grad():
        expected = AlbertForSequenceClassification.from_pretrained(model_dir).eval()(
            *(torch.from_numpy(batch[name]) for name in INPUTS)).logits.numpy()
    assert np.abs(logits - expected).max() < 1e-4


def test_providers_fall_back_in_onnx_runtimes_order(monkeypatch, model_dir, tmp_path, caplog):
    import onnxruntime as ort

    from albert_pytorch.deploy.runtime import open_session

    path = export(model_dir, tmp_path, 2, 16)
    opened = {}

    class Session:
        def __init__(self, model, sess_options, providers, provider_options):
            opened.update(providers=providers, options=provider_options)

    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", Session)
    open_session(path, "tensorrt", device=1)
    assert opened["providers"] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert opened["options"] == [{"device_id": 1}, {"device_id": 1}, {}]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with caplog.at_level(logging.WARNING, logger="albert_pytorch"):
        open_session(path, "cuda")
    assert opened["providers"] == ["CPUExecutionProvider"]  # the chain, down to what this build has
    assert [r.getMessage() for r in caplog.records if "lacks CUDAExecutionProvider" in r.getMessage()]


def test_opt_onnx_on_a_file_that_is_not_onnx_is_one_line_and_exit_2(tmp_path, caplog):
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"not an onnx model" * 10)
    with pytest.raises(SystemExit) as done:
        main(["opt_onnx", "--input_file", str(garbage), "--output_file", str(tmp_path / "out.onnx")])
    assert done.value.code == 2 and f"--input_file {garbage}: not an ONNX model" in caplog.text
    assert not (tmp_path / "out.onnx").exists()


def test_optimizing_and_quantizing_says_one_line_of_its_own(model_dir, tmp_path):
    import subprocess
    import sys

    from helpers import ROOT, child_env

    source = export(model_dir, tmp_path, dynamic=True, max_seq_length=32, batch_size=4)
    done = subprocess.run([sys.executable, str(ROOT / "opt_onnx.py"), "--input_file", str(source), "--output_file",
                           str(tmp_path / "int8.onnx"), "--target", "ort", "--int8"], capture_output=True, text=True,
                          timeout=300, env=child_env(tmp_path))
    assert done.returncode == 0
    assert [line.split(" ", 3)[2] for line in done.stderr.splitlines()] == ["albert_pytorch.deploy.optimize:"]


def test_pth2onnx_exports_and_optimizes_in_one_command(model_dir, tmp_path, capsys):
    import onnxruntime

    with pytest.raises(SystemExit) as done:
        main(["pth2onnx", "--pth_dir", str(model_dir), "--onnx_dir", str(tmp_path), "--max_seq_length", "32",
              "--batch_size", "4", "--optimize", "ort", "--int8"])
    assert done.value.code == 0
    optimized = tmp_path / "albert_dynamic_ort_int8.onnx"
    assert f"wrote {optimized}" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(optimized), providers=["CPUExecutionProvider"])
    assert {i.name for i in session.get_inputs()} == {"input_ids", "attention_mask", "token_type_ids"}
    with pytest.raises(SystemExit) as done:
        main(["pth2onnx", "--pth_dir", str(model_dir), "--onnx_dir", str(tmp_path / "x"), "--int8"])
    assert done.value.code == 2 and not (tmp_path / "x").exists()


@pytest.mark.parametrize("dynamic", [False, True])
def test_evaluate_onnx_scores_an_export_as_its_weights_score(model_dir, tiny_task_dir, tmp_path, capsys, dynamic):
    exported = export(model_dir, tmp_path, batch_size=4, max_seq_length=48, dynamic=dynamic)

    def evaluate(*extra: str) -> dict:
        with pytest.raises(SystemExit) as done:
            main(["evaluate", "--model_dir", str(model_dir), "--data_dir", str(tiny_task_dir), "--max_seq_length", "48",
                  "--device", "cpu", *extra])
        assert done.value.code == 0
        return json.loads(capsys.readouterr().out)

    weights, onnx_run = evaluate(), evaluate("--onnx", str(exported), "--eval_batch_size", "7")
    assert onnx_run["eval_accuracy"] == weights["eval_accuracy"] and onnx_run["eval_samples"] == 120
    assert onnx_run["eval_loss"] == pytest.approx(weights["eval_loss"], abs=1e-4)
