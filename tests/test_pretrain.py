"""`pretrain`, end to end on a toy corpus: it learns, its output loads in transformers, `train` fine-tunes it,
and it resumes exactly."""

import json
import logging
import math

import pytest
import torch
import transformers
from helpers import TEXTS, TINY_OVERRIDES, assert_resume_matches_uninterrupted, tiny_config
from safetensors.torch import load_file

from albert_pytorch import AlbertForPreTraining, AlbertForSequenceClassification
from albert_pytorch.cli import main
from albert_pytorch.errors import UsageError
from albert_pytorch.pretrain import run
from albert_pytorch.run_config import PretrainConfig, TrainConfig
from albert_pytorch.train import run as finetune


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Documents of 1 to 4 of the test sentences, blank-line separated: a training folder and held-out text."""
    folder = tmp_path_factory.mktemp("corpus")
    documents = ["\n".join(TEXTS[(d * 3 + i) % 10] for i in range(d % 4 + 1)) for d in range(120)]
    (folder / "train").mkdir()
    (folder / "train" / "a.txt").write_text("\n\n".join(documents[:60]) + "\n")
    (folder / "train" / "b.txt").write_text("\n\n".join(documents[60:100]) + "\n")
    (folder / "heldout.txt").write_text("\n\n".join(documents[100:]) + "\n")
    return folder


def tiny_pretraining(corpus, tokenizer_dir, output_dir, **settings) -> PretrainConfig:
    values = dict(train_files=[str(corpus / "train")], tokenizer_name=str(tokenizer_dir), from_scratch=True,
                  config_overrides=TINY_OVERRIDES, max_seq_length=48, output_dir=str(output_dir), batch_size=16,
                  optimizer="adamw", learning_rate=5e-3, warmup_proportion=0.0, max_steps=8, logging_steps=2,
                  device="cpu", progress=False, report_to="none", seed=1)
    values.update(settings)
    return PretrainConfig(**values)


def test_pretraining_learns_and_its_model_loads_in_transformers(corpus, tiny_tokenizer_dir, tiny_tokenizer,
                                                                tmp_path):
    out = tmp_path / "pretrained"
    with pytest.raises(SystemExit) as done:
        main(["pretrain", "--train_files", str(corpus / "train"), "--validation_files", str(corpus / "heldout.txt"),
              "--tokenizer_name", str(tiny_tokenizer_dir), "--from_scratch", "--config_overrides", TINY_OVERRIDES,
              "--max_seq_length", "48", "--output_dir", str(out), "--batch_size", "16", "--optimizer", "adamw",
              "--learning_rate", "5e-3", "--max_steps", "60", "--eval_steps", "20", "--logging_steps", "10",
              "--device", "cpu", "--report_to", "none"])
    assert done.value.code == 0
    evaluations = [r for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
                   if r["type"] == "eval"]
    assert [r["step"] for r in evaluations] == [20, 40, 60]  # the last step's evaluation is the final one, once
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_mlm_accuracy"] == evaluations[-1]["eval_mlm_accuracy"]
    # held-out masked tokens: from chance (1 in the vocabulary, loss ln V) to far better, still improving at the end
    vocabulary = len(tiny_tokenizer)
    assert evaluations[-1]["eval_mlm_accuracy"] > 5 / vocabulary
    assert evaluations[-1]["eval_mlm_loss"] < math.log(vocabulary) - 0.5
    assert evaluations[-1]["eval_mlm_loss"] < evaluations[0]["eval_mlm_loss"]
    assert 0 < evaluations[-1]["eval_num_examples"] and 0 <= evaluations[-1]["eval_sop_accuracy"] <= 1
    assert json.loads((out / "config.json").read_text())["architectures"] == ["AlbertForPreTraining"]
    assert json.loads((out / "config.json").read_text())["vocab_size"] == len(tiny_tokenizer)
    for name in ("spiece.model", "model.safetensors", "trainer_state.json", "all_results.json", "training_curves.png"):
        assert (out / name).is_file(), name

    ours = AlbertForPreTraining.from_pretrained(out).eval()
    theirs, info = transformers.AlbertForPreTraining.from_pretrained(out, output_loading_info=True)
    masked_lm, masked_info = transformers.AlbertForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not masked_info["missing_keys"]
    batch = transformers.AutoTokenizer.from_pretrained(out)(["the film is a joy to watch ."], return_tensors="pt",
                                                                      return_token_type_ids=True)
    with torch.no_grad():
        expected = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).prediction_logits
        assert (theirs.eval()(**batch).prediction_logits - expected).abs().max() < 1e-4
        assert (masked_lm.eval()(**batch).logits - expected).abs().max() < 1e-4


def test_train_fine_tunes_a_pretrained_directory_keeping_its_encoder(corpus, tiny_tokenizer_dir, tiny_task_dir,
                                                                     tmp_path, caplog):
    out = tmp_path / "pretrained"
    run(tiny_pretraining(corpus, tiny_tokenizer_dir, out))
    classifier = AlbertForSequenceClassification.from_pretrained(out, num_labels=2)
    pretrained = load_file(out / "model.safetensors")
    encoder = {k: v for k, v in classifier.state_dict().items() if k.startswith("albert.")}
    assert encoder and all(torch.equal(v, pretrained[k]) for k, v in encoder.items())

    caplog.set_level(logging.WARNING)
    summary = finetune(TrainConfig(task_name="SST-2", data_dir=str(tiny_task_dir), model_name_or_path=str(out),
                                   output_dir=str(tmp_path / "fine-tuned"), max_steps=4, batch_size=8,
                                   max_seq_length=48, device="cpu", progress=False, report_to="none"))
    assert summary["step"] == 4 and 0 <= summary["acc"] <= 1
    assert "not used by AlbertForSequenceClassification" in caplog.text and "predictions." in caplog.text


def test_pretraining_resumes_exactly(corpus, tiny_tokenizer_dir, tmp_path):
    assert_resume_matches_uninterrupted(run, lambda out: tiny_pretraining(
        corpus, tiny_tokenizer_dir, out, max_steps=12, save_steps=4, gradient_accumulation_steps=2), tmp_path)


@pytest.mark.parametrize("flags, message", [
    ([], "--train_files is missing"),
    (["--train_files", "x.txt"], "or --from_scratch"),
    (["--train_files", "x.txt", "--from_scratch"], "needs --tokenizer_name"),
    (["--train_files", "x.txt", "--from_scratch", "--tokenizer_name", "t", "--eval_steps", "5"],
     "needs --validation_files"),
    (["--train_files", "x.txt", "--from_scratch", "--tokenizer_name", "t", "--metric_for_best_model", "acc"],
     "choose from loss"),
])
def test_bad_pretraining_flags_exit_2_before_writing(flags, message, tmp_path, caplog):
    with pytest.raises(SystemExit) as done:
        main(["pretrain", "--output_dir", str(tmp_path / "out"), *flags])
    assert done.value.code == 2 and message in caplog.text
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_that_is_not_the_models_is_refused(corpus, tiny_tokenizer_dir, tmp_path):
    from albert_pytorch.pretrain import pretraining_config

    small = tmp_path / "small"
    AlbertForPreTraining.from_config(tiny_config(vocab_size=50)).save_pretrained(small)
    with pytest.raises(UsageError, match="more than the model's vocab_size 50"):
        pretraining_config(tiny_pretraining(corpus, tiny_tokenizer_dir, tmp_path / "o", from_scratch=False,
                                            model_name_or_path=str(small)), small, tokenizer_size=120)


def test_text_that_is_not_utf8_is_named_with_its_line(tmp_path):
    from albert_pytorch.data.corpus import read_documents

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line .\n\nanother \xff line .\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 3: not UTF-8"):
        list(read_documents([bad]))


def test_pretraining_a_fine_tuned_classifier_continues_its_encoder(corpus, tiny_task_dir, tiny_model_dir, tmp_path,
                                                                   caplog):
    caplog.set_level(logging.INFO)
    classifier = tmp_path / "classifier"
    finetune(TrainConfig(data_dir=str(tiny_task_dir), model_name_or_path=str(tiny_model_dir), from_scratch=True,
                         output_dir=str(classifier), max_steps=2, max_seq_length=48, do_eval=False, progress=False,
                         device="cpu", report_to="none"))
    run(PretrainConfig(train_files=[str(corpus / "train")], model_name_or_path=str(classifier), max_seq_length=48,
                       output_dir=str(tmp_path / "more"), batch_size=8, max_steps=2, progress=False, device="cpu",
                       report_to="none"))
    encoder = load_file(classifier / "model.safetensors")["albert.embeddings.word_embeddings.weight"]
    config = json.loads((tmp_path / "more" / "config.json").read_text())
    assert config["architectures"] == ["AlbertForPreTraining"] and config.get("finetuning_task") is None
    continued = load_file(tmp_path / "more" / "model.safetensors")["albert.embeddings.word_embeddings.weight"]
    assert continued.shape == encoder.shape and (continued - encoder).abs().max() < 0.05  # two small steps on


def test_text_without_sentence_pairs_is_named(tiny_tokenizer_dir, tmp_path, caplog):
    lonely = tmp_path / "lonely.txt"
    lonely.write_text("a\n\n.\n")  # one-token documents: no pair to make
    with pytest.raises(SystemExit) as done:
        main(["pretrain", "--train_files", str(lonely), "--tokenizer_name", str(tiny_tokenizer_dir), "--from_scratch",
              "--output_dir", str(tmp_path / "out"), "--config_overrides", TINY_OVERRIDES, "--max_seq_length", "48"])
    assert done.value.code == 1 and f"{lonely}: no sentence pairs in this text" in caplog.text
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as done:
        main(["pretrain", "--train_files", str(tmp_path / "typo.txt"), "--tokenizer_name", str(tiny_tokenizer_dir),
              "--from_scratch", "--output_dir", str(tmp_path / "out")])
    assert done.value.code == 2 and "typo.txt: no such file or folder" in caplog.text


def test_overwrite_with_a_mistyped_corpus_keeps_the_earlier_pretraining(corpus, tiny_tokenizer_dir, tmp_path):
    out = tmp_path / "out"
    run(tiny_pretraining(corpus, tiny_tokenizer_dir, out, max_steps=2))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as done:
        main(["pretrain", "--train_files", str(corpus / "trian"), "--tokenizer_name", str(tiny_tokenizer_dir),
              "--from_scratch", "--output_dir", str(out), "--overwrite_output_dir"])
    assert done.value.code == 2
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_prepare_only_fills_the_cache_that_the_training_run_then_reads(corpus, tiny_tokenizer_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cache = tmp_path / "cache"
    corpus_flags = dict(validation_files=[str(corpus / "heldout.txt")], cache_dir=str(cache), corpus_part_mb=0.002)
    with pytest.raises(SystemExit) as done:  # no --from_scratch or model: preparing needs only the tokenizer
        main(["pretrain", "--prepare_only", "--train_files", str(corpus / "train"), "--tokenizer_name",
              str(tiny_tokenizer_dir), "--max_seq_length", "48", "--seed", "1", "--output_dir", str(tmp_path / "no"),
              "--validation_files", str(corpus / "heldout.txt"), "--cache_dir", str(cache), "--corpus_part_mb",
              "0.002", "--preprocessing_num_workers", "2"])
    assert done.value.code == 0 and not (tmp_path / "no").exists()
    prepared = sorted(cache.iterdir())
    assert len(prepared) > 4 and "prepared:" in caplog.text
    summary = run(tiny_pretraining(corpus, tiny_tokenizer_dir, tmp_path / "out", max_steps=2, **corpus_flags))
    assert sorted(cache.iterdir()) == prepared  # nothing prepared twice
    assert summary["train_pairs"] > 0 and "0 prepared here" in caplog.text
