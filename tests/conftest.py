import os
import sys
from pathlib import Path

import pytest
import torch

from albert_pytorch import AlbertConfig
from albert_pytorch.tokenization import load_tokenizer, train_sentencepiece

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TEXTS = [
    "the film is a joy to watch .", "a dull , lifeless movie .", "the acting shines from start to finish .",
    "the plot drags and the jokes fall flat .", "warm , funny and smart .", "i was bored and annoyed .",
    "a small masterpiece of a comedy .", "the ending is sappy and shallow .", "hello , my dog is cute",
    "two sentences make a pair , and a pair needs a separator .",
] * 8


@pytest.fixture(scope="session", autouse=True)
def _private_feature_cache(tmp_path_factory):
    """Tests (and the processes they start) never touch the user's feature cache; pytest prunes old ones."""
    os.environ["ALBERT_PYTORCH_CACHE"] = str(tmp_path_factory.mktemp("feature-cache"))


def tiny_config(**overrides) -> AlbertConfig:
    values = dict(vocab_size=120, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=64)
    values.update(overrides)
    return AlbertConfig(**values)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tokenizer")
    train_sentencepiece(TEXTS, directory, vocab_size=120)
    return directory


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    return load_tokenizer(tiny_tokenizer_dir)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED / "glue").is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_task_dir(tmp_path_factory) -> Path:
    """A small SST-2-layout folder: the sample's sentences, a few hundred rows."""
    from albert_pytorch.sample import sample_data_dir

    folder = tmp_path_factory.mktemp("data") / "SST-2"
    folder.mkdir()
    source = sample_data_dir()
    (folder / "train.tsv").write_text((source / "train.tsv").read_text())
    (folder / "dev.tsv").write_text((source / "dev.tsv").read_text())
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Tokenizer + tiny config.json (dropout on, so resumption must restore randomness too)."""
    from albert_pytorch.sample import prepare_sample_model

    directory = prepare_sample_model(tmp_path_factory.mktemp("model"))
    config = AlbertConfig.from_pretrained(directory)
    config.hidden_dropout_prob = 0.1
    config.save_pretrained(directory)
    return directory


def make_loss_overflow_at(monkeypatch, call_number: int) -> None:
    """Fault injection: the model's loss is multiplied by inf on its `call_number`-th computation."""
    from albert_pytorch import AlbertForSequenceClassification

    calls = {"n": 0}
    real_loss = AlbertForSequenceClassification.loss

    def loss(self, logits, labels):
        calls["n"] += 1
        value = real_loss(self, logits, labels)
        return value * float("inf") if calls["n"] == call_number else value

    monkeypatch.setattr(AlbertForSequenceClassification, "loss", loss)


def train_command(tiny_task_dir, tiny_model_dir, output_dir, *extra):
    """`python3 -m albert_pytorch train` on the tiny task: 40 steps, a checkpoint every 2."""
    return [sys.executable, "-m", "albert_pytorch", "train", "--data_dir", str(tiny_task_dir),
            "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(output_dir), "--from_scratch",
            "--do_train", "--learning_rate", "2e-3", "--batch_size", "8", "--max_seq_length", "48",
            "--max_steps", "40", "--save_steps", "2", "--logging_steps", "2", "--device", "cpu", "--seed", "3",
            *extra]


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for training subprocesses: one thread each (CI has 2 cores), and temporary files
    (torchrun's log folders among them) kept under the test's own folder."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path), **extra}


def max_weight_difference(model_dir_a: Path, model_dir_b: Path) -> float:
    """Largest |difference| between two saved models' weights, over every tensor."""
    from safetensors.torch import load_file

    a, b = load_file(model_dir_a / "model.safetensors"), load_file(model_dir_b / "model.safetensors")
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)
