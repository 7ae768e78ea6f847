import os
import tempfile
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

os.environ.setdefault("ALBERT_PYTORCH_CACHE", tempfile.mkdtemp(prefix="albert-test-cache-"))


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
